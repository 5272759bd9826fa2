//! The recommendation store on MySQL/MariaDB: the records of `bookstore_domain::recommend`
//! (profiles, query records, popularity lists, co-view records), each one row with its record
//! encoded in a blob,
//! read and rewritten per batch in one InnoDB transaction together with the consumed positions,
//! like the SQLite store.
//!
//! Several consumer instances may apply batches at once, each of the partitions it owns. Query
//! records, popularity lists and co-view records are keyed by partition, and a reader's searches
//! and views all go to one partition, so no two instances rewrite the same row: the lock on a partition's position row
//! (taken first, by the position check) is the only one a batch waits for. Profiles are still
//! read `FOR UPDATE`, in sorted order, for the rare reader whose searches moved partition (the
//! topic's partitions were added to).
//!
//! Names, queries, titles and user ids use the `utf8mb4_bin` collation, so that they compare
//! exactly as in SQLite (no case or accent folding). Every statement is static; lists of keys are
//! bound one by one through [`QueryBuilder`]. `rec_format` holds the [`STORED_VERSION`] of the
//! rows: a store of an older version has its records deleted at open, to be rebuilt from the log
//! ([`needs_rebuild`]).

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
use sqlx::mysql::{MySqlConnection, MySqlPool, MySqlRow};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Executor, MySql, QueryBuilder, Row};

use crate::positions::{self, handler_error};
use crate::repo_error;

