//! The trend store on SQLite (the embedded default): the rules of `bookstore_domain::trends`,
//! applied per batch in one transaction together with the consumed positions.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use bookstore_domain::trends::{
    Audience, CapKey, Trend, TrendBook, TrendRanking, TrendSettings, TrendState, ViewedBook,
    ViewedState, cap_keys, cap_owners, forget_caps, passes_cap, rank, rank_viewed, view_cap_keys,
    view_passes_cap,
};
use bookstore_domain::{Batch, EventHandler, HandlerError, Position, RepositoryError, TrendStore};
use chrono::{DateTime, Utc};
use sqlx::{Row, SqliteConnection, SqlitePool};

use crate::positions;

const SCHEMA: [&str; 9] = [
    concat!(
        "CREATE TABLE IF NOT EXISTS trends (query_normalized TEXT PRIMARY KEY, display TEXT NOT NULL, ",
        "count INTEGER NOT NULL, log_score REAL NOT NULL, books TEXT NOT NULL, ",
        "last_searched_at INTEGER NOT NULL) STRICT"
    ),
    "CREATE INDEX IF NOT EXISTS trends_by_score ON trends (log_score DESC)",
    "CREATE INDEX IF NOT EXISTS trends_by_count ON trends (count DESC)",
    concat!(
        "CREATE TABLE IF NOT EXISTS trend_spellings (query_normalized TEXT NOT NULL, ",
        "spelling TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (query_normalized, spelling)) ",
        "STRICT, WITHOUT ROWID"
    ),
    concat!(
        "CREATE TABLE IF NOT EXISTS trend_caps (window INTEGER NOT NULL, user_id TEXT NOT NULL, ",
        "query_normalized TEXT NOT NULL, n INTEGER NOT NULL, ",
        "PRIMARY KEY (window, user_id, query_normalized)) STRICT, WITHOUT ROWID"
    ),
    // Who searched a trend that is not public yet (at most trend.min_readers rows per trend).
    concat!(
        "CREATE TABLE IF NOT EXISTS trend_readers (query_normalized TEXT NOT NULL, ",
        "reader TEXT NOT NULL, PRIMARY KEY (query_normalized, reader)) STRICT, WITHOUT ROWID"
    ),
    // A forgotten reader's place among them, found without reading every trend's.
    "CREATE INDEX IF NOT EXISTS trend_readers_by_reader ON trend_readers (reader)",
    // The most viewed books (book.viewed); their cap counters are rows of trend_caps.
    concat!(
        "CREATE TABLE IF NOT EXISTS viewed_books (id INTEGER PRIMARY KEY, title TEXT NOT NULL, ",
        "author TEXT NOT NULL, views INTEGER NOT NULL, log_score REAL NOT NULL, ",
        "last_viewed_at INTEGER NOT NULL) STRICT"
    ),
    "CREATE INDEX IF NOT EXISTS viewed_books_by_score ON viewed_books (log_score DESC)",
];

/// Added after the first release: trends.db files made before get the column at start.
const ADD_PUBLIC: &str = "ALTER TABLE trends ADD COLUMN public INTEGER NOT NULL DEFAULT 0";
const PUBLIC_INDEXES: [&str; 2] = [
    "CREATE INDEX IF NOT EXISTS trends_public_by_score ON trends (public, log_score DESC)",
    "CREATE INDEX IF NOT EXISTS trends_public_by_count ON trends (public, count DESC)",
];

/// Stored instead of minus infinity (a trend none of whose searches scored).
const NO_SCORE: f64 = -1e300;

/// Trends in a SQLite database (`<data_dir>/trends.db` by default).
pub struct SqliteTrends {
    pool: SqlitePool,
    settings: TrendSettings,
}

