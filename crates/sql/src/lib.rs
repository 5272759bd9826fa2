//! SQL shared by the SQLite and MySQL adapters. [`SqlRecommendations`] is the recommendation
//! store, written once and generic over the database: each adapter implements [`Dialect`] with
//! its own statements as constants (`bookstore_sqlite::SqliteRecommendations`,
//! `bookstore_mysql::MySqlRecommendations`).

mod recommend;

pub use recommend::{Column, Dialect, Locking, SqlRecommendations};
