//! The recommendation store on SQLite (the embedded default): the rules of
//! `bookstore_domain::recommend`, applied per batch in one transaction together with the consumed
//! positions. Every statement is static; lists of ids are bound one by one through
//! [`QueryBuilder`].

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
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use crate::positions::{self, handler_error};
use crate::repo_error;

const SCHEMA: [&str; 10] = [
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_books (id INTEGER PRIMARY KEY, title TEXT NOT NULL, ",
        "author TEXT NOT NULL) STRICT"
    ),
    "CREATE INDEX IF NOT EXISTS rec_books_by_author ON rec_books (author, id)",
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_user_books (user_id TEXT NOT NULL, book_id INTEGER NOT NULL, ",
        "log_weight REAL NOT NULL, last_at INTEGER NOT NULL, title TEXT NOT NULL, ",
        "author TEXT NOT NULL, query TEXT NOT NULL, PRIMARY KEY (user_id, book_id)) STRICT, WITHOUT ROWID"
    ),
    concat!(
        "CREATE INDEX IF NOT EXISTS rec_user_books_by_weight ",
        "ON rec_user_books (user_id, log_weight DESC, book_id)"
    ),
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_user_shown (user_id TEXT NOT NULL, book_id INTEGER NOT NULL, ",
        "PRIMARY KEY (user_id, book_id)) STRICT, WITHOUT ROWID"
    ),
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_user_authors (user_id TEXT NOT NULL, author TEXT NOT NULL, ",
        "log_weight REAL NOT NULL, PRIMARY KEY (user_id, author)) STRICT, WITHOUT ROWID"
    ),
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_user_queries (user_id TEXT NOT NULL, query TEXT NOT NULL, ",
        "log_weight REAL NOT NULL, last_at INTEGER NOT NULL, PRIMARY KEY (user_id, query)) ",
        "STRICT, WITHOUT ROWID"
    ),
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_popular (book_id INTEGER PRIMARY KEY, ",
        "log_weight REAL NOT NULL) STRICT"
    ),
    "CREATE INDEX IF NOT EXISTS rec_popular_by_weight ON rec_popular (log_weight DESC, book_id)",
    concat!(
        "CREATE TABLE IF NOT EXISTS rec_cooccurrence (book_id INTEGER NOT NULL, ",
        "neighbour INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (book_id, neighbour)) ",
        "STRICT, WITHOUT ROWID"
    ),
];

/// Rows per multi-row statement (well under SQLite's limit of bound variables).
const CHUNK: usize = 500;

/// Recommendations in a SQLite database (`<data_dir>/recommend.db` by default).
pub struct SqliteRecommendations {
    pool: SqlitePool,
    settings: RecommendSettings,
}

impl SqliteRecommendations {
    pub async fn new(pool: SqlitePool, settings: RecommendSettings) -> Result<Self, sqlx::Error> {
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        positions::create_table(&pool).await?;
        Ok(Self { pool, settings })
    }

