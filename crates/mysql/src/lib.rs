//! MySQL/MariaDB adapters. [`MySqlBookRepository`] keeps the catalog in InnoDB tables searched
//! through FULLTEXT indexes in boolean mode, ranked by relevance. [`MySqlRecommendations`] keeps
//! the recommendation service's state, with its consumer [`positions`] in the same database.

mod books;
mod outbox;
pub mod positions;
mod recommend;

pub use books::MySqlBookRepository;
pub use outbox::MySqlOutbox;
pub use recommend::{MySqlDialect, MySqlRecommendations};

use std::str::FromStr;
use std::time::Duration;

use bookstore_domain::RepositoryError;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid MySQL URL (expected mysql://user:password@host:port/database)")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("cannot connect to MySQL at {host}:{port}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create the MySQL database")]
    Create(#[source] sqlx::Error),
    #[error("cannot migrate the MySQL database")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Connects a pool of up to `max_connections` to the database at `url`
/// (`mysql://user:password@host:port/database`). Connections are checked before use and replaced
/// when the server restarted, so the pool recovers by itself.
pub async fn connect(url: &str, max_connections: u32) -> Result<MySqlPool, OpenError> {
    let options = MySqlConnectOptions::from_str(url)
        .map_err(OpenError::InvalidUrl)?
        .charset("utf8mb4");
    let host = options.get_host().to_owned();
    let port = options.get_port();
    MySqlPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(true)
        .connect_with(options)
        .await
        .map_err(|source| OpenError::Connect { host, port, source })
}

pub(crate) fn repo_error(err: sqlx::Error) -> RepositoryError {
    match err {
        // A connection broken mid-packet (a server going down or coming up while a connection
        // is being opened: sqlx's pool passes such errors on at once) is the server being away.
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => RepositoryError::Unavailable(Box::new(err)),
        // Lock wait timeout, deadlock, server shutting down, too many connections, connection
        // or query killed (a server restart or an administrator).
        sqlx::Error::Database(ref db)
            if matches!(
                db.code().as_deref(),
                Some("HY000" | "40001" | "08S01" | "08004" | "70100")
            ) && db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|e| {
                    matches!(
                        e.number(),
                        1205 | 1213 | 1053 | 1040 | 2006 | 2013 | 1317 | 1927
                    )
                }) =>
        {
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

/// Creates the database `url` names if the server has none by that name (the recommendation
/// service's own database, for example). Needs the CREATE privilege when it is missing.
pub async fn create_database_if_missing(url: &str) -> Result<(), OpenError> {
    use sqlx::migrate::MigrateDatabase;
    let exists = sqlx::MySql::database_exists(url).await.map_err(|source| {
        let options = MySqlConnectOptions::from_str(url).ok();
        OpenError::Connect {
            host: options
                .as_ref()
                .map(|o| o.get_host().to_owned())
                .unwrap_or_default(),
            port: options.as_ref().map(|o| o.get_port()).unwrap_or_default(),
            source,
        }
    })?;
    if !exists {
        sqlx::MySql::create_database(url)
            .await
            .map_err(OpenError::Create)?;
    }
    Ok(())
}

/// A pooled connection whose next transaction (or statement) runs at READ COMMITTED: it locks the
/// rows it touches and no gap between them, so other writers do not wait for it.
pub(crate) async fn read_committed(
    pool: &sqlx::MySqlPool,
) -> Result<sqlx::pool::PoolConnection<sqlx::MySql>, RepositoryError> {
    use sqlx::Executor;
    let mut conn = pool.acquire().await.map_err(repo_error)?;
    (&mut *conn)
        .execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .map_err(repo_error)?;
    Ok(conn)
}

/// A publication date as the catalog stores it: text, `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
pub(crate) struct DbDate(pub bookstore_domain::PublishedDate);

impl sqlx::Type<sqlx::MySql> for DbDate {
    fn type_info() -> sqlx::mysql::MySqlTypeInfo {
        <String as sqlx::Type<sqlx::MySql>>::type_info()
    }

    fn compatible(ty: &sqlx::mysql::MySqlTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::MySql>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::MySql> for DbDate {
    fn decode(value: sqlx::mysql::MySqlValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::MySql>>::decode(value)?;
        bookstore_domain::PublishedDate::parse(text)
            .map(DbDate)
            .ok_or_else(|| format!("not a publication date: {text:?}").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_the_server_being_away() {
        for error in [
            sqlx::Error::Protocol("unexpected end of stream".into()),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ] {
            assert!(matches!(repo_error(error), RepositoryError::Unavailable(_)));
        }
        assert!(matches!(
            repo_error(sqlx::Error::RowNotFound),
            RepositoryError::Internal(_)
        ));
    }
}
