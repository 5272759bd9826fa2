//! The recommendation store on MySQL/MariaDB: the rules of `bookstore_domain::recommend`, applied
//! per batch in one InnoDB transaction together with the consumed positions, like the SQLite
//! store (same tables, same columns, same statements where the dialects agree).
//!
//! Several consumer instances may apply batches of different partitions at once, and popularity
//! and co-occurrence rows are shared between partitions, so `apply` reads every row it will
//! rewrite with `SELECT … FOR UPDATE` in REPEATABLE READ: a row that exists is locked, a row that
//! does not yet exist has its gap locked, and a concurrent batch that needs the same rows waits,
//! or fails with a deadlock that the consumer retries ([`HandlerError::Transient`]).
//!
//! Names, queries, titles and user ids use the `utf8mb4_bin` collation, so that they compare
//! exactly as in SQLite (no case or accent folding). Every statement is static; lists of ids are
//! bound one by one through [`QueryBuilder`].

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use bookstore_domain::recommend::{
    CatalogEntry, Changes, INTEREST_BOOKS, InterestBook, InterestEntry, Interests, Needs,
    Neighbourhood, Prior, RecommendSettings, RecommendStats, Recommendation, Snapshot, TOP_AUTHORS,
    UserBook, Weight, WeightedName, apply, blend, needs,
};
use bookstore_domain::{
    Batch, EventHandler, HandlerError, Position, RecommendStore, RepositoryError,
};
use chrono::{DateTime, Utc};
use sqlx::mysql::{MySqlConnection, MySqlPool, MySqlRow};
use sqlx::{Connection, Executor, MySql, QueryBuilder, Row};

use crate::positions::{self, handler_error};
use crate::repo_error;

/// The tables, created if missing. Keys stay within InnoDB's 3072 bytes: 4 bytes a character in
/// utf8mb4, so a user id of 191 characters (764 bytes) with a query of 500 (2000 bytes).
const SCHEMA: [&str; 7] = [
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_books (id BIGINT NOT NULL PRIMARY KEY, ",
        "title TEXT NOT NULL, author VARCHAR(255) NOT NULL, ",
        "KEY rec_books_by_author (author, id)) ",
        "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
    ),
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_user_books (user_id VARCHAR(191) NOT NULL, ",
        "book_id BIGINT NOT NULL, log_weight DOUBLE NOT NULL, last_at BIGINT NOT NULL, ",
        "title TEXT NOT NULL, author VARCHAR(255) NOT NULL, query VARCHAR(500) NOT NULL, ",
        "PRIMARY KEY (user_id, book_id), ",
        "KEY rec_user_books_by_weight (user_id, log_weight DESC, book_id)) ",
        "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
    ),
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_user_shown (user_id VARCHAR(191) NOT NULL, ",
        "book_id BIGINT NOT NULL, PRIMARY KEY (user_id, book_id)) ",
        "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
    ),
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_user_authors (user_id VARCHAR(191) NOT NULL, ",
        "author VARCHAR(255) NOT NULL, log_weight DOUBLE NOT NULL, ",
        "PRIMARY KEY (user_id, author)) ",
        "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
    ),
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_user_queries (user_id VARCHAR(191) NOT NULL, ",
        "query VARCHAR(500) NOT NULL, log_weight DOUBLE NOT NULL, last_at BIGINT NOT NULL, ",
        "PRIMARY KEY (user_id, query)) ",
        "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
    ),
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_popular (book_id BIGINT NOT NULL PRIMARY KEY, ",
        "log_weight DOUBLE NOT NULL, KEY rec_popular_by_weight (log_weight DESC, book_id)) ",
        "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
    ),
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_cooccurrence (book_id BIGINT NOT NULL, ",
        "neighbour BIGINT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (book_id, neighbour)) ",
        "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
    ),
];

/// Rows per multi-row statement (7 placeholders a row: well under MySQL's 65,535, and well inside
/// the default `max_allowed_packet`).
const CHUNK: usize = 500;

/// Recommendations in a MySQL or MariaDB database.
pub struct MySqlRecommendations {
    pool: MySqlPool,
    settings: RecommendSettings,
}

