//! The composition root: configuration, the wiring of adapters into the web, trend and
//! recommendation services, a process's lifecycle, and the catalog tools. The `bookstore` binary
//! (`crates/bookstore/src/main.rs`) only parses the command line and calls into here, or into
//! `bookstore-bench` for the benchmarks.

pub mod bus;
pub mod config;
pub mod consumer_service;
pub mod ops;
pub mod recommend;
pub mod relay;
pub mod search;
pub mod telemetry;
pub mod tools;
pub mod trend;

mod all_in_one;
pub mod lifecycle;
mod web;

pub use all_in_one::serve_all;
pub use consumer_service::ConsumerApp;
pub use lifecycle::{run_until_signalled, shutdown_signal};
pub use web::{Catalog, Remotes, WebApp, open_catalog};
