//! The recommendation store on SQLite (the embedded default): the records of
//! `bookstore_domain::recommend` (profiles, query records, popularity lists, co-view records),
//! each one row with
//! its record encoded in a blob, read and rewritten per batch in one transaction together with
//! the consumed positions. Every statement is static; lists of keys are bound one by one through
//! [`QueryBuilder`]. `rec_format` holds the [`STORED_VERSION`] of the rows: a store of an older
//! version has its records deleted at open, to be rebuilt from the log ([`needs_rebuild`]).

use std::collections::HashMap;

use async_trait::async_trait;
use bookstore_domain::recommend::{
    CatalogEntry, Changes, CoViews, Interests, PopularList, Prior, Profile, QueryRecord,
    RecommendSettings, RecommendStats, Recommendation, RecordReader, STORED_VERSION, SimilarBooks,
    Snapshot, Stored, answer, apply, byte_chunks, coview_needs, merge_coviews, merge_queries,
    needs_rebuild, popular_needs, positions_group, profile_needs, query_needs, read_interests,
    similar_books,
};
use bookstore_domain::{
    Batch, EventHandler, HandlerError, Position, RecommendStore, RepositoryError,
};
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use crate::positions::{self, handler_error};
use crate::repo_error;

const SCHEMA: [&str; 8] = [
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

/// What a rebuild deletes: every record but the catalog copy.
const REBUILD: [&str; 4] = [
    "DELETE FROM rec_profiles",
    "DELETE FROM rec_queries",
    "DELETE FROM rec_popular_lists",
    "DELETE FROM rec_coviews",
];

/// Rows per multi-row statement (well under SQLite's limit of bound variables).
const CHUNK: usize = 500;
/// Bytes of records per multi-row statement, about (a profile can reach tens of kilobytes).
const CHUNK_BYTES: usize = 4 << 20;

/// Recommendations in a SQLite database (`<data_dir>/recommend.db` by default).
pub struct SqliteRecommendations {
    pool: SqlitePool,
    settings: RecommendSettings,
}

/// A stored record that does not decode: the store is damaged, the batch waits.
fn undecodable(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

fn decode<T: Stored>(bytes: &[u8]) -> Result<T, sqlx::Error> {
    T::from_bytes(bytes).map_err(undecodable)
}

impl SqliteRecommendations {
    pub async fn new(pool: SqlitePool, settings: RecommendSettings) -> Result<Self, sqlx::Error> {
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        positions::create_table(&pool).await?;
        Self::rebuild_if_older(&pool).await?;
        Ok(Self { pool, settings })
    }

    /// Deletes the records of an older [`STORED_VERSION`] (see [`needs_rebuild`]) and marks the
    /// store as of this one, in one transaction.
    async fn rebuild_if_older(pool: &SqlitePool) -> Result<(), sqlx::Error> {
        let mut tx = pool.begin().await?;
        let stored: Option<i64> = sqlx::query_scalar("SELECT version FROM rec_format WHERE id = 0")
            .fetch_optional(&mut *tx)
            .await?;
        if needs_rebuild(stored.and_then(|v| u8::try_from(v).ok())) {
            for statement in REBUILD {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            sqlx::query(concat!(
                "INSERT INTO rec_format (id, version) VALUES (0, ?) ",
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version"
            ))
            .bind(i64::from(STORED_VERSION))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Reads what a batch needs, inside its transaction.
    async fn load(
        conn: &mut SqliteConnection,
        settings: &RecommendSettings,
        batch: &Batch,
    ) -> Result<Prior, sqlx::Error> {
        let mut prior = Prior::default();
        let users: Vec<String> = profile_needs(&batch.records).into_iter().collect();
        for chunk in users.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT user_id, record FROM rec_profiles WHERE user_id IN (",
            );
            push_list(&mut q, chunk.iter().cloned());
            for row in q.build().fetch_all(&mut *conn).await? {
                let record: Vec<u8> = row.try_get(1)?;
                prior.profiles.insert(row.try_get(0)?, decode(&record)?);
            }
        }
        let wanted = query_needs(settings, &batch.records, &prior.profiles);
        let keys: Vec<&(i32, String)> = wanted.iter().collect();
        for chunk in keys.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT part, query, record FROM rec_queries WHERE (query, part) IN (",
            );
            let mut list = q.separated(", ");
            for (part, query) in chunk {
                list.push("(")
                    .push_bind_unseparated((*query).clone())
                    .push_unseparated(", ")
                    .push_bind_unseparated(*part)
                    .push_unseparated(")");
            }
            list.push_unseparated(")");
            for row in q.build().fetch_all(&mut *conn).await? {
                let record: Vec<u8> = row.try_get(2)?;
                prior
                    .queries
                    .insert((row.try_get(0)?, row.try_get(1)?), decode(&record)?);
            }
        }
        for part in popular_needs(&batch.records) {
            let record: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT record FROM rec_popular_lists WHERE part = ?")
                    .bind(part)
                    .fetch_optional(&mut *conn)
                    .await?;
            if let Some(record) = record {
                prior.popular.insert(part, decode(&record)?);
            }
        }
        let wanted = coview_needs(settings, &batch.records, &prior.profiles);
        let keys: Vec<&(i32, i64)> = wanted.iter().collect();
        for chunk in keys.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT part, book, record FROM rec_coviews WHERE (book, part) IN (",
            );
            let mut list = q.separated(", ");
            for (part, book) in chunk {
                list.push("(")
                    .push_bind_unseparated(*book)
                    .push_unseparated(", ")
                    .push_bind_unseparated(*part)
                    .push_unseparated(")");
            }
            list.push_unseparated(")");
            for row in q.build().fetch_all(&mut *conn).await? {
                let record: Vec<u8> = row.try_get(2)?;
                prior
                    .coviews
                    .insert((row.try_get(0)?, row.try_get(1)?), decode(&record)?);
            }
        }
        Ok(prior)
    }

    /// Writes a batch's changes, inside its transaction.
    async fn write(conn: &mut SqliteConnection, changes: &Changes) -> Result<(), sqlx::Error> {
        let catalog: Vec<_> = changes.catalog.values().collect();
        for chunk in catalog.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO rec_books (id, title, author) ");
            q.push_values(chunk, |mut row, book| {
                row.push_bind(book.id)
                    .push_bind(&book.title)
                    .push_bind(&book.author);
            });
            q.push(
                " ON CONFLICT (id) DO UPDATE SET title = excluded.title, author = excluded.author",
            );
            q.build().execute(&mut *conn).await?;
        }
        let deleted: Vec<i64> = changes.deleted.iter().copied().collect();
        for chunk in deleted.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM rec_books WHERE id IN (");
            push_list(&mut q, chunk.iter().copied());
            q.build().execute(&mut *conn).await?;
        }
        let forgotten: Vec<&String> = changes.forgotten.iter().collect();
        for chunk in forgotten.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM rec_profiles WHERE user_id IN (");
            push_list(&mut q, chunk.iter().copied());
            q.build().execute(&mut *conn).await?;
        }
        let profiles: Vec<(&String, i64, Vec<u8>)> = changes
            .profiles
            .iter()
            .map(|(u, p)| (u, p.last_at, p.to_bytes()))
            .collect();
        for chunk in byte_chunks(&profiles, CHUNK, CHUNK_BYTES, |(u, _, r)| u.len() + r.len()) {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO rec_profiles (user_id, last_at, record) ");
            q.push_values(chunk, |mut row, (user, last_at, record)| {
                row.push_bind(*user).push_bind(*last_at).push_bind(record);
            });
            q.push(concat!(
                " ON CONFLICT (user_id) DO UPDATE SET last_at = excluded.last_at, ",
                "record = excluded.record"
            ));
            q.build().execute(&mut *conn).await?;
        }
        let queries: Vec<(&(i32, String), Vec<u8>)> = changes
            .queries
            .iter()
            .map(|(k, r)| (k, r.to_bytes()))
            .collect();
        for chunk in byte_chunks(&queries, CHUNK, CHUNK_BYTES, |((_, q), r)| {
            q.len() + r.len()
        }) {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO rec_queries (query, part, record) ");
            q.push_values(chunk, |mut row, ((part, query), record)| {
                row.push_bind(query).push_bind(*part).push_bind(record);
            });
            q.push(" ON CONFLICT (query, part) DO UPDATE SET record = excluded.record");
            q.build().execute(&mut *conn).await?;
        }
        for (part, list) in &changes.popular {
            sqlx::query(concat!(
                "INSERT INTO rec_popular_lists (part, record) VALUES (?, ?) ",
                "ON CONFLICT (part) DO UPDATE SET record = excluded.record"
            ))
            .bind(part)
            .bind(list.to_bytes())
            .execute(&mut *conn)
            .await?;
        }
        let coviews: Vec<(&(i32, i64), Vec<u8>)> = changes
            .coviews
            .iter()
            .map(|(k, r)| (k, r.to_bytes()))
            .collect();
        for chunk in byte_chunks(&coviews, CHUNK, CHUNK_BYTES, |(_, r)| r.len()) {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO rec_coviews (book, part, record) ");
            q.push_values(chunk, |mut row, ((part, book), record)| {
                row.push_bind(*book).push_bind(*part).push_bind(record);
            });
            q.push(" ON CONFLICT (book, part) DO UPDATE SET record = excluded.record");
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// The store's reads for [`answer`] and [`read_interests`], on one pooled connection.
struct Reader(PoolConnection<Sqlite>);

#[async_trait]
impl RecordReader for Reader {
    type Error = sqlx::Error;

    async fn profile(&mut self, user: &str) -> Result<Option<Profile>, Self::Error> {
        let record: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT record FROM rec_profiles WHERE user_id = ?")
                .bind(user)
                .fetch_optional(&mut *self.0)
                .await?;
        record.map(|r| decode(&r)).transpose()
    }

    /// The merged records of `queries` over every partition.
    async fn query_records(
        &mut self,
        queries: &[String],
    ) -> Result<HashMap<String, QueryRecord>, Self::Error> {
        let mut rows = Vec::new();
        for chunk in queries.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT query, record FROM rec_queries WHERE query IN (",
            );
            push_list(&mut q, chunk.iter().cloned());
            for row in q.build().fetch_all(&mut *self.0).await? {
                let record: Vec<u8> = row.try_get(1)?;
                rows.push((
                    row.try_get::<String, _>(0)?,
                    decode::<QueryRecord>(&record)?,
                ));
            }
        }
        Ok(merge_queries(rows))
    }

    async fn catalog(&mut self, ids: &[i64]) -> Result<HashMap<i64, CatalogEntry>, Self::Error> {
        let mut catalog = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT id, title, author FROM rec_books WHERE id IN (",
            );
            push_list(&mut q, chunk.iter().copied());
            for row in q.build().fetch_all(&mut *self.0).await? {
                let id: i64 = row.try_get(0)?;
                catalog.insert(
                    id,
                    CatalogEntry {
                        id,
                        title: row.try_get(1)?,
                        author: row.try_get(2)?,
                    },
                );
            }
        }
        Ok(catalog)
    }

    async fn author_books(&mut self, author: &str, limit: usize) -> Result<Vec<i64>, Self::Error> {
        sqlx::query_scalar("SELECT id FROM rec_books WHERE author = ? ORDER BY id LIMIT ?")
            .bind(author)
            .bind(self::limit(limit))
            .fetch_all(&mut *self.0)
            .await
    }

    async fn popular_lists(&mut self) -> Result<Vec<PopularList>, Self::Error> {
        let lists: Vec<Vec<u8>> = sqlx::query_scalar("SELECT record FROM rec_popular_lists")
            .fetch_all(&mut *self.0)
            .await?;
        lists.iter().map(|r| decode::<PopularList>(r)).collect()
    }

    /// The merged co-view records of `books` over every partition.
    async fn coviews(&mut self, books: &[i64]) -> Result<HashMap<i64, CoViews>, Self::Error> {
        let mut rows = Vec::new();
        for chunk in books.chunks(CHUNK) {
            let mut q =
                QueryBuilder::<Sqlite>::new("SELECT book, record FROM rec_coviews WHERE book IN (");
            push_list(&mut q, chunk.iter().copied());
            for row in q.build().fetch_all(&mut *self.0).await? {
                let record: Vec<u8> = row.try_get(1)?;
                rows.push((row.try_get::<i64, _>(0)?, decode::<CoViews>(&record)?));
            }
        }
        Ok(merge_coviews(rows))
    }
}

/// Appends `a, b, c)` with each value bound.
fn push_list<'a, T>(q: &mut QueryBuilder<'a, Sqlite>, values: impl Iterator<Item = T>)
where
    T: 'a + Send + sqlx::Encode<'a, Sqlite> + sqlx::Type<Sqlite>,
{
    let mut list = q.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    list.push_unseparated(")");
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[async_trait]
impl EventHandler for SqliteRecommendations {
    fn name(&self) -> &str {
        "recommend"
    }

    async fn positions(&self, group: &str) -> Result<Vec<Position>, HandlerError> {
        positions::load(&self.pool, &positions_group(group)).await
    }

    async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
        let mut tx = self.pool.begin().await.map_err(handler_error)?;
        let moves = Batch {
            group: positions_group(&batch.group),
            records: Vec::new(),
            positions: batch.positions.clone(),
        };
        positions::advance(&mut tx, &moves).await?;
        let prior = Self::load(&mut tx, &self.settings, batch)
            .await
            .map_err(handler_error)?;
        let changes = apply(&self.settings, prior, &batch.records);
        Self::write(&mut tx, &changes)
            .await
            .map_err(handler_error)?;
        tx.commit().await.map_err(handler_error)
    }
}

#[async_trait]
impl RecommendStore for SqliteRecommendations {
    async fn recommend(
        &self,
        user: &str,
        n: usize,
    ) -> Result<Vec<Recommendation>, RepositoryError> {
        let conn = self.pool.acquire().await.map_err(repo_error)?;
        answer(&mut Reader(conn), user, n).await.map_err(repo_error)
    }

    async fn interests(
        &self,
        user: &str,
        n: usize,
        now: DateTime<Utc>,
    ) -> Result<Interests, RepositoryError> {
        let conn = self.pool.acquire().await.map_err(repo_error)?;
        read_interests(&mut Reader(conn), &self.settings, user, n, now)
            .await
            .map_err(repo_error)
    }

    async fn catalog_book(&self, id: i64) -> Result<Option<CatalogEntry>, RepositoryError> {
        let conn = self.pool.acquire().await.map_err(repo_error)?;
        let mut found = Reader(conn).catalog(&[id]).await.map_err(repo_error)?;
        Ok(found.remove(&id))
    }

    async fn stats(&self) -> Result<RecommendStats, RepositoryError> {
        let (books, users, queries): (i64, i64, i64) = sqlx::query_as(concat!(
            "SELECT (SELECT COUNT(*) FROM rec_books), (SELECT COUNT(*) FROM rec_profiles), ",
            "(SELECT COUNT(*) FROM rec_queries)"
        ))
        .fetch_one(&self.pool)
        .await
        .map_err(repo_error)?;
        Ok(RecommendStats {
            catalog_books: count(books),
            users: count(users),
            query_records: count(queries),
        })
    }

    async fn expire(&self, before: i64, limit: usize) -> Result<u64, RepositoryError> {
        let done = sqlx::query(concat!(
            "DELETE FROM rec_profiles WHERE user_id IN (SELECT user_id FROM rec_profiles ",
            "WHERE last_at < ? ORDER BY last_at LIMIT ?)"
        ))
        .bind(before)
        .bind(self::limit(limit))
        .execute(&self.pool)
        .await
        .map_err(repo_error)?;
        Ok(done.rows_affected())
    }

    async fn snapshot(&self) -> Result<Snapshot, RepositoryError> {
        let mut conn = self.pool.acquire().await.map_err(repo_error)?;
        let read = async {
            let catalog = sqlx::query("SELECT id, title, author FROM rec_books")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    Ok(CatalogEntry {
                        id: row.try_get(0)?,
                        title: row.try_get(1)?,
                        author: row.try_get(2)?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?;
            let profiles = sqlx::query("SELECT user_id, record FROM rec_profiles")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    let record: Vec<u8> = row.try_get(1)?;
                    Ok((row.try_get(0)?, decode(&record)?))
                })
                .collect::<Result<_, sqlx::Error>>()?;
            let queries = sqlx::query("SELECT part, query, record FROM rec_queries")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    let record: Vec<u8> = row.try_get(2)?;
                    Ok(((row.try_get(0)?, row.try_get(1)?), decode(&record)?))
                })
                .collect::<Result<_, sqlx::Error>>()?;
            let popular = sqlx::query("SELECT part, record FROM rec_popular_lists")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    let record: Vec<u8> = row.try_get(1)?;
                    Ok((row.try_get(0)?, decode(&record)?))
                })
                .collect::<Result<_, sqlx::Error>>()?;
            let coviews = sqlx::query("SELECT part, book, record FROM rec_coviews")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    let record: Vec<u8> = row.try_get(2)?;
                    Ok(((row.try_get(0)?, row.try_get(1)?), decode(&record)?))
                })
                .collect::<Result<_, sqlx::Error>>()?;
            Ok::<_, sqlx::Error>(Snapshot {
                catalog,
                profiles,
                queries,
                popular,
                coviews,
            })
        };
        Ok(read.await.map_err(repo_error)?.sorted())
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(repo_error)?;
        Ok(())
    }
}

#[async_trait]
impl SimilarBooks for SqliteRecommendations {
    async fn similar(&self, book: i64, n: usize) -> Result<Vec<Recommendation>, RepositoryError> {
        let conn = self.pool.acquire().await.map_err(repo_error)?;
        similar_books(&mut Reader(conn), book, n)
            .await
            .map_err(repo_error)
    }
}

#[cfg(test)]
mod tests {
    use bookstore_domain::recommend::conformance;

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
