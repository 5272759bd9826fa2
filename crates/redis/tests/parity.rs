//! The Redis trend store against the real Redis from `dev/services`: it gives what the in-memory
//! reference rules give, batch after batch, and refuses a batch whose start is not the stored
//! position. Fails, naming the fix, when Redis cannot be reached.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bookstore_domain::events::{Event, ResultBook, SearchEvent};
use bookstore_domain::trends::{TrendBoard, TrendRanking, TrendSettings};
use bookstore_domain::{Batch, EventHandler, HandlerError, PositionUpdate, Record, TrendStore};
use bookstore_redis::RedisTrends;
use chrono::{DateTime, Utc};

fn redis_url() -> String {
    std::env::var("BOOKSTORE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn search(i: usize, base: i64) -> SearchEvent {
    let spellings = ["Rust", "rust ", "Dune", "dune", "RUST", "Emma", "ＲＵＳＴ"];
    // Seven spellings of four queries, and ten more queries: ties, and more than max_trends.
    let query = if i % 3 == 0 {
        format!("topic {}", i % 10)
    } else {
        spellings[i % 7].to_owned()
    };
    let query = query.as_str();
    let user = [Some("a"), Some("b"), None, Some("a")][i % 4];
    let book = ResultBook {
        id: i as i64,
        title: format!("T{i}"),
        author: "A".into(),
        published_at: None,
    };
    // Milliseconds apart with microseconds, some out of order.
    let at = DateTime::from_timestamp(base, 0).unwrap()
        + chrono::Duration::microseconds(((i as i64 * 7919) % 50_000) * 1000 + 700);
    SearchEvent::new(
        uuid::Uuid::now_v7(),
        at,
        user.map(str::to_owned),
        query,
        0,
        vec![book],
    )
}

#[tokio::test]
async fn the_redis_store_follows_the_reference_rules() {
    let redis = bookstore_redis::connect(&redis_url(), Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis at {} is unreachable ({e}); start it with `dev/services start`",
                redis_url()
            )
        });
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let settings = TrendSettings {
        user_cap: 2,
        ..TrendSettings::default()
    };
    let store = RedisTrends::new(redis.clone(), &prefix, settings.clone());
    let mut board = TrendBoard::new(settings);
    let base = Utc::now().timestamp() - 100;
    let events: Vec<SearchEvent> = (0..80).map(|i| search(i, base)).collect();
    let mut from = None;
    for (n, chunk) in events.chunks(9).enumerate() {
        let records = chunk
            .iter()
            .enumerate()
            .map(|(i, e)| Record {
                topic: "t".into(),
                partition: 2,
                offset: (n * 9 + i) as i64,
                event: Event::BookSearched(e.clone()),
            })
            .collect();
        let to = (n * 9 + chunk.len()) as i64;
        let batch = Batch {
            group: "g".into(),
            records,
            positions: vec![PositionUpdate {
                topic: "t".into(),
                partition: 2,
                from,
                to,
            }],
        };
        store.apply(&batch).await.unwrap();
        assert!(
            matches!(
                store.apply(&batch).await,
                Err(HandlerError::StalePosition(_))
            ),
            "a replayed batch is refused"
        );
        from = Some(to);
        chunk.iter().for_each(|e| board.apply(e));
        board.prune(Utc::now());
    }
    let now = Utc::now();
    for (n, by) in [
        (10, TrendRanking::Score),
        (10, TrendRanking::Count),
        (3, TrendRanking::Count),
        (2, TrendRanking::Score),
    ] {
        let stored = store.top(n, by, now).await.unwrap();
        let expected = board.top(n, by, now);
        assert_eq!(stored.len(), expected.len());
        for (s, e) in stored.iter().zip(&expected) {
            assert_eq!(
                (&s.query, &s.query_normalized, s.count),
                (&e.query, &e.query_normalized, e.count)
            );
            assert!(
                (s.score - e.score).abs() < 1e-9,
                "{} vs {}",
                s.score,
                e.score
            );
            assert_eq!(s.books, e.books);
            assert_eq!(s.last_searched_at, e.last_searched_at);
        }
    }
    let positions = store.positions("g").await.unwrap();
    assert_eq!(positions.len(), 1);
    assert_eq!(
        (
            positions[0].topic.as_str(),
            positions[0].partition,
            positions[0].next_offset
        ),
        ("t", 2, 80)
    );

    // Leave Redis as it was.
    let mut redis = redis;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut redis)
        .await
        .unwrap();
}
