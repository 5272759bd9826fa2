//! Ports: what the services need from storage, named by role. Adapters implement them per
//! technology (`SqliteBookRepository`, `MySqlBookRepository`).

use async_trait::async_trait;

use crate::book::{Book, BookId, NewBook};
use crate::events::Event;
use crate::search::{BookQuery, Highlights, SearchPage, Suggestion};

/// Why a store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The store cannot be reached now (connection refused, pool exhausted, server restarting).
    /// Callers may retry later; an HTTP service answers 503.
    #[error("the database is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The write would break a uniqueness rule of the catalog (another book has this ISBN).
    /// Nothing was written; an HTTP service answers 409 with the message.
    #[error("{0}")]
    Conflict(String),
    /// Anything else: a bug or a broken schema. An HTTP service answers 500 and logs it.
    #[error("database error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What a [`RepositoryError::Conflict`] says when another book has the ISBN.
pub const ISBN_TAKEN: &str = "another book in the catalog has this ISBN";

/// The catalog as readers search it: a read model built from the catalog's events (the search
/// index), never the system-of-record database.
///
/// Error contract as [`BookRepository`]'s: [`RepositoryError::Unavailable`] when it cannot
/// answer now (the index is being opened, or its worker is gone).
#[async_trait]
pub trait BookSearch: Send + Sync + 'static {
    /// Books matching the query's text, best match first, with the number of matches (exact up
    /// to [`crate::MAX_EXACT_TOTAL`], a lower bound beyond); every book in id order when the
    /// query has no words.
    async fn search(&self, query: &BookQuery) -> Result<SearchPage, RepositoryError>;

    /// The words of `book` that match `query` by the search's own rules (typo-corrected and
    /// completed words too), and a snippet of its description of about `snippet_chars`
    /// characters around the first match.
    fn highlight(&self, query: &str, book: &Book, snippet_chars: usize) -> Highlights;

    /// Up to `n` titles and authors that complete what the reader typed, best first, each once.
    async fn suggest(&self, typed: &str, n: usize) -> Result<Vec<Suggestion>, RepositoryError>;
}

/// The catalog of books.
///
/// Error contract: every method returns [`RepositoryError::Unavailable`] when the store cannot be
/// reached, so that callers can tell an outage from a bug. A missing book is `Ok(None)`, not an
/// error. Writes of several books are atomic: all of them are stored, or none.
#[async_trait]
pub trait BookRepository: Send + Sync + 'static {
    /// Books matching `query.terms()` (every word, each as a word prefix, ignoring case and
    /// accents), best match first; all books in catalog order when there are no terms. The
    /// services search through [`BookSearch`] (the search index); this database search is what
    /// `bookstore bench search` measures the index against.
    async fn search(&self, query: &BookQuery) -> Result<SearchPage, RepositoryError>;

    /// One book by id.
    async fn get(&self, id: BookId) -> Result<Option<Book>, RepositoryError>;

    /// Stores one book and returns it with its id and creation time.
    async fn create(&self, book: &NewBook) -> Result<Book, RepositoryError>;

    /// Stores many books in one transaction and returns how many were stored.
    async fn create_many(&self, books: &[NewBook]) -> Result<u64, RepositoryError>;

    /// Stores `books` in one transaction, matching them by ISBN: a book whose ISBN the catalog
    /// (or an earlier book of `books`) already has replaces that book, with a `book.updated`
    /// event when a field differs; every other book is added, with its `book.created` event.
    /// Returns what happened to each book, in order. Importing the same file twice adds nothing
    /// the second time (for the books that have an ISBN).
    async fn import_many(&self, books: &[NewBook]) -> Result<Vec<Imported>, RepositoryError>;

    /// Replaces every field of book `id` but its id and creation time, and writes its
    /// `book.updated` event to the outbox in the same transaction. `Ok(None)` when there is no
    /// such book.
    async fn update(&self, id: BookId, book: &NewBook) -> Result<Option<Book>, RepositoryError>;

    /// Removes book `id` and writes its `book.deleted` event to the outbox in the same
    /// transaction. `Ok(false)` when there is no such book.
    async fn delete(&self, id: BookId) -> Result<bool, RepositoryError>;

    /// How many books the catalog holds.
    async fn count(&self) -> Result<u64, RepositoryError>;

    /// Answers when the store is reachable.
    async fn ping(&self) -> Result<(), RepositoryError>;
}

/// What [`BookRepository::import_many`] did with one book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// Added as this new book.
    Created(BookId),
    /// Its ISBN's book was replaced.
    Updated(BookId),
    /// Its ISBN's book already had exactly these fields.
    Unchanged(BookId),
}

/// What a publisher did with an event handed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Accepted into the publisher's bounded queue; delivery is reported later, in counters.
    Queued,
    /// Not sent, and counted: the queue was full (the log is down or too slow), the event is
    /// larger than the log takes, or the publisher's wire format has no message for it.
    Dropped,
}

