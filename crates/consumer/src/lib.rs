//! The consumer framework shared by the event backends (`bookstore-kafka` and
//! `bookstore-eventlog`), and what publishers have in common.
//!
//! A backend reads messages from the partitions its consumer group gave it and hands them to a
//! [`Pipeline`], which decodes them, gathers them into batches, and applies each batch through an
//! [`EventHandler`](bookstore_domain::EventHandler) together with the positions it reaches. The
//! handler's store is the authority on positions: the backend starts each partition where the
//! store says, so nothing is lost or applied twice. Messages that cannot be decoded, and events a
//! handler rejects, go to a [`DeadLetters`] sink; stores that are down are retried with backoff.

mod delivery;
mod pipeline;
mod stats;

pub use delivery::{Waiting, verdicts};
pub use pipeline::{
    BatchSettings, DeadLetter, DeadLetters, Flushed, LogRange, Pipeline, RawMessage, SinkError,
    Stopped,
};
pub use stats::{ConsumerStats, PublisherStats, RateLimited};
