//! The check every trend store passes: fed the same searches, batch by batch, it answers what
//! the in-memory [`TrendBoard`] answers, and it refuses a batch whose start is not its stored
//! position. For the stores' tests; it panics on the first difference.

use chrono::{DateTime, Utc};

use super::{Audience, TrendBoard, TrendRanking, TrendSettings};
use crate::events::{Event, ResultBook, SearchEvent};
use crate::{Batch, EventHandler, HandlerError, PositionUpdate, Record, TrendStore};

/// The settings the check runs with: a cap that bites, fewer trends kept than searched, and two
/// readers to make a trend public.
pub fn settings() -> TrendSettings {
    TrendSettings {
        user_cap: 2,
        client_cap: 3,
        max_trends: 6,
        min_readers: 2,
        ..TrendSettings::default()
    }
}

/// Spellings of one query in an order whose shown spelling depends on forgetting the least
/// common ones ([`super::SPELLINGS_PER_TREND`]): without the bound, `abc` would be shown.
const SPELLINGS: [&str; 7] = ["aBC", "abC", "ABC", "abc", "aBc", "ABc", "abc"];

/// Search `i` of the check: seven spellings of four queries, by two users and anonymous ones,
/// times a few milliseconds apart with microseconds and some out of order; and ten other queries
/// searched anonymously (some from two clients, some from one, some from none) at shared times,
/// so that they tie, at the cut of `max_trends` too, and only some are public.
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
    // Users a and b sometimes search from one network (c-x): then they are one origin.
    let client = match i % 4 {
        0 => Some("c-x"),
        1 => Some("c-y"),
        _ => None,
    };
    SearchEvent::new(
        uuid::Uuid::now_v7(),
        at,
        user.map(str::to_owned),
        &query,
        0,
        vec![book],
    )
    .with_client(client.map(str::to_owned))
}

/// Runs the check on an empty `store` built with [`settings`].
pub async fn check_store<S: EventHandler + TrendStore>(store: &S) {
    let mut board = TrendBoard::new(settings());
    let base = Utc::now().timestamp() - 100;
    let mut events: Vec<SearchEvent> = (0..80).map(|i| search(i, base)).collect();
    // One query in many spellings, by enough readers to be public.
    for (i, spelled) in SPELLINGS.iter().enumerate() {
        let mut event = search(1, base + 1);
        event = SearchEvent::new(
            event.id,
            event.occurred_at + chrono::Duration::milliseconds(i as i64),
            Some(format!("speller {}", i % 2)),
            spelled,
            0,
            event.results,
        );
        events.insert(30 + i * 5, event);
    }
    // Three readers of one network: one origin, so never public; searched often enough to be
    // kept.
    for i in 0..6 {
        let template = search(2, base + 2);
        let event = SearchEvent::new(
            template.id,
            template.occurred_at + chrono::Duration::milliseconds(i),
            Some(format!("neighbour {}", i % 3)),
            "one network",
            0,
            template.results,
        )
        .with_client(Some("c-z".to_owned()));
        events.insert(40 + i as usize * 3, event);
    }
    let total = events.len() as i64;
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
    let everyone = board.top(100, TrendRanking::Score, Audience::Everyone, now);
    assert!(
        everyone.iter().any(|t| t.public) && everyone.iter().any(|t| !t.public),
        "the check covers public and not yet public trends: {everyone:?}"
    );
    assert!(
        everyone.iter().any(|t| t.query == SPELLINGS[0]),
        "the check covers the spelling bound: {everyone:?}"
    );
    assert!(
        everyone
            .iter()
            .any(|t| t.query == "one network" && !t.public),
        "the check covers readers of one network: {everyone:?}"
    );
    for audience in [Audience::Public, Audience::Everyone] {
        for (n, by) in [
            (10, TrendRanking::Score),
            (10, TrendRanking::Count),
            (3, TrendRanking::Count),
            (2, TrendRanking::Score),
        ] {
            check_top(store, &board, n, by, audience, now).await;
        }
    }
    // Each trend alone, as the board has it; a query never searched, none.
    for expected in &everyone {
        let stored = match store.trend(&expected.query_normalized, now).await {
            Ok(stored) => stored,
            Err(error) => panic!("trend {}: {error}", expected.query_normalized),
        };
        let Some(stored) = stored else {
            panic!("no trend {}", expected.query_normalized)
        };
        assert_eq!(
            (&stored.query, stored.count, stored.public, &stored.books),
            (
                &expected.query,
                expected.count,
                expected.public,
                &expected.books
            )
        );
        assert!(
            (stored.score - expected.score).abs() < 1e-9,
            "{}",
            stored.query
        );
        assert_eq!(stored.last_searched_at, expected.last_searched_at);
    }
    match store.trend("never searched", now).await {
        Ok(None) => {}
        other => panic!("a query never searched: {other:?}"),
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
        ("t", 2, total)
    );
}

/// The store's top `n` equals the board's.
async fn check_top<S: TrendStore>(
    store: &S,
    board: &TrendBoard,
    n: usize,
    by: TrendRanking,
    audience: Audience,
    now: DateTime<Utc>,
) {
    {
        let stored = match store.top(n, by, audience, now).await {
            Ok(stored) => stored,
            Err(error) => panic!("top {n} by {by:?} for {audience:?}: {error}"),
        };
        let expected = board.top(n, by, audience, now);
        assert_eq!(
            stored.len(),
            expected.len(),
            "top {n} by {by:?} for {audience:?}"
        );
        for (s, e) in stored.iter().zip(&expected) {
            assert_eq!(
                (&s.query, &s.query_normalized, s.count, s.public),
                (&e.query, &e.query_normalized, e.count, e.public)
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
}
