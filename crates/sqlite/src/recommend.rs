//! The recommendation store on SQLite (the embedded default): [`bookstore_sql::SqlRecommendations`]
//! with SQLite's statements. Its tables are `STRICT`; a transaction's first write locks the whole
//! database, so a batch, whose first statement is its position check, reads and writes alone
//! ([`Locking::Database`]).

use bookstore_domain::{Batch, HandlerError, Position, RepositoryError};
use bookstore_sql::{Dialect, Locking, SqlRecommendations};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteQueryResult, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use crate::positions;

/// Recommendations in a SQLite database (`<data_dir>/recommend.db` by default).
pub type SqliteRecommendations = SqlRecommendations<SqliteDialect>;

/// SQLite's statements for [`SqliteRecommendations`].
#[derive(Debug)]
pub struct SqliteDialect;

impl Dialect for SqliteDialect {
    type Db = Sqlite;

    const SCHEMA: &'static [&'static str] = &[
        concat!(
            "CREATE TABLE IF NOT EXISTS rec_books (id INTEGER PRIMARY KEY, title TEXT NOT NULL, ",
            "author TEXT NOT NULL) STRICT"
        ),
        "CREATE INDEX IF NOT EXISTS rec_books_by_author ON rec_books (author, id)",
        concat!(
            "CREATE TABLE IF NOT EXISTS rec_profiles (user_id TEXT NOT NULL PRIMARY KEY, ",
            "last_at INTEGER NOT NULL, record BLOB NOT NULL) STRICT"
        ),
        "CREATE INDEX IF NOT EXISTS rec_profiles_by_last_at ON rec_profiles (last_at)",
        concat!(
            "CREATE TABLE IF NOT EXISTS rec_queries (query TEXT NOT NULL, part INTEGER NOT NULL, ",
            "record BLOB NOT NULL, PRIMARY KEY (query, part)) STRICT"
        ),
        concat!(
            "CREATE TABLE IF NOT EXISTS rec_popular_lists (part INTEGER PRIMARY KEY, ",
            "record BLOB NOT NULL) STRICT"
        ),
        concat!(
            "CREATE TABLE IF NOT EXISTS rec_coviews (book INTEGER NOT NULL, part INTEGER NOT NULL, ",
            "record BLOB NOT NULL, PRIMARY KEY (book, part)) STRICT"
        ),
        concat!(
            "CREATE TABLE IF NOT EXISTS rec_format (id INTEGER PRIMARY KEY CHECK (id = 0), ",
            "version INTEGER NOT NULL) STRICT"
        ),
    ];

    const LOCKING: Locking = Locking::Database {
        expire: concat!(
            "DELETE FROM rec_profiles WHERE user_id IN (SELECT user_id FROM rec_profiles ",
            "WHERE last_at < ? ORDER BY last_at LIMIT ?)"
        ),
    };

    const READ_FORMAT: &'static str = "SELECT version FROM rec_format WHERE id = 0";
    const WRITE_FORMAT: &'static str = concat!(
        "INSERT INTO rec_format (id, version) VALUES (0, ?) ",
        "ON CONFLICT (id) DO UPDATE SET version = excluded.version"
    );

    const READ_BY_PARTITION: bool = false;

    const UPDATE_BOOKS: &'static str =
        " ON CONFLICT (id) DO UPDATE SET title = excluded.title, author = excluded.author";
    const UPDATE_PROFILES: &'static str = concat!(
        " ON CONFLICT (user_id) DO UPDATE SET last_at = excluded.last_at, ",
        "record = excluded.record"
    );
    const UPDATE_QUERIES: &'static str =
        " ON CONFLICT (query, part) DO UPDATE SET record = excluded.record";
    const UPDATE_COVIEWS: &'static str =
        " ON CONFLICT (book, part) DO UPDATE SET record = excluded.record";
    const UPSERT_POPULAR: &'static str = concat!(
        "INSERT INTO rec_popular_lists (part, record) VALUES (?, ?) ",
        "ON CONFLICT (part) DO UPDATE SET record = excluded.record"
    );

    fn text(row: &SqliteRow, index: usize) -> Result<String, sqlx::Error> {
        row.try_get(index)
    }

    fn build<'b, 'q: 'b>(
        query: &'b mut QueryBuilder<'q, Sqlite>,
    ) -> Query<'b, Sqlite, SqliteArguments<'b>> {
        query.build()
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn create_positions(pool: &SqlitePool) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        positions::create_table(pool)
    }

    fn positions(
        pool: &SqlitePool,
        group: &str,
    ) -> impl Future<Output = Result<Vec<Position>, HandlerError>> + Send {
        positions::load(pool, group)
    }

    fn advance(
        conn: &mut SqliteConnection,
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

#[cfg(test)]
mod tests {
    use bookstore_domain::{EventHandler, RecommendStore};
    use bookstore_testkit::conformance::recommend as conformance;
    use chrono::Utc;

    use super::*;

    #[tokio::test]
    async fn the_store_follows_the_rules() {
        let pool = crate::connect("sqlite::memory:", 1).await.unwrap();
        let store = SqliteRecommendations::new(pool, conformance::settings())
            .await
            .unwrap();
        conformance::check_store(&store).await;
    }

    #[tokio::test]
    async fn a_store_of_an_older_version_is_emptied_for_a_rebuild() {
        use bookstore_domain::PositionUpdate;
        use bookstore_domain::events::{BookEvent, Event};
        use bookstore_domain::ports::Record;

        let pool = crate::connect("sqlite::memory:", 1).await.unwrap();
        let store = SqliteRecommendations::new(pool.clone(), conformance::settings())
            .await
            .unwrap();
        let base = Utc::now();
        let mut events: Vec<Event> = (1..=4)
            .map(|i| {
                Event::BookCreated(BookEvent::new(
                    uuid::Uuid::now_v7(),
                    base,
                    conformance::book(i),
                ))
            })
            .collect();
        events.push(conformance::search(Some("u"), 0, base, 0));
        events.push(conformance::view(Some("u"), 1, base, 1));
        let records: Vec<Record> = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Record {
                topic: "t".into(),
                partition: 0,
                offset: i as i64,
                event,
            })
            .collect();
        let batch = Batch {
            group: "g".into(),
            positions: vec![PositionUpdate {
                topic: "t".into(),
                partition: 0,
                from: None,
                to: records.len() as i64,
            }],
            records,
        };
        store.apply(&batch).await.unwrap();
        // What a store of version 1 looked like: no mark (its rows would not decode now).
        sqlx::query("DELETE FROM rec_format")
            .execute(&pool)
            .await
            .unwrap();
        let reopened = SqliteRecommendations::new(pool.clone(), conformance::settings())
            .await
            .unwrap();
        let snapshot = reopened.snapshot().await.unwrap();
        assert_eq!(snapshot.catalog.len(), 4, "the catalog copy stays");
        assert!(snapshot.profiles.is_empty() && snapshot.queries.is_empty());
        assert!(snapshot.popular.is_empty() && snapshot.coviews.is_empty());
    }
}