/// The log's verdict on one event handed to [`EventPublisher::deliver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// In the log.
    Delivered,
    /// The log refused this event for a reason of its own (larger than it takes, malformed), or
    /// the publisher's wire format has no message for it, and that would not change: sending it
    /// again cannot help.
    Refused(String),
    /// Not in the log, for a reason that is not the event's: the log is unreachable or slow, or
    /// the publisher's queue is full. Sending it again later may succeed.
    Undelivered(String),
}

/// An event in its version 1 wire form, as stored (the outbox's rows), with what the log's
/// headers say of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredEvent<'a> {
    /// The message key (the book id of a catalog event).
    pub key: &'a str,
    /// The event's type and version ([`Event::kind`], [`Event::version`]).
    pub kind: &'static str,
    pub version: u32,
    /// The JSON of the event.
    pub payload: &'a [u8],
}

/// Sends events to the event log without making the caller wait for it.
///
/// Contract: `publish` never blocks and never fails. When the log cannot keep up, events are
/// dropped past a bounded queue (bounded in events and in bytes) and counted, so a search never
/// waits for, or fails because of, the broker.
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    fn publish(&self, event: &Event) -> Published;

    /// Publishes `events`, in order, through the same bounded queue, and waits at most `timeout`
    /// for the log's verdict on each: one [`Delivery`] per event, in order. An event the queue
    /// has no room for, or whose delivery is not confirmed in time, is
    /// [`Delivery::Undelivered`] (it may still reach the log later). The outbox relay's way of
    /// publishing: it marks a row sent only once its event is in the log.
    async fn deliver(&self, events: &[Event], timeout: std::time::Duration) -> Vec<Delivery>;

    /// [`deliver`](Self::deliver) for events already in their version 1 wire form, such as the
    /// outbox keeps them: each is published as it is, its bytes not encoded again. A publisher
    /// whose wire format is not version 1 refuses them. The default decodes each one and
    /// delivers the events, for publishers with no faster way.
    async fn deliver_stored(
        &self,
        events: &[StoredEvent<'_>],
        timeout: std::time::Duration,
    ) -> Vec<Delivery> {
        let mut decoded = Vec::with_capacity(events.len());
        for stored in events {
            match crate::events::decode(Some(stored.key.as_bytes()), stored.payload, None) {
                Ok(event) => decoded.push(event),
                Err(error) => {
                    // Never the case for what a caller decoded first; refuse them all rather
                    // than shift the verdicts.
                    let reason = format!("not an event: {error}");
                    return vec![Delivery::Refused(reason); events.len()];
                }
            }
        }
        self.deliver(&decoded, timeout).await
    }

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
    /// `topic/partition`: how stores that keep positions under one text key name a partition.
    pub fn key(topic: &str, partition: i32) -> String {
        format!("{topic}/{partition}")
    }

    /// The position a [`Position::key`] and its next offset stand for; `None` for a key that is
    /// not one.
    pub fn from_key(key: &str, next_offset: i64) -> Option<Self> {
        let (topic, partition) = key.rsplit_once('/')?;
        Some(Self {
            topic: topic.to_owned(),
            partition: partition.parse().ok()?,
            next_offset,
        })
    }

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

    /// The trend of one normalized query at `now`, if the store keeps it (public or not).
    async fn trend(
        &self,
        query_normalized: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<crate::trends::Trend>, RepositoryError>;

    /// The best `n` viewed books at `now` (`book.viewed`), by time-decayed views.
    async fn viewed_books(
        &self,
        n: usize,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<crate::trends::ViewedBook>, RepositoryError>;

    /// Whether the store holds anything keyed by the reader `user_id`: a cap counter of theirs
    /// (as reader, or as the origin of their searches or views without a client; views' counters
    /// included) or their place among the
    /// origins of a trend not public yet. None once their `reader.forgotten` is applied, until
    /// they search again. For tests and checks: it may read every counter and trend.
    async fn holds_reader(&self, user_id: &str) -> Result<bool, RepositoryError>;

    /// Whether the store answers (`/readyz`).
    async fn ping(&self) -> Result<(), RepositoryError>;
}

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub key: String,
    pub payload: Vec<u8>,
    /// How many times the row was refused so far (undecodable, or refused by the log).
    pub attempts: u32,
}

/// What became of one row an [`OutboxSink`] was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    /// Its event is in the log: the row is marked sent.
    Sent,
    /// Not delivered this time, for a reason that is not the row's (the log is unreachable or
    /// slow, an earlier row held it back): it stays waiting as it was.
    Retry,
    /// Refused for a reason of its own (undecodable, refused by the log): its attempts grow by
    /// one, the reason is kept, and it stays waiting.
    Refused(String),
    /// Refused for good: its attempts grow by one and it moves to the dead letters with the
    /// reason. It is never relayed again (unless an operator puts it back).
    Dead(String),
}

