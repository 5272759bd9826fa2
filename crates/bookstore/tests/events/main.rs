//! The event pipeline end to end, on the embedded log and on the real Kafka from `dev/services`:
//! the web service publishes, consumer groups apply exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crashes;
mod pipeline;
mod retention;
