//! What the log keeps: the embedded log's file stays bounded under a load that appends far more
//! than `events.retention_bytes`; on Kafka the topics the services create carry the retention.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bookstore_app::bus::EventBus;
use bookstore_domain::TopicPartition;
use bookstore_testkit::{Backend, wait_until};
use bookstore_testkit_app::{TestBus, counts_store, total};

/// `events.retention_bytes` of the bounded-load test, per partition (3 partitions).
const RETENTION_BYTES: u64 = 512 * 1024;
/// Searches of the load (each publishes an event of up to 100 results), and how long it may
/// take.
const SEARCHES: usize = 5_000;
const LOAD_LIMIT: Duration = Duration::from_secs(120);
/// What `events.db` and `events.db-wal` may take together, at any time during the load and
/// after it: the database (the retained messages, 1.5 MiB of keys and values plus the catalog
/// topic, SQLite's page overhead and pages awaiting reuse, the appends between two passes: about
/// 4 MiB measured) and the WAL (truncated once past 8 MiB, looked at four times a second). The load
/// appends about 47 MiB.
const FILE_BOUND: u64 = 16 * 1024 * 1024;

/// The bytes of the log's database file and its WAL file.
fn file_size(log: &std::path::Path) -> u64 {
    let size = |suffix: &str| {
        let mut path = log.as_os_str().to_owned();
        path.push(suffix);
        std::fs::metadata(path).map_or(0, |m| m.len())
    };
    size("") + size("-wal")
}

/// The messages of `topic`'s 3 partitions that the log still holds.
async fn retained(
    log: &bookstore_eventlog::EventLog,
    topic: &str,
) -> Vec<bookstore_consumer::RawMessage> {
    let mut retained = Vec::new();
    for partition in 0..3 {
        let tp = TopicPartition {
            topic: topic.to_owned(),
            partition,
        };
        retained.extend(log.read(&tp, 0, 100_000).await.unwrap());
    }
    retained
}

