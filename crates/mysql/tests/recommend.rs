//! The recommendation store on the real MariaDB from `dev/services`: it passes the check every
//! recommendation store passes; two consumer instances applying batches of two partitions at once
//! end where the rules applied in one go end (each writing its own partition's records, views'
//! co-view records too); a store of an older stored version is emptied for a rebuild;
//! positions move only from where they are; names compare exactly; an event the tables
//! cannot hold is rejected without applying anything. Fails, naming the fix, when
//! MariaDB cannot be reached.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bookstore_domain::recommend::{RecommendSettings, Snapshot};
use bookstore_domain::{
    Batch, EventHandler, HandlerError, PositionUpdate, RecommendStore, Record,
    events::{BookEvent, Event},
};
use bookstore_mysql::MySqlRecommendations;
use bookstore_testkit::conformance::recommend::{self as conformance, reference, search, view};
use chrono::{DateTime, Utc};
use common::TestDb;

impl TestDb {
    async fn store(&self, settings: RecommendSettings, connections: u32) -> MySqlRecommendations {
        let pool = bookstore_mysql::connect(&self.url, connections)
            .await
            .unwrap();
        MySqlRecommendations::new(pool, settings).await.unwrap()
    }
}

fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Batches of one partition, each starting where the previous one ended.
struct Partition {
    group: String,
    topic: String,
    partition: i32,
    next: i64,
}

impl Partition {
    fn new(partition: i32) -> Self {
        Self {
            group: "recommend".into(),
            topic: "events".into(),
            partition,
            next: 0,
        }
    }

    fn batch(&mut self, events: Vec<Event>) -> Batch {
        let from = (self.next > 0).then_some(self.next);
        let records = events
            .into_iter()
            .map(|event| {
                let record = Record {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    offset: self.next,
                    event,
                };
                self.next += 1;
                record
            })
            .collect();
        Batch {
            group: self.group.clone(),
            records,
            positions: vec![PositionUpdate {
                topic: self.topic.clone(),
                partition: self.partition,
                from,
                to: self.next,
            }],
        }
    }
}

fn catalog(ids: std::ops::RangeInclusive<i64>) -> Vec<Event> {
    ids.map(|i| {
        Event::BookCreated(BookEvent::new(
            uuid::Uuid::from_u128(i as u128),
            DateTime::UNIX_EPOCH,
            conformance::book(i),
        ))
    })
    .collect()
}

