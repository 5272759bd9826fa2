//! Events that cross service boundaries, their wire format, and the rules for reading them.
//!
//! The schema is documented in `docs/events.md`. Two wire versions are read:
//!
//! - **version 1** (what this project writes): a JSON object with `type` and `version`;
//! - **version 0** (the tutorial system's format): the Kafka key is `<query>` or `<query>:<uid>` and the
//!   value a JSON array of books. The user id is the text after the *last* `:`, so a query that
//!   contains `:` keeps it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

pub use crate::date::PublishedDate;
pub use crate::search::{MAX_QUERY_CHARS, clean_query};
pub use wire::{NotInFormat, WireFormat, WireMessage};

mod wire;

/// Longest user or client id an event may carry, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Longest log key a search event has, in bytes: a user or client id, or (for a search with
/// neither) its normalized query, [`MAX_QUERY_CHARS`] characters of up to 4 bytes.
pub const MAX_KEY_BYTES: usize = MAX_QUERY_CHARS * 4;

/// The `type` of a search event.
pub const BOOK_SEARCHED: &str = "book.searched";
/// The version of `book.searched` this code writes.
pub const BOOK_SEARCHED_VERSION: u32 = 1;
/// The wire version given to events in the tutorial's format.
pub const LEGACY_VERSION: u32 = 0;
/// The `type` of a catalog event: a book was added to the catalog.
pub const BOOK_CREATED: &str = "book.created";
/// The version of `book.created` this code writes.
pub const BOOK_CREATED_VERSION: u32 = 1;
/// The `type` of a catalog event: a book was replaced (every field but its id and creation time).
pub const BOOK_UPDATED: &str = "book.updated";
/// The version of `book.updated` this code writes.
pub const BOOK_UPDATED_VERSION: u32 = 1;
/// The `type` of a catalog event: a book was removed from the catalog.
pub const BOOK_DELETED: &str = "book.deleted";
/// The version of `book.deleted` this code writes.
pub const BOOK_DELETED_VERSION: u32 = 1;
/// The `type` of a reader's request to be forgotten: every service deletes what it holds about
/// the reader. Published on the search topic, keyed by the reader, after their searches.
pub const READER_FORGOTTEN: &str = "reader.forgotten";
/// The version of `reader.forgotten` this code writes.
pub const READER_FORGOTTEN_VERSION: u32 = 1;
/// A reader opened a book's page.
pub const BOOK_VIEWED: &str = "book.viewed";
/// The `book.viewed` version this build writes and reads.
pub const BOOK_VIEWED_VERSION: u32 = 1;
/// The highest rank a view may carry (the API's largest page, and then some).
pub const MAX_VIEW_RANK: u32 = 10_000;
/// Kafka header carrying the event type.
pub const TYPE_HEADER: &str = "type";
/// Kafka header carrying the event version.
pub const VERSION_HEADER: &str = "version";

/// Namespace for the deterministic ids given to version-0 events, which carry none.
const LEGACY_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c2f_3b1e_8a55_4d0e_9f4c_0a6b_b3e1_7d42);

/// A book as it appears in a search event's results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultBook {
    pub id: i64,
    pub title: String,
    pub author: String,
    /// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`; absent when a version-0 producer sent none or an
    /// unreadable one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<PublishedDate>,
}

/// "Someone searched the catalog": who, for what, and which books came back, in result order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchEvent {
    /// UUID v7 for events this project writes; a name-based UUID for version-0 events.
    pub id: Uuid,
    /// The wire version the event was read from (or will be written as).
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    /// The visitor's id, from a `uid` cookie the web service signed; `None` for searches without
    /// one (API calls, first visits).
    pub user_id: Option<String>,
    /// A pseudonym of the client's network address (a keyed hash, the same on every web instance
    /// that shares `web.cookie_secret`), so that consumers can tell clients apart (cap anonymous
    /// searches, count distinct origins) without ever seeing an address.
    pub client_id: Option<String>,
    /// The query as typed, cleaned and bounded by [`clean_query`] like the search's own text.
    pub query: String,
    /// [`normalize_query`] of `query`.
    pub query_normalized: String,
    /// The offset of the result page.
    pub offset: u64,
    pub results: Vec<ResultBook>,
    /// What the tutorial's format writes of each result beyond [`ResultBook`], in result order,
    /// when the producer has it (the web service gives it; see [`WireFormat::Tutorial`]). Version
    /// 1 does not carry it, so an event read from the log has none.
    pub result_details: Vec<ResultDetails>,
}

/// The fields of a result book that only the tutorial's format carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultDetails {
    pub description: String,
    /// When the book entered the catalog.
    pub created_at: DateTime<Utc>,
}

impl SearchEvent {
    /// A version-1 event. `id` should be a fresh UUID v7. The query is cleaned and bounded by
    /// [`clean_query`].
    pub fn new(
        id: Uuid,
        occurred_at: DateTime<Utc>,
        user_id: Option<String>,
        query: &str,
        offset: u64,
        results: Vec<ResultBook>,
    ) -> Self {
        let query = clean_query(query);
        Self {
            id,
            version: BOOK_SEARCHED_VERSION,
            occurred_at,
            user_id,
            client_id: None,
            query_normalized: normalize_query(&query),
            query,
            offset,
            results,
            result_details: Vec::new(),
        }
    }

    /// The same event, with the results' [`ResultDetails`] (one per result, in order).
    pub fn with_details(mut self, details: Vec<ResultDetails>) -> Self {
        self.result_details = details;
        self
    }

    /// The same event, from the client `client_id` (see [`SearchEvent::client_id`]).
    pub fn with_client(mut self, client_id: Option<String>) -> Self {
        self.client_id = client_id;
        self
    }

    /// Who searched, for rules that count searches per reader: the user, else the client.
    pub fn reader(&self) -> Option<&str> {
        self.user_id.as_deref().or(self.client_id.as_deref())
    }

