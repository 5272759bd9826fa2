//! What the `bookstore` package's end-to-end tests share, on top of `bookstore-testkit`: for
//! `[dev-dependencies]` only. Unlike `bookstore-testkit` it builds on `bookstore-app` (a test
//! bus is a configuration and an event bus; the services run in the test's process or as
//! `bookstore` child processes), so no crate that `bookstore-app` depends on may use it.
//!
//! - [`TestBus`]: a fresh topic on the real Kafka or a fresh embedded log, with its
//!   configuration, consumers and web service; its topics, Redis keys and MariaDB databases go
//!   with it when the test ends, whether it passed or not.
//! - [`test_bus`], [`Infra`]: a bus with fresh stores (embedded, or Kafka + MariaDB + Redis).
//! - [`start_web`], [`start_trend`], [`start_recommend`]: the services in this process;
//!   [`Processes`]: the three as `bookstore` child processes.
//! - [`stores`]: a consumer store compared with what it should hold, and a fresh group's replay.

pub mod bus;
pub mod services;
pub mod stores;

pub use bus::{
    RunningConsumer, RunningWeb, TEST_COOKIE_SECRET, TestBus, counts_store, made_stores, total,
    uid_cookie,
};
pub use services::{
    Infra, Processes, Running, bus_with_fresh_groups, consumer_env, start_recommend, start_trend,
    start_web, test_bus, unbounded_query_records, use_redis_trends,
};
