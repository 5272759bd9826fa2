//! The recommendation service killed hard (SIGKILL of a `bookstore recommend` process) again and
//! again while catalog and search events flow: afterwards the stored profiles, popularity and
//! co-occurrence equal the rules applied once to every event, and a new consumer group replaying
//! the topics into a fresh store ends with the same state.

use std::process::{Command, Stdio};
use std::time::Duration;

use bookstore::RecommendApp;
use bookstore::config::{Config, Secret};
use bookstore::recommend::open_recommend_store;
use bookstore_domain::Record;
use bookstore_domain::events::{BookCreatedEvent, CatalogBook, Event, ResultBook, SearchEvent};
use bookstore_domain::recommend::{Snapshot, conformance};
use chrono::Utc;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::helpers::{KillOnDrop, TestBus};
use crate::{Infra, fresh_mysql_url, infra, service_env, test_bus};

fn recommend_service(bus: &TestBus) -> KillOnDrop {
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_bookstore"))
            .arg("recommend")
            .envs(bus.env())
            .envs(service_env(&bus.config))
            // Static membership: a restarted instance takes its partitions back at once.
            .env("BOOKSTORE_EVENTS__PROPERTIES__GROUP_INSTANCE_ID", "rec-1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn catalog_book(id: i64) -> CatalogBook {
    CatalogBook {
        id,
        title: format!("Book {id}"),
        author: format!("Author {}", id % 9),
        published_at: chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap(),
        description: String::new(),
        created_at: Utc::now(),
    }
}

/// Waits until the store holds what the rules give for `events`.
async fn wait_for_state(config: &Config, expected: &Snapshot, what: &str) {
    let store = open_recommend_store(config).await.unwrap();
    let mut last = None;
    let waited = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let held = store.snapshot().await.unwrap();
            last = held.difference(expected);
            if last.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{what}: the store never reached the expected state; last difference: {last:?}"
    );
}

infra!(killed_recommendation_services_apply_every_event_once);
async fn killed_recommendation_services_apply_every_event_once(infra: Infra) {
    const SEARCHES: usize = 2_000;
    const BOOKS: i64 = 60;
    let mut bus = test_bus(infra).await;
    // No trimming: which neighbours a trimmed list keeps depends on batch boundaries, which
    // differ between a crashing run and a replay. Trimming is checked by the stores' own tests.
    bus.config.recommend.neighbours_per_book = 1_000;
    let settings = bus.config.recommend.settings();
    let searches = bus.publisher().await;
    let mut catalog_events = bus.config.events.clone();
    catalog_events.topic = bus.config.events.catalog_topic.clone();
    let catalog = bus.bus.publisher(&catalog_events).await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);

    // The events, in publication order: what the rules are applied to once.
    let mut events: Vec<Event> = (1..=BOOKS)
        .map(|id| {
            Event::BookCreated(BookCreatedEvent::new(
                uuid::Uuid::now_v7(),
                Utc::now(),
                catalog_book(id),
            ))
        })
        .collect();
    let pool: Vec<i64> = (1..=BOOKS).collect();
    for i in 0..SEARCHES {
        let mut results = pool.clone();
        results.shuffle(&mut rng);
        let user = (i % 4 != 0).then(|| format!("reader-{}", rng.random_range(0..40)));
        events.push(Event::BookSearched(SearchEvent::new(
            uuid::Uuid::now_v7(),
            Utc::now(),
            user,
            &format!("query {}", rng.random_range(0..25)),
            0,
            results[..rng.random_range(0..8)]
                .iter()
                .map(|id| {
                    let b = catalog_book(*id);
                    ResultBook {
                        id: b.id,
                        title: b.title,
                        author: b.author,
                        published_at: Some(b.published_at),
                    }
                })
                .collect(),
        )));
    }

    let producer = {
        let events = events.clone();
        let searches = searches.publisher.clone();
        let catalog = catalog.publisher.clone();
        tokio::spawn(async move {
            for (i, event) in events.iter().enumerate() {
                match event {
                    Event::BookCreated(_) => catalog.publish(event),
                    Event::BookSearched(_) => searches.publish(event),
                };
                if i % 40 == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    };
    for round in 0..6 {
        let mut child = recommend_service(&bus);
        let lifetime = Duration::from_millis(rng.random_range(600..1_800));
        tokio::time::sleep(lifetime).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!("killed recommendation service {round} after {lifetime:?}");
    }
    producer.await.unwrap();
    assert_eq!(searches.publisher.flush(Duration::from_secs(30)).await, 0);
    assert_eq!(catalog.publisher.flush(Duration::from_secs(30)).await, 0);

    let records: Vec<Record> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Record {
            topic: String::new(),
            partition: 0,
            offset: i as i64,
            event,
        })
        .collect();
    let expected = conformance::reference(&settings, &records);
    assert!(!expected.cooccurrence.is_empty());

    let mut child = recommend_service(&bus);
    wait_for_state(&bus.config, &expected, "after the crashes").await;
    child.kill().unwrap();
    child.wait().unwrap();

    // Replay: a new group from the beginning of the topics into a fresh store.
    let mut rebuilt: Config = std::mem::take(&mut bus.config);
    rebuilt.recommend.group_id = format!("{}-replay", rebuilt.recommend.group_id);
    // The same log (the embedded one lives in the data dir), a fresh store.
    let other_dir = tempfile::tempdir().unwrap();
    let fresh_store = match infra {
        Infra::Embedded => format!("sqlite://{}", other_dir.path().join("replay.db").display()),
        Infra::Real => fresh_mysql_url("rec_replay").await,
    };
    rebuilt.recommend.db_url = Some(Secret(fresh_store.into()));
    let app = RecommendApp::build(&rebuilt).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    wait_for_state(&rebuilt, &expected, "the replay").await;
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