    /// Where the search came from, for rules that count distinct people: the client (its network
    /// address, which visitor ids do not change), else the user (producers that send no client).
    pub fn origin(&self) -> Option<&str> {
        self.client_id.as_deref().or(self.user_id.as_deref())
    }

    /// The Kafka key: the user id, else the client id, else the normalized query, so that one
    /// reader's events stay in order on one partition. At most [`MAX_KEY_BYTES`] bytes.
    pub fn key(&self) -> &str {
        self.reader().unwrap_or(&self.query_normalized)
    }

    /// The version-1 JSON encoding.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = SearchEventV1Out {
            id: self.id,
            kind: BOOK_SEARCHED,
            version: BOOK_SEARCHED_VERSION,
            occurred_at: self.occurred_at,
            user_id: self.user_id.as_deref(),
            client_id: self.client_id.as_deref(),
            query: &self.query,
            query_normalized: &self.query_normalized,
            offset: self.offset,
            results: &self.results,
        };
        let mut out = Vec::with_capacity(256 + self.results.len() * 128);
        // Serializing plain data with string keys into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &wire);
        out
    }
}

/// Version 1 as written: borrows the event, so writing copies no string.
#[derive(Serialize)]
struct SearchEventV1Out<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    kind: &'a str,
    version: u32,
    occurred_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    query: &'a str,
    query_normalized: &'a str,
    offset: u64,
    results: &'a [ResultBook],
}

/// Version 1 as read.
#[derive(Debug, Deserialize)]
struct SearchEventV1 {
    id: Uuid,
    version: u32,
    occurred_at: DateTime<Utc>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    query: String,
    query_normalized: String,
    offset: u64,
    results: Vec<ResultBook>,
}

/// Only the fields needed to route an object to its decoder.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    version: u32,
}

impl Envelope {
    /// Refuses a version of this event's type other than `supported`.
    fn require(&self, supported: u32) -> Result<(), DecodeError> {
        if self.version == supported {
            Ok(())
        } else {
            Err(DecodeError::UnsupportedVersion {
                kind: self.kind.clone(),
                version: self.version,
                supported,
            })
        }
    }
}

/// A book in the tutorial's event value. Extra fields (`description`, `created_at`) are ignored.
#[derive(Deserialize)]
struct LegacyBook {
    id: i64,
    title: String,
    author: String,
    #[serde(default)]
    published_at: Option<String>,
}

/// A book as a catalog event carries it: every field of the catalog's book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogBook {
    pub id: i64,
    pub title: String,
    pub author: String,
    /// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, as precise as the catalog knows it.
    pub published_at: PublishedDate,
    #[serde(default)]
    pub description: String,
    pub created_at: DateTime<Utc>,
    /// The book's ISBN-13; absent when the catalog has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isbn: Option<String>,
}

impl From<&crate::Book> for CatalogBook {
    fn from(book: &crate::Book) -> Self {
        Self {
            id: book.id.0,
            title: book.title.clone(),
            author: book.author.clone(),
            published_at: book.published_at,
            description: book.description.clone(),
            created_at: book.created_at,
            isbn: book.isbn.as_ref().map(|i| i.as_str().to_owned()),
        }
    }
}

impl BookEvent {
    /// The event for a book just stored: a fresh UUID v7, now.
    pub fn for_book(book: &crate::Book) -> Self {
        Self::new(Uuid::now_v7(), Utc::now(), CatalogBook::from(book))
    }
}

/// A book's whole state, as `book.created` (a book was added) and `book.updated` (a book was
/// replaced) carry it; written to the outbox in the transaction that writes the book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookEvent {
    /// UUID v7.
    pub id: Uuid,
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    pub book: CatalogBook,
    /// The log key: the book id, so that a book's events stay in order.
    key: String,
}

