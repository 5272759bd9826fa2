//! HTTP-level tests of the web service. Every test in `backend_tests!` runs twice: on SQLite and on
//! MariaDB (from `dev/services`; a MariaDB that cannot be reached fails the test, it never skips);
//! those of `live.rs` run on the embedded log and on Kafka, with the trend and recommendation
//! services.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod book_page;
mod books_api;
mod cli;
mod forget;
mod helpers;
mod live;
mod page;
mod search;
