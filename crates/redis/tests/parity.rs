//! The Redis trend store against the real Redis from `dev/services`: it passes the checks every
//! trend store passes (`bookstore_testkit::conformance::trends`), and upgrades the layout of
//! earlier versions. Fails, naming the fix, when Redis cannot be reached.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bookstore_domain::events::{Event, ReaderForgottenEvent, SearchEvent};
use bookstore_domain::trends::{Audience, TrendRanking};
use bookstore_domain::{Batch, EventHandler, PositionUpdate, Record, TrendStore};
use bookstore_redis::RedisTrends;
use bookstore_testkit::conformance::trends as conformance;
use bookstore_testkit::redis::RedisKeys;
use bookstore_testkit::servers::{self, redis_url};
use chrono::Utc;
use redis::aio::ConnectionManager;

async fn connected() -> ConnectionManager {
    bookstore_redis::connect(&redis_url(), Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| {
            servers::unreachable("Redis", &redis_url(), "BOOKSTORE_TEST_REDIS_URL", e)
        })
}

/// A fresh key prefix, and what deletes its keys when the test ends, whether it passes or not.
fn fresh_prefix() -> (String, RedisKeys) {
    let keys = RedisKeys::fresh();
    (keys.prefix().to_owned(), keys)
}

#[tokio::test]
async fn the_redis_store_follows_the_reference_rules() {
    let redis = connected().await;
    let (prefix, _cleanup) = fresh_prefix();
    let store = RedisTrends::new(redis.clone(), &prefix, conformance::settings());
    conformance::check_store(&store).await;

    // The check searches one query in six spellings: a bounded number of them is stored, and
    // public trends keep no readers.
    let mut redis = redis;
    let trends: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}q:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut most = 0;
    for key in &trends {
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap();
        most = most.max(fields.iter().filter(|f| f.starts_with("s:")).count());
        if fields.iter().any(|f| f == "pub") {
            let readers = key.replacen(&format!("{prefix}q:"), &format!("{prefix}r:"), 1);
            let exists: bool = redis::cmd("EXISTS")
                .arg(readers)
                .query_async(&mut redis)
                .await
                .unwrap();
            assert!(!exists, "{key} is public and still lists its readers");
        }
    }
    assert_eq!(most, bookstore_domain::trends::SPELLINGS_PER_TREND);
}

#[tokio::test]
async fn the_redis_store_forgets_readers_as_the_reference_does() {
    let mut redis = connected().await;
    let (prefix, _cleanup) = fresh_prefix();
    let store = RedisTrends::new(redis.clone(), &prefix, conformance::settings());
    conformance::check_forgetting(&store).await;
    // Read directly, not through holds_reader: no key, field or member names the forgotten
    // reader.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(keys.iter().any(|k| k.starts_with(&format!("{prefix}cap:"))));
    for key in &keys {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap();
        // Its fields or members (a string's value).
        let mut read = redis::Cmd::new();
        match kind.as_str() {
            "hash" => read.arg("HKEYS").arg(key),
            "set" => read.arg("SMEMBERS").arg(key),
            "zset" => read.arg("ZRANGE").arg(key).arg(0).arg(-1),
            _ => read.arg("GET").arg(key),
        };
        let held: Vec<String> = match read.query_async::<redis::Value>(&mut redis).await.unwrap() {
            redis::Value::Array(items) => items
                .iter()
                .filter_map(|item| redis::from_redis_value_ref(item).ok())
                .collect(),
            value => redis::from_redis_value_ref(&value).into_iter().collect(),
        };
        assert!(
            !key.contains("forgetful") && !held.iter().any(|h| h.contains("forgetful")),
            "{key} ({kind}) holds the forgotten reader: {held:?}"
        );
    }
}

#[tokio::test]
async fn the_redis_store_keeps_viewed_books_as_the_reference_does() {
    let mut redis = connected().await;
    let (prefix, _cleanup) = fresh_prefix();
    let store = RedisTrends::new(redis.clone(), &prefix, conformance::settings());
    conformance::check_views(&store).await;
    // The pruned book's hash is gone with its member.
    let kept: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}v:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(kept.len(), conformance::settings().max_trends, "{kept:?}");
    assert!(!kept.contains(&format!("{prefix}v:4")));
}

