//! The checks every trend store passes: fed the same searches, batch by batch, it answers what
//! the in-memory [`TrendBoard`] answers, and it refuses a batch whose start is not its stored
//! position ([`check_store`]); a forgotten reader (`reader.forgotten`) is forgotten in log order
//! with their searches, leaves nothing keyed by them, and the counts stay
//! ([`check_forgetting`]); viewed books are decayed, capped, pruned and forgotten as the board
//! does it ([`check_views`]). For the stores' tests, each on an empty store; they panic on the
//! first difference.

use bookstore_domain::events::{
    BookViewedEvent, Event, ReaderForgottenEvent, ResultBook, SearchEvent, ViewSource,
};
use bookstore_domain::trends::{Audience, TrendBoard, TrendRanking, TrendSettings};
use bookstore_domain::{Batch, EventHandler, HandlerError, PositionUpdate, Record, TrendStore};
use chrono::{DateTime, Utc};

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
/// common ones ([`SPELLINGS_PER_TREND`](bookstore_domain::trends::SPELLINGS_PER_TREND)): without the bound, `abc` would be shown.
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
        let chunk: Vec<Event> = chunk.iter().cloned().map(Event::BookSearched).collect();
        from = Some(apply(store, &mut board, &chunk, from, n).await);
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
    compare(store, &board, now).await;
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

/// Applies `events` as the batch of offsets `from` on (the first batch when `None`), and to
/// `board`; a replay of the batch is refused. Returns the next offset.
async fn apply<S: EventHandler>(
    store: &S,
    board: &mut TrendBoard,
    events: &[Event],
    from: Option<i64>,
    n: usize,
) -> i64 {
    let start = from.unwrap_or(0);
    let records = events
        .iter()
        .enumerate()
        .map(|(i, event)| Record {
            topic: "t".into(),
            partition: 2,
            offset: start + i as i64,
            event: event.clone(),
        })
        .collect();
    let to = start + events.len() as i64;
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
    events.iter().for_each(|e| board.apply_event(e));
    board.prune(Utc::now());
    to
}

