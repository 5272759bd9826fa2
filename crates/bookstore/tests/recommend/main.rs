//! The recommendation service end to end: on the embedded defaults (embedded log, SQLite stores)
//! and on the real infrastructure from `dev/services` (Kafka, MariaDB for the catalog and the
//! recommendation store, Redis for trends).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod compaction;
mod members;
mod outbox;
mod processes;
mod service;

pub use bookstore_testkit_app::Infra;

/// Runs a test body on both: `infra!(name)` makes `name::{embedded, kafka_mariadb_redis}`.
#[macro_export]
macro_rules! infra {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                super::$name($crate::Infra::Embedded).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn kafka_mariadb_redis() {
                super::$name($crate::Infra::Real).await;
            }
        }
    };
}