impl MySqlRecommendations {
    pub async fn new(pool: MySqlPool, settings: RecommendSettings) -> Result<Self, sqlx::Error> {
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        positions::create_table(&pool).await?;
        Ok(Self { pool, settings })
    }

    /// Reads and locks what a batch needs, inside its transaction. The lists are sorted, so
    /// concurrent batches take the locks of a table in the same order.
    async fn load(
        conn: &mut MySqlConnection,
        settings: &RecommendSettings,
        needs: &Needs,
    ) -> Result<Prior, sqlx::Error> {
        let mut prior = Prior::default();
        for (user, wanted) in &needs.users {
            let books: Vec<i64> = wanted.books.iter().copied().collect();
            for chunk in books.chunks(CHUNK) {
                let mut q = QueryBuilder::<MySql>::new(concat!(
                    "SELECT book_id, log_weight, last_at, title, author, query FROM rec_user_books ",
                    "WHERE user_id = "
                ));
                q.push_bind(user).push(" AND book_id IN (");
                push_list(&mut q, chunk.iter().copied());
                q.push(" FOR UPDATE");
                for row in q.build().fetch_all(&mut *conn).await? {
                    prior.user_books.insert(
                        (user.clone(), row.try_get(0)?),
                        UserBook {
                            log_weight: row.try_get(1)?,
                            last_at: row.try_get(2)?,
                            title: text(&row, 3)?,
                            author: text(&row, 4)?,
                            query: text(&row, 5)?,
                        },
                    );
                }
            }
            let top = sqlx::query(concat!(
                "SELECT book_id, log_weight FROM rec_user_books WHERE user_id = ? ",
                "ORDER BY log_weight DESC, book_id LIMIT ? FOR UPDATE"
            ))
            .bind(user)
            .bind(limit(settings.history_per_event))
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<(i64, f64)>, sqlx::Error>>()?;
            prior.top_books.insert(user.clone(), top);

            let authors: Vec<&String> = wanted.authors.iter().collect();
            for chunk in authors.chunks(CHUNK) {
                let mut q = QueryBuilder::<MySql>::new(
                    "SELECT author, log_weight FROM rec_user_authors WHERE user_id = ",
                );
                q.push_bind(user).push(" AND author IN (");
                push_list(&mut q, chunk.iter().map(|a| (*a).clone()));
                q.push(" FOR UPDATE");
                for row in q.build().fetch_all(&mut *conn).await? {
                    prior
                        .user_authors
                        .insert((user.clone(), text(&row, 0)?), row.try_get(1)?);
                }
            }
            let queries: Vec<&String> = wanted.queries.iter().collect();
            for chunk in queries.chunks(CHUNK) {
                let mut q = QueryBuilder::<MySql>::new(
                    "SELECT query, log_weight, last_at FROM rec_user_queries WHERE user_id = ",
                );
                q.push_bind(user).push(" AND query IN (");
                push_list(&mut q, chunk.iter().map(|a| (*a).clone()));
                q.push(" FOR UPDATE");
                for row in q.build().fetch_all(&mut *conn).await? {
                    prior.user_queries.insert(
                        (user.clone(), text(&row, 0)?),
                        Weight {
                            log_weight: row.try_get(1)?,
                            last_at: row.try_get(2)?,
                        },
                    );
                }
            }
        }
        let popular: Vec<i64> = needs.popular.iter().copied().collect();
        for chunk in popular.chunks(CHUNK) {
            let mut q = QueryBuilder::<MySql>::new(
                "SELECT book_id, log_weight FROM rec_popular WHERE book_id IN (",
            );
            push_list(&mut q, chunk.iter().copied());
            q.push(" FOR UPDATE");
            for row in q.build().fetch_all(&mut *conn).await? {
                prior.popular.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        Ok(prior)
    }

    /// Writes a batch's changes, inside its transaction.
    async fn write(
        conn: &mut MySqlConnection,
        settings: &RecommendSettings,
        changes: &Changes,
    ) -> Result<(), sqlx::Error> {
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
        // Deleted books leave the catalog copy: every candidate is looked up there, so they are
        // never recommended again.
        let deleted: Vec<i64> = changes.deleted.iter().copied().collect();
        for chunk in deleted.chunks(CHUNK) {
            let mut q = QueryBuilder::<MySql>::new("DELETE FROM rec_books WHERE id IN (");
            push_list(&mut q, chunk.iter().copied());
            q.build().execute(&mut *conn).await?;
        }
        let books: Vec<_> = changes.user_books.iter().collect();
        for chunk in books.chunks(CHUNK) {
            let mut q = QueryBuilder::<MySql>::new(concat!(
                "INSERT INTO rec_user_books ",
                "(user_id, book_id, log_weight, last_at, title, author, query) "
            ));
            q.push_values(chunk, |mut row, ((user, book), v)| {
                row.push_bind(user)
                    .push_bind(*book)
                    .push_bind(v.log_weight)
                    .push_bind(v.last_at)
                    .push_bind(&v.title)
                    .push_bind(&v.author)
                    .push_bind(&v.query);
            });
            q.push(concat!(
                " ON DUPLICATE KEY UPDATE log_weight = VALUES(log_weight), ",
                "last_at = VALUES(last_at), title = VALUES(title), author = VALUES(author), ",
                "query = VALUES(query)"
            ));
            q.build().execute(&mut *conn).await?;
        }
        let shown: Vec<_> = changes.shown.iter().collect();
        for chunk in shown.chunks(CHUNK) {
            // INSERT IGNORE would also hide errors other than the duplicate key.
            let mut q =
                QueryBuilder::<MySql>::new("INSERT INTO rec_user_shown (user_id, book_id) ");
            q.push_values(chunk, |mut row, (user, book)| {
                row.push_bind(user).push_bind(*book);
            });
            q.push(" ON DUPLICATE KEY UPDATE book_id = book_id");
            q.build().execute(&mut *conn).await?;
        }
        let authors: Vec<_> = changes.user_authors.iter().collect();
        for chunk in authors.chunks(CHUNK) {
            let mut q = QueryBuilder::<MySql>::new(
                "INSERT INTO rec_user_authors (user_id, author, log_weight) ",
            );
            q.push_values(chunk, |mut row, ((user, author), w)| {
                row.push_bind(user).push_bind(author).push_bind(*w);
            });
            q.push(" ON DUPLICATE KEY UPDATE log_weight = VALUES(log_weight)");
            q.build().execute(&mut *conn).await?;
        }
        let queries: Vec<_> = changes.user_queries.iter().collect();
        for chunk in queries.chunks(CHUNK) {
            let mut q = QueryBuilder::<MySql>::new(
                "INSERT INTO rec_user_queries (user_id, query, log_weight, last_at) ",
            );
            q.push_values(chunk, |mut row, ((user, query), w)| {
                row.push_bind(user)
                    .push_bind(query)
                    .push_bind(w.log_weight)
                    .push_bind(w.last_at);
            });
            q.push(" ON DUPLICATE KEY UPDATE log_weight = VALUES(log_weight), last_at = VALUES(last_at)");
            q.build().execute(&mut *conn).await?;
        }
        let popular: Vec<_> = changes.popular.iter().collect();
        for chunk in popular.chunks(CHUNK) {
            let mut q =
                QueryBuilder::<MySql>::new("INSERT INTO rec_popular (book_id, log_weight) ");
            q.push_values(chunk, |mut row, (book, w)| {
                row.push_bind(**book).push_bind(**w);
            });
            q.push(" ON DUPLICATE KEY UPDATE log_weight = VALUES(log_weight)");
            q.build().execute(&mut *conn).await?;
        }
        let pairs: Vec<_> = changes.cooccurrence.iter().collect();
        for chunk in pairs.chunks(CHUNK) {
            let mut q =
                QueryBuilder::<MySql>::new("INSERT INTO rec_cooccurrence (book_id, neighbour, n) ");
            q.push_values(chunk, |mut row, ((book, neighbour), n)| {
                row.push_bind(*book)
                    .push_bind(*neighbour)
                    .push_bind(i64::try_from(**n).unwrap_or(i64::MAX));
            });
            q.push(" ON DUPLICATE KEY UPDATE n = n + VALUES(n)");
            q.build().execute(&mut *conn).await?;
        }
        // Each grown neighbour list keeps its strongest `neighbours_per_book` (ties: lower id).
        // MariaDB refuses LIMIT in an IN subquery: find the last row kept, then delete those
        // after it. The locking read waits for concurrent batches growing the same list, so the
        // cut is taken on the list as it will be committed.
        let keep = settings.neighbours_per_book.max(1);
        for book in &changes.touched_books {
            let cut: Option<(i64, i64)> = sqlx::query_as(concat!(
                "SELECT n, neighbour FROM rec_cooccurrence WHERE book_id = ? ",
                "ORDER BY n DESC, neighbour LIMIT 1 OFFSET ? FOR UPDATE"
            ))
            .bind(book)
            .bind(limit(keep - 1))
            .fetch_optional(&mut *conn)
            .await?;
            if let Some((n, neighbour)) = cut {
                sqlx::query(concat!(
                    "DELETE FROM rec_cooccurrence WHERE book_id = ? ",
                    "AND (n < ? OR (n = ? AND neighbour > ?))"
                ))
                .bind(book)
                .bind(n)
                .bind(n)
                .bind(neighbour)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }

    async fn neighbourhood(&self, user: &str, n: usize) -> Result<Neighbourhood, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let interests = sqlx::query(concat!(
            "SELECT book_id, log_weight, query FROM rec_user_books WHERE user_id = ? ",
            "ORDER BY log_weight DESC, book_id LIMIT ?"
        ))
        .bind(user)
        .bind(limit(INTEREST_BOOKS))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|row| {
            Ok(InterestBook {
                id: row.try_get(0)?,
                log_weight: row.try_get(1)?,
                query: text(&row, 2)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let mut hood = Neighbourhood {
            interests,
            ..Neighbourhood::default()
        };
        if !hood.interests.is_empty() {
            let mut q = QueryBuilder::<MySql>::new(
                "SELECT book_id, neighbour, n FROM rec_cooccurrence WHERE book_id IN (",
            );
            push_list(&mut q, hood.interests.iter().map(|b| b.id));
            for row in q.build().fetch_all(&mut *conn).await? {
                let count: i64 = row.try_get(2)?;
                hood.neighbours
                    .push((row.try_get(0)?, row.try_get(1)?, count.max(0) as u64));
            }
        }
        hood.authors = sqlx::query(concat!(
            "SELECT author, log_weight FROM rec_user_authors WHERE user_id = ? ",
            "ORDER BY log_weight DESC, author LIMIT ?"
        ))
        .bind(user)
        .bind(limit(TOP_AUTHORS))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| Ok((text(row, 0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()?;
        for (author, _) in &hood.authors {
            let ids: Vec<i64> = sqlx::query_scalar(concat!(
                "SELECT b.id FROM rec_books b LEFT JOIN rec_popular p ON p.book_id = b.id ",
                "WHERE b.author = ? AND NOT EXISTS (SELECT 1 FROM rec_user_shown u ",
                "WHERE u.user_id = ? AND u.book_id = b.id) ",
                "ORDER BY COALESCE(p.log_weight, -1e300) DESC, b.id LIMIT ?"
            ))
            .bind(author)
            .bind(user)
            .bind(limit(n))
            .fetch_all(&mut *conn)
            .await?;
            hood.author_books.extend(ids);
        }
        hood.popular = sqlx::query_scalar(concat!(
            "SELECT p.book_id FROM rec_popular p JOIN rec_books b ON b.id = p.book_id ",
            "WHERE NOT EXISTS (SELECT 1 FROM rec_user_shown u ",
            "WHERE u.user_id = ? AND u.book_id = p.book_id) ",
            "ORDER BY p.log_weight DESC, p.book_id LIMIT ?"
        ))
        .bind(user)
        .bind(limit(n))
        .fetch_all(&mut *conn)
        .await?;

        let candidates: Vec<i64> = hood.candidates().into_iter().collect();
        let neighbours: BTreeSet<i64> = hood.neighbours.iter().map(|(_, c, _)| *c).collect();
        let neighbours: Vec<i64> = neighbours.into_iter().collect();
        for chunk in neighbours.chunks(CHUNK) {
            let mut q =
                QueryBuilder::<MySql>::new("SELECT book_id FROM rec_user_shown WHERE user_id = ");
            q.push_bind(user).push(" AND book_id IN (");
            push_list(&mut q, chunk.iter().copied());
            let shown: Vec<i64> = q.build_query_scalar().fetch_all(&mut *conn).await?;
            hood.shown.extend(shown);
        }
        let mut catalog = HashMap::new();
        for chunk in candidates.chunks(CHUNK) {
            let mut q = QueryBuilder::<MySql>::new(concat!(
                "SELECT b.id, b.title, b.author, p.log_weight FROM rec_books b ",
                "LEFT JOIN rec_popular p ON p.book_id = b.id WHERE b.id IN ("
            ));
            push_list(&mut q, chunk.iter().copied());
            for row in q.build().fetch_all(&mut *conn).await? {
                let id: i64 = row.try_get(0)?;
                catalog.insert(
                    id,
                    (
                        CatalogEntry {
                            id,
                            title: text(&row, 1)?,
                            author: text(&row, 2)?,
                        },
                        row.try_get::<Option<f64>, _>(3)?,
                    ),
                );
            }
        }
        hood.catalog = catalog;
        Ok(hood)
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
        positions::load(&self.pool, group).await
    }

    async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
        let mut conn = self.pool.acquire().await.map_err(handler_error)?;
        // The locking reads protect rows not yet inserted only through REPEATABLE READ's gap
        // locks; a server configured for READ COMMITTED would let two batches insert the same
        // new popularity row from the same empty prior, losing one. This applies to the next
        // transaction only.
        (&mut *conn)
            .execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(handler_error)?;
        let mut tx = Connection::begin(&mut *conn).await.map_err(handler_error)?;
        positions::advance(&mut tx, batch).await?;
        let needs = needs(&self.settings, &batch.records);
        let prior = Self::load(&mut tx, &self.settings, &needs)
            .await
            .map_err(handler_error)?;
        let changes = apply(&self.settings, prior, &batch.records);
        Self::write(&mut tx, &self.settings, &changes)
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
        let hood = self.neighbourhood(user, n).await.map_err(repo_error)?;
        Ok(blend(&hood, n))
    }

    async fn interests(
        &self,
        user: &str,
        n: usize,
        now: DateTime<Utc>,
    ) -> Result<Interests, RepositoryError> {
        let mut conn = self.pool.acquire().await.map_err(repo_error)?;
        let books = sqlx::query(concat!(
            "SELECT book_id, title, author, log_weight, query FROM rec_user_books WHERE user_id = ? ",
            "ORDER BY log_weight DESC, book_id LIMIT ?"
        ))
        .bind(user)
        .bind(limit(n))
        .fetch_all(&mut *conn)
        .await
        .map_err(repo_error)?
        .into_iter()
        .map(|row| {
            Ok(InterestEntry {
                id: row.try_get(0)?,
                title: text(&row, 1)?,
                author: text(&row, 2)?,
                score: self.settings.weight_at(row.try_get(3)?, now),
                query: text(&row, 4)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(repo_error)?;
        let authors = sqlx::query(concat!(
            "SELECT author, log_weight FROM rec_user_authors WHERE user_id = ? ",
            "ORDER BY log_weight DESC, author LIMIT ?"
        ))
        .bind(user)
        .bind(limit(n))
        .fetch_all(&mut *conn)
        .await
        .map_err(repo_error)?;
        let queries = sqlx::query(concat!(
            "SELECT query, log_weight FROM rec_user_queries WHERE user_id = ? ",
            "ORDER BY log_weight DESC, query LIMIT ?"
        ))
        .bind(user)
        .bind(limit(n))
        .fetch_all(&mut *conn)
        .await
        .map_err(repo_error)?;
        let weighted = |rows: Vec<MySqlRow>| {
            rows.iter()
                .map(|row| {
                    Ok(WeightedName {
                        name: text(row, 0)?,
                        score: self.settings.weight_at(row.try_get(1)?, now),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(repo_error)
        };
        Ok(Interests {
            uid: user.to_owned(),
            books,
            authors: weighted(authors)?,
            queries: weighted(queries)?,
        })
    }

    async fn catalog_book(&self, id: i64) -> Result<Option<CatalogEntry>, RepositoryError> {
        sqlx::query("SELECT id, title, author FROM rec_books WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(repo_error)?
            .map(|row| {
                Ok(CatalogEntry {
                    id: row.try_get(0)?,
                    title: text(&row, 1)?,
                    author: text(&row, 2)?,
                })
            })
            .transpose()
            .map_err(repo_error)
    }

    async fn stats(&self) -> Result<RecommendStats, RepositoryError> {
        // Counting millions of co-occurrence rows takes InnoDB seconds: the pair count is the
        // table statistics' estimate (exact counts for the catalog and the users).
        let (books, users, pairs): (i64, i64, i64) = sqlx::query_as(concat!(
            "SELECT (SELECT COUNT(*) FROM rec_books), ",
            "(SELECT COUNT(DISTINCT user_id) FROM rec_user_queries), ",
            "(SELECT CAST(COALESCE(MAX(TABLE_ROWS), 0) AS SIGNED) FROM information_schema.TABLES ",
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'rec_cooccurrence')"
        ))
        .fetch_one(&self.pool)
        .await
        .map_err(repo_error)?;
        Ok(RecommendStats {
            catalog_books: count(books),
            users: count(users),
            cooccurrence_pairs: count(pairs),
        })
    }

    async fn snapshot(&self) -> Result<Snapshot, RepositoryError> {
        let mut conn = self.pool.acquire().await.map_err(repo_error)?;
        let rows = |sql: &'static str| sqlx::query(sql);
        let catalog = rows("SELECT id, title, author FROM rec_books")
            .fetch_all(&mut *conn)
            .await
            .map_err(repo_error)?
            .iter()
            .map(|row| {
                Ok(CatalogEntry {
                    id: row.try_get(0)?,
                    title: text(row, 1)?,
                    author: text(row, 2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(repo_error)?;
        let user_books = rows("SELECT user_id, book_id, log_weight, last_at FROM rec_user_books")
            .fetch_all(&mut *conn)
            .await
            .map_err(repo_error)?
            .iter()
            .map(|row| {
                Ok((
                    text(row, 0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(repo_error)?;
        let user_authors = rows("SELECT user_id, author, log_weight FROM rec_user_authors")
            .fetch_all(&mut *conn)
            .await
            .map_err(repo_error)?
            .iter()
            .map(|row| Ok((text(row, 0)?, text(row, 1)?, row.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(repo_error)?;
        let user_queries = rows("SELECT user_id, query, log_weight, last_at FROM rec_user_queries")
            .fetch_all(&mut *conn)
            .await
            .map_err(repo_error)?
            .iter()
            .map(|row| {
                Ok((
                    text(row, 0)?,
                    text(row, 1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(repo_error)?;
        let popular = sqlx::query_as("SELECT book_id, log_weight FROM rec_popular")
            .fetch_all(&mut *conn)
            .await
            .map_err(repo_error)?;
        let pairs: Vec<(i64, i64, i64)> =
            sqlx::query_as("SELECT book_id, neighbour, n FROM rec_cooccurrence")
                .fetch_all(&mut *conn)
                .await
                .map_err(repo_error)?;
        let shown = sqlx::query("SELECT user_id, book_id FROM rec_user_shown")
            .fetch_all(&mut *conn)
            .await
            .map_err(repo_error)?
            .iter()
            .map(|row| Ok((text(row, 0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(repo_error)?;
        Ok(Snapshot {
            shown,
            catalog,
            user_books,
            user_authors,
            user_queries,
            popular,
            cooccurrence: pairs
                .into_iter()
                .map(|(b, c, n)| (b, c, count(n)))
                .collect(),
        }
        .sorted())
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(repo_error)?;
        Ok(())
    }
}