/// Where the outbox relay delivers rows.
#[async_trait]
pub trait OutboxSink: Send + Sync {
    /// Delivers `rows` (oldest first) and says what became of each: one [`RowOutcome`] per row,
    /// in order; rows without one are [`RowOutcome::Retry`]. `Err` means nothing was delivered
    /// for a reason that is not the rows' (every row is [`RowOutcome::Retry`]).
    async fn deliver(&self, rows: &[OutboxRow]) -> Result<Vec<RowOutcome>, String>;
}

/// What one relay round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Rows marked sent.
    pub sent: u64,
    /// Rows refused this round that wait for another attempt.
    pub refused: u64,
    /// Rows moved to the dead letters this round: id, key and reason.
    pub dead_lettered: Vec<DeadLetteredRow>,
}

impl Relayed {
    /// Whether the round changed anything (a relay with nothing to do waits before the next).
    pub fn progressed(&self) -> bool {
        self.sent > 0 || self.refused > 0 || !self.dead_lettered.is_empty()
    }

    /// Counts a refusal the store recorded: a dead letter, or a row that waits for another try.
    pub fn record(&mut self, refusal: &Refusal) {
        if refusal.dead {
            self.dead_lettered.push(DeadLetteredRow {
                id: refusal.id,
                key: refusal.key.clone(),
                reason: refusal.reason.clone(),
            });
        } else {
            self.refused += 1;
        }
    }
}

/// An outbox row moved to the dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetteredRow {
    pub id: i64,
    pub key: String,
    pub reason: String,
}

/// A round's outcomes sorted by what the outbox does with each row (for the adapters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Rows to mark sent.
    pub sent: Vec<i64>,
    /// Rows to give back as they were.
    pub retry: Vec<i64>,
    /// Rows refused: an attempt to count, a reason to keep, perhaps the dead letters.
    pub refused: Vec<Refusal>,
}

/// A refused row, as [`Settlement`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub id: i64,
    pub key: String,
    /// At most [`Settlement::REASON_CHARS`] characters.
    pub reason: String,
    /// Whether the row goes to the dead letters.
    pub dead: bool,
}

impl Settlement {
    /// The longest reason kept with a refused row, in characters.
    pub const REASON_CHARS: usize = 1_000;

    /// Sorts what the sink answered for `rows`: an `Err` gives every row back.
    pub fn of(rows: &[OutboxRow], answer: Result<Vec<RowOutcome>, String>) -> Self {
        let outcomes = answer.unwrap_or_default();
        let mut settlement = Self::default();
        let mut outcomes = outcomes.into_iter();
        for row in rows {
            let (reason, dead) = match outcomes.next().unwrap_or(RowOutcome::Retry) {
                RowOutcome::Sent => {
                    settlement.sent.push(row.id);
                    continue;
                }
                RowOutcome::Retry => {
                    settlement.retry.push(row.id);
                    continue;
                }
                RowOutcome::Refused(reason) => (reason, false),
                RowOutcome::Dead(reason) => (reason, true),
            };
            settlement.refused.push(Refusal {
                id: row.id,
                key: row.key.clone(),
                reason: reason.chars().take(Self::REASON_CHARS).collect(),
                dead,
            });
        }
        settlement
    }
}

/// The outbox of a catalog database: events written in the transactions that changed the catalog.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Takes up to `limit` waiting rows (neither sent nor dead-lettered), oldest first, that no
    /// other relay holds; delivers them to `sink`; then, in one transaction, marks sent the rows
    /// `sink` confirms, counts an attempt and keeps the reason for the rows it refuses, moves to
    /// the dead letters the rows it gives up on, and gives the others back. A crash between
    /// delivery and marking sends them again later (at least once; consumers are idempotent).
    async fn relay(&self, limit: usize, sink: &dyn OutboxSink) -> Result<Relayed, RepositoryError>;

    /// Rows waiting to be sent (dead letters excluded).
    async fn waiting(&self) -> Result<u64, RepositoryError>;

    /// Rows in the dead letters.
    async fn dead_letters(&self) -> Result<u64, RepositoryError>;

    /// Deletes up to `limit` of the rows sent more than `age` ago, oldest first; returns how many.
    /// Their events are in the log by then: a sent row is only history. Unsent rows, and dead
    /// letters, are never deleted.
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

    /// Deletes up to `limit` profiles whose reader last searched before `before` (Unix
    /// milliseconds, see [`crate::recommend::RecommendSettings::expired_before`]); returns how
    /// many.
    async fn expire(&self, before: i64, limit: usize) -> Result<u64, RepositoryError>;

    /// Everything the store holds, in canonical order (tests and audits; it reads every row).
    async fn snapshot(&self) -> Result<crate::recommend::Snapshot, RepositoryError>;

    /// Whether the store answers (`/readyz`).
    async fn ping(&self) -> Result<(), RepositoryError>;
}
