//! The embedded event log, the default when no Kafka cluster is configured.
//!
//! One SQLite file (WAL mode) holds, like a small Kafka: topics split into partitions, each an
//! append-only sequence of messages numbered by offset; consumer groups whose live members share
//! the partitions through expiring leases; each group's committed offsets (a measure of lag; the
//! handlers' stores hold the authoritative positions); and a dead-letter table. Every `bookstore`
//! process on the machine can open the same file: a web process appends, consumer processes read,
//! and nothing is lost across restarts. The appending process trims what retention lets go (see
//! [`Retention`]).
//!
//! Consumers wake when the file changes (inotify or the platform's equivalent, through `notify`)
//! and, inside one process, straight from the publisher, so an idle consumer sees an event within
//! milliseconds without polling; a slow timer is only a safety net.

mod consumer;
mod log;
mod publisher;
mod retention;

pub use consumer::{EmbeddedConsumer, GroupSettings};
pub use log::{Appended, EventLog, EventLogError, StoredDeadLetter};
pub use publisher::{EmbeddedPublisher, PublisherLimits};
pub use retention::{Retention, RetentionStats, TrimReason, TrimReport, run_retention};
