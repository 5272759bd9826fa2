//! SQLite adapters. [`SqliteBookRepository`] keeps the catalog in one database file in WAL mode,
//! searched through an FTS5 index ranked with bm25.

mod books;
mod outbox;
pub mod positions;
mod query_counts;
mod recommend;
mod trends;

pub use books::SqliteBookRepository;
pub use outbox::SqliteOutbox;
pub use query_counts::SqliteQueryCounts;
pub use recommend::SqliteRecommendations;
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
pub async fn connect(url: &str, max_connections: u32) -> Result<SqlitePool, OpenError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|source| OpenError::InvalidUrl {
            url: url.to_owned(),
            source,
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
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

pub(crate) fn repo_error(err: sqlx::Error) -> RepositoryError {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => RepositoryError::Unavailable(Box::new(err)),
        sqlx::Error::Database(ref db)
            if matches!(db.code().as_deref(), Some("5" | "6" | "261" | "517")) =>
        {
            // SQLITE_BUSY, SQLITE_LOCKED and their extended codes: another writer holds the lock.
            RepositoryError::Unavailable(Box::new(err))
        }
        other => RepositoryError::Internal(Box::new(other)),
    }
}
