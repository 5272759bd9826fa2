//! Two recommendation services in one consumer group on Kafka and MariaDB: the group spreads the
//! search topic's partitions over them, both apply events at once into one database (each only
//! the records of its own partitions, so neither waits for the other's rows), and the store ends
//! holding exactly the rules applied to every event once. No deadlock, no lost update.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bookstore_app::recommend::open_recommend_store;
use bookstore_domain::Record;
use bookstore_domain::events::{
    BookEvent, CatalogBook, Event, ReaderForgottenEvent, ResultBook, SearchEvent,
};
use bookstore_testkit::conformance::recommend as conformance;
use bookstore_testkit::wait_until;
use bookstore_testkit_app::stores::{ExpectedRecommendations, wait_for_recommendations};
use bookstore_testkit_app::{Infra, start_recommend, test_bus, unbounded_query_records};
use chrono::Utc;

const BOOKS: i64 = 40;
const SEARCHES: usize = 1_500;
const READERS: usize = 60;

fn book(id: i64) -> CatalogBook {
    CatalogBook {
        isbn: None,
        id,
        title: format!("Book {id}"),
        author: format!("Author {}", id % 7),
        published_at: chrono::NaiveDate::from_ymd_opt(1990, 1, 1)
            .unwrap_or_default()
            .into(),
        description: String::new(),
        created_at: Utc::now(),
    }
}

/// The catalog, then searches of `READERS` readers over twelve queries (each query shows books
/// of its own range), and every tenth reader forgotten half-way.
fn events() -> Vec<Event> {
    let mut events: Vec<Event> = (1..=BOOKS)
        .map(|id| Event::BookCreated(BookEvent::new(uuid::Uuid::now_v7(), Utc::now(), book(id))))
        .collect();
    let base = Utc::now() - chrono::Duration::seconds(30);
    for i in 0..SEARCHES {
        let reader = (i * 7) % READERS;
        // Each time a reader comes back (every READERS searches), another query.
        let query = (reader + i / READERS) % 12;
        if i == SEARCHES / 2 {
            for forgotten in (0..READERS).step_by(10) {
                events.push(Event::ReaderForgotten(ReaderForgottenEvent::now(&format!(
                    "reader-{forgotten}"
                ))));
            }
        }
        let results = (0..5)
            .map(|k| {
                let b = book(1 + ((query * 3 + k + i % 3) as i64) % BOOKS);
                ResultBook {
                    id: b.id,
                    title: b.title,
                    author: b.author,
                    published_at: Some(b.published_at),
                }
            })
            .collect();
        events.push(Event::BookSearched(SearchEvent::new(
            uuid::Uuid::now_v7(),
            base + chrono::Duration::milliseconds(10 * i as i64),
            (i % 5 != 0).then(|| format!("reader-{reader}")),
            &format!("query {query}"),
            0,
            results,
        )));
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_members_of_one_group_end_as_the_rules() {
    let mut bus = test_bus(Infra::Real).await;
    unbounded_query_records(&mut bus.config);
    let config = &bus.config;
    assert!(
        config.events.partitions >= 2,
        "two members need two partitions"
    );
    let all = events();
    let records: Vec<Record> = all
        .iter()
        .enumerate()
        .map(|(i, event)| Record {
            topic: String::new(),
            partition: 0,
            offset: i as i64,
            event: event.clone(),
        })
        .collect();
    let expected = conformance::reference(&config.recommend.settings(), &records);
    assert!(expected.queries.iter().any(|(_, r)| !r.related.is_empty()));

    let (first, first_stats) = start_recommend(config).await;
    let (second, second_stats) = start_recommend(config).await;
    // Both take part: the group has given each some of the partitions.
    wait_until(
        Duration::from_secs(60),
        "both members own partitions",
        || {
            let (a, b) = (first_stats.clone(), second_stats.clone());
            async move {
                a.owned_partitions.load(Ordering::Relaxed) > 0
                    && b.owned_partitions.load(Ordering::Relaxed) > 0
            }
        },
    )
    .await;

    let searches = bus.publisher().await;
    let catalog_events = &config.events;
    let catalog = bus
        .bus
        .publisher(catalog_events, catalog_events.catalog())
        .await
        .unwrap();
    for (i, event) in all.iter().enumerate() {
        if event.catalog_change().is_some() {
            catalog.port.publish(event)
        } else {
            searches.port.publish(event)
        };
        // A few seconds of events, so that both members apply batches at the same time.
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(searches.port.flush(Duration::from_secs(30)).await, 0);
    assert_eq!(catalog.port.flush(Duration::from_secs(30)).await, 0);

    let store = open_recommend_store(config).await.unwrap();
    wait_for_recommendations(
        store.as_ref(),
        ExpectedRecommendations::Snapshot(&expected),
        "two members",
    )
    .await;
    let applied = |s: &bookstore_consumer::ConsumerStats| s.applied.load(Ordering::Relaxed);
    eprintln!(
        "two members applied {} and {} events, with {} and {} retries",
        applied(&first_stats),
        applied(&second_stats),
        first_stats.retries.load(Ordering::Relaxed),
        second_stats.retries.load(Ordering::Relaxed)
    );
    assert!(
        applied(&first_stats) > 0 && applied(&second_stats) > 0,
        "both members applied events"
    );
    first.shutdown().await;
    second.shutdown().await;
}