/// The tables, created if missing. Keys stay within InnoDB's 3072 bytes: 4 bytes a character in
/// utf8mb4, so a query of 500 characters (2000 bytes) with a partition number.
const SCHEMA: [&str; 6] = [
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

/// What a rebuild deletes: every record but the catalog copy.
const REBUILD: [&str; 4] = [
    "DELETE FROM rec_profiles",
    "DELETE FROM rec_queries",
    "DELETE FROM rec_popular_lists",
    "DELETE FROM rec_coviews",
];

/// Rows per multi-row statement (well under MySQL's 65,535 placeholders, and within the default
/// `max_allowed_packet` for records of a few kilobytes).
const CHUNK: usize = 500;
/// Bytes of records per multi-row statement, about (a profile can reach tens of kilobytes).
const CHUNK_BYTES: usize = 4 << 20;

/// Recommendations in a MySQL or MariaDB database.
pub struct MySqlRecommendations {
    pool: MySqlPool,
    settings: RecommendSettings,
}

/// A stored record that does not decode: the store is damaged, the batch waits.
fn decode<T: Stored>(bytes: &[u8]) -> Result<T, sqlx::Error> {
    T::from_bytes(bytes).map_err(|message| sqlx::Error::Decode(message.into()))
}

impl MySqlRecommendations {
    pub async fn new(pool: MySqlPool, settings: RecommendSettings) -> Result<Self, sqlx::Error> {
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        positions::create_table(&pool).await?;
        Self::rebuild_if_older(&pool).await?;
        Ok(Self { pool, settings })
    }

    /// Deletes the records of an older [`STORED_VERSION`] (see [`needs_rebuild`]) and marks the
    /// store as of this one, in one transaction. The mark's row is created first (a store
    /// without it is of version 1, or new) and locked, so that instances starting together
    /// rebuild once.
    async fn rebuild_if_older(pool: &MySqlPool) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT IGNORE INTO rec_format (id, version) VALUES (0, 1)")
            .execute(pool)
            .await?;
        let mut tx = pool.begin().await?;
        let stored: Option<i32> =
            sqlx::query_scalar("SELECT version FROM rec_format WHERE id = 0 FOR UPDATE")
                .fetch_optional(&mut *tx)
                .await?;
        if needs_rebuild(stored.and_then(|v| u8::try_from(v).ok())) {
            for statement in REBUILD {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            sqlx::query("UPDATE rec_format SET version = ? WHERE id = 0")
                .bind(i32::from(STORED_VERSION))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Reads what a batch needs, inside its transaction.
    async fn load(
        conn: &mut MySqlConnection,
        settings: &RecommendSettings,
        batch: &Batch,
    ) -> Result<Prior, sqlx::Error> {
        let mut prior = Prior::default();
        let users: Vec<String> = profile_needs(&batch.records).into_iter().collect();
        // An empty row for each reader not stored yet, first, so that the locking read below
        // locks a row for every reader of the batch: under READ COMMITTED it would lock nothing
        // for a missing one, and two members starting the same reader's profile at once (their
        // searches on two partitions: tutorial-format events keyed by query, or partitions added
        // to the topic) would each write theirs over the other's. The batch then writes or
        // deletes every such row.
        let empty = Profile::default().to_bytes();
        for chunk in users.chunks(CHUNK) {
            let mut q = QueryBuilder::<MySql>::new(
                "INSERT IGNORE INTO rec_profiles (user_id, last_at, record) ",
            );
            q.push_values(chunk, |mut row, user| {
                row.push_bind(user).push_bind(0i64).push_bind(&empty);
            });
            q.build().execute(&mut *conn).await?;
        }
        for chunk in users.chunks(CHUNK) {
            let mut q = QueryBuilder::<MySql>::new(
                "SELECT user_id, record FROM rec_profiles WHERE user_id IN (",
            );
            push_list(&mut q, chunk.iter().cloned());
            q.push(" ORDER BY user_id FOR UPDATE");
            for row in q.build().fetch_all(&mut *conn).await? {
                let record: Vec<u8> = row.try_get(1)?;
                prior.profiles.insert(text(&row, 0)?, decode(&record)?);
            }
        }
        // Sorted by partition, then query: one statement per partition's run of queries.
        let wanted: Vec<(i32, String)> = query_needs(settings, &batch.records, &prior.profiles)
            .into_iter()
            .collect();
        for same_part in wanted.chunk_by(|a, b| a.0 == b.0) {
            let part = same_part[0].0;
            for chunk in same_part.chunks(CHUNK) {
                let mut q = QueryBuilder::<MySql>::new(
                    "SELECT query, record FROM rec_queries WHERE part = ",
                );
                q.push_bind(part).push(" AND query IN (");
                push_list(&mut q, chunk.iter().map(|(_, query)| query.clone()));
                for row in q.build().fetch_all(&mut *conn).await? {
                    let record: Vec<u8> = row.try_get(1)?;
                    prior
                        .queries
                        .insert((part, text(&row, 0)?), decode(&record)?);
                }
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
        // Sorted by partition, then book: one statement per partition's run of books.
        let wanted: Vec<(i32, i64)> = coview_needs(settings, &batch.records, &prior.profiles)
            .into_iter()
            .collect();
        for same_part in wanted.chunk_by(|a, b| a.0 == b.0) {
            let part = same_part[0].0;
            for chunk in same_part.chunks(CHUNK) {
                let mut q = QueryBuilder::<MySql>::new(
                    "SELECT book, record FROM rec_coviews WHERE part = ",
                );
                q.push_bind(part).push(" AND book IN (");
                push_list(&mut q, chunk.iter().map(|(_, book)| *book));
                for row in q.build().fetch_all(&mut *conn).await? {
                    let record: Vec<u8> = row.try_get(1)?;
                    prior
                        .coviews
                        .insert((part, row.try_get(0)?), decode(&record)?);
                }
            }
        }
        Ok(prior)
    }

    /// Writes a batch's changes, inside its transaction, each table in key order.
    async fn write(conn: &mut MySqlConnection, changes: &Changes) -> Result<(), sqlx::Error> {
        let catalog: Vec<_> = changes.catalog.values().collect();
        for chunk in catalog.chunks(CHUNK) {
            let mut q = QueryBuilder::<MySql>::new("INSERT INTO rec_books (id, title, author) ");
            q.push_values(chunk, |mut row, book| {
                row.push_bind(book.id)
                    .push_bind(&book.title)
                    .push_bind(&book.author);
            });
            q.push(" ON DUPLICATE KEY UPDATE title = VALUES(title), author = VALUES(author)");
            q.build().execute(&mut *conn).await?;
        }
        let deleted: Vec<i64> = changes.deleted.iter().copied().collect();
        for chunk in deleted.chunks(CHUNK) {
            let mut q = QueryBuilder::<MySql>::new("DELETE FROM rec_books WHERE id IN (");
            push_list(&mut q, chunk.iter().copied());
            q.build().execute(&mut *conn).await?;
        }
        let forgotten: Vec<&String> = changes.forgotten.iter().collect();
        for chunk in forgotten.chunks(CHUNK) {
            let mut q = QueryBuilder::<MySql>::new("DELETE FROM rec_profiles WHERE user_id IN (");
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
                QueryBuilder::<MySql>::new("INSERT INTO rec_profiles (user_id, last_at, record) ");
            q.push_values(chunk, |mut row, (user, last_at, record)| {
                row.push_bind(*user).push_bind(*last_at).push_bind(record);
            });
            q.push(" ON DUPLICATE KEY UPDATE last_at = VALUES(last_at), record = VALUES(record)");
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
                QueryBuilder::<MySql>::new("INSERT INTO rec_queries (query, part, record) ");
            q.push_values(chunk, |mut row, ((part, query), record)| {
                row.push_bind(query).push_bind(*part).push_bind(record);
            });
            q.push(" ON DUPLICATE KEY UPDATE record = VALUES(record)");
            q.build().execute(&mut *conn).await?;
        }
        for (part, list) in &changes.popular {
            sqlx::query(concat!(
                "INSERT INTO rec_popular_lists (part, record) VALUES (?, ?) ",
                "ON DUPLICATE KEY UPDATE record = VALUES(record)"
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
            let mut q = QueryBuilder::<MySql>::new("INSERT INTO rec_coviews (book, part, record) ");
            q.push_values(chunk, |mut row, ((part, book), record)| {
                row.push_bind(*book).push_bind(*part).push_bind(record);
            });
            q.push(" ON DUPLICATE KEY UPDATE record = VALUES(record)");
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// The store's reads for [`answer`] and [`read_interests`], on one pooled connection.
struct Reader(PoolConnection<MySql>);

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
            let mut q = QueryBuilder::<MySql>::new(
                "SELECT query, record FROM rec_queries WHERE query IN (",
            );
            push_list(&mut q, chunk.iter().cloned());
            for row in q.build().fetch_all(&mut *self.0).await? {
                let record: Vec<u8> = row.try_get(1)?;
                rows.push((text(&row, 0)?, decode::<QueryRecord>(&record)?));
            }
        }
        Ok(merge_queries(rows))
    }

    async fn catalog(&mut self, ids: &[i64]) -> Result<HashMap<i64, CatalogEntry>, Self::Error> {
        let mut catalog = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let mut q =
                QueryBuilder::<MySql>::new("SELECT id, title, author FROM rec_books WHERE id IN (");
            push_list(&mut q, chunk.iter().copied());
            for row in q.build().fetch_all(&mut *self.0).await? {
                let id: i64 = row.try_get(0)?;
                catalog.insert(
                    id,
                    CatalogEntry {
                        id,
                        title: text(&row, 1)?,
                        author: text(&row, 2)?,
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
                QueryBuilder::<MySql>::new("SELECT book, record FROM rec_coviews WHERE book IN (");
            push_list(&mut q, chunk.iter().copied());
            for row in q.build().fetch_all(&mut *self.0).await? {
                let record: Vec<u8> = row.try_get(1)?;
                rows.push((row.try_get::<i64, _>(0)?, decode::<CoViews>(&record)?));
            }
        }
        Ok(merge_coviews(rows))
    }
}

/// A text column of a binary collation. The server flags such columns BINARY, which sqlx's
/// checked decoding refuses as a `String` (it takes them for VARBINARY); the value is still
/// decoded as UTF-8 and a NULL is still an error.
fn text(row: &MySqlRow, index: usize) -> Result<String, sqlx::Error> {
    row.try_get_unchecked(index)
}

/// Appends `a, b, c)` with each value bound.
fn push_list<'a, T>(q: &mut QueryBuilder<'a, MySql>, values: impl Iterator<Item = T>)
where
    T: 'a + Send + sqlx::Encode<'a, MySql> + sqlx::Type<MySql>,
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
impl EventHandler for MySqlRecommendations {
    fn name(&self) -> &str {
        "recommend"
    }

    async fn positions(&self, group: &str) -> Result<Vec<Position>, HandlerError> {
        positions::load(&self.pool, &positions_group(group)).await
    }

    async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
        let mut conn = self.pool.acquire().await.map_err(handler_error)?;
        // No row is read to be summed with another instance's: READ COMMITTED, without the gap
        // locks of REPEATABLE READ. This applies to the next transaction only.
        (&mut *conn)
            .execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(handler_error)?;
        let mut tx = Connection::begin(&mut *conn).await.map_err(handler_error)?;
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
impl RecommendStore for MySqlRecommendations {
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
        // The expired readers are found without locking, then deleted by primary key in key
        // order, as batches lock profiles, with `last_at` checked again: a batch that rewrote a
        // profile meanwhile (a reader back just now) keeps it, and no index is locked in the
        // other order than a batch's.
        let mut conn = self.pool.acquire().await.map_err(repo_error)?;
        let mut users: Vec<String> = sqlx::query(
            "SELECT user_id FROM rec_profiles WHERE last_at < ? ORDER BY last_at LIMIT ?",
        )
        .bind(before)
        .bind(self::limit(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(repo_error)?
        .iter()
        .map(|row| text(row, 0))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(repo_error)?;
        users.sort();
        let mut deleted = 0;
        for chunk in users.chunks(CHUNK) {
            let mut q = QueryBuilder::<MySql>::new("DELETE FROM rec_profiles WHERE user_id IN (");
            push_list(&mut q, chunk.iter().cloned());
            q.push(" AND last_at < ").push_bind(before);
            deleted += q
                .build()
                .execute(&mut *conn)
                .await
                .map_err(repo_error)?
                .rows_affected();
        }
        Ok(deleted)
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
                        title: text(row, 1)?,
                        author: text(row, 2)?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?;
            let profiles = sqlx::query("SELECT user_id, record FROM rec_profiles")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    let record: Vec<u8> = row.try_get(1)?;
                    Ok((text(row, 0)?, decode(&record)?))
                })
                .collect::<Result<_, sqlx::Error>>()?;
            let queries = sqlx::query("SELECT part, query, record FROM rec_queries")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    let record: Vec<u8> = row.try_get(2)?;
                    Ok(((row.try_get(0)?, text(row, 1)?), decode(&record)?))
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
impl SimilarBooks for MySqlRecommendations {
    async fn similar(&self, book: i64, n: usize) -> Result<Vec<Recommendation>, RepositoryError> {
        let conn = self.pool.acquire().await.map_err(repo_error)?;
        similar_books(&mut Reader(conn), book, n)
            .await
            .map_err(repo_error)
    }
}
