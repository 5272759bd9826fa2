//! The check every trend store passes: fed the same searches, batch by batch, it answers what
//! the in-memory [`TrendBoard`] answers, and it refuses a batch whose start is not its stored
//! position. For the stores' tests; it panics on the first difference.

use chrono::{DateTime, Utc};

use super::{TrendBoard, TrendRanking, TrendSettings};
use crate::events::{Event, ResultBook, SearchEvent};
use crate::{Batch, EventHandler, HandlerError, PositionUpdate, Record, TrendStore};

/// The settings the check runs with: a cap that bites and fewer trends kept than searched.
pub fn settings() -> TrendSettings {
    TrendSettings {
        user_cap: 2,
        max_trends: 6,
        ..TrendSettings::default()
    }
}

/// Search `i` of the check: seven spellings of four queries, by two users and anonymous ones,
/// times a few milliseconds apart with microseconds and some out of order; and ten other queries
/// searched anonymously at shared times, so that they tie, at the cut of `max_trends` too.
fn search(i: usize, base: i64) -> SearchEvent {
    let spellings = ["Rust", "rust ", "Dune", "dune", "RUST", "Emma", "ＲＵＳＴ"];
    let query = if i % 3 == 0 {
        format!("topic {}", i % 10)
    } else {
        spellings[i % 7].to_owned()
    };
    let topic = i % 3 == 0;
    let user = if topic {
        None
    } else {
        [Some("a"), Some("b"), None, Some("a")][i % 4]
    };
    let book = ResultBook {
        id: i as i64,
        title: format!("T{i}"),
        author: "A".into(),
        published_at: None,
    };
    // The other queries, anonymous and at the same time in each block of 30: equal scores.
    let micros = if topic {
        (i as i64 / 30) * 1_000_000
    } else {
        ((i as i64 * 7919) % 50_000) * 1000 + 700
    };
    let at = DateTime::from_timestamp(base, 0).unwrap_or_default()
        + chrono::Duration::microseconds(micros);
    SearchEvent::new(
        uuid::Uuid::now_v7(),
        at,
        user.map(str::to_owned),
        &query,
        0,
        vec![book],
    )
}

/// Runs the check on an empty `store` built with [`settings`].
pub async fn check_store<S: EventHandler + TrendStore>(store: &S) {
    let mut board = TrendBoard::new(settings());
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
        if let Err(error) = store.apply(&batch).await {
            panic!("batch {n} refused: {error}");
        }
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
        let stored = match store.top(n, by, now).await {
            Ok(stored) => stored,
            Err(error) => panic!("top {n} by {by:?}: {error}"),
        };
        let expected = board.top(n, by, now);
        assert_eq!(stored.len(), expected.len(), "top {n} by {by:?}");
        for (s, e) in stored.iter().zip(&expected) {
            assert_eq!(
                (&s.query, &s.query_normalized, s.count),
                (&e.query, &e.query_normalized, e.count)
            );
            assert!(
                (s.score - e.score).abs() < 1e-9,
                "{}: {} vs {}",
                s.query,
                s.score,
                e.score
            );
            assert_eq!(s.books, e.books, "{}", s.query);
            assert_eq!(s.last_searched_at, e.last_searched_at, "{}", s.query);
        }
    }
    let positions = match store.positions("g").await {
        Ok(positions) => positions,
        Err(error) => panic!("positions: {error}"),
    };
    assert_eq!(positions.len(), 1);
    assert_eq!(
        (
            positions[0].topic.as_str(),
            positions[0].partition,
            positions[0].next_offset
        ),
        ("t", 2, 80)
    );
}