impl BookEvent {
    pub fn new(id: Uuid, occurred_at: DateTime<Utc>, book: CatalogBook) -> Self {
        let key = book.id.to_string();
        Self {
            id,
            version: BOOK_CREATED_VERSION,
            occurred_at,
            book,
            key,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The version-1 JSON encoding as a `book.created` event.
    pub fn to_json(&self) -> Vec<u8> {
        self.to_json_as(BOOK_CREATED)
    }

    /// The version-1 JSON encoding with `kind` (`book.created` or `book.updated`) as its type.
    fn to_json_as(&self, kind: &str) -> Vec<u8> {
        let wire = BookV1 {
            id: self.id,
            kind: kind.to_owned(),
            version: 1,
            occurred_at: self.occurred_at,
            book: self.book.clone(),
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

/// `book.created` and `book.updated` version 1 on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct BookV1 {
    id: Uuid,
    #[serde(rename = "type")]
    kind: String,
    version: u32,
    occurred_at: DateTime<Utc>,
    book: CatalogBook,
}

/// "A book was removed from the catalog", written to the outbox in the transaction that deletes
/// it. On the compacted catalog topic it stays the latest message of its key, so a consumer that
/// reads the topic from its beginning, however long after compaction, still learns of the delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookDeletedEvent {
    /// UUID v7.
    pub id: Uuid,
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    /// The deleted book's id.
    pub book_id: i64,
    /// The log key: the book id, like the book's other events.
    key: String,
}

impl BookDeletedEvent {
    pub fn new(id: Uuid, occurred_at: DateTime<Utc>, book_id: i64) -> Self {
        Self {
            id,
            version: BOOK_DELETED_VERSION,
            occurred_at,
            book_id,
            key: book_id.to_string(),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The version-1 JSON encoding.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = BookDeletedV1 {
            id: self.id,
            kind: BOOK_DELETED.to_owned(),
            version: BOOK_DELETED_VERSION,
            occurred_at: self.occurred_at,
            book_id: self.book_id,
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

/// `book.deleted` version 1 on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct BookDeletedV1 {
    id: Uuid,
    #[serde(rename = "type")]
    kind: String,
    version: u32,
    occurred_at: DateTime<Utc>,
    book_id: i64,
}

/// `reader.forgotten`: the reader `user_id` asked to be forgotten (or an operator did for them).
/// Consumers delete everything they hold about the reader; anonymous contributions to global
/// counts may stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderForgottenEvent {
    /// UUID v7.
    pub id: Uuid,
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    /// The reader, as search events name them (`user_id`); also the log key, so the event lands
    /// on the partition of the reader's searches, after them.
    pub user_id: String,
}

impl ReaderForgottenEvent {
    pub fn new(id: Uuid, occurred_at: DateTime<Utc>, user_id: String) -> Self {
        Self {
            id,
            version: READER_FORGOTTEN_VERSION,
            occurred_at,
            user_id,
        }
    }

    /// The event for `user_id`, now.
    pub fn now(user_id: &str) -> Self {
        Self::new(Uuid::now_v7(), Utc::now(), user_id.to_owned())
    }

    pub fn key(&self) -> &str {
        &self.user_id
    }

    /// The version-1 JSON encoding.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = ReaderForgottenV1 {
            id: self.id,
            kind: READER_FORGOTTEN.to_owned(),
            version: READER_FORGOTTEN_VERSION,
            occurred_at: self.occurred_at,
            user_id: self.user_id.clone(),
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

/// `reader.forgotten` version 1 on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct ReaderForgottenV1 {
    id: Uuid,
    #[serde(rename = "type")]
    kind: String,
    version: u32,
    occurred_at: DateTime<Utc>,
    user_id: String,
}

/// Where the link a reader followed to a book's page was: the list it was in, so that consumers
/// can weigh a view and measure how often each list is taken up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewSource {
    /// A search's results.
    Search,
    /// The Trends panel (a trending query's books, or the most viewed books).
    Trends,
    /// "Recommended for you".
    Recommendation,
    /// "Readers who looked at this also looked at" on another book's page.
    Similar,
    /// Anything else: a typed or shared address, a bookmark, "more by this author".
    Direct,
}

impl ViewSource {
    pub const ALL: [ViewSource; 5] = [
        ViewSource::Search,
        ViewSource::Trends,
        ViewSource::Recommendation,
        ViewSource::Similar,
        ViewSource::Direct,
    ];

    /// The name on the wire and in links (`?from=`).
    pub fn as_str(self) -> &'static str {
        match self {
            ViewSource::Search => "search",
            ViewSource::Trends => "trends",
            ViewSource::Recommendation => "recommendation",
            ViewSource::Similar => "similar",
            ViewSource::Direct => "direct",
        }
    }

    /// The source named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for ViewSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `book.viewed`: a reader opened a book's page. Keyed like a search (the user, else the client,
/// else the book), so a reader's views and searches stay in order on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookViewedEvent {
    /// UUID v7.
    pub id: Uuid,
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    /// As in [`SearchEvent::user_id`].
    pub user_id: Option<String>,
    /// As in [`SearchEvent::client_id`].
    pub client_id: Option<String>,
    /// The book, as the page showed it.
    pub book: ResultBook,
    pub source: ViewSource,
    /// The book's position (from 0) in the list it was opened from, when it came from one.
    pub rank: Option<u32>,
    /// For a recommendation: the kind of reason it was given for (`searched`, `author`,
    /// `viewed`, `popular`), for click-through rates by reason.
    pub reason: Option<String>,
}

impl BookViewedEvent {
    /// A version-1 event, now, with a fresh UUID v7.
    pub fn now(
        user_id: Option<String>,
        client_id: Option<String>,
        book: ResultBook,
        source: ViewSource,
        rank: Option<u32>,
        reason: Option<String>,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            version: BOOK_VIEWED_VERSION,
            occurred_at: Utc::now(),
            user_id,
            client_id,
            book,
            source,
            rank,
            reason,
        }
    }

    /// Who viewed: the user, else the client.
    pub fn reader(&self) -> Option<&str> {
        self.user_id.as_deref().or(self.client_id.as_deref())
    }

    /// Where the view came from, for rules that count distinct people (see [`SearchEvent::origin`]).
    pub fn origin(&self) -> Option<&str> {
        self.client_id.as_deref().or(self.user_id.as_deref())
    }

    /// The log key: the reader, like their searches; else the book.
    pub fn key(&self) -> std::borrow::Cow<'_, str> {
        match self.reader() {
            Some(reader) => std::borrow::Cow::Borrowed(reader),
            None => std::borrow::Cow::Owned(self.book.id.to_string()),
        }
    }

    /// The version-1 JSON encoding.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = BookViewedV1 {
            id: self.id,
            kind: BOOK_VIEWED.to_owned(),
            version: BOOK_VIEWED_VERSION,
            occurred_at: self.occurred_at,
            user_id: self.user_id.clone(),
            client_id: self.client_id.clone(),
            book: self.book.clone(),
            source: self.source,
            rank: self.rank,
            reason: self.reason.clone(),
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

/// `book.viewed` version 1 on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct BookViewedV1 {
    id: Uuid,
    #[serde(rename = "type")]
    kind: String,
    version: u32,
    occurred_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    book: ResultBook,
    source: ViewSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rank: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The longest reason kind a view may carry.
const MAX_REASON_BYTES: usize = 32;

/// What a catalog event says happened to one book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogChange<'a> {
    /// Created or replaced: this is the book now.
    Upsert(&'a CatalogBook),
    /// Gone.
    Delete(i64),
}

/// Any event a consumer can receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    BookSearched(SearchEvent),
    BookCreated(BookEvent),
    BookUpdated(BookEvent),
    BookDeleted(BookDeletedEvent),
    ReaderForgotten(ReaderForgottenEvent),
    BookViewed(BookViewedEvent),
}

impl Event {
    /// The `book.created` event of a book just stored: a fresh UUID v7, now.
    pub fn created(book: &crate::Book) -> Self {
        Event::BookCreated(BookEvent::for_book(book))
    }

