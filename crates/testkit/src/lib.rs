//! What the workspace's tests share, in one place: for `[dev-dependencies]` only, never a
//! production crate's `[dependencies]`.
//!
//! - [`conformance`]: the checks every implementation of a store port passes (trend stores,
//!   recommendation stores, outboxes).
//! - [`servers`]: where the real servers of `dev/services` are (`BOOKSTORE_TEST_*`).
//! - With the `servers` feature: `mysql::FreshDatabase` (a database of its own, dropped when the
//!   test ends), `redis::RedisKeys` (keys under a fresh prefix), `kafka::KafkaTopic`, `Cleanup` of
//!   what a test's configuration made there, and `http` probes (`/readyz`, JSON). Each test
//!   removes what it made on the shared servers whether it passed or failed.
//! - [`wait_until`] and [`wait_until_settled`], polling with a deadline; [`free_port`];
//!   [`process`]: `bookstore` child processes killed with the test, and `dev/services` itself;
//!   [`Recorder`], an in-memory event handler; [`Backend`] and [`both!`], a test body on each
//!   event log.
//!
//! It depends on `bookstore-domain` and general crates only, never on `bookstore-app` or an
//! adapter, so that the adapters' own tests can use it. A test that needs a server fails, naming
//! the fix, when the server cannot be reached: it never skips.

pub mod conformance;
pub mod process;
pub mod recorder;
pub mod servers;
pub mod wait;

#[cfg(feature = "servers")]
pub mod cleanup;
#[cfg(feature = "servers")]
pub mod guard;
#[cfg(feature = "servers")]
pub mod http;
#[cfg(feature = "servers")]
pub mod kafka;
#[cfg(feature = "servers")]
pub mod mysql;
#[cfg(feature = "servers")]
pub mod redis;

#[cfg(feature = "servers")]
pub use cleanup::Cleanup;
#[cfg(feature = "servers")]
pub use mysql::FreshDatabase;
pub use process::{KillOnDrop, free_port};
pub use recorder::Recorder;
pub use wait::{wait_until, wait_until_settled};

/// The event log a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded log: a SQLite file in the test's directory.
    Embedded,
    /// The real Kafka of `dev/services` ([`servers::kafka_brokers`]).
    Kafka,
}

/// Runs a test body once per event log: `both!(name)` makes `name::embedded` and `name::kafka`,
/// each calling `name(Backend)`.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                super::$name($crate::Backend::Embedded).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn kafka() {
                super::$name($crate::Backend::Kafka).await;
            }
        }
    };
}
