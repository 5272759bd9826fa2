//! The bookstore's domain: books, the rules a book must follow, search requests, and the ports
//! (traits) through which services reach their storage. This crate does no I/O; adapters such as
//! `bookstore-sqlite` and `bookstore-mysql` implement its ports.

pub mod book;
pub mod date;
pub mod events;
pub mod import;
pub mod isbn;
pub mod ports;
pub mod recommend;
pub mod search;
pub mod trends;

pub use book::{Book, BookId, FieldErrors, NewBook, NewBookInput, ValidationError};
pub use date::PublishedDate;
pub use import::ImportPlan;
pub use isbn::Isbn;
pub use ports::{
    Batch, BookRepository, BookSearch, DeadLetteredRow, Delivery, EventHandler, EventPublisher,
    HandlerError, Imported, Outbox, OutboxRow, OutboxSink, Position, PositionUpdate, Published,
    RecommendStore, Record, Refusal, Relayed, RepositoryError, RowOutcome, Settlement, StoredEvent,
    TopicPartition, TrendStore,
};
pub use search::{
    BookQuery, Highlights, MAX_EXACT_TOTAL, MAX_SUGGESTIONS, Marked, SearchPage, Suggestion,
    SuggestionKind, Term, search_terms,
};