impl SqliteTrends {
    pub async fn new(pool: SqlitePool, settings: TrendSettings) -> Result<Self, sqlx::Error> {
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        let has_public: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pragma_table_info('trends') WHERE name = 'public'",
        )
        .fetch_one(&pool)
        .await?;
        if has_public == 0 {
            sqlx::query(ADD_PUBLIC).execute(&pool).await?;
        }
        for statement in PUBLIC_INDEXES {
            sqlx::query(statement).execute(&pool).await?;
        }
        positions::create_table(&pool).await?;
        Ok(Self { pool, settings })
    }

    /// The stored state of each of `queries` that has one, read in a few statements per
    /// [`CHUNK`] of queries (a batch touches hundreds; one statement each was most of its cost).
    async fn load(
        conn: &mut SqliteConnection,
        queries: &BTreeSet<&str>,
    ) -> Result<BTreeMap<String, TrendState>, sqlx::Error> {
        let mut states = BTreeMap::new();
        let queries: Vec<&str> = queries.iter().copied().collect();
        for chunk in queries.chunks(CHUNK) {
            let chunk = json_array(chunk);
            let rows = sqlx::query(concat!(
                "SELECT query_normalized, display, count, log_score, books, last_searched_at, ",
                "public FROM trends WHERE query_normalized IN (SELECT value FROM json_each(?))"
            ))
            .bind(&chunk)
            .fetch_all(&mut *conn)
            .await?;
            for row in &rows {
                states.insert(
                    row.try_get::<String, _>("query_normalized")?,
                    state_from_row(row, BTreeMap::new())?,
                );
            }
            let spellings = sqlx::query(concat!(
                "SELECT query_normalized, spelling, n FROM trend_spellings ",
                "WHERE query_normalized IN (SELECT value FROM json_each(?))"
            ))
            .bind(&chunk)
            .fetch_all(&mut *conn)
            .await?;
            for row in &spellings {
                let query: String = row.try_get(0)?;
                if let Some(state) = states.get_mut(&query) {
                    let n = row.try_get::<i64, _>(2)?.max(0) as u64;
                    state.spellings.insert(row.try_get(1)?, n);
                }
            }
            let readers = sqlx::query(concat!(
                "SELECT query_normalized, reader FROM trend_readers ",
                "WHERE query_normalized IN (SELECT value FROM json_each(?))"
            ))
            .bind(&chunk)
            .fetch_all(&mut *conn)
            .await?;
            for row in &readers {
                let query: String = row.try_get(0)?;
                // A public trend keeps no readers.
                if let Some(state) = states.get_mut(&query).filter(|s| !s.public) {
                    state.readers.insert(row.try_get(1)?);
                }
            }
        }
        Ok(states)
    }

    /// Fills in the stored value of each counter of `caps` (0 for one not stored), a statement
    /// per [`CHUNK`] of counters.
    async fn load_caps(
        conn: &mut SqliteConnection,
        caps: &mut BTreeMap<CapKey, u32>,
    ) -> Result<(), sqlx::Error> {
        let keys: Vec<&CapKey> = caps.keys().collect();
        let mut stored = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let chunk = serde_json::Value::from(
                chunk
                    .iter()
                    .map(|(window, user, query)| serde_json::json!([window, user, query]))
                    .collect::<Vec<_>>(),
            );
            let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(concat!(
                "SELECT c.window, c.user_id, c.query_normalized, c.n FROM json_each(?) AS k ",
                "JOIN trend_caps AS c ON c.window = k.value ->> 0 AND c.user_id = k.value ->> 1 ",
                "AND c.query_normalized = k.value ->> 2"
            ))
            .bind(chunk.to_string())
            .fetch_all(&mut *conn)
            .await?;
            stored.extend(rows);
        }
        for (window, user, query, n) in stored {
            caps.insert(
                (window, user, query),
                n.clamp(0, i64::from(u32::MAX)) as u32,
            );
        }
        Ok(())
    }
}

impl SqliteTrends {
    /// The stored state of each of `ids` that has one, a statement per [`CHUNK`] of books.
    async fn load_viewed(
        conn: &mut SqliteConnection,
        ids: &BTreeSet<i64>,
    ) -> Result<BTreeMap<i64, ViewedState>, sqlx::Error> {
        let mut states = BTreeMap::new();
        let ids: Vec<i64> = ids.iter().copied().collect();
        for chunk in ids.chunks(CHUNK) {
            let rows = sqlx::query(concat!(
                "SELECT id, title, author, views, log_score, last_viewed_at FROM viewed_books ",
                "WHERE id IN (SELECT value FROM json_each(?))"
            ))
            .bind(serde_json::Value::from(chunk.to_vec()).to_string())
            .fetch_all(&mut *conn)
            .await?;
            for row in &rows {
                states.insert(row.try_get::<i64, _>("id")?, viewed_from_row(row)?);
            }
        }
        Ok(states)
    }
}

