//! The Kafka broker from `dev/services` is stopped for a few seconds while searches go on: every
//! search still answers 200 quickly, nothing is dropped, and once the broker is back every queued
//! event is applied exactly once by each consumer: a query-count group, the trend service and the
//! recommendation service.
//!
//! Its own test binary, because it stops the broker that the other Kafka tests use (cargo runs
//! test binaries one after the other).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bookstore_app::config::Config;
use bookstore_app::recommend::open_recommend_store;
use bookstore_app::trend::open_trend_store;
use bookstore_testkit::wait_until;
use bookstore_testkit_app::{Infra, counts_store, total};

/// The readers searching (their `uid` cookies): the recommendation service keeps their profiles.
const READERS: [&str; 4] = [
    "0b0e7c1a-1f2d-4c3b-9a8e-1d2c3b4a5f60",
    "1c1f8d2b-2e3a-4d4c-8b9f-2e3d4c5b6a71",
    "2d2a9e3c-3f4b-4e5d-9caf-3f4e5d6c7b82",
    "3e3bafd4-4a5c-4f6e-8dba-4a5f6e7d8c93",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn searches_go_on_while_the_broker_is_down_and_their_events_arrive_after() {
    let bus = bookstore_testkit_app::bus_with_fresh_groups(Infra::Real, "broker-restart").await;
    let web = bus.web().await;
    let counts = Arc::new(counts_store(&bus.path("counts.db")).await);
    let consumer = bus.consumer("broker-restart", counts.clone()).await;
    let (trend, _) = bookstore_testkit_app::start_trend(&bus.config).await;
    let (recommend, _) = bookstore_testkit_app::start_recommend(&bus.config).await;
    let stats = web.stats.clone();

    // A reader searching 20 times a second until told to stop; each search's status and time.
    let stop = Arc::new(AtomicBool::new(false));
    let searcher = tokio::spawn({
        let stop = stop.clone();
        let url = web.url("/api/books?q=");
        async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut timings = Vec::new();
            let queries = ["austen", "dickens", "twain", "shelley", "tolstoy"];
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let response = http
                    .get(format!("{url}{}", queries[i % queries.len()]))
                    .header(
                        "cookie",
                        bookstore_testkit_app::uid_cookie(READERS[i % READERS.len()]),
                    )
                    .send()
                    .await;
                let status = response.map(|r| r.status().as_u16()).unwrap_or(0);
                timings.push((status, started.elapsed()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            timings
        }
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut guard = bookstore_testkit::process::RestartOnDrop::new("kafka");
    bookstore_testkit::process::services("stop", "kafka").await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the last acknowledgements in flight
    let down_from = stats.delivered.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(2800)).await;
    let delivered_while_down = stats.delivered.load(Ordering::Relaxed) - down_from;
    let queued_while_down = stats.in_flight();
    bookstore_testkit::process::services("start", "kafka").await;
    guard.armed = false;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let timings = searcher.await.unwrap();

    assert!(timings.len() >= 60, "{} searches only", timings.len());
    assert!(
        timings.iter().all(|(status, _)| *status == 200),
        "{timings:?}"
    );
    let slowest = timings.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        slowest < Duration::from_millis(500),
        "a search took {slowest:?} while the broker was away"
    );
    assert_eq!(
        delivered_while_down, 0,
        "nothing can be delivered while the broker is down"
    );
    assert!(
        queued_while_down > 0,
        "the searches made while the broker was down wait in the queue"
    );

    let searches = timings.len() as u64;
    wait_until(
        Duration::from_secs(120),
        "every search event counted",
        || async { total(&counts).await >= searches },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        total(&counts).await,
        searches,
        "no event lost, none counted twice"
    );
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
    assert_eq!(stats.delivered.load(Ordering::Relaxed), searches);

    // The trend service counted each search once.
    let trends = open_trend_store(&bus.config).await.unwrap();
    let trend_total = || bookstore_testkit_app::stores::trend_total(trends.as_ref());
    wait_until(
        Duration::from_secs(60),
        "every search in the trends",
        || async { trend_total().await >= searches },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        trend_total().await,
        searches,
        "trends: none lost, none twice"
    );

    // The recommendation service holds what a fresh group replaying both topics into a fresh
    // store holds: every event applied once.
    let live = open_recommend_store(&bus.config).await.unwrap();
    let replay_dir = tempfile::tempdir().unwrap();
    let mut replay_config = Config {
        data_dir: replay_dir.path().to_owned(),
        events: bus.config.events.clone(),
        recommend: bus.config.recommend.clone(),
        ..Config::default()
    };
    replay_config.recommend.db_url = None;
    let replayed = open_recommend_store(&replay_config).await.unwrap();
    let replay = bus
        .consumer_of(
            &format!("broker-restart-replay-{}", uuid::Uuid::new_v4().simple()),
            vec![
                bus.config.events.catalog_topic.clone(),
                bus.config.events.topic.clone(),
            ],
            replayed.clone(),
        )
        .await;
    let mut last = None;
    let same = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (a, b) = (
                live.snapshot().await.unwrap(),
                replayed.snapshot().await.unwrap(),
            );
            last = a.difference(&b);
            if last.is_none() && replay.applied() >= searches {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        same.is_ok(),
        "the recommendation store differs from a replay of the topics: {last:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a, b) = (
        live.snapshot().await.unwrap(),
        replayed.snapshot().await.unwrap(),
    );
    assert_eq!(
        a.difference(&b),
        None,
        "the recommendations changed afterwards"
    );
    assert!(
        !a.profiles.is_empty() && !a.catalog.is_empty(),
        "the readers have profiles"
    );

    replay.shutdown().await;
    consumer.shutdown().await;
    trend.shutdown().await;
    recommend.shutdown().await;
    web.shutdown().await;
}
