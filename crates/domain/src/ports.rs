//! Ports: what the services need from storage, named by role. Adapters implement them per
//! technology (`SqliteBookRepository`, `MySqlBookRepository`).

use async_trait::async_trait;

use crate::book::{Book, BookId, NewBook};
use crate::events::Event;
use crate::search::{BookQuery, SearchPage};

/// Why a store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The store cannot be reached now (connection refused, pool exhausted, server restarting).
    /// Callers may retry later; an HTTP service answers 503.
    #[error("the database is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Anything else: a bug or a broken schema. An HTTP service answers 500 and logs it.
    #[error("database error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The catalog of books.
///
/// Error contract: every method returns [`RepositoryError::Unavailable`] when the store cannot be
/// reached, so that callers can tell an outage from a bug. A missing book is `Ok(None)`, not an
/// error. Writes of several books are atomic: all of them are stored, or none.
#[async_trait]
pub trait BookRepository: Send + Sync + 'static {
    /// Books matching `query.terms()` (every word, each as a word prefix, ignoring case and
    /// accents), best match first; all books in catalog order when there are no terms.
    async fn search(&self, query: &BookQuery) -> Result<SearchPage, RepositoryError>;

    /// One book by id.
    async fn get(&self, id: BookId) -> Result<Option<Book>, RepositoryError>;

    /// Stores one book and returns it with its id and creation time.
    async fn create(&self, book: &NewBook) -> Result<Book, RepositoryError>;

    /// Stores many books in one transaction and returns how many were stored.
    async fn create_many(&self, books: &[NewBook]) -> Result<u64, RepositoryError>;

    /// How many books the catalog holds.
    async fn count(&self) -> Result<u64, RepositoryError>;

    /// Answers when the store is reachable.
    async fn ping(&self) -> Result<(), RepositoryError>;
}

/// What a publisher did with an event handed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Accepted into the publisher's bounded queue; delivery is reported later, in counters.
    Queued,
    /// The queue was full (the log is down or too slow): the event was dropped and counted.
    Dropped,
}

/// Sends events to the event log without making the caller wait for it.
///
/// Contract: `publish` never blocks and never fails. When the log cannot keep up, events are
/// dropped past a bounded queue and counted, so a search never waits for, or fails because of,
/// the broker.
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    fn publish(&self, event: &Event) -> Published;

    /// Delivers what is queued, waiting at most `timeout`, and returns how many events were
    /// still undelivered when it gave up.
    async fn flush(&self, timeout: std::time::Duration) -> u64;
}

/// A partition of a topic: the unit of ordering and of ownership within a consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// One decoded event and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub event: Event,
}

/// Where a consumer group stands in one partition: the next offset it will read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

impl Position {
    /// The partition and the next offset to read in it.
    pub fn into_entry(self) -> (TopicPartition, i64) {
        (
            TopicPartition {
                topic: self.topic,
                partition: self.partition,
            },
            self.next_offset,
        )
    }
}

/// A move of a group's position in one partition, from what the consumer believes is stored
/// (`None`: nothing stored yet) to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionUpdate {
    pub topic: String,
    pub partition: i32,
    pub from: Option<i64>,
    pub to: i64,
}

/// Events to apply, in log order within each partition, and the positions they take the group
/// to. `records` may be empty when only positions move (past dead-lettered messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub group: String,
    pub records: Vec<Record>,
    pub positions: Vec<PositionUpdate>,
}

/// Why a handler did not apply a batch.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The store is unreachable or busy. Nothing was applied; the batch is retried with backoff.
    #[error("store unavailable: {0}")]
    Transient(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The batch can never be applied (an event breaks a rule of the store). Nothing was applied;
    /// the consumer finds the offending event, dead-letters it, and goes on.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The stored positions are not the batch's `from`: another consumer has moved them (this one
    /// lost its partitions, or is a stale instance). Nothing was applied; the consumer reloads the
    /// positions and reads again from there.
    #[error("stale position: {0}")]
    StalePosition(String),
}

/// Applies events to a store, exactly once.
///
/// Contract: `apply` changes the state AND moves the stored positions in one atomic unit (one SQL
/// transaction, one Redis script), after checking that every stored position equals its update's
/// `from`; otherwise it applies nothing and returns [`HandlerError::StalePosition`]. `positions`
/// returns what `apply` stored. A consumer that resumes from `positions` therefore never loses an
/// event and never applies one twice, whatever crashed and whenever.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// A short name for logs and metrics, such as `trend`.
    fn name(&self) -> &str;

    /// The positions stored for `group`.
    async fn positions(&self, group: &str) -> Result<Vec<Position>, HandlerError>;

    /// Applies `batch` atomically with its position updates.
    async fn apply(&self, batch: &Batch) -> Result<(), HandlerError>;
}

/// The trends a trend store holds (it is also the [`EventHandler`] that fills them).
#[async_trait]
pub trait TrendStore: Send + Sync + 'static {
    /// The best `n` trends for `audience` at `now`, ranked `by`.
    async fn top(
        &self,
        n: usize,
        by: crate::trends::TrendRanking,
        audience: crate::trends::Audience,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<crate::trends::Trend>, RepositoryError>;

    /// Whether the store answers (`/readyz`).
    async fn ping(&self) -> Result<(), RepositoryError>;
}

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub key: String,
    pub payload: Vec<u8>,
}

/// Where the outbox relay delivers rows; `Ok` only once every row is confirmed delivered.
#[async_trait]
pub trait OutboxSink: Send + Sync {
    async fn deliver(&self, rows: &[OutboxRow]) -> Result<(), String>;
}

/// The outbox of a catalog database: events written in the transactions that changed the catalog.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Takes up to `limit` unsent rows, oldest first, that no other relay holds; delivers them to
    /// `sink`; marks them sent once `sink` confirms. Returns how many were sent. A crash between
    /// delivery and marking sends them again later (at least once; consumers are idempotent).
    async fn relay(&self, limit: usize, sink: &dyn OutboxSink) -> Result<u64, RepositoryError>;

    /// Rows not sent yet.
    async fn waiting(&self) -> Result<u64, RepositoryError>;

    /// Deletes up to `limit` of the rows sent more than `age` ago, oldest first; returns how many.
    /// Their events are in the log by then: a sent row is only history. Unsent rows are never
    /// deleted.
    async fn prune(&self, age: std::time::Duration, limit: usize) -> Result<u64, RepositoryError>;
}

/// What the recommendation service answers from (its store is also the [`EventHandler`] that
/// fills it).
#[async_trait]
pub trait RecommendStore: Send + Sync + 'static {
    /// The best `n` books for `user` that they have not been shown, ranked by
    /// [`crate::recommend::blend`]; popular books for a user without history.
    async fn recommend(
        &self,
        user: &str,
        n: usize,
    ) -> Result<Vec<crate::recommend::Recommendation>, RepositoryError>;

    /// `user`'s profile: their `n` strongest books, authors and queries, decayed to `now`.
    async fn interests(
        &self,
        user: &str,
        n: usize,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::recommend::Interests, RepositoryError>;

    /// A book of the service's catalog copy.
    async fn catalog_book(
        &self,
        id: i64,
    ) -> Result<Option<crate::recommend::CatalogEntry>, RepositoryError>;

    /// How much the store holds.
    async fn stats(&self) -> Result<crate::recommend::RecommendStats, RepositoryError>;

    /// Everything the store holds, in canonical order (tests and audits; it reads every row).
    async fn snapshot(&self) -> Result<crate::recommend::Snapshot, RepositoryError>;

    /// Whether the store answers (`/readyz`).
    async fn ping(&self) -> Result<(), RepositoryError>;
}
