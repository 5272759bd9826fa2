//! SQLite adapters. [`SqliteBookRepository`] keeps the catalog in one database file in WAL mode,
//! searched through an FTS5 index ranked with bm25.

mod books;
mod outbox;
pub mod positions;
mod query_counts;
mod recommend;
mod trends;

pub use books::SqliteBookRepository;
pub use outbox::{LEASE as OUTBOX_LEASE, SqliteOutbox};
pub use query_counts::SqliteQueryCounts;
pub use recommend::{SqliteDialect, SqliteRecommendations};
pub use trends::SqliteTrends;

use std::str::FromStr;
use std::time::Duration;

use bookstore_domain::RepositoryError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid SQLite URL {url:?}")]
    InvalidUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot open the SQLite database {url:?}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the SQLite database {url:?}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// Opens (creating if needed) the SQLite database at `url` (`sqlite://path/to/file.db`) with a pool
/// of up to `max_connections`, in WAL mode so that readers never wait for the writer.
/// How long a statement waits for another connection's lock before SQLite answers busy.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn connect(url: &str, max_connections: u32) -> Result<SqlitePool, OpenError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|source| OpenError::InvalidUrl {
            url: url.to_owned(),
            source,
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        .pragma("temp_store", "memory")
        .pragma("cache_size", "-65536")
        // Read pages straight from the OS page cache instead of copying them: index lookups on a
        // large catalog are several times faster. It reserves address space, not memory.
        .pragma("mmap_size", "4294967296");
    SqlitePoolOptions::new()
        .max_connections(max_connections.max(1))
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|source| OpenError::Connect {
            url: url.to_owned(),
            source,
        })
}

/// Whether SQLite refused for another writer: `SQLITE_BUSY` and `SQLITE_LOCKED`, with their
/// extended codes.
pub(crate) fn is_busy(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("5" | "6" | "261" | "517")))
}

/// How long a write is retried while SQLite reports the database busy.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(10);

/// Runs the transaction `op` again, from the start, while SQLite answers busy. The busy timeout
/// makes a writer wait for the lock, but in some cases SQLite refuses at once without calling the
/// busy handler (where waiting could deadlock, such as a read snapshot another writer has moved
/// past); the remedy it documents is to run the transaction again. We saw such immediate refusals
/// with API writes next to the outbox relay's.
pub(crate) async fn retry_busy<T, F, Fut>(mut op: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let deadline = std::time::Instant::now() + BUSY_RETRY_FOR;
    let mut pause = Duration::from_millis(2);
    loop {
        match op().await {
            Err(err) if is_busy(&err) && std::time::Instant::now() < deadline => {
                tracing::debug!(error = %err, "SQLite busy; running the transaction again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            done => return done,
        }
    }
}

pub(crate) fn repo_error(err: sqlx::Error) -> RepositoryError {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => RepositoryError::Unavailable(Box::new(err)),
        ref busy if is_busy(busy) => {
            // SQLITE_BUSY, SQLITE_LOCKED and their extended codes: another writer holds the lock.
            RepositoryError::Unavailable(Box::new(err))
        }
        // The ISBN's unique index (`books.isbn` in SQLite's message, `books_isbn` in MySQL's).
        sqlx::Error::Database(ref db)
            if db.is_unique_violation() && db.message().contains("isbn") =>
        {
            RepositoryError::Conflict(bookstore_domain::ports::ISBN_TAKEN.to_owned())
        }
        other => RepositoryError::Internal(Box::new(other)),
    }
}

/// A publication date as the catalog stores it: text, `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
pub(crate) struct DbDate(pub bookstore_domain::PublishedDate);

impl sqlx::Type<sqlx::Sqlite> for DbDate {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as sqlx::Type<sqlx::Sqlite>>::type_info()
    }

    fn compatible(ty: &sqlx::sqlite::SqliteTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Sqlite>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for DbDate {
    fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::Sqlite>>::decode(value)?;
        bookstore_domain::PublishedDate::parse(text)
            .map(DbDate)
            .ok_or_else(|| format!("not a publication date: {text:?}").into())
    }
}
