//! The trend store on Redis.
//!
//! A forgotten reader (`reader.forgotten`) is deleted by the batch's script, in log order with
//! the searches around it. Their cap counters are one hash per window and reader
//! (`cap:<window>:<reader>`, and `cap:<window>:\u{1}<user>` for the origin counters of their
//! searches without a client), so that forgetting them deletes a couple of keys per window kept;
//! `capr:<window>` lists a window's readers, so that the window is deleted whole when it is no
//! longer kept. The origins of trends not public yet have an index, `rq:<origin>` (the queries
//! whose `r:` set holds the origin), kept by the same script whenever an `r:` set changes, so
//! that forgetting reads only the reader's own.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bookstore_domain::trends::{
    Audience, SPELLINGS_PER_TREND, Trend, TrendBook, TrendRanking, TrendSettings, ViewedBook,
    cap_owners, finite_score, rank, rank_viewed, spelling, trend_books,
};
use bookstore_domain::{Batch, EventHandler, HandlerError, Position, RepositoryError, TrendStore};
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;

/// Connects to Redis at `url` with a connection manager that reconnects by itself; each command
/// waits at most `timeout`.
pub async fn connect(url: &str, timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1);
    ConnectionManager::new_with_config(client, config).await
}

/// Trends tied at the cut of `GET /trends` that are ranked by the rules; beyond, by name.
const TIES: usize = 500;

/// Trends in Redis under `prefix`.
pub struct RedisTrends {
    redis: ConnectionManager,
    prefix: String,
    settings: TrendSettings,
    script: redis::Script,
}

/// What the script gets for one batch (see `trends.lua`).
#[derive(Serialize)]
struct ScriptBatch<'a> {
    group: &'a str,
    positions: Vec<(String, i64, i64)>,
    events: Vec<ScriptEntry<'a>>,
    user_cap: u32,
    prune_below: f64,
    max_trends: usize,
    min_readers: u32,
    max_spellings: usize,
    client_cap: u32,
}

/// One event as the script reads it (a JSON array): query_normalized, spelling, reader, cap
/// window, log weight, occurred_at in ms, books as JSON, origin.
#[derive(Serialize)]
struct ScriptEvent<'a>(&'a str, String, &'a str, i64, f64, i64, String, &'a str);

/// One view as the script reads it (`{"v": [...]}`): book id (a string, as Lua numbers lose
/// digits), reader, cap window, log weight, occurred_at in ms, title, author, origin.
#[derive(Serialize)]
struct ScriptView<'a>(String, &'a str, i64, f64, i64, &'a str, &'a str, &'a str);

