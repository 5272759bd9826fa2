//! The recommendation store on MySQL/MariaDB: [`bookstore_sql::SqlRecommendations`] with MySQL's
//! statements, in InnoDB tables. Several consumer instances may apply batches at once, each of
//! the partitions it owns, kept apart by row locks ([`Locking::Rows`]).
//!
//! Names, queries, titles and user ids use the `utf8mb4_bin` collation, so that they compare
//! exactly as in SQLite (no case or accent folding).

use bookstore_domain::{Batch, HandlerError, Position, RepositoryError};
use bookstore_sql::{Dialect, Locking, SqlRecommendations};
use sqlx::mysql::{MySqlArguments, MySqlConnection, MySqlPool, MySqlQueryResult, MySqlRow};
use sqlx::query::Query;
use sqlx::{MySql, QueryBuilder, Row};

use crate::positions;

/// Recommendations in a MySQL or MariaDB database.
pub type MySqlRecommendations = SqlRecommendations<MySqlDialect>;

/// MySQL's statements for [`MySqlRecommendations`].
#[derive(Debug)]
pub struct MySqlDialect;

impl Dialect for MySqlDialect {
    type Db = MySql;

    /// The tables, created if missing. Keys stay within InnoDB's 3072 bytes: 4 bytes a character
    /// in utf8mb4, so a query of 500 characters (2000 bytes) with a partition number.
    const SCHEMA: &'static [&'static str] = &[
        concat!(
            "CREATE TABLE IF NOT EXISTS rec_books (id BIGINT NOT NULL PRIMARY KEY, ",
            "title TEXT NOT NULL, author VARCHAR(255) NOT NULL, ",
            "KEY rec_books_by_author (author, id)) ",
            "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
        ),
        concat!(
            "CREATE TABLE IF NOT EXISTS rec_profiles (user_id VARCHAR(191) NOT NULL PRIMARY KEY, ",
            "last_at BIGINT NOT NULL, record MEDIUMBLOB NOT NULL, ",
            "KEY rec_profiles_by_last_at (last_at)) ",
            "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
        ),
        concat!(
            "CREATE TABLE IF NOT EXISTS rec_queries (query VARCHAR(500) NOT NULL, part INT NOT NULL, ",
            "record MEDIUMBLOB NOT NULL, PRIMARY KEY (query, part)) ",
            "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
        ),
        concat!(
            "CREATE TABLE IF NOT EXISTS rec_popular_lists (part INT NOT NULL PRIMARY KEY, ",
            "record MEDIUMBLOB NOT NULL) ",
            "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
        ),
        concat!(
            "CREATE TABLE IF NOT EXISTS rec_coviews (book BIGINT NOT NULL, part INT NOT NULL, ",
            "record MEDIUMBLOB NOT NULL, PRIMARY KEY (book, part)) ",
            "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
        ),
        concat!(
            "CREATE TABLE IF NOT EXISTS rec_format (id INT NOT NULL PRIMARY KEY, ",
            "version INT NOT NULL) ",
            "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
        ),
    ];

    const LOCKING: Locking = Locking::Rows {
        isolation: "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
        add_format: "INSERT IGNORE INTO rec_format (id, version) VALUES (0, 1)",
        add_missing_profiles: "INSERT IGNORE INTO rec_profiles (user_id, last_at, record) ",
        lock_profiles: " ORDER BY user_id FOR UPDATE",
    };

    const READ_FORMAT: &'static str = "SELECT version FROM rec_format WHERE id = 0 FOR UPDATE";
    const WRITE_FORMAT: &'static str = "UPDATE rec_format SET version = ? WHERE id = 0";

    const READ_BY_PARTITION: bool = true;

    const UPDATE_BOOKS: &'static str =
        " ON DUPLICATE KEY UPDATE title = VALUES(title), author = VALUES(author)";
    const UPDATE_PROFILES: &'static str =
        " ON DUPLICATE KEY UPDATE last_at = VALUES(last_at), record = VALUES(record)";
    const UPDATE_QUERIES: &'static str = " ON DUPLICATE KEY UPDATE record = VALUES(record)";
    const UPDATE_COVIEWS: &'static str = " ON DUPLICATE KEY UPDATE record = VALUES(record)";
    const UPSERT_POPULAR: &'static str = concat!(
        "INSERT INTO rec_popular_lists (part, record) VALUES (?, ?) ",
        "ON DUPLICATE KEY UPDATE record = VALUES(record)"
    );

    /// A text column of a binary collation. The server flags such columns BINARY, which sqlx's
    /// checked decoding refuses as a `String` (it takes them for VARBINARY); the value is still
    /// decoded as UTF-8 and a NULL is still an error.
    fn text(row: &MySqlRow, index: usize) -> Result<String, sqlx::Error> {
        row.try_get_unchecked(index)
    }

    fn build<'b, 'q: 'b>(
        query: &'b mut QueryBuilder<'q, MySql>,
    ) -> Query<'b, MySql, MySqlArguments> {
        query.build()
    }

    fn rows_affected(done: &MySqlQueryResult) -> u64 {
        done.rows_affected()
    }

    fn create_positions(pool: &MySqlPool) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        positions::create_table(pool)
    }

    fn positions(
        pool: &MySqlPool,
        group: &str,
    ) -> impl Future<Output = Result<Vec<Position>, HandlerError>> + Send {
        positions::load(pool, group)
    }

    fn advance(
        conn: &mut MySqlConnection,
        batch: &Batch,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        positions::advance(conn, batch)
    }

    fn handler_error(err: sqlx::Error) -> HandlerError {
        positions::handler_error(err)
    }

    fn repo_error(err: sqlx::Error) -> RepositoryError {
        crate::repo_error(err)
    }
}
