//! Ports: what the services need from storage, named by role. Adapters implement them per
//! technology (`SqliteBookRepository`, `MySqlBookRepository`).

use async_trait::async_trait;

use crate::book::{Book, BookId, NewBook};
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