    /// The `book.updated` event of a book just replaced: a fresh UUID v7, now.
    pub fn updated(book: &crate::Book) -> Self {
        Event::BookUpdated(BookEvent::for_book(book))
    }

    /// The `book.deleted` event of a book just removed: a fresh UUID v7, now.
    pub fn deleted(book: crate::BookId) -> Self {
        Event::BookDeleted(BookDeletedEvent::new(Uuid::now_v7(), Utc::now(), book.0))
    }

    /// The search event, if this is one.
    pub fn as_search(&self) -> Option<&SearchEvent> {
        match self {
            Event::BookSearched(e) => Some(e),
            _ => None,
        }
    }

    /// The reader to forget, if this is a `reader.forgotten` event.
    pub fn as_forgotten(&self) -> Option<&ReaderForgottenEvent> {
        match self {
            Event::ReaderForgotten(e) => Some(e),
            _ => None,
        }
    }

    /// The view, if this is a `book.viewed` event.
    pub fn as_view(&self) -> Option<&BookViewedEvent> {
        match self {
            Event::BookViewed(e) => Some(e),
            _ => None,
        }
    }

    /// What this event does to the catalog, if it is a catalog event.
    pub fn catalog_change(&self) -> Option<CatalogChange<'_>> {
        match self {
            Event::BookSearched(_) | Event::ReaderForgotten(_) | Event::BookViewed(_) => None,
            Event::BookCreated(e) | Event::BookUpdated(e) => Some(CatalogChange::Upsert(&e.book)),
            Event::BookDeleted(e) => Some(CatalogChange::Delete(e.book_id)),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Event::BookSearched(_) => BOOK_SEARCHED,
            Event::BookCreated(_) => BOOK_CREATED,
            Event::BookUpdated(_) => BOOK_UPDATED,
            Event::BookDeleted(_) => BOOK_DELETED,
            Event::ReaderForgotten(_) => READER_FORGOTTEN,
            Event::BookViewed(_) => BOOK_VIEWED,
        }
    }

    /// The wire version this event was read from, or is written as.
    pub fn version(&self) -> u32 {
        match self {
            Event::BookSearched(e) => e.version,
            Event::BookCreated(e) | Event::BookUpdated(e) => e.version,
            Event::BookDeleted(e) => e.version,
            Event::ReaderForgotten(e) => e.version,
            Event::BookViewed(e) => e.version,
        }
    }

    /// The log key: events with the same key stay in order on one partition.
    pub fn key(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Event::BookSearched(e) => e.key().into(),
            Event::BookCreated(e) | Event::BookUpdated(e) => e.key().into(),
            Event::BookDeleted(e) => e.key().into(),
            Event::ReaderForgotten(e) => e.key().into(),
            Event::BookViewed(e) => e.key(),
        }
    }

    /// The current-version JSON encoding.
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            Event::BookSearched(e) => e.to_json(),
            Event::BookCreated(e) => e.to_json_as(BOOK_CREATED),
            Event::BookUpdated(e) => e.to_json_as(BOOK_UPDATED),
            Event::BookDeleted(e) => e.to_json(),
            Event::ReaderForgotten(e) => e.to_json(),
            Event::BookViewed(e) => e.to_json(),
        }
    }
}

/// Why a message could not be read as an event. Such a message is dead-lettered, never retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the value is not JSON: {0}")]
    NotJson(String),
    #[error("the value is a JSON {0}, not an object or an array")]
    WrongShape(&'static str),
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("{kind} version {version} is not supported (this build reads up to {supported})")]
    UnsupportedVersion {
        kind: String,
        version: u32,
        supported: u32,
    },
    #[error("invalid {kind} event: {reason}")]
    Invalid { kind: String, reason: String },
    #[error("a version-0 event needs a key holding the query")]
    MissingKey,
    #[error("the key is not UTF-8")]
    KeyNotUtf8,
    #[error("the query is empty")]
    EmptyQuery,
}

/// Reads one message. `timestamp` is the log's timestamp, used for version-0 events, which carry
/// no time of their own.
pub fn decode(
    key: Option<&[u8]>,
    value: &[u8],
    timestamp: Option<DateTime<Utc>>,
) -> Result<Event, DecodeError> {
    // The first byte tells the versions apart: an object is version 1 or later, an array is the
    // tutorial's version 0. Each is read straight into its struct, never through a `Value`.
    match value.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => decode_object(value),
        Some(b'[') => decode_legacy(key, value, timestamp),
        _ => Err(match serde_json::from_slice::<serde_json::Value>(value) {
            Err(e) => DecodeError::NotJson(e.to_string()),
            Ok(serde_json::Value::Null) => DecodeError::WrongShape("null"),
            Ok(serde_json::Value::Bool(_)) => DecodeError::WrongShape("boolean"),
            Ok(serde_json::Value::Number(_)) => DecodeError::WrongShape("number"),
            Ok(_) => DecodeError::WrongShape("string"),
        }),
    }
}

/// A JSON error while reading a `kind`: broken JSON, or JSON of the wrong shape.
fn json_error(kind: &str, error: &serde_json::Error) -> DecodeError {
    if error.is_syntax() || error.is_eof() {
        DecodeError::NotJson(error.to_string())
    } else {
        DecodeError::Invalid {
            kind: kind.to_owned(),
            reason: error.to_string(),
        }
    }
}