fn viewed_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ViewedState, sqlx::Error> {
    let log_score: f64 = row.try_get("log_score")?;
    Ok(ViewedState {
        log_score: if log_score <= NO_SCORE {
            f64::NEG_INFINITY
        } else {
            log_score
        },
        views: row.try_get::<i64, _>("views")?.max(0) as u64,
        title: row.try_get("title")?,
        author: row.try_get("author")?,
        last_viewed_at: DateTime::from_timestamp_millis(row.try_get("last_viewed_at")?)
            .unwrap_or_default(),
    })
}

/// Rows read or written in one statement (their keys go in as one JSON array).
const CHUNK: usize = 500;

fn json_array(items: &[&str]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

fn state_from_row(
    row: &sqlx::sqlite::SqliteRow,
    spellings: BTreeMap<String, u64>,
) -> Result<TrendState, sqlx::Error> {
    let log_score: f64 = row.try_get("log_score")?;
    let books: String = row.try_get("books")?;
    Ok(TrendState {
        log_score: if log_score <= NO_SCORE {
            f64::NEG_INFINITY
        } else {
            log_score
        },
        count: row.try_get::<i64, _>("count")?.max(0) as u64,
        display: row.try_get("display")?,
        spellings,
        books: serde_json::from_str::<Vec<TrendBook>>(&books).unwrap_or_default(),
        last_searched_at: DateTime::from_timestamp_millis(row.try_get("last_searched_at")?)
            .unwrap_or_default(),
        readers: BTreeSet::new(),
        public: row.try_get::<i64, _>("public")? != 0,
    })
}

fn unavailable(error: sqlx::Error) -> RepositoryError {
    RepositoryError::Unavailable(Box::new(error))
}

#[async_trait]
impl EventHandler for SqliteTrends {
    fn name(&self) -> &str {
        "trends"
    }

    async fn positions(&self, group: &str) -> Result<Vec<Position>, HandlerError> {
        positions::load(&self.pool, group).await
    }

    async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
        let mut tx = self.pool.begin().await.map_err(positions::handler_error)?;
        positions::advance(&mut tx, batch).await?;

        // Read what the batch touches, apply the rules in memory, write back.
        let searches: Vec<_> = batch
            .records
            .iter()
            // Only searches make trends, and readers forgotten are deleted; other events move
            // the position with the batch.
            .filter_map(|record| record.event.as_search())
            .collect();
        let queries: BTreeSet<&str> = searches
            .iter()
            .map(|event| event.query_normalized.as_str())
            .collect();
        let mut states = Self::load(&mut tx, &queries)
            .await
            .map_err(positions::handler_error)?;
        // The spellings and readers as loaded: only what the batch changed is written back.
        let mut loaded: BTreeMap<String, (BTreeMap<String, u64>, BTreeSet<String>)> = states
            .iter()
            .map(|(query, state)| {
                (
                    query.clone(),
                    (state.spellings.clone(), state.readers.clone()),
                )
            })
            .collect();
        let mut caps: BTreeMap<CapKey, u32> = BTreeMap::new();
        for event in &searches {
            let (reader, origin) = cap_keys(&self.settings, event);
            for key in [reader, origin].into_iter().flatten() {
                caps.insert(key, 0);
            }
        }
        // Views: their books, and their counters among the searches'.
        let views: Vec<_> = batch
            .records
            .iter()
            .filter_map(|record| record.event.as_view())
            .collect();
        for event in &views {
            let (reader, origin) = view_cap_keys(&self.settings, event);
            for key in [reader, origin].into_iter().flatten() {
                caps.insert(key, 0);
            }
        }
        let mut viewed = if views.is_empty() {
            BTreeMap::new()
        } else {
            let ids: BTreeSet<i64> = views.iter().map(|event| event.book.id).collect();
            Self::load_viewed(&mut tx, &ids)
                .await
                .map_err(positions::handler_error)?
        };
        Self::load_caps(&mut tx, &mut caps)
            .await
            .map_err(positions::handler_error)?;
        // In log order: a reader forgotten between two of their searches is forgotten for
        // the earlier one only.
        let mut forgotten = BTreeSet::new();
        for record in &batch.records {
            if let Some(event) = record.event.as_search() {
                let scores = passes_cap(&self.settings, &mut caps, event);
                states
                    .entry(event.query_normalized.clone())
                    .or_insert_with(|| TrendState::new(event.occurred_at))
                    .add(&self.settings, event, scores);
            } else if let Some(event) = record.event.as_view() {
                let scores = view_passes_cap(&self.settings, &mut caps, event);
                viewed
                    .entry(event.book.id)
                    .or_insert_with(|| ViewedState::new(event.occurred_at))
                    .add(&self.settings, event, scores);
            } else if let Some(event) = record.event.as_forgotten() {
                let user = event.user_id.as_str();
                // What the batch read of theirs, and (below, before anything is written) what
                // is stored of theirs; later searches of theirs count afresh.
                forget_caps(&mut caps, user);
                for state in states.values_mut() {
                    state.forget(user);
                }
                for (_, readers) in loaded.values_mut() {
                    readers.remove(user);
                }
                forgotten.insert(user);
            }
        }
        for user in forgotten {
            forget(&mut tx, user)
                .await
                .map_err(positions::handler_error)?;
        }

        // Spellings counted anew, written a chunk at a time.
        let mut spellings = Vec::new();
        for (query, state) in &states {
            let books = serde_json::to_string(&state.books)
                .map_err(|e| HandlerError::Rejected(e.to_string()))?;
            sqlx::query(concat!(
                "INSERT INTO trends (query_normalized, display, count, log_score, books, ",
                "last_searched_at, public) VALUES (?, ?, ?, ?, ?, ?, ?) ",
                "ON CONFLICT (query_normalized) DO UPDATE SET ",
                "display = excluded.display, count = excluded.count, log_score = excluded.log_score, ",
                "books = excluded.books, last_searched_at = excluded.last_searched_at, ",
                "public = excluded.public"
            ))
            .bind(query)
            .bind(&state.display)
            .bind(i64::try_from(state.count).unwrap_or(i64::MAX))
            .bind(if state.log_score.is_finite() { state.log_score } else { NO_SCORE })
            .bind(books)
            .bind(state.last_searched_at.timestamp_millis())
            .bind(i64::from(state.public))
            .execute(&mut *tx)
            .await
            .map_err(positions::handler_error)?;
            // The trend's few spellings and readers, as the rules left them.
            let (spellings_before, readers_before) = loaded.get(query).cloned().unwrap_or_default();
            for spelling in spellings_before.keys() {
                if !state.spellings.contains_key(spelling) {
                    sqlx::query(
                        "DELETE FROM trend_spellings WHERE query_normalized = ? AND spelling = ?",
                    )
                    .bind(query)
                    .bind(spelling)
                    .execute(&mut *tx)
                    .await
                    .map_err(positions::handler_error)?;
                }
            }
            for (spelling, n) in &state.spellings {
                if spellings_before.get(spelling) != Some(n) {
                    spellings.push(serde_json::json!([
                        query,
                        spelling,
                        (*n).min(i64::MAX as u64)
                    ]));
                }
            }
            if state.readers.is_empty() && !readers_before.is_empty() {
                sqlx::query("DELETE FROM trend_readers WHERE query_normalized = ?")
                    .bind(query)
                    .execute(&mut *tx)
                    .await
                    .map_err(positions::handler_error)?;
            }
            for reader in state.readers.difference(&readers_before) {
                sqlx::query(concat!(
                    "INSERT INTO trend_readers (query_normalized, reader) VALUES (?, ?) ",
                    "ON CONFLICT DO NOTHING"
                ))
                .bind(query)
                .bind(reader)
                .execute(&mut *tx)
                .await
                .map_err(positions::handler_error)?;
            }
        }
        for chunk in spellings.chunks(CHUNK) {
            sqlx::query(concat!(
                "INSERT INTO trend_spellings (query_normalized, spelling, n) ",
                "SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) WHERE true ",
                "ON CONFLICT (query_normalized, spelling) DO UPDATE SET n = excluded.n"
            ))
            .bind(serde_json::Value::from(chunk.to_vec()).to_string())
            .execute(&mut *tx)
            .await
            .map_err(positions::handler_error)?;
        }
        let viewed: Vec<serde_json::Value> = viewed
            .iter()
            .map(|(id, b)| {
                serde_json::json!([
                    id,
                    b.title,
                    b.author,
                    i64::try_from(b.views).unwrap_or(i64::MAX),
                    if b.log_score.is_finite() {
                        b.log_score
                    } else {
                        NO_SCORE
                    },
                    b.last_viewed_at.timestamp_millis()
                ])
            })
            .collect();
        for chunk in viewed.chunks(CHUNK) {
            sqlx::query(concat!(
                "INSERT INTO viewed_books (id, title, author, views, log_score, last_viewed_at) ",
                "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, ",
                "value ->> 5 FROM json_each(?) WHERE true ",
                "ON CONFLICT (id) DO UPDATE SET title = excluded.title, ",
                "author = excluded.author, views = excluded.views, ",
                "log_score = excluded.log_score, last_viewed_at = excluded.last_viewed_at"
            ))
            .bind(serde_json::Value::from(chunk.to_vec()).to_string())
            .execute(&mut *tx)
            .await
            .map_err(positions::handler_error)?;
        }
        let caps: Vec<serde_json::Value> = caps
            .iter()
            .map(|((window, user, query), n)| serde_json::json!([window, user, query, n]))
            .collect();
        for chunk in caps.chunks(CHUNK) {
            sqlx::query(concat!(
                "INSERT INTO trend_caps (window, user_id, query_normalized, n) ",
                "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?) ",
                "WHERE true ",
                "ON CONFLICT (window, user_id, query_normalized) DO UPDATE SET n = excluded.n"
            ))
            .bind(serde_json::Value::from(chunk.to_vec()).to_string())
            .execute(&mut *tx)
            .await
            .map_err(positions::handler_error)?;
        }

        prune(&mut tx, &self.settings, Utc::now())
            .await
            .map_err(positions::handler_error)?;
        tx.commit().await.map_err(positions::handler_error)
    }
}