/// The search of `query` by `user` (without a client: they are its origin) now.
fn searched(user: &str, query: &str) -> Event {
    Event::BookSearched(SearchEvent::new(
        uuid::Uuid::now_v7(),
        Utc::now(),
        Some(user.to_owned()),
        query,
        0,
        vec![],
    ))
}

/// The batch of `events` at offsets `from` on, of group `g`.
fn batch(events: Vec<Event>, from: Option<i64>) -> Batch {
    let start = from.unwrap_or(0);
    let to = start + events.len() as i64;
    Batch {
        group: "g".into(),
        records: events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Record {
                topic: "t".into(),
                partition: 0,
                offset: start + i as i64,
                event,
            })
            .collect(),
        positions: vec![PositionUpdate {
            topic: "t".into(),
            partition: 0,
            from,
            to,
        }],
    }
}

// Keys as the version before forgetting wrote them (one hash of counters per window, origins
// without their index): the first batch moves the counters, which go on capping, and indexes the
// origins, so that the reader is then forgotten whole.
#[tokio::test]
async fn a_store_of_the_layout_before_forgetting_is_upgraded() {
    let mut redis = connected().await;
    let (prefix, _cleanup) = fresh_prefix();
    let settings = conformance::settings();
    let now = Utc::now();
    let window = settings.window(now);
    let log_score = settings.log_weight(now) + 1.0; // two searches now
    let key = |name: &str| format!("{prefix}{name}");
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(key(&format!("cap:{window}")))
        .arg(&[
            ("old\u{1f}q", 2),
            ("\u{1}old\u{1f}q", 2),
            ("\u{1}c-net\u{1f}q", 1),
        ])
        .ignore()
        .cmd("ZADD")
        .arg(key("capw"))
        .arg(window)
        .arg(window)
        .ignore()
        .cmd("ZADD")
        .arg(key("score"))
        .arg(log_score)
        .arg("q")
        .ignore()
        .cmd("ZADD")
        .arg(key("count"))
        .arg(2)
        .arg("q")
        .ignore()
        .cmd("HSET")
        .arg(key("q:q"))
        .arg(&[
            ("d", "q".to_owned()),
            ("dn", "2".to_owned()),
            ("l", now.timestamp_millis().to_string()),
            ("b", "[]".to_owned()),
            ("ls", format!("{log_score}")),
            ("s:q", "2".to_owned()),
        ])
        .ignore()
        .cmd("SADD")
        .arg(key("r:q"))
        .arg("old")
        .ignore()
        .query_async(&mut redis)
        .await
        .unwrap();
    let store = RedisTrends::new(redis.clone(), &prefix, settings);

    // A third search of the reader: over user_cap (2), so it does not score.
    store
        .apply(&batch(vec![searched("old", "q")], None))
        .await
        .unwrap();
    let trend = store.trend("q", now).await.unwrap().unwrap();
    assert_eq!(trend.count, 3);
    assert!((trend.score - 2.0).abs() < 1e-6, "{}", trend.score);
    let exists: bool = redis::cmd("EXISTS")
        .arg(key(&format!("cap:{window}")))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!exists, "the window's hash of the old layout is gone");
    let n: Option<i64> = redis::cmd("HGET")
        .arg(key(&format!("cap:{window}:old")))
        .arg("q")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(n, Some(3));
    let indexed: bool = redis::cmd("SISMEMBER")
        .arg(key("rq:old"))
        .arg("q")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(indexed);
    assert!(store.holds_reader("old").await.unwrap());

    store
        .apply(&batch(
            vec![Event::ReaderForgotten(ReaderForgottenEvent::now("old"))],
            Some(1),
        ))
        .await
        .unwrap();
    assert!(!store.holds_reader("old").await.unwrap());
    let readers: Vec<String> = redis::cmd("SMEMBERS")
        .arg(key("r:q"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(readers.is_empty(), "{readers:?}");
    // The network's counter stays; the trend too.
    let n: Option<i64> = redis::cmd("HGET")
        .arg(key(&format!("cap:{window}:\u{1}c-net")))
        .arg("q")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(n, Some(1));
    let all = store
        .top(10, TrendRanking::Count, Audience::Everyone, now)
        .await
        .unwrap();
    assert_eq!((all.len(), all[0].count), (1, 3));
}