fn decode_object(value: &[u8]) -> Result<Event, DecodeError> {
    let envelope: Envelope = serde_json::from_slice(value).map_err(|e| json_error("event", &e))?;
    match envelope.kind.as_str() {
        BOOK_SEARCHED => {
            envelope.require(BOOK_SEARCHED_VERSION)?;
            let wire: SearchEventV1 =
                serde_json::from_slice(value).map_err(|e| json_error(BOOK_SEARCHED, &e))?;
            let query_normalized = normalize_query(&wire.query_normalized);
            if query_normalized.is_empty() {
                return Err(DecodeError::EmptyQuery);
            }
            Ok(Event::BookSearched(SearchEvent {
                id: wire.id,
                version: wire.version,
                occurred_at: wire.occurred_at,
                user_id: identity("user_id", wire.user_id)?,
                client_id: identity("client_id", wire.client_id)?,
                query: clean_query(&wire.query),
                query_normalized,
                offset: wire.offset,
                results: wire.results,
                result_details: Vec::new(),
            }))
        }
        BOOK_CREATED | BOOK_UPDATED => {
            // Both are at version 1.
            envelope.require(BOOK_CREATED_VERSION)?;
            let wire: BookV1 =
                serde_json::from_slice(value).map_err(|e| json_error(&envelope.kind, &e))?;
            let event = BookEvent::new(wire.id, wire.occurred_at, wire.book);
            Ok(if envelope.kind == BOOK_CREATED {
                Event::BookCreated(event)
            } else {
                Event::BookUpdated(event)
            })
        }
        BOOK_DELETED => {
            envelope.require(BOOK_DELETED_VERSION)?;
            let wire: BookDeletedV1 =
                serde_json::from_slice(value).map_err(|e| json_error(BOOK_DELETED, &e))?;
            Ok(Event::BookDeleted(BookDeletedEvent::new(
                wire.id,
                wire.occurred_at,
                wire.book_id,
            )))
        }
        READER_FORGOTTEN => {
            envelope.require(READER_FORGOTTEN_VERSION)?;
            let wire: ReaderForgottenV1 =
                serde_json::from_slice(value).map_err(|e| json_error(READER_FORGOTTEN, &e))?;
            let user_id =
                identity("user_id", Some(wire.user_id))?.ok_or_else(|| DecodeError::Invalid {
                    kind: READER_FORGOTTEN.to_owned(),
                    reason: "user_id is empty".to_owned(),
                })?;
            Ok(Event::ReaderForgotten(ReaderForgottenEvent::new(
                wire.id,
                wire.occurred_at,
                user_id,
            )))
        }
        BOOK_VIEWED => {
            envelope.require(BOOK_VIEWED_VERSION)?;
            let wire: BookViewedV1 =
                serde_json::from_slice(value).map_err(|e| json_error(BOOK_VIEWED, &e))?;
            let invalid = |reason: String| DecodeError::Invalid {
                kind: BOOK_VIEWED.to_owned(),
                reason,
            };
            if wire.rank.is_some_and(|r| r > MAX_VIEW_RANK) {
                return Err(invalid(format!("rank must be at most {MAX_VIEW_RANK}")));
            }
            let reason = match wire.reason {
                Some(r) if r.is_empty() => None,
                Some(r)
                    if r.len() > MAX_REASON_BYTES
                        || !r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
                {
                    return Err(invalid(format!(
                        "reason must be at most {MAX_REASON_BYTES} lowercase letters or _"
                    )));
                }
                other => other,
            };
            Ok(Event::BookViewed(BookViewedEvent {
                id: wire.id,
                version: wire.version,
                occurred_at: wire.occurred_at,
                user_id: identity("user_id", wire.user_id)?,
                client_id: identity("client_id", wire.client_id)?,
                book: wire.book,
                source: wire.source,
                rank: wire.rank,
                reason,
            }))
        }
        _ => Err(DecodeError::UnknownType(envelope.kind)),
    }
}

fn decode_legacy(
    key: Option<&[u8]>,
    raw_value: &[u8],
    timestamp: Option<DateTime<Utc>>,
) -> Result<Event, DecodeError> {
    let key = key.ok_or(DecodeError::MissingKey)?;
    let key = std::str::from_utf8(key).map_err(|_| DecodeError::KeyNotUtf8)?;
    let (query, user_id) = split_legacy_key(key);
    let user_id = identity("user id", user_id.map(str::to_owned))?;
    let query = clean_query(query);
    let query_normalized = normalize_query(&query);
    if query_normalized.is_empty() {
        return Err(DecodeError::EmptyQuery);
    }
    let books: Vec<LegacyBook> =
        serde_json::from_slice(raw_value).map_err(|e| json_error("version-0 search", &e))?;
    let results = books
        .into_iter()
        .map(|b| ResultBook {
            id: b.id,
            title: b.title,
            author: b.author,
            published_at: b
                .published_at
                .and_then(|d| PublishedDate::parse(d.get(..10).unwrap_or(&d))),
        })
        .collect();
    let mut name = Vec::with_capacity(key.len() + raw_value.len() + 1);
    name.extend_from_slice(key.as_bytes());
    name.push(0);
    name.extend_from_slice(raw_value);
    Ok(Event::BookSearched(SearchEvent {
        id: Uuid::new_v5(&LEGACY_ID_NAMESPACE, &name),
        version: LEGACY_VERSION,
        occurred_at: timestamp.unwrap_or(DateTime::UNIX_EPOCH),
        user_id,
        client_id: None,
        query,
        query_normalized,
        offset: 0,
        results,
        result_details: Vec::new(),
    }))
}

/// A user or client id as read: empty is none; longer than [`MAX_ID_BYTES`] or holding control
/// characters, the event is invalid (a consumer would otherwise keep whatever a producer sent).
fn identity(field: &str, value: Option<String>) -> Result<Option<String>, DecodeError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) if v.len() > MAX_ID_BYTES || v.chars().any(char::is_control) => {
            Err(DecodeError::Invalid {
                kind: BOOK_SEARCHED.to_owned(),
                reason: format!(
                    "{field} must be at most {MAX_ID_BYTES} bytes without control characters"
                ),
            })
        }
        Some(v) => Ok(Some(v)),
    }
}