/// Deletes what is stored about the reader `user` (`reader.forgotten`): their cap counters as
/// reader and as origin in every window kept (a window at a time, along the primary key), and
/// their place among the origins of trends not public yet.
async fn forget(conn: &mut SqliteConnection, user: &str) -> Result<(), sqlx::Error> {
    let [reader, origin] = cap_owners(user);
    let mut window: Option<i64> = sqlx::query_scalar("SELECT MIN(window) FROM trend_caps")
        .fetch_one(&mut *conn)
        .await?;
    while let Some(current) = window {
        sqlx::query("DELETE FROM trend_caps WHERE window = ? AND user_id IN (?, ?)")
            .bind(current)
            .bind(&reader)
            .bind(&origin)
            .execute(&mut *conn)
            .await?;
        window = sqlx::query_scalar("SELECT MIN(window) FROM trend_caps WHERE window > ?")
            .bind(current)
            .fetch_one(&mut *conn)
            .await?;
    }
    sqlx::query("DELETE FROM trend_readers WHERE reader = ?")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Removes decayed trends and all but the best `max_trends`, and cap counters of past windows.
async fn prune(
    conn: &mut SqliteConnection,
    settings: &TrendSettings,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut removed = sqlx::query("DELETE FROM trends WHERE log_score < ?")
        .bind(settings.prune_below(now))
        .execute(&mut *conn)
        .await?
        .rows_affected();
    removed += sqlx::query(concat!(
        "DELETE FROM trends WHERE log_score < ",
        "(SELECT log_score FROM trends ORDER BY log_score DESC LIMIT 1 OFFSET ?)"
    ))
    .bind(i64::try_from(settings.max_trends.max(1) - 1).unwrap_or(i64::MAX))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if removed > 0 {
        sqlx::query(concat!(
            "DELETE FROM trend_spellings WHERE query_normalized NOT IN ",
            "(SELECT query_normalized FROM trends)"
        ))
        .execute(&mut *conn)
        .await?;
        sqlx::query(concat!(
            "DELETE FROM trend_readers WHERE query_normalized NOT IN ",
            "(SELECT query_normalized FROM trends)"
        ))
        .execute(&mut *conn)
        .await?;
    }
    // Viewed books, by the same rules, cut separately.
    sqlx::query("DELETE FROM viewed_books WHERE log_score < ?")
        .bind(settings.prune_below(now))
        .execute(&mut *conn)
        .await?;
    sqlx::query(concat!(
        "DELETE FROM viewed_books WHERE log_score < ",
        "(SELECT log_score FROM viewed_books ORDER BY log_score DESC LIMIT 1 OFFSET ?)"
    ))
    .bind(i64::try_from(settings.max_trends.max(1) - 1).unwrap_or(i64::MAX))
    .execute(&mut *conn)
    .await?;
    // Cap counters of the newest window and the two before it are kept (event time).
    sqlx::query(concat!(
        "DELETE FROM trend_caps WHERE window < ",
        "(SELECT MAX(window) FROM trend_caps) - 2"
    ))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl TrendStore for SqliteTrends {
    async fn top(
        &self,
        n: usize,
        by: TrendRanking,
        audience: Audience,
        now: DateTime<Utc>,
    ) -> Result<Vec<Trend>, RepositoryError> {
        let statement: &'static str = match (by, audience) {
            (TrendRanking::Score, Audience::Everyone) => concat!(
                "SELECT query_normalized, display, count, log_score, books, last_searched_at, ",
                "public FROM trends ORDER BY log_score DESC, count DESC, query_normalized LIMIT ?"
            ),
            (TrendRanking::Count, Audience::Everyone) => concat!(
                "SELECT query_normalized, display, count, log_score, books, last_searched_at, ",
                "public FROM trends ORDER BY count DESC, log_score DESC, query_normalized LIMIT ?"
            ),
            (TrendRanking::Score, Audience::Public) => concat!(
                "SELECT query_normalized, display, count, log_score, books, last_searched_at, ",
                "public FROM trends WHERE public = 1 ",
                "ORDER BY log_score DESC, count DESC, query_normalized LIMIT ?"
            ),
            (TrendRanking::Count, Audience::Public) => concat!(
                "SELECT query_normalized, display, count, log_score, books, last_searched_at, ",
                "public FROM trends WHERE public = 1 ",
                "ORDER BY count DESC, log_score DESC, query_normalized LIMIT ?"
            ),
        };
        let rows = sqlx::query(statement)
            .bind(i64::try_from(n).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut trends = Vec::with_capacity(rows.len());
        for row in &rows {
            let query: String = row.try_get("query_normalized").map_err(unavailable)?;
            let state = state_from_row(row, BTreeMap::new()).map_err(unavailable)?;
            trends.push(state.to_trend(&query, &self.settings, now));
        }
        rank(&mut trends, by);
        Ok(trends)
    }

    async fn trend(
        &self,
        query_normalized: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Trend>, RepositoryError> {
        let row = sqlx::query(concat!(
            "SELECT display, count, log_score, books, last_searched_at, public FROM trends ",
            "WHERE query_normalized = ?"
        ))
        .bind(query_normalized)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.map(|row| {
            state_from_row(&row, BTreeMap::new())
                .map(|state| state.to_trend(query_normalized, &self.settings, now))
                .map_err(unavailable)
        })
        .transpose()
    }

    async fn viewed_books(
        &self,
        n: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<ViewedBook>, RepositoryError> {
        let rows = sqlx::query(concat!(
            "SELECT id, title, author, views, log_score, last_viewed_at FROM viewed_books ",
            "ORDER BY log_score DESC, views DESC, id LIMIT ?"
        ))
        .bind(i64::try_from(n).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut books = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id").map_err(unavailable)?;
            let state = viewed_from_row(row).map_err(unavailable)?;
            books.push(state.to_viewed(id, &self.settings, now));
        }
        rank_viewed(&mut books);
        Ok(books)
    }

    async fn holds_reader(&self, user_id: &str) -> Result<bool, RepositoryError> {
        let [reader, origin] = cap_owners(user_id);
        sqlx::query_scalar(concat!(
            "SELECT EXISTS (SELECT 1 FROM trend_caps WHERE user_id IN (?, ?)) ",
            "OR EXISTS (SELECT 1 FROM trend_readers WHERE reader = ?)"
        ))
        .bind(reader)
        .bind(origin)
        .bind(user_id)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bookstore_testkit::conformance::trends as conformance;

    use super::*;

    // More queries and counters in one batch than one statement reads or writes ([`CHUNK`]):
    // every one of them is read back and counted again by the next batch.
    #[tokio::test]
    async fn batches_larger_than_a_chunk_are_applied_whole() {
        use bookstore_domain::events::{Event, SearchEvent};
        use bookstore_domain::{PositionUpdate, Record};
        let pool = crate::connect("sqlite::memory:", 1).await.unwrap();
        let settings = TrendSettings {
            max_trends: 10_000,
            ..TrendSettings::default()
        };
        let store = SqliteTrends::new(pool, settings).await.unwrap();
        let queries = CHUNK * 2 + 300;
        let at = Utc::now();
        for round in 0..2_i64 {
            let records = (0..queries)
                .map(|i| Record {
                    topic: "t".into(),
                    partition: 0,
                    offset: round * queries as i64 + i as i64,
                    event: Event::BookSearched(
                        SearchEvent::new(
                            uuid::Uuid::now_v7(),
                            at,
                            Some(format!("reader {}", i % 7)),
                            &format!("query {i}"),
                            0,
                            vec![],
                        )
                        .with_client(Some(format!("network {}", i % 5))),
                    ),
                })
                .collect();
            let batch = Batch {
                group: "g".into(),
                records,
                positions: vec![PositionUpdate {
                    topic: "t".into(),
                    partition: 0,
                    from: (round > 0).then_some(queries as i64),
                    to: (round + 1) * queries as i64,
                }],
            };
            store.apply(&batch).await.unwrap();
        }
        let counted = |sql: &'static str| {
            let pool = store.pool.clone();
            async move {
                sqlx::query_as::<_, (i64, i64, i64)>(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        let queries = queries as i64;
        // Rows, and the least and most of their counts.
        assert_eq!(
            counted("SELECT COUNT(*), MIN(count), MAX(count) FROM trends").await,
            (queries, 2, 2)
        );
        assert_eq!(
            counted("SELECT COUNT(*), MIN(n), MAX(n) FROM trend_spellings").await,
            (queries, 2, 2)
        );
        // A reader's and a network's counter per query.
        assert_eq!(
            counted("SELECT COUNT(*), MIN(n), MAX(n) FROM trend_caps").await,
            (2 * queries, 2, 2)
        );
    }

    #[tokio::test]
    async fn the_store_follows_the_reference_rules() {
        let pool = crate::connect("sqlite::memory:", 1).await.unwrap();
        let store = SqliteTrends::new(pool, conformance::settings())
            .await
            .unwrap();
        conformance::check_store(&store).await;
        // The check searches one query in six spellings: a bounded number of them is stored.
        let most: i64 = sqlx::query_scalar(concat!(
            "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM trend_spellings ",
            "GROUP BY query_normalized)"
        ))
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(most, bookstore_domain::trends::SPELLINGS_PER_TREND as i64);
        let readers: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM trend_readers JOIN trends USING (query_normalized) ",
            "WHERE public = 1"
        ))
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(readers, 0, "public trends forget their readers");
    }

    #[tokio::test]
    async fn the_store_forgets_readers_as_the_reference_does() {
        let pool = crate::connect("sqlite::memory:", 1).await.unwrap();
        let store = SqliteTrends::new(pool, conformance::settings())
            .await
            .unwrap();
        conformance::check_forgetting(&store).await;
        // Read directly, not through holds_reader: no row names the forgotten reader.
        let rows: i64 = sqlx::query_scalar(concat!(
            "SELECT (SELECT COUNT(*) FROM trend_caps WHERE user_id LIKE '%forgetful%') ",
            "+ (SELECT COUNT(*) FROM trend_readers WHERE reader LIKE '%forgetful%')"
        ))
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(rows, 0);
    }

    #[tokio::test]
    async fn the_store_keeps_viewed_books_as_the_reference_does() {
        let pool = crate::connect("sqlite::memory:", 1).await.unwrap();
        let store = SqliteTrends::new(pool, conformance::settings())
            .await
            .unwrap();
        conformance::check_views(&store).await;
        let rows: i64 = sqlx::query_scalar(concat!(
            "SELECT (SELECT COUNT(*) FROM trend_caps WHERE user_id LIKE '%forgetful%') ",
            "+ (SELECT COUNT(*) FROM viewed_books WHERE id = 4)"
        ))
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(rows, 0, "forgotten counters and pruned books are deleted");
    }

    #[tokio::test]
    async fn a_trends_file_from_before_public_trends_is_upgraded() {
        let pool = crate::connect("sqlite::memory:", 1).await.unwrap();
        sqlx::query(SCHEMA[0]).execute(&pool).await.unwrap();
        sqlx::query(concat!(
            "INSERT INTO trends (query_normalized, display, count, log_score, books, ",
            "last_searched_at) VALUES ('old', 'Old', 5, 1.0, '[]', 0)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        let store = SqliteTrends::new(pool, conformance::settings())
            .await
            .unwrap();
        let everyone = store
            .top(10, TrendRanking::Score, Audience::Everyone, Utc::now())
            .await
            .unwrap();
        assert_eq!(
            (everyone[0].query.as_str(), everyone[0].public),
            ("Old", false)
        );
        // Opening it again changes nothing.
        SqliteTrends::new(store.pool.clone(), conformance::settings())
            .await
            .unwrap();
    }
}
