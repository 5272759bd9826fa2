//! The composition root: configuration, wiring of adapters into services, and the command-line
//! tools. `main.rs` only parses the command line and calls into here.

pub mod bench;
pub mod bench_events;
pub mod bench_freshness;
pub mod bench_recommend;
pub mod config;
pub mod consumer_service;
pub mod events;
pub mod loadgen;
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