/// One entry of the batch's events, in log order: a search (an array), a view (an object), or
/// the user id of a reader to forget (a string).
#[derive(Serialize)]
#[serde(untagged)]
enum ScriptEntry<'a> {
    Search(ScriptEvent<'a>),
    View { v: ScriptView<'a> },
    Forget(&'a str),
}

impl RedisTrends {
    pub fn new(redis: ConnectionManager, prefix: &str, settings: TrendSettings) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            settings,
            script: redis::Script::new(include_str!("trends.lua")),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// The replies [`RedisTrends::queue_trend`] queues for one trend.
const TREND_REPLIES: usize = 3;

impl RedisTrends {
    /// Queues the reads of one trend: its score, its count and its hash's fields.
    fn queue_trend(&self, pipe: &mut redis::Pipeline, query: &str) {
        pipe.cmd("ZSCORE").arg(self.key("score")).arg(query);
        pipe.cmd("ZSCORE").arg(self.key("count")).arg(query);
        pipe.cmd("HMGET")
            .arg(self.key(&format!("q:{query}")))
            .arg("d")
            .arg("l")
            .arg("b")
            .arg("pub");
    }

    /// The trend those replies describe at `now`; `None` when it is not kept (or was pruned
    /// between two calls).
    fn read_trend(&self, query: &str, reply: &[redis::Value], now: DateTime<Utc>) -> Option<Trend> {
        let [score, count, fields] = reply else {
            return None;
        };
        let log_score: Option<f64> = redis::from_redis_value_ref(score).ok().flatten();
        let count: Option<f64> = redis::from_redis_value_ref(count).ok().flatten();
        let (display, last, books, public): (
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<String>,
        ) = redis::from_redis_value_ref(fields).unwrap_or((None, None, None, None));
        Some(Trend {
            query: display?,
            query_normalized: query.to_owned(),
            count: count.unwrap_or(0.0).max(0.0) as u64,
            score: finite_score(log_score.unwrap_or(f64::NEG_INFINITY), &self.settings, now),
            books: books
                .and_then(|b| serde_json::from_str::<Vec<TrendBook>>(&b).ok())
                .unwrap_or_default(),
            last_searched_at: last
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or_default(),
            public: public.as_deref() == Some("1"),
        })
    }
}

/// Sorts a Redis error: a stale position, or the store being away (retried).
fn handler_error(error: redis::RedisError) -> HandlerError {
    if error.code() == Some("STALE") {
        HandlerError::StalePosition(error.detail().unwrap_or_default().to_owned())
    } else {
        HandlerError::Transient(Box::new(error))
    }
}

fn unavailable(error: redis::RedisError) -> RepositoryError {
    RepositoryError::Unavailable(Box::new(error))
}

#[async_trait]
impl EventHandler for RedisTrends {
    fn name(&self) -> &str {
        "trends"
    }

    async fn positions(&self, group: &str) -> Result<Vec<Position>, HandlerError> {
        let stored: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(self.key(&format!("pos:{group}")))
            .query_async(&mut self.redis.clone())
            .await
            .map_err(handler_error)?;
        Ok(stored
            .into_iter()
            .filter_map(|(key, next_offset)| Position::from_key(&key, next_offset))
            .collect())
    }

    async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
        let mut events = Vec::with_capacity(batch.records.len());
        for record in &batch.records {
            // Only searches make trends, and readers forgotten are deleted; other events move
            // the position with the batch.
            if let Some(forgotten) = record.event.as_forgotten() {
                events.push(ScriptEntry::Forget(&forgotten.user_id));
                continue;
            }
            if let Some(e) = record.event.as_view() {
                events.push(ScriptEntry::View {
                    v: ScriptView(
                        e.book.id.to_string(),
                        e.reader().unwrap_or(""),
                        self.settings.window(e.occurred_at),
                        self.settings.log_weight(e.occurred_at),
                        e.occurred_at.timestamp_millis(),
                        &e.book.title,
                        &e.book.author,
                        e.origin().unwrap_or(""),
                    ),
                });
                continue;
            }
            let Some(e) = record.event.as_search() else {
                continue;
            };
            let books = serde_json::to_string(&trend_books(e))
                .map_err(|e| HandlerError::Rejected(e.to_string()))?;
            events.push(ScriptEntry::Search(ScriptEvent(
                e.query_normalized.as_str(),
                spelling(&e.query),
                e.reader().unwrap_or(""),
                self.settings.window(e.occurred_at),
                self.settings.log_weight(e.occurred_at),
                e.occurred_at.timestamp_millis(),
                books,
                e.origin().unwrap_or(""),
            )));
        }
        let payload = ScriptBatch {
            group: &batch.group,
            positions: batch
                .positions
                .iter()
                .map(|u| {
                    (
                        Position::key(&u.topic, u.partition),
                        u.from.unwrap_or(-1),
                        u.to,
                    )
                })
                .collect(),
            events,
            user_cap: self.settings.user_cap,
            prune_below: self.settings.prune_below(Utc::now()),
            max_trends: self.settings.max_trends.max(1),
            min_readers: self.settings.min_readers,
            max_spellings: SPELLINGS_PER_TREND,
            client_cap: self.settings.client_cap,
        };
        let payload =
            serde_json::to_string(&payload).map_err(|e| HandlerError::Rejected(e.to_string()))?;
        let _: String = self
            .script
            .arg(&self.prefix)
            .arg(payload)
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(handler_error)?;
        Ok(())
    }
}

#[async_trait]
impl TrendStore for RedisTrends {
    async fn top(
        &self,
        n: usize,
        by: TrendRanking,
        audience: Audience,
        now: DateTime<Utc>,
    ) -> Result<Vec<Trend>, RepositoryError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let ranked_by = match (by, audience) {
            (TrendRanking::Score, Audience::Everyone) => self.key("score"),
            (TrendRanking::Count, Audience::Everyone) => self.key("count"),
            (TrendRanking::Score, Audience::Public) => self.key("pscore"),
            (TrendRanking::Count, Audience::Public) => self.key("pcount"),
        };
        let mut redis = self.redis.clone();
        // Redis orders ties by name; the rules order them by the other ranking, then by query.
        let members = best_with_ties(&mut redis, &ranked_by, n).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for query in &members {
            self.queue_trend(&mut pipe, query);
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut redis).await.map_err(unavailable)?;
        let mut trends: Vec<Trend> = members
            .iter()
            .zip(replies.chunks(TREND_REPLIES))
            .filter_map(|(query, reply)| self.read_trend(query, reply, now))
            .collect();
        rank(&mut trends, by);
        trends.truncate(n);
        Ok(trends)
    }

    async fn trend(
        &self,
        query_normalized: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Trend>, RepositoryError> {
        let mut pipe = redis::pipe();
        self.queue_trend(&mut pipe, query_normalized);
        let replies: Vec<redis::Value> = pipe
            .query_async(&mut self.redis.clone())
            .await
            .map_err(unavailable)?;
        Ok(self.read_trend(query_normalized, &replies, now))
    }

    async fn viewed_books(
        &self,
        n: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<ViewedBook>, RepositoryError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut redis = self.redis.clone();
        // Ties are ranked by the rules (views, then id), as for trends.
        let members = best_with_ties(&mut redis, &self.key("vscore"), n).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &members {
            pipe.cmd("HMGET")
                .arg(self.key(&format!("v:{id}")))
                .arg("t")
                .arg("a")
                .arg("n")
                .arg("l")
                .arg("ls");
        }
        type Fields = (
            Option<String>,
            Option<String>,
            Option<u64>,
            Option<i64>,
            Option<f64>,
        );
        let replies: Vec<Fields> = pipe.query_async(&mut redis).await.map_err(unavailable)?;
        let mut books: Vec<ViewedBook> = members
            .iter()
            .zip(replies)
            .filter_map(|(id, (title, author, views, last, log_score))| {
                Some(ViewedBook {
                    id: id.parse().ok()?,
                    title: title?,
                    author: author.unwrap_or_default(),
                    views: views.unwrap_or(0),
                    score: finite_score(
                        log_score.unwrap_or(f64::NEG_INFINITY),
                        &self.settings,
                        now,
                    ),
                    last_viewed_at: last
                        .and_then(DateTime::from_timestamp_millis)
                        .unwrap_or_default(),
                })
            })
            .collect();
        rank_viewed(&mut books);
        books.truncate(n);
        Ok(books)
    }

    async fn holds_reader(&self, user_id: &str) -> Result<bool, RepositoryError> {
        // The data itself, not only the index forgetting reads: every window's counters of
        // theirs and every trend's origins.
        let mut redis = self.redis.clone();
        let (windows, queries): (Vec<String>, Vec<String>) = redis::pipe()
            .atomic()
            .cmd("ZRANGE")
            .arg(self.key("capw"))
            .arg(0)
            .arg(-1)
            .cmd("ZRANGE")
            .arg(self.key("score"))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await
            .map_err(unavailable)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for window in &windows {
            for who in cap_owners(user_id) {
                pipe.cmd("EXISTS")
                    .arg(self.key(&format!("cap:{window}:{who}")));
                pipe.cmd("SISMEMBER")
                    .arg(self.key(&format!("capr:{window}")))
                    .arg(who);
            }
        }
        pipe.cmd("EXISTS").arg(self.key(&format!("rq:{user_id}")));
        for query in &queries {
            pipe.cmd("SISMEMBER")
                .arg(self.key(&format!("r:{query}")))
                .arg(user_id);
        }
        let found: Vec<bool> = pipe.query_async(&mut redis).await.map_err(unavailable)?;
        Ok(found.into_iter().any(|found| found))
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.redis.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// The members of the sorted set `key` among its `n` best (highest score first), with every
/// member tied with the `n`-th (up to [`TIES`]): Redis orders ties by name, the rules otherwise,
/// so the caller ranks them before it cuts at `n`. `n` is at least 1.
async fn best_with_ties(
    redis: &mut ConnectionManager,
    key: &str,
    n: usize,
) -> Result<Vec<String>, RepositoryError> {
    let best: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(n as i64 - 1)
        .arg("REV")
        .arg("WITHSCORES")
        .query_async(redis)
        .await
        .map_err(unavailable)?;
    let Some((_, boundary)) = best.last().cloned() else {
        return Ok(Vec::new());
    };
    let mut members: Vec<String> = best
        .into_iter()
        .filter(|(_, value)| *value > boundary)
        .map(|(member, _)| member)
        .collect();
    let ties: Vec<String> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(boundary)
        .arg(boundary)
        .arg("BYSCORE")
        .arg("LIMIT")
        .arg(0)
        .arg(TIES)
        .query_async(redis)
        .await
        .map_err(unavailable)?;
    members.extend(ties);
    Ok(members)
}