/// Applies `batch`, retrying while the store reports a transient failure (deadlocks between
/// concurrent batches); returns how many retries it took.
async fn apply_retrying(store: &MySqlRecommendations, batch: &Batch) -> u64 {
    let mut retries = 0;
    loop {
        match store.apply(batch).await {
            Ok(()) => return retries,
            Err(HandlerError::Transient(cause)) if retries < 200 => {
                retries += 1;
                if retries == 1 || retries % 50 == 0 {
                    eprintln!("retry {retries} after a transient failure: {cause:?}");
                }
                tokio::time::sleep(Duration::from_millis(5 * retries.min(10))).await;
            }
            Err(other) => panic!("batch failed after {retries} retries: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_store_follows_the_rules() {
    let db = TestDb::new().await;
    let store = db.store(conformance::settings(), 4).await;
    conformance::check_store(&store).await;

    // Creating the store again on a filled database keeps what it holds.
    let before = store.snapshot().await.unwrap();
    let again = db.store(conformance::settings(), 1).await;
    assert_eq!(again.snapshot().await.unwrap(), before);
    assert_eq!(again.name(), "recommend");
    again.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_applied_concurrently_add_up() {
    let settings = conformance::settings();
    let db = TestDb::new().await;
    let first = Arc::new(db.store(settings.clone(), 3).await);
    let second = Arc::new(db.store(settings.clone(), 3).await);

    let mut setup = Partition::new(2);
    let books = setup.batch(catalog(1..=16));
    first.apply(&books).await.unwrap();
    let mut all: Vec<Record> = books.records.clone();

    // Each partition: 20 batches of anonymous searches and searches of the partition's own users,
    // the same queries in both: each partition keeps its own query records and popularity list,
    // which readers merge, so the two instances never wait for each other's rows.
    let mut work = Vec::new();
    for p in 0..2 {
        let mut partition = Partition::new(p);
        let batches: Vec<Batch> = (0..20i64)
            .map(|i| {
                let author = ((i + i64::from(p)) % 4) as usize;
                let user = format!("p{p}-user{}", i % 3);
                partition.batch(vec![
                    search(None, author, base(), i),
                    search(None, (author + 1) % 4, base(), i),
                    search(Some(&user), author, base(), i),
                    search(None, (author + 2) % 4, base(), i),
                    search(Some(&user), (author + 3) % 4, base(), i),
                    view(Some(&user), (author as i64) * 4 + 1 + i % 4, base(), i),
                    view(None, ((author as i64 + 1) % 4) * 4 + 1, base(), i),
                ])
            })
            .collect();
        all.extend(batches.iter().flat_map(|b| b.records.iter().cloned()));
        work.push(batches);
    }
    let retries = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = work
        .into_iter()
        .zip([first.clone(), second.clone()])
        .map(|(batches, store)| {
            let retries = retries.clone();
            tokio::spawn(async move {
                for batch in &batches {
                    let n = apply_retrying(&store, batch).await;
                    retries.fetch_add(n, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!(
        "{} transient failures retried",
        retries.load(Ordering::Relaxed)
    );

    let stored = first.snapshot().await.unwrap();
    let expected = reference(&settings, &all);
    assert!(!expected.popular.is_empty() && !expected.profiles.is_empty());
    assert!(!expected.coviews.is_empty());
    let popularity = |s: &Snapshot| Snapshot {
        popular: s.popular.clone(),
        ..Snapshot::default()
    };
    assert_eq!(
        popularity(&stored).difference(&popularity(&expected)),
        None,
        "popularity is the sum of both partitions' searches"
    );
    assert_eq!(
        stored.difference(&expected),
        None,
        "the store holds what the rules hold applied in one go"
    );
    assert_eq!(second.snapshot().await.unwrap(), stored);

    let mut positions: Vec<_> = second
        .positions("recommend")
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.topic, p.partition, p.next_offset))
        .collect();
    positions.sort();
    assert_eq!(
        positions,
        [
            ("events".to_owned(), 0, 140),
            ("events".to_owned(), 1, 140),
            ("events".to_owned(), 2, 16)
        ]
    );
}

#[tokio::test]
async fn positions_move_only_from_where_they_are() {
    let db = TestDb::new().await;
    let store = db.store(conformance::settings(), 2).await;
    let moves = |group: &str, from: Option<i64>, to: i64| Batch {
        group: group.to_owned(),
        records: Vec::new(),
        positions: vec![PositionUpdate {
            topic: "events".into(),
            partition: 3,
            from,
            to,
        }],
    };
    let at = |positions: Vec<bookstore_domain::Position>| {
        positions
            .into_iter()
            .map(|p| (p.topic, p.partition, p.next_offset))
            .collect::<Vec<_>>()
    };
    assert!(store.positions("g").await.unwrap().is_empty());
    store.apply(&moves("g", None, 5)).await.unwrap();
    assert_eq!(
        at(store.positions("g").await.unwrap()),
        [("events".to_owned(), 3, 5)]
    );
    for stale in [moves("g", None, 7), moves("g", Some(4), 7)] {
        assert!(
            matches!(
                store.apply(&stale).await,
                Err(HandlerError::StalePosition(_))
            ),
            "{stale:?}"
        );
    }
    // A move that leaves the offset where it is (past nothing) is not mistaken for a stale one,
    // although MySQL may report such an UPDATE as changing no row.
    store.apply(&moves("g", Some(5), 5)).await.unwrap();
    store.apply(&moves("g", Some(5), 9)).await.unwrap();
    assert_eq!(
        at(store.positions("g").await.unwrap()),
        [("events".to_owned(), 3, 9)]
    );
    // Groups are apart, and compared exactly.
    assert!(store.positions("G").await.unwrap().is_empty());
    store.apply(&moves("G", None, 1)).await.unwrap();
    assert_eq!(
        at(store.positions("g").await.unwrap()),
        [("events".to_owned(), 3, 9)]
    );
}

#[tokio::test]
async fn names_compare_exactly() {
    let settings = conformance::settings();
    let db = TestDb::new().await;
    let store = db.store(settings.clone(), 2).await;
    let mut partition = Partition::new(0);
    let mut all = Vec::new();
    let books = partition.batch(catalog(1..=16));
    store.apply(&books).await.unwrap();
    all.extend(books.records);
    // Users, queries and authors that a case- or accent-insensitive collation would merge.
    let mut accented = search(Some("ann"), 1, base(), 3);
    if let Event::BookSearched(event) = &mut accented {
        event.query_normalized = "brönte".into();
        for book in &mut event.results {
            book.author = book.author.replace('ë', "e");
        }
    }
    let searches = partition.batch(vec![
        search(Some("ann"), 0, base(), 0),
        search(Some("Ann"), 0, base(), 1),
        search(Some("ANN"), 1, base(), 2),
        search(Some("ann"), 1, base(), 2),
        accented,
    ]);
    store.apply(&searches).await.unwrap();
    all.extend(searches.records);

    let stored = store.snapshot().await.unwrap();
    assert_eq!(stored.difference(&reference(&settings, &all)), None);
    assert_eq!(store.stats().await.unwrap().users, 3);
    let ann = store.interests("ann", 10, base()).await.unwrap();
    let mut authors: Vec<_> = ann.authors.iter().map(|a| a.name.as_str()).collect();
    authors.sort_unstable();
    assert_eq!(
        authors,
        ["Charlotte Bronte", "Charlotte Brontë", "Jane Austen"]
    );
    let mut queries: Vec<_> = ann.queries.iter().map(|q| q.name.as_str()).collect();
    queries.sort_unstable();
    assert_eq!(queries, ["austen", "bronte", "brönte"]);
}

#[tokio::test]
async fn an_event_the_tables_cannot_hold_is_rejected_whole() {
    let db = TestDb::new().await;
    let store = db.store(conformance::settings(), 2).await;
    let mut partition = Partition::new(0);
    store.apply(&partition.batch(catalog(1..=4))).await.unwrap();
    let before = store.snapshot().await.unwrap();
    // Longer user ids count as anonymous (the domain's rule), but a title over the 64 KiB of a
    // TEXT column cannot be stored: strict mode refuses it, and the batch is rejected whole.
    let mut huge = conformance::book(5);
    huge.title = "T".repeat(70_000);
    let batch = partition.batch(vec![
        search(None, 0, base(), 0),
        Event::BookCreated(BookEvent::new(uuid::Uuid::now_v7(), base(), huge)),
    ]);
    match store.apply(&batch).await {
        Err(HandlerError::Rejected(_)) => {}
        other => panic!("a title longer than the column must be rejected, got {other:?}"),
    }
    assert_eq!(store.snapshot().await.unwrap(), before, "nothing applied");
    let positions = store.positions("recommend").await.unwrap();
    assert_eq!(positions[0].next_offset, 4, "the position did not move");
}

#[tokio::test]
async fn a_store_of_an_older_version_is_emptied_for_a_rebuild() {
    let db = TestDb::new().await;
    let store = db.store(conformance::settings(), 1).await;
    let mut partition = Partition::new(0);
    let mut events = catalog(1..=4);
    events.push(search(Some("u"), 0, base(), 0));
    events.push(view(Some("u"), 1, base(), 1));
    store.apply(&partition.batch(events)).await.unwrap();
    let pool = bookstore_mysql::connect(&db.url, 1).await.unwrap();
    // What a store of version 1 looked like: no mark (its rows would not decode now).
    sqlx::query("DELETE FROM rec_format")
        .execute(&pool)
        .await
        .unwrap();
    let reopened = db.store(conformance::settings(), 1).await;
    let snapshot = reopened.snapshot().await.unwrap();
    assert_eq!(snapshot.catalog.len(), 4, "the catalog copy stays");
    assert!(snapshot.profiles.is_empty() && snapshot.queries.is_empty());
    assert!(snapshot.popular.is_empty() && snapshot.coviews.is_empty());
    // Opened again at this version: nothing is deleted.
    store
        .apply(&partition.batch(vec![search(Some("u"), 0, base(), 2)]))
        .await
        .unwrap();
    let again = db.store(conformance::settings(), 1).await;
    assert_eq!(again.snapshot().await.unwrap().profiles.len(), 1);
}