    /// Reads what a batch needs, inside its transaction.
    async fn load(
        conn: &mut SqliteConnection,
        settings: &RecommendSettings,
        needs: &Needs,
    ) -> Result<Prior, sqlx::Error> {
        let mut prior = Prior::default();
        for (user, wanted) in &needs.users {
            let books: Vec<i64> = wanted.books.iter().copied().collect();
            for chunk in books.chunks(CHUNK) {
                let mut q = QueryBuilder::<Sqlite>::new(concat!(
                    "SELECT book_id, log_weight, last_at, title, author, query FROM rec_user_books ",
                    "WHERE user_id = "
                ));
                q.push_bind(user).push(" AND book_id IN (");
                push_list(&mut q, chunk.iter().copied());
                for row in q.build().fetch_all(&mut *conn).await? {
                    prior.user_books.insert(
                        (user.clone(), row.try_get(0)?),
                        UserBook {
                            log_weight: row.try_get(1)?,
                            last_at: row.try_get(2)?,
                            title: row.try_get(3)?,
                            author: row.try_get(4)?,
                            query: row.try_get(5)?,
                        },
                    );
                }
            }
            let top = sqlx::query(concat!(
                "SELECT book_id, log_weight FROM rec_user_books WHERE user_id = ? ",
                "ORDER BY log_weight DESC, book_id LIMIT ?"
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
                let mut q = QueryBuilder::<Sqlite>::new(
                    "SELECT author, log_weight FROM rec_user_authors WHERE user_id = ",
                );
                q.push_bind(user).push(" AND author IN (");
                push_list(&mut q, chunk.iter().map(|a| (*a).clone()));
                for row in q.build().fetch_all(&mut *conn).await? {
                    prior
                        .user_authors
                        .insert((user.clone(), row.try_get(0)?), row.try_get(1)?);
                }
            }
            let queries: Vec<&String> = wanted.queries.iter().collect();
            for chunk in queries.chunks(CHUNK) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "SELECT query, log_weight, last_at FROM rec_user_queries WHERE user_id = ",
                );
                q.push_bind(user).push(" AND query IN (");
                push_list(&mut q, chunk.iter().map(|a| (*a).clone()));
                for row in q.build().fetch_all(&mut *conn).await? {
                    prior.user_queries.insert(
                        (user.clone(), row.try_get(0)?),
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
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT book_id, log_weight FROM rec_popular WHERE book_id IN (",
            );
            push_list(&mut q, chunk.iter().copied());
            for row in q.build().fetch_all(&mut *conn).await? {
                prior.popular.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        Ok(prior)
    }

    /// Writes a batch's changes, inside its transaction.
    async fn write(
        conn: &mut SqliteConnection,
        settings: &RecommendSettings,
        changes: &Changes,
    ) -> Result<(), sqlx::Error> {
        let catalog: Vec<_> = changes.catalog.values().collect();
        for chunk in catalog.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO rec_books (id, title, author) ");
            q.push_values(chunk, |mut row, book| {
                row.push_bind(book.id)
                    .push_bind(&book.title)
                    .push_bind(&book.author);
            });
            q.push(concat!(
                " ON CONFLICT (id) DO UPDATE SET title = excluded.title, ",
                "author = excluded.author"
            ));
            q.build().execute(&mut *conn).await?;
        }
        // Deleted books leave the catalog copy: every candidate is looked up there, so they are
        // never recommended again.
        let deleted: Vec<i64> = changes.deleted.iter().copied().collect();
        for chunk in deleted.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("DELETE FROM rec_books WHERE id IN (");
            push_list(&mut q, chunk.iter().copied());
            q.build().execute(&mut *conn).await?;
        }
        let books: Vec<_> = changes.user_books.iter().collect();
        for chunk in books.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO rec_user_books (user_id, book_id, log_weight, last_at, title, author, query) ",
            );
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
                " ON CONFLICT (user_id, book_id) DO UPDATE SET log_weight = excluded.log_weight, ",
                "last_at = excluded.last_at, title = excluded.title, author = excluded.author, ",
                "query = excluded.query"
            ));
            q.build().execute(&mut *conn).await?;
        }
        let shown: Vec<_> = changes.shown.iter().collect();
        for chunk in shown.chunks(CHUNK) {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO rec_user_shown (user_id, book_id) ");
            q.push_values(chunk, |mut row, (user, book)| {
                row.push_bind(user).push_bind(*book);
            });
            q.push(" ON CONFLICT (user_id, book_id) DO NOTHING");
            q.build().execute(&mut *conn).await?;
        }
        let authors: Vec<_> = changes.user_authors.iter().collect();
        for chunk in authors.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO rec_user_authors (user_id, author, log_weight) ",
            );
            q.push_values(chunk, |mut row, ((user, author), w)| {
                row.push_bind(user).push_bind(author).push_bind(*w);
            });
            q.push(" ON CONFLICT (user_id, author) DO UPDATE SET log_weight = excluded.log_weight");
            q.build().execute(&mut *conn).await?;
        }
        let queries: Vec<_> = changes.user_queries.iter().collect();
        for chunk in queries.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO rec_user_queries (user_id, query, log_weight, last_at) ",
            );
            q.push_values(chunk, |mut row, ((user, query), w)| {
                row.push_bind(user)
                    .push_bind(query)
                    .push_bind(w.log_weight)
                    .push_bind(w.last_at);
            });
            q.push(concat!(
                " ON CONFLICT (user_id, query) DO UPDATE SET log_weight = excluded.log_weight, ",
                "last_at = excluded.last_at"
            ));
            q.build().execute(&mut *conn).await?;
        }
        let popular: Vec<_> = changes.popular.iter().collect();
        for chunk in popular.chunks(CHUNK) {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO rec_popular (book_id, log_weight) ");
            q.push_values(chunk, |mut row, (book, w)| {
                row.push_bind(**book).push_bind(**w);
            });
            q.push(" ON CONFLICT (book_id) DO UPDATE SET log_weight = excluded.log_weight");
            q.build().execute(&mut *conn).await?;
        }
        let pairs: Vec<_> = changes.cooccurrence.iter().collect();
        for chunk in pairs.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO rec_cooccurrence (book_id, neighbour, n) ",
            );
            q.push_values(chunk, |mut row, ((book, neighbour), n)| {
                row.push_bind(*book)
                    .push_bind(*neighbour)
                    .push_bind(i64::try_from(**n).unwrap_or(i64::MAX));
            });
            q.push(" ON CONFLICT (book_id, neighbour) DO UPDATE SET n = rec_cooccurrence.n + excluded.n");
            q.build().execute(&mut *conn).await?;
        }
        // Each grown neighbour list keeps its strongest `neighbours_per_book` (ties: lower id).
        let keep = settings.neighbours_per_book.max(1);
        for book in &changes.touched_books {
            let cut: Option<(i64, i64)> = sqlx::query_as(concat!(
                "SELECT n, neighbour FROM rec_cooccurrence WHERE book_id = ? ",
                "ORDER BY n DESC, neighbour LIMIT 1 OFFSET ?"
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
                query: row.try_get(2)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let mut hood = Neighbourhood {
            interests,
            ..Neighbourhood::default()
        };
        if !hood.interests.is_empty() {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT book_id, neighbour, n FROM rec_cooccurrence WHERE book_id IN (",
            );
            push_list(&mut q, hood.interests.iter().map(|b| b.id));
            for row in q.build().fetch_all(&mut *conn).await? {
                let count: i64 = row.try_get(2)?;
                hood.neighbours
                    .push((row.try_get(0)?, row.try_get(1)?, count.max(0) as u64));
            }
        }
        hood.authors = sqlx::query_as(concat!(
            "SELECT author, log_weight FROM rec_user_authors WHERE user_id = ? ",
            "ORDER BY log_weight DESC, author LIMIT ?"
        ))
        .bind(user)
        .bind(limit(TOP_AUTHORS))
        .fetch_all(&mut *conn)
        .await?;
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
                QueryBuilder::<Sqlite>::new("SELECT book_id FROM rec_user_shown WHERE user_id = ");
            q.push_bind(user).push(" AND book_id IN (");
            push_list(&mut q, chunk.iter().copied());
            let shown: Vec<i64> = q.build_query_scalar().fetch_all(&mut *conn).await?;
            hood.shown.extend(shown);
        }
        let mut catalog = HashMap::new();
        for chunk in candidates.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(concat!(
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
                            title: row.try_get(1)?,
                            author: row.try_get(2)?,
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

#[async_trait]
impl EventHandler for SqliteRecommendations {
    fn name(&self) -> &str {
        "recommend"
    }

    async fn positions(&self, group: &str) -> Result<Vec<Position>, HandlerError> {
        positions::load(&self.pool, group).await
    }

    async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
        let mut tx = self.pool.begin().await.map_err(handler_error)?;
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
impl RecommendStore for SqliteRecommendations {
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
                title: row.try_get(1)?,
                author: row.try_get(2)?,
                score: self.settings.weight_at(row.try_get(3)?, now),
                query: row.try_get(4)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(repo_error)?;
        let authors: Vec<(String, f64)> = sqlx::query_as(concat!(
            "SELECT author, log_weight FROM rec_user_authors WHERE user_id = ? ",
            "ORDER BY log_weight DESC, author LIMIT ?"
        ))
        .bind(user)
        .bind(limit(n))
        .fetch_all(&mut *conn)
        .await
        .map_err(repo_error)?;
        let queries: Vec<(String, f64)> = sqlx::query_as(concat!(
            "SELECT query, log_weight FROM rec_user_queries WHERE user_id = ? ",
            "ORDER BY log_weight DESC, query LIMIT ?"
        ))
        .bind(user)
        .bind(limit(n))
        .fetch_all(&mut *conn)
        .await
        .map_err(repo_error)?;
        let weighted = |rows: Vec<(String, f64)>| {
            rows.into_iter()
                .map(|(name, log)| WeightedName {
                    name,
                    score: self.settings.weight_at(log, now),
                })
                .collect()
        };
        Ok(Interests {
            uid: user.to_owned(),
            books,
            authors: weighted(authors),
            queries: weighted(queries),
        })
    }

    async fn catalog_book(&self, id: i64) -> Result<Option<CatalogEntry>, RepositoryError> {
        let row: Option<(i64, String, String)> =
            sqlx::query_as("SELECT id, title, author FROM rec_books WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(repo_error)?;
        Ok(row.map(|(id, title, author)| CatalogEntry { id, title, author }))
    }

    async fn stats(&self) -> Result<RecommendStats, RepositoryError> {
        let (books, users, pairs): (i64, i64, i64) = sqlx::query_as(concat!(
            "SELECT (SELECT COUNT(*) FROM rec_books), ",
            "(SELECT COUNT(DISTINCT user_id) FROM rec_user_queries), ",
            "(SELECT COUNT(*) FROM rec_cooccurrence)"
        ))
        .fetch_one(&self.pool)
        .await
        .map_err(repo_error)?;
        Ok(RecommendStats {
            catalog_books: books.max(0) as u64,
            users: users.max(0) as u64,
            cooccurrence_pairs: pairs.max(0) as u64,
        })
    }

    async fn snapshot(&self) -> Result<Snapshot, RepositoryError> {
        let mut conn = self.pool.acquire().await.map_err(repo_error)?;
        let catalog: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT id, title, author FROM rec_books")
                .fetch_all(&mut *conn)
                .await
                .map_err(repo_error)?;
        let user_books =
            sqlx::query_as("SELECT user_id, book_id, log_weight, last_at FROM rec_user_books")
                .fetch_all(&mut *conn)
                .await
                .map_err(repo_error)?;
        let user_authors =
            sqlx::query_as("SELECT user_id, author, log_weight FROM rec_user_authors")
                .fetch_all(&mut *conn)
                .await
                .map_err(repo_error)?;
        let user_queries =
            sqlx::query_as("SELECT user_id, query, log_weight, last_at FROM rec_user_queries")
                .fetch_all(&mut *conn)
                .await
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
        let shown = sqlx::query_as("SELECT user_id, book_id FROM rec_user_shown")
            .fetch_all(&mut *conn)
            .await
            .map_err(repo_error)?;
        Ok(Snapshot {
            shown,
            catalog: catalog
                .into_iter()
                .map(|(id, title, author)| CatalogEntry { id, title, author })
                .collect(),
            user_books,
            user_authors,
            user_queries,
            popular,
            cooccurrence: pairs
                .into_iter()
                .map(|(b, c, n)| (b, c, n.max(0) as u64))
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
}
