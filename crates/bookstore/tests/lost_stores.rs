//! A consumer whose store was lost rebuilds it from the beginning of the log, not from where its
//! group had got to: the history is in the log (searches through the web service and the sample
//! catalog's `book.created` events), the trend and recommendation services and a query-count
//! consumer apply it and stop, their stores are lost (SQLite files deleted, the Redis keys under
//! the test's prefix deleted, the MariaDB database dropped), and they start again with the same
//! group ids. Each store then equals a fresh group's replay into a fresh store, and `/stats`
//! counts the whole catalog.
//!
//! On both event logs (embedded, Kafka) and both sets of stores (SQLite; Redis for trends and
//! MariaDB for recommendations).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bookstore_app::Remotes;
use bookstore_app::bus::EventBus;
use bookstore_app::config::{Config, Secret};
use bookstore_app::recommend::open_recommend_store;
use bookstore_app::trend::open_trend_store;
use bookstore_testkit::{
    Backend, Cleanup, http::get_json, mysql::drop_mysql_database, redis::delete_redis_keys,
    wait_until,
};
use bookstore_testkit_app::stores::{
    ExpectedRecommendations, ExpectedTrends, Replay, trend_total, wait_for_recommendations,
    wait_for_trends,
};
use bookstore_testkit_app::{
    Running, RunningConsumer, TestBus, counts_store, start_recommend, start_trend, start_web, total,
};

/// Searches made through the web service.
const SEARCHES: usize = 150;
const QUERIES: &[&str] = &[
    "dickens",
    "shakespeare",
    "twain",
    "austen",
    "hardy",
    "wells",
    "doyle",
    "kipling",
    "verne",
    "conrad",
    "the",
    "war",
    "love",
    "bronte",
    "no such book anywhere",
];
const READERS: usize = 12;

/// Where the consumers keep their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stores {
    /// Trends and recommendations in SQLite files in the data dir.
    Sqlite,
    /// Trends on the test Redis, recommendations on the test MariaDB.
    RedisMariadb,
}

macro_rules! every_log_and_store {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded_log_sqlite() {
                $name(Backend::Embedded, Stores::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded_log_redis_mariadb() {
                $name(Backend::Embedded, Stores::RedisMariadb).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn kafka_sqlite() {
                $name(Backend::Kafka, Stores::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn kafka_redis_mariadb() {
                $name(Backend::Kafka, Stores::RedisMariadb).await;
            }
        }
    };
}

/// The consumers under test: the two services, and a query-count group.
struct Consumers {
    trend: Running,
    rec: Running,
    counts: RunningConsumer,
}

impl Consumers {
    async fn start(bus: &TestBus) -> Self {
        let config = &bus.config;
        let (trend, _) = start_trend(config).await;
        let (rec, _) = start_recommend(config).await;
        let counts = bus
            .consumer(
                &counts_group(config),
                Arc::new(counts_store(&bus.path("counts.db")).await),
            )
            .await;
        Self { trend, rec, counts }
    }

    async fn stop(self) {
        self.trend.shutdown().await;
        self.rec.shutdown().await;
        self.counts.shutdown().await;
    }
}

fn counts_group(config: &Config) -> String {
    format!("counts-{}", config.trend.group_id)
}

/// Deletes a SQLite database and its WAL and shared-memory files.
fn delete_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot delete {}: {e}", Path::new(&file).display()),
        }
    }
}

/// Starts the services and the query-count group, waits until each one's store holds what the
/// replay holds and `/stats` counts the whole catalog, and stops them.
async fn consume_until_like_the_replay(bus: &TestBus, replayed: &Replay, catalog: u64, what: &str) {
    let consumers = Consumers::start(bus).await;
    let (replayed_trends, replayed_recommendations) =
        (replayed.trends.as_ref(), replayed.recommendations.as_ref());
    let config = &bus.config;
    // Handles of the services' stores opened now: a lost one was made anew at their start.
    let trends = open_trend_store(config).await.unwrap();
    let recommendations = open_recommend_store(config).await.unwrap();
    wait_for_trends(
        trends.as_ref(),
        ExpectedTrends::Store(replayed_trends),
        what,
    )
    .await;
    wait_for_recommendations(
        recommendations.as_ref(),
        ExpectedRecommendations::Store(replayed_recommendations),
        what,
    )
    .await;
    let http = reqwest::Client::new();
    let stats = get_json(&http, &consumers.rec.ops("/stats")).await;
    assert_eq!(
        stats["catalog_books"].as_u64(),
        Some(catalog),
        "{what}: /stats {stats}"
    );
    let counts = counts_store(&bus.path("counts.db")).await;
    wait_until(
        Duration::from_secs(60),
        &format!("{what}: the query counts"),
        || async { total(&counts).await == SEARCHES as u64 },
    )
    .await;
    consumers.stop().await;
}