/// Splits a tutorial key into the query and the user: the user is the text after the LAST `:`
/// (user ids never contain one); `<query>:` and a bare `<query>` are anonymous.
pub fn split_legacy_key(key: &str) -> (&str, Option<&str>) {
    match key.rsplit_once(':') {
        Some((query, user)) if !user.is_empty() => (query, Some(user)),
        Some((query, _)) => (query, None),
        None => (key, None),
    }
}

/// The form under which queries are compared and counted: Unicode NFKC, case-folded, trimmed, with
/// runs of inner whitespace collapsed to one space, and at most [`MAX_QUERY_CHARS`] characters (a
/// few characters grow under NFKC). `"  Ｒust\tBOOKS "` becomes `"rust books"`.
pub fn normalize_query(query: &str) -> String {
    let mut normalized = normalize_whole(query);
    if let Some((cut, _)) = normalized.char_indices().nth(MAX_QUERY_CHARS) {
        normalized.truncate(cut);
        let end = normalized.trim_end().len();
        normalized.truncate(end);
    }
    normalized
}

fn normalize_whole(query: &str) -> String {
    if query.is_ascii() {
        // NFKC leaves ASCII as it is and case folding ASCII is lower-casing: the same result,
        // without the Unicode tables.
        let mut out = String::with_capacity(query.len());
        for word in query.split_whitespace() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.extend(word.chars().map(|c| c.to_ascii_lowercase()));
        }
        return out;
    }
    normalize_unicode(query)
}