/// The value of the Prometheus series `name` whose labels include `label` (0 if absent).
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_log_stays_bounded_under_a_long_load() {
    let mut bus = TestBus::new(Backend::Embedded).await;
    bus.config.events.retention_bytes = RETENTION_BYTES;
    let topic = bus.topic().to_owned();
    let web = bus.web().await;
    // A consumer group reading all along, as the services do: its reads can keep the WAL from
    // being restarted.
    let counts = Arc::new(counts_store(&bus.path("counts.db")).await);
    let consumer = bus.consumer("bounded", counts.clone()).await;
    let EventBus::Embedded { log, .. } = &bus.bus else {
        unreachable!()
    };

    // The files' size, sampled every 20 ms during the load.
    let largest = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (path, largest, sampling) = (log.path().to_owned(), largest.clone(), sampling.clone());
        async move {
            while sampling.load(Ordering::Relaxed) {
                largest.fetch_max(file_size(&path), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    // The load: 4 clients, each search with a page of up to 100 results.
    let started = Instant::now();
    let http = reqwest::Client::new();
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (http, url) = (http.clone(), web.url("/api/books"));
            tokio::spawn(async move {
                for i in (client..SEARCHES).step_by(4) {
                    let query = ["the", "of", "a", "and"][i % 4];
                    let response = http
                        .get(&url)
                        .query(&[("q", query), ("limit", "100"), ("o", &(i % 7).to_string())])
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                }
            })
        })
        .collect();
    for client in clients {
        tokio::time::timeout(LOAD_LIMIT, client)
            .await
            .expect("the load finishes in time")
            .unwrap();
    }
    wait_until(Duration::from_secs(30), "every event appended", || async {
        web.stats.delivered.load(Ordering::Relaxed) == SEARCHES as u64
    })
    .await;
    let load_took = started.elapsed();
    // The consumer reaches the end of every partition (what was trimmed before it read it, it
    // never sees).
    wait_until(
        Duration::from_secs(30),
        "the consumer at the end of the log",
        || async {
            let (lag, _) = consumer.stats.lag();
            lag.len() == 3 && lag.values().all(|l| *l == 0)
        },
    )
    .await;
    let during = largest.load(Ordering::Relaxed);
    assert!(
        during <= FILE_BOUND,
        "events.db and its WAL reached {during} bytes during the load (bound {FILE_BOUND})"
    );
    // One more pass after the load, then the files as they stay.
    let metrics_url = web.ops_url("/metrics");
    let scrape = || async {
        http.get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let trimmed_series = format!("topic=\"{topic}\"");
    wait_until(
        Duration::from_secs(30),
        "the last messages trimmed",
        || async {
            let trimmed = metric(
                &scrape().await,
                "bookstore_eventlog_trimmed_total",
                &trimmed_series,
            );
            retained(log, &topic).await.len() + trimmed as usize == SEARCHES
        },
    )
    .await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let after = file_size(log.path());
    let largest = largest.load(Ordering::Relaxed).max(after);

    // What was appended, from the messages retained.
    let retained = retained(log, &topic).await;
    let kept: u64 = retained.iter().map(|m| m.value.len() as u64).sum();
    let average = kept / retained.len() as u64;
    let appended = average * SEARCHES as u64;
    let applied = total(&counts).await;
    eprintln!(
        "{SEARCHES} searches in {load_took:?}: about {} MiB appended ({average} bytes an event), \
         {} events retained ({} KiB); events.db + WAL: at most {:.1} MiB during the load, {:.1} \
         MiB after; the consumer applied {applied}",
        appended / (1024 * 1024),
        retained.len(),
        kept / 1024,
        largest as f64 / (1024.0 * 1024.0),
        after as f64 / (1024.0 * 1024.0),
    );
    assert!(
        appended > 25 * 3 * RETENTION_BYTES,
        "the load appended only {appended} bytes"
    );
    assert!(
        kept <= 3 * RETENTION_BYTES,
        "{kept} bytes retained in 3 partitions of {RETENTION_BYTES}"
    );
    assert!(
        largest <= FILE_BOUND,
        "events.db and its WAL take {largest} bytes (bound {FILE_BOUND})"
    );
    // Offsets went on: each partition's end counts every event appended to it.
    let ends: i64 = log
        .end_offsets(&topic)
        .await
        .unwrap()
        .iter()
        .map(|p| p.next_offset)
        .sum();
    assert_eq!(ends, SEARCHES as i64);
    consumer.shutdown().await;
    web.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_topics_the_services_create_carry_the_retention() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;

    let mut bus = TestBus::new(Backend::Kafka).await;
    let events = &mut bus.config.events;
    events.retention_hours = 2;
    events.retention_bytes = 10 * 1024 * 1024;
    let searches = format!("{}-retained", events.topic);
    let topics = [
        searches.clone(),
        format!("{searches}.dlq"),
        events.catalog_topic.clone(),
    ];
    let EventBus::Kafka(settings) = &bus.bus else {
        unreachable!()
    };
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create().unwrap();
    let created = bus.bus.ensure_topics(&bus.config.events, &topics).await;
    let described = admin
        .describe_configs(
            &topics
                .iter()
                .map(|t| ResourceSpecifier::Topic(t))
                .collect::<Vec<_>>(),
            &AdminOptions::new(),
        )
        .await;
    // The topics this test made go, whatever the checks say.
    let mut made: Vec<&str> = topics.iter().map(String::as_str).collect();
    made.push(bus.topic());
    let _ = admin.delete_topics(&made, &AdminOptions::new()).await;
    created.unwrap();
    let described = described.unwrap();
    let setting = |topic: usize, name: &str| -> Option<String> {
        described[topic]
            .as_ref()
            .unwrap()
            .get(name)
            .and_then(|e| e.value.clone())
    };
    for topic in [0, 1] {
        assert_eq!(setting(topic, "cleanup.policy").as_deref(), Some("delete"));
        assert_eq!(setting(topic, "retention.ms").as_deref(), Some("7200000"));
        assert_eq!(
            setting(topic, "retention.bytes").as_deref(),
            Some("10485760")
        );
        // Segments of a quarter of each bound: Kafka deletes whole segments only.
        assert_eq!(setting(topic, "segment.ms").as_deref(), Some("1800000"));
        assert_eq!(setting(topic, "segment.bytes").as_deref(), Some("2621440"));
    }
    assert_eq!(setting(2, "cleanup.policy").as_deref(), Some("compact"));
    assert_ne!(setting(2, "retention.bytes").as_deref(), Some("10485760"));
}