every_log_and_store!(lost_stores_are_rebuilt_from_the_beginning_of_the_log);
async fn lost_stores_are_rebuilt_from_the_beginning_of_the_log(backend: Backend, stores: Stores) {
    let mut cleanup = Cleanup::default();
    let mut bus = TestBus::new(backend).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    {
        let config = &mut bus.config;
        config.trend.group_id = format!("trend-lost-{run}");
        config.recommend.group_id = format!("rec-lost-{run}");
        if stores == Stores::RedisMariadb {
            bookstore_testkit_app::use_redis_trends(config).await;
            cleanup
                .redis_prefixes
                .push(config.trend.redis_prefix.clone());
        }
    }
    if stores == Stores::RedisMariadb {
        let url = bus.fresh_mysql_url("lost_rec").await;
        bus.config.recommend.db_url = Some(Secret(url.into()));
    }
    let config = &bus.config;
    // The catalog topic is created by the first consumer or relay that needs it.
    bus.bus
        .ensure_topics(
            &config.events,
            std::slice::from_ref(&config.events.catalog_topic),
        )
        .await
        .unwrap();

    // The history: the sample catalog (through the outbox) and searches through the web service.
    let (web, searches) = start_web(config, Remotes::default()).await;
    let http = reqwest::Client::new();
    let listed = http
        .get(web.url("/api/books?limit=1"))
        .send()
        .await
        .unwrap();
    let catalog: u64 = listed.headers()["x-total-count"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(catalog > 200, "the sample catalog is loaded");
    let readers: Vec<String> = (0..READERS)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    for i in 0..SEARCHES {
        let query = QUERIES[(i * 7) % QUERIES.len()];
        let offset = if i % 3 == 0 { 5 } else { 0 };
        let mut request = http
            .get(web.url("/api/books"))
            .query(&[("q", query), ("o", &offset.to_string())]);
        // Every fifth search is anonymous.
        if i % 5 != 0 {
            request = request.header(
                "cookie",
                bookstore_testkit_app::uid_cookie(&readers[i % READERS]),
            );
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    wait_until(
        Duration::from_secs(30),
        "the searches delivered to the log",
        || async {
            searches
                .delivered
                .load(std::sync::atomic::Ordering::Relaxed)
                == SEARCHES as u64
        },
    )
    .await;

    // A fresh group's replay into fresh stores: what every rebuilt store must equal.
    let replayed = Replay::start(&bus, config).await;
    let (replayed_trends, replayed_recommendations) = (&replayed.trends, &replayed.recommendations);
    wait_until(
        Duration::from_secs(60),
        "the replay to apply the whole log",
        || async {
            trend_total(replayed_trends.as_ref()).await == SEARCHES as u64
                && replayed_recommendations
                    .stats()
                    .await
                    .is_ok_and(|s| s.catalog_books == catalog)
                && replayed.rec_group.applied() >= catalog + SEARCHES as u64
        },
    )
    .await;

    // The services and the query-count group apply the history, and stop.
    consume_until_like_the_replay(
        &bus,
        &replayed,
        catalog,
        &format!("{backend:?}, {stores:?}: before the loss"),
    )
    .await;
    // The groups got somewhere: a start from their committed offsets would skip the history.
    for group in [&config.trend.group_id, &config.recommend.group_id] {
        let committed = committed_offsets(&bus, group).await;
        assert!(committed.iter().any(|n| *n > 0), "{group}: {committed:?}");
    }

    // The stores are lost.
    match stores {
        Stores::Sqlite => {
            delete_sqlite(&config.data_dir.join("trends.db"));
            delete_sqlite(&config.data_dir.join("recommend.db"));
        }
        Stores::RedisMariadb => {
            assert!(delete_redis_keys(&config.trend.redis_prefix).await > 0);
            let url = config
                .recommend
                .db_url
                .as_ref()
                .unwrap()
                .expose()
                .to_owned();
            drop_mysql_database(&url).await;
        }
    }
    delete_sqlite(&bus.path("counts.db"));

    // Started again with the same group ids, they rebuild their stores from the whole log.
    consume_until_like_the_replay(
        &bus,
        &replayed,
        catalog,
        &format!("{backend:?}, {stores:?}: after the loss"),
    )
    .await;
    replayed.shutdown().await;
    web.shutdown().await;
}

/// The offsets `group` committed on the search topic (Kafka: asked from the broker with a
/// consumer of that group that never joins it).
async fn committed_offsets(bus: &TestBus, group: &str) -> Vec<i64> {
    match &bus.bus {
        EventBus::Embedded { log, .. } => log
            .committed(group)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.next_offset)
            .collect(),
        EventBus::Kafka(settings) => {
            use rdkafka::consumer::{BaseConsumer, Consumer};
            let consumer: BaseConsumer = settings
                .client_config_with(&[("group.id", group.to_owned())])
                .create()
                .unwrap();
            let mut partitions = rdkafka::TopicPartitionList::new();
            for partition in 0..i32::try_from(bus.config.events.partitions).unwrap() {
                partitions.add_partition(bus.topic(), partition);
            }
            let topic = bus.topic().to_owned();
            tokio::task::spawn_blocking(move || {
                consumer
                    .committed_offsets(partitions, std::time::Duration::from_secs(10))
                    .unwrap()
                    .elements_for_topic(&topic)
                    .iter()
                    .filter_map(|e| match e.offset() {
                        rdkafka::Offset::Offset(n) => Some(n),
                        _ => None,
                    })
                    .collect()
            })
            .await
            .unwrap()
        }
    }
}