/// [`normalize_query`] for any text.
fn normalize_unicode(query: &str) -> String {
    let composed: String = query.nfkc().collect();
    let folded = caseless::default_case_fold_str(&composed);
    let mut out = String::with_capacity(folded.len());
    for word in folded.nfkc().collect::<String>().split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn sample() -> SearchEvent {
        SearchEvent::new(
            Uuid::now_v7(),
            DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            Some("0b1c7a52-0c4e-4c1e-9d0e-9a1f0e2c3d4e".into()),
            "  Pride   and Prejudice ",
            5,
            vec![ResultBook {
                id: 7,
                title: "Pride and Prejudice".into(),
                author: "Jane Austen".into(),
                published_at: NaiveDate::from_ymd_opt(1813, 1, 28).map(Into::into),
            }],
        )
    }

    fn view(source: ViewSource, rank: Option<u32>, reason: Option<&str>) -> BookViewedEvent {
        BookViewedEvent::now(
            Some("reader-1".into()),
            Some("client-1".into()),
            sample().results[0].clone(),
            source,
            rank,
            reason.map(str::to_owned),
        )
    }

    #[test]
    fn book_viewed_round_trips_and_is_keyed_by_its_reader() {
        for source in ViewSource::ALL {
            let event = view(source, Some(3), Some("author"));
            let json = event.to_json();
            let decoded = decode(None, &json, None).unwrap();
            assert_eq!(decoded.kind(), BOOK_VIEWED);
            assert_eq!(decoded.key(), "reader-1");
            assert_eq!(decoded, Event::BookViewed(event));
            assert_eq!(ViewSource::parse(source.as_str()), Some(source));
        }
        let anonymous = BookViewedEvent {
            user_id: None,
            client_id: None,
            ..view(ViewSource::Direct, None, None)
        };
        assert_eq!(Event::BookViewed(anonymous.clone()).key(), "7");
        let json = String::from_utf8(anonymous.to_json()).unwrap();
        assert!(
            !json.contains("rank") && !json.contains("user_id"),
            "{json}"
        );
        assert!(json.contains(r#""source":"direct""#), "{json}");
    }

    #[test]
    fn book_viewed_refuses_what_it_cannot_mean() {
        let good = String::from_utf8(view(ViewSource::Search, Some(1), None).to_json()).unwrap();
        let bad = [
            good.replace(r#""source":"search""#, r#""source":"banner""#),
            good.replace(r#""rank":1"#, r#""rank":10001"#),
            good.replace(r#""rank":1"#, r#""rank":-1"#),
            good.replace(r#""rank":1"#, r#""rank":1,"reason":"Because!""#),
            good.replace(r#""version":1"#, r#""version":2"#),
            good.replace(r#""book":{"#, r#""bk":{"#),
        ];
        for value in bad {
            assert!(decode(None, value.as_bytes(), None).is_err(), "{value}");
        }
    }

    #[test]
    fn version_1_round_trips_every_field() {
        let event = sample();
        let decoded = decode(Some(event.key().as_bytes()), &event.to_json(), None).unwrap();
        assert_eq!(decoded, Event::BookSearched(event));
    }

    #[test]
    fn version_1_wire_shape() {
        let event = sample();
        let json: serde_json::Value = serde_json::from_slice(&event.to_json()).unwrap();
        assert_eq!(json["type"], "book.searched");
        assert_eq!(json["version"], 1);
        assert_eq!(json["occurred_at"], "2026-11-26T10:00:00Z");
        assert_eq!(
            json["query"], "Pride   and Prejudice",
            "cleaned like the search's text"
        );
        assert_eq!(json["query_normalized"], "pride and prejudice");
        assert_eq!(json["offset"], 5);
        assert_eq!(json["results"][0]["published_at"], "1813-01-28");
        assert_eq!(json["id"].as_str().unwrap().len(), 36);
    }

    #[test]
    fn anonymous_events_omit_the_user_and_key_on_the_query() {
        let mut event = sample();
        event.user_id = None;
        let json: serde_json::Value = serde_json::from_slice(&event.to_json()).unwrap();
        assert!(json.get("user_id").is_none());
        assert_eq!(event.key(), "pride and prejudice");
    }

    #[test]
    fn anonymous_searches_carry_and_key_on_their_client() {
        let mut event = sample().with_client(Some("c-0123456789abcdef".into()));
        event.user_id = None;
        assert_eq!(event.key(), "c-0123456789abcdef");
        assert_eq!(event.reader(), Some("c-0123456789abcdef"));
        let decoded = decode(None, &event.to_json(), None).unwrap();
        assert_eq!(decoded, Event::BookSearched(event.clone()));
        // A user outranks the client.
        event.user_id = Some("u".into());
        assert_eq!((event.key(), event.reader()), ("u", Some("u")));
    }

    #[test]
    fn queries_users_and_keys_are_bounded() {
        // A 60,000-character query makes an event of the bounded query, with a bounded key.
        let huge = "x".repeat(60_000);
        let mut event = SearchEvent::new(Uuid::now_v7(), Utc::now(), None, &huge, 0, vec![]);
        assert_eq!(event.query.chars().count(), MAX_QUERY_CHARS);
        assert!(event.key().len() <= MAX_KEY_BYTES);
        assert!(event.to_json().len() < 1_000, "{}", event.to_json().len());
        // A producer that sends more is cut on reading, like the search cuts it.
        event.query = huge.clone();
        event.query_normalized = huge;
        let read = decode(None, &event.to_json(), None).unwrap();
        let read = read.as_search().unwrap();
        assert_eq!(read.query.chars().count(), MAX_QUERY_CHARS);
        assert_eq!(read.query_normalized.chars().count(), MAX_QUERY_CHARS);
        // NFKC can grow a character 18-fold; the normalized query stays bounded.
        assert_eq!(
            normalize_query(&"\u{fdfa}".repeat(MAX_QUERY_CHARS))
                .chars()
                .count(),
            MAX_QUERY_CHARS
        );
        // Control characters in a query become spaces.
        let typed = SearchEvent::new(Uuid::now_v7(), Utc::now(), None, "a\u{1b}[2Jb", 0, vec![]);
        assert_eq!(typed.query, "a [2Jb");
        // Ids longer than the bound, or with control characters, make the event invalid.
        for (field, bad) in [("user_id", "u".repeat(65)), ("client_id", "c\u{0}".into())] {
            let mut json: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
            json[field] = bad.into();
            assert!(
                matches!(
                    decode(None, json.to_string().as_bytes(), None),
                    Err(DecodeError::Invalid { .. })
                ),
                "{field}"
            );
        }
        let long_uid = format!("q:{}", "u".repeat(65));
        assert!(decode(Some(long_uid.as_bytes()), b"[]", None).is_err());
    }

    #[test]
    fn unknown_fields_are_ignored_within_a_version() {
        let event = sample();
        let mut json: serde_json::Value = serde_json::from_slice(&event.to_json()).unwrap();
        json["added_later"] = serde_json::json!({"x": 1});
        let decoded = decode(None, json.to_string().as_bytes(), None).unwrap();
        assert_eq!(decoded, Event::BookSearched(event));
    }

    #[test]
    fn newer_versions_and_unknown_types_are_rejected() {
        let event = sample();
        let mut json: serde_json::Value = serde_json::from_slice(&event.to_json()).unwrap();
        json["version"] = 2.into();
        assert!(matches!(
            decode(None, json.to_string().as_bytes(), None),
            Err(DecodeError::UnsupportedVersion { version: 2, .. })
        ));
        json["type"] = "book.sold".into();
        assert!(matches!(
            decode(None, json.to_string().as_bytes(), None),
            Err(DecodeError::UnknownType(t)) if t == "book.sold"
        ));
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        for value in [
            &b""[..],
            b"not json",
            b"null",
            b"42",
            b"\"s\"",
            b"{}",
            b"{\"type\":\"book.searched\",\"version\":1}",
            b"[{\"id\":\"x\"}]",
            b"\xff\xfe",
        ] {
            assert!(decode(Some(b"q:u"), value, None).is_err(), "{value:?}");
        }
        assert_eq!(decode(None, b"[]", None), Err(DecodeError::MissingKey));
        assert_eq!(
            decode(Some(b"\xff"), b"[]", None),
            Err(DecodeError::KeyNotUtf8)
        );
        assert_eq!(
            decode(Some(b"  :u"), b"[]", None),
            Err(DecodeError::EmptyQuery)
        );
    }

    const LEGACY_VALUE: &[u8] = br#"[{"id": 3, "title": "Dune", "author": "Frank Herbert",
        "published_at": "1965-08-01", "description": "Spice.", "created_at": "2024-05-01 10:00:00"}]"#;

    fn legacy(key: &str) -> SearchEvent {
        let ts = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let event = decode(Some(key.as_bytes()), LEGACY_VALUE, Some(ts)).unwrap();
        event.as_search().cloned().unwrap()
    }

    #[test]
    fn version_0_reads_query_user_and_books() {
        let e = legacy("Dune:ab12x");
        assert_eq!(e.version, 0);
        assert_eq!(e.query, "Dune");
        assert_eq!(e.query_normalized, "dune");
        assert_eq!(e.user_id.as_deref(), Some("ab12x"));
        assert_eq!(e.results.len(), 1);
        assert_eq!(e.results[0].title, "Dune");
        assert_eq!(
            e.results[0].published_at,
            NaiveDate::from_ymd_opt(1965, 8, 1).map(Into::into)
        );
        assert_eq!(e.occurred_at.to_rfc3339(), "2024-05-01T10:00:00+00:00");
        // The same message always gets the same id.
        assert_eq!(e.id, legacy("Dune:ab12x").id);
        assert_ne!(e.id, legacy("Dune:zz99z").id);
    }

    #[test]
    fn version_0_query_with_colons_keeps_them() {
        let e = legacy("c++: the language: 2nd ed:ab12x");
        assert_eq!(e.query, "c++: the language: 2nd ed");
        assert_eq!(e.user_id.as_deref(), Some("ab12x"));
    }

    #[test]
    fn version_0_api_and_bare_keys_are_anonymous() {
        let api = legacy("rust:");
        assert_eq!((api.query.as_str(), api.user_id), ("rust", None));
        let bare = legacy("rust");
        assert_eq!((bare.query.as_str(), bare.user_id), ("rust", None));
        let colon_api = legacy("std::io:");
        assert_eq!(
            (colon_api.query.as_str(), colon_api.user_id),
            ("std::io", None)
        );
    }

    #[test]
    fn version_0_tolerates_missing_or_odd_dates() {
        let v = br#"[{"id":1,"title":"T","author":"A"},{"id":2,"title":"T","author":"A","published_at":"1999"},{"id":3,"title":"T","author":"A","published_at":"someday"}]"#;
        let event = decode(Some(b"q:"), v, None).unwrap();
        let e = event.as_search().unwrap();
        assert_eq!(e.results[0].published_at, None);
        // A year alone is kept as a year.
        assert_eq!(e.results[1].published_at, Some(PublishedDate::Year(1999)));
        assert_eq!(e.results[2].published_at, None);
    }

    #[test]
    fn the_ascii_shortcut_normalizes_like_the_unicode_path() {
        let every_ascii: String = (0u8..128).map(char::from).collect();
        for text in [
            every_ascii.as_str(),
            "  Rust\x0bLANG\t\x1c x ",
            "C++: The Language",
            "ABC xyz 123",
        ] {
            assert_eq!(normalize_query(text), normalize_unicode(text), "{text:?}");
        }
    }

    #[test]
    fn book_created_round_trips_and_is_keyed_by_book() {
        let book = CatalogBook {
            isbn: None,
            id: 42,
            title: "Emma".into(),
            author: "Jane Austen".into(),
            published_at: NaiveDate::from_ymd_opt(1815, 12, 23)
                .unwrap_or_default()
                .into(),
            description: String::new(),
            created_at: Utc::now(),
        };
        let event = BookEvent::new(Uuid::now_v7(), Utc::now(), book);
        let json: serde_json::Value = serde_json::from_slice(&event.to_json()).unwrap_or_default();
        assert_eq!(json["type"], "book.created");
        assert_eq!(json["version"], 1);
        assert_eq!(json["book"]["published_at"], "1815-12-23");
        let decoded = decode(Some(b"42"), &event.to_json(), None);
        assert_eq!(decoded, Ok(Event::BookCreated(event.clone())));
        assert_eq!(Event::BookCreated(event).key(), "42");
        let newer = br#"{"type":"book.created","version":2}"#;
        assert!(matches!(
            decode(None, newer, None),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn book_updated_and_deleted_round_trip_and_are_keyed_by_book() {
        let book = CatalogBook {
            isbn: None,
            id: 7,
            title: "Emma (revised)".into(),
            author: "Jane Austen".into(),
            published_at: NaiveDate::from_ymd_opt(1815, 12, 23)
                .unwrap_or_default()
                .into(),
            description: "New.".into(),
            created_at: Utc::now(),
        };
        let updated = Event::BookUpdated(BookEvent::new(Uuid::now_v7(), Utc::now(), book.clone()));
        let json: serde_json::Value =
            serde_json::from_slice(&updated.to_json()).unwrap_or_default();
        assert_eq!(json["type"], "book.updated");
        assert_eq!(json["book"]["title"], "Emma (revised)");
        assert_eq!(decode(None, &updated.to_json(), None), Ok(updated.clone()));
        assert_eq!(updated.key(), "7");
        assert_eq!(updated.kind(), BOOK_UPDATED);
        assert_eq!(updated.catalog_change(), Some(CatalogChange::Upsert(&book)));

        let deleted = Event::deleted(crate::BookId(7));
        let json: serde_json::Value =
            serde_json::from_slice(&deleted.to_json()).unwrap_or_default();
        assert_eq!(json["type"], "book.deleted");
        assert_eq!(json["version"], 1);
        assert_eq!(json["book_id"], 7);
        assert_eq!(
            decode(Some(b"7"), &deleted.to_json(), None),
            Ok(deleted.clone())
        );
        assert_eq!(deleted.key(), "7");
        assert_eq!(deleted.catalog_change(), Some(CatalogChange::Delete(7)));
        assert_eq!(deleted.as_search(), None);

        for newer in [
            &br#"{"type":"book.updated","version":2}"#[..],
            br#"{"type":"book.deleted","version":2}"#,
        ] {
            assert!(matches!(
                decode(None, newer, None),
                Err(DecodeError::UnsupportedVersion { .. })
            ));
        }
        let no_id = br#"{"id":"019aef6e-41d2-7c3e-9a0b-4c1d2e3f4a5b","type":"book.deleted","version":1,"occurred_at":"2026-12-06T20:10:00Z"}"#;
        assert!(matches!(
            decode(None, no_id, None),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize_query("Rust"), "rust");
        assert_eq!(normalize_query(" rust "), "rust");
        assert_eq!(normalize_query("RUST\t\n  programming"), "rust programming");
        // Compatibility forms: full-width letters, ligatures, superscripts.
        assert_eq!(normalize_query("Ｒｕｓｔ"), "rust");
        assert_eq!(normalize_query("ﬁnance"), "finance");
        assert_eq!(normalize_query("x²"), "x2");
        // Full case folding, not just lower-casing.
        assert_eq!(normalize_query("Straße"), "strasse");
        assert_eq!(normalize_query("ΣΊΣΥΦΟΣ"), normalize_query("σίσυφος"));
        // Composed and decomposed accents are one query.
        assert_eq!(normalize_query("Bronte\u{308}"), normalize_query("Brontë"));
        assert_eq!(normalize_query(" \u{3000} "), "");
    }
}