/// The store answers what `board` answers: its tops and each of its trends.
async fn compare<S: TrendStore>(store: &S, board: &TrendBoard, now: DateTime<Utc>) {
    for audience in [Audience::Public, Audience::Everyone] {
        for (n, by) in [
            (10, TrendRanking::Score),
            (10, TrendRanking::Count),
            (3, TrendRanking::Count),
            (2, TrendRanking::Score),
        ] {
            check_top(store, board, n, by, audience, now).await;
        }
    }
    // Each trend alone, as the board has it.
    for expected in &board.top(100, TrendRanking::Score, Audience::Everyone, now) {
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
}

/// The reader the check forgets, one it keeps, and the network they share.
const FORGOTTEN: &str = "forgetful";
const KEPT: &str = "keeper";
const SHARED_CLIENT: &str = "c-shared";

/// The store's answer to [`TrendStore::holds_reader`], which must be the board's.
async fn holds<S: TrendStore>(store: &S, board: &TrendBoard, user: &str, expected: bool) {
    match store.holds_reader(user).await {
        Ok(held) => assert_eq!(
            held, expected,
            "the store holds something keyed by {user}: {held}, expected {expected}"
        ),
        Err(error) => panic!("holds_reader {user}: {error}"),
    }
    assert_eq!(board.holds_reader(user), expected, "the board, for {user}");
}

/// A reader searches, in two windows, without a client (so they are the origin of their
/// searches: their origin counters and their place among private trends' origins) and from a
/// network they share; is forgotten in the middle of a batch, between searches of theirs; and is
/// forgotten again. What they searched after the first forget counts afresh, the shared
/// network's counters stay, the counts stay, and in the end the store holds nothing keyed by
/// them.
///
/// Runs on an empty `store` built with [`settings`].
pub async fn check_forgetting<S: EventHandler + TrendStore>(store: &S) {
    let mut board = TrendBoard::new(settings());
    let board = &mut board;
    let now = Utc::now();
    let window = i64::try_from(board.settings.user_window.as_millis()).unwrap_or(i64::MAX);
    let window_before = now - chrono::Duration::milliseconds(window);
    let searched = |user: Option<&str>, client: Option<&str>, query: &str, at: DateTime<Utc>| {
        let book = ResultBook {
            id: 7,
            title: format!("About {query}"),
            author: "A".into(),
            published_at: None,
        };
        Event::BookSearched(
            SearchEvent::new(
                uuid::Uuid::now_v7(),
                at,
                user.map(str::to_owned),
                query,
                0,
                vec![book],
            )
            .with_client(client.map(str::to_owned)),
        )
    };
    let forget = || Event::ReaderForgotten(ReaderForgottenEvent::now(FORGOTTEN));
    let again = "my own name";
    let once = "my diagnosis";
    let shared = "shared network";
    let first = [
        searched(Some(FORGOTTEN), None, again, window_before),
        searched(Some(FORGOTTEN), None, again, now),
        searched(Some(FORGOTTEN), None, once, now),
        searched(Some(FORGOTTEN), Some(SHARED_CLIENT), shared, now),
        searched(Some(FORGOTTEN), Some(SHARED_CLIENT), shared, now),
        // Anonymous (neither user nor client: no origin, no cap).
        searched(None, None, once, now),
    ];
    let next = apply(store, board, &first, None, 0).await;
    holds(store, board, FORGOTTEN, true).await;
    for query in [again, once] {
        assert!(
            board
                .trends
                .get(query)
                .is_some_and(|t| t.readers.contains(FORGOTTEN) && !t.public),
            "the check covers the origins of a private trend: {:?}",
            board.trends.get(query)
        );
    }
    assert!(
        board
            .caps
            .keys()
            .filter(|(_, who, _)| who == FORGOTTEN)
            .map(|(window, _, _)| window)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == 2,
        "the check covers counters in two windows"
    );

    // Searches, then the forget, then more searches of the same reader, in one batch: the later
    // ones count from zero (the cap is 2, so without the forget they would not score), and make
    // them an origin of `again` anew, not of `once`. Another reader on the shared network: its
    // counter stays, so only one of their two searches scores.
    let second = [
        searched(Some(FORGOTTEN), None, again, now),
        searched(Some(FORGOTTEN), None, again, now),
        forget(),
        searched(Some(FORGOTTEN), None, again, now),
        searched(Some(FORGOTTEN), None, again, now),
        searched(Some(KEPT), Some(SHARED_CLIENT), shared, now),
        searched(Some(KEPT), Some(SHARED_CLIENT), shared, now),
    ];
    let next = apply(store, board, &second, Some(next), 1).await;
    holds(store, board, FORGOTTEN, true).await;
    compare(store, board, Utc::now()).await;

    // A second origin makes `again` public (the reader is among its origins again), not `once`
    // (they are no longer). Then the reader is forgotten again: nothing keyed by them is left.
    let third = [
        searched(Some(KEPT), Some("c-kept"), again, now),
        searched(Some(KEPT), Some("c-kept"), once, now),
        forget(),
    ];
    let next = apply(store, board, &third, Some(next), 2).await;
    holds(store, board, FORGOTTEN, false).await;
    holds(store, board, KEPT, true).await;
    let trend = |query: &str| board.trend(query, Utc::now());
    for (query, count, public) in [(again, 7, true), (once, 3, false), (shared, 4, false)] {
        assert!(
            trend(query).is_some_and(|t| t.count == count && t.public == public),
            "counts stay: {:?}",
            trend(query)
        );
    }
    compare(store, board, Utc::now()).await;
    let positions = match store.positions("g").await {
        Ok(positions) => positions,
        Err(error) => panic!("positions: {error}"),
    };
    assert_eq!(
        positions
            .iter()
            .map(|p| (p.topic.as_str(), p.partition, p.next_offset))
            .collect::<Vec<_>>(),
        [("t", 2, next)]
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

/// A view of book `id` (titled by `title`) by `user` from `client` at `at`.
fn viewed(
    id: i64,
    title: &str,
    user: Option<&str>,
    client: Option<&str>,
    at: DateTime<Utc>,
) -> Event {
    let mut event = BookViewedEvent::now(
        user.map(str::to_owned),
        client.map(str::to_owned),
        ResultBook {
            id,
            title: title.to_owned(),
            author: format!("Author of {id}"),
            published_at: None,
        },
        ViewSource::Search,
        Some(0),
        None,
    );
    event.occurred_at = at;
    Event::BookViewed(event)
}

/// The store's viewed books equal the board's, for a few `n`.
async fn compare_viewed<S: TrendStore>(store: &S, board: &TrendBoard, now: DateTime<Utc>) {
    for n in [1, 3, 100] {
        let stored = match store.viewed_books(n, now).await {
            Ok(stored) => stored,
            Err(error) => panic!("viewed_books {n}: {error}"),
        };
        let expected = board.viewed_books(n, now);
        assert_eq!(stored.len(), expected.len(), "viewed_books {n}: {stored:?}");
        for (s, e) in stored.iter().zip(&expected) {
            assert_eq!(
                (s.id, &s.title, &s.author, s.views, s.last_viewed_at),
                (e.id, &e.title, &e.author, e.views, e.last_viewed_at)
            );
            assert!(
                (s.score - e.score).abs() < 1e-9,
                "book {}: {} vs {}",
                s.id,
                s.score,
                e.score
            );
        }
    }
}

/// Views of books, mixed with searches in the batches: a reader viewing one book again and
/// again (the cap bites, per reader and per network), views hours old (decayed, some below
/// `min_score`: pruned), more books than `max_trends` (the cut), a later view with another title
/// (the latest wins; an older one arriving late does not), and a reader forgotten between their
/// views (their counters go, the views stay, later views count afresh).
///
/// Runs on an empty `store` built with [`settings`].
pub async fn check_views<S: EventHandler + TrendStore>(store: &S) {
    let mut board = TrendBoard::new(settings());
    let board = &mut board;
    let now = Utc::now();
    let ago = |secs: i64| now - chrono::Duration::seconds(secs);
    let search = |user: &str, query: &str| {
        Event::BookSearched(SearchEvent::new(
            uuid::Uuid::now_v7(),
            now,
            Some(user.to_owned()),
            query,
            0,
            vec![],
        ))
    };
    let mut first = Vec::new();
    // Book 1: one reader, ten times (two score: user_cap), and three others once.
    for i in 0..10 {
        first.push(viewed(1, "One", Some(FORGOTTEN), None, ago(i)));
    }
    for reader in ["r1", "r2", "r3"] {
        first.push(viewed(1, "One", Some(reader), None, ago(5)));
    }
    // Book 2: five readers of one network (three score: client_cap).
    for reader in 0..5 {
        let reader = format!("n{reader}");
        first.push(viewed(2, "Two", Some(&reader), Some(SHARED_CLIENT), ago(3)));
    }
    // Book 3: anonymous views, not capped; then a later title, and an older one arriving late.
    for _ in 0..4 {
        first.push(viewed(3, "Three", None, None, ago(60)));
    }
    first.push(viewed(3, "Three, revised", None, None, ago(30)));
    first.push(viewed(3, "Three, old", None, None, ago(7200)));
    first.push(search("r1", "a search between views"));
    // Book 4: viewed nine hours ago (2^-9 < min_score): pruned.
    first.push(viewed(4, "Four", Some("r1"), None, ago(9 * 3600)));
    let next = apply(store, board, &first, None, 0).await;
    assert!(
        !board.viewed.contains_key(&4),
        "the check covers pruning by score"
    );
    holds(store, board, FORGOTTEN, true).await;
    compare_viewed(store, board, Utc::now()).await;

    // Books 5 to 10, one view each at different times: with max_trends 6 the oldest are cut.
    // The forgotten reader: views of book 1, the forget, views again (they count from zero).
    let mut second: Vec<Event> = (5..11)
        .map(|id| viewed(id, &format!("B{id}"), Some("r2"), None, ago(id * 10)))
        .collect();
    second.push(viewed(1, "One", Some(FORGOTTEN), None, now));
    second.push(Event::ReaderForgotten(ReaderForgottenEvent::now(FORGOTTEN)));
    second.push(viewed(1, "One", Some(FORGOTTEN), None, now));
    second.push(viewed(1, "One", Some(FORGOTTEN), None, now));
    second.push(viewed(1, "One", Some(FORGOTTEN), None, now));
    let before = board.viewed.len();
    let next = apply(store, board, &second, Some(next), 1).await;
    assert!(
        board.viewed.len() == settings().max_trends && before + 6 > settings().max_trends,
        "the check covers the cut at max_trends: {:?}",
        board.viewed.keys()
    );
    assert_eq!(
        board.viewed.get(&1).map(|b| b.views),
        Some(17),
        "every view counts"
    );
    compare_viewed(store, board, Utc::now()).await;

    // Forgotten again: nothing keyed by them is left, the views stay.
    let third = [Event::ReaderForgotten(ReaderForgottenEvent::now(FORGOTTEN))];
    apply(store, board, &third, Some(next), 2).await;
    holds(store, board, FORGOTTEN, false).await;
    holds(store, board, "r1", true).await;
    compare_viewed(store, board, Utc::now()).await;
}
