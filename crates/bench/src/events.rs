//! `bookstore bench events`: producer and consumer throughput of the event pipeline, and end-to-end
//! latency from publishing an event to its handler, per backend. On Kafka the baseline, measured
//! in the same run on the same broker with the same messages, is plain rdkafka: a producer with
//! the same settings, and a consumer that only reads.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use bookstore_consumer::ConsumerStats;
use bookstore_domain::events::{
    BOOK_SEARCHED, Event, ResultBook, SearchEvent, TYPE_HEADER, VERSION_HEADER,
};
use bookstore_domain::{Batch, EventHandler, HandlerError, Position};
use bookstore_sqlite::SqliteQueryCounts;
use chrono::{NaiveDate, Utc};
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use bookstore_app::bus::EventBus;
use bookstore_app::config::{Config, EventsBackend, TrendStoreKind};

use crate::measure::{BENCH_QUEUE_BYTES, Throughput, publish_all, throughput_table, wait_applied};

/// What to measure.
#[derive(Debug, Clone)]
pub struct EventsBench {
    /// Events for the throughput runs.
    pub events: u64,
    /// Events per second for the latency run, and how long it lasts.
    pub rate: u64,
    pub latency_secs: u64,
    /// Which backends to measure.
    pub backends: Vec<EventsBackend>,
    pub brokers: String,
    pub partitions: u32,
    pub batch_size: usize,
    /// Trend stores to measure the trend handler on.
    pub trend_stores: Vec<TrendStoreKind>,
    pub redis_url: String,
    /// The recommendation handler and API, per store (none when its list of stores is empty).
    pub recommend: crate::recommend::RecommendBench,
}

/// End-to-end latency at a fixed rate.
#[derive(Debug, Clone)]
pub struct Latency {
    pub backend: &'static str,
    pub rate: u64,
    pub events: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Default)]
pub struct Report {
    pub throughput: Vec<Throughput>,
    pub latency: Vec<Latency>,
    pub payload_bytes: usize,
    /// Microseconds to encode one event as JSON, alone on one thread.
    pub encode_us: f64,
    /// The trend handler per store, and its baseline.
    pub trends: Vec<Throughput>,
    /// The recommendation handler and API per store, and their baselines.
    pub recommend: Option<crate::recommend::Report>,
}

/// Runs every measurement on every requested backend, with its files in `scratch`.
pub async fn run(spec: &EventsBench, scratch: &Path) -> anyhow::Result<Report> {
    let events = sample_events(spec.events);
    let payload_bytes = events.first().map_or(0, |e| e.to_json().len());
    let started = Instant::now();
    let encoded: usize = events
        .iter()
        .map(|e| std::hint::black_box(e.to_json()).len())
        .sum();
    std::hint::black_box(encoded);
    let encode_us = started.elapsed().as_secs_f64() * 1e6 / events.len().max(1) as f64;
    let mut report = Report {
        payload_bytes,
        encode_us,
        ..Report::default()
    };
    for backend in &spec.backends {
        let run_id = Uuid::new_v4().simple().to_string();
        let mut config = Config {
            data_dir: scratch.join(format!("events-{run_id}")),
            ..Config::default()
        };
        config.events.backend = *backend;
        config.events.brokers = spec.brokers.clone();
        config.events.partitions = spec.partitions;
        config.events.batch_size = spec.batch_size;
        config.events.queue_capacity = usize::try_from(spec.events)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        // The producer runs hand it every event at once: its queue holds them all.
        config.events.queue_max_bytes = BENCH_QUEUE_BYTES;
        config.events.session_timeout_ms = 6_000;
        config.events.topic = format!("bench-events-{run_id}");
        let name = match backend {
            EventsBackend::Embedded => "embedded",
            EventsBackend::Kafka => "kafka",
        };
        eprintln!("{name}: producing {} events", events.len());
        let bus = EventBus::open(&config).await?;
        bus.ensure_topics(&config.events, &[config.events.topic.clone()])
            .await?;

        // Producer through the publisher port; on Kafka this also fills the topic the consumers
        // read below.
        let publisher = bus
            .publisher(&config.events, config.events.searches())
            .await?;
        let seconds = publish_all(&publisher, &events).await?;
        if let EventBus::Kafka(settings) = &bus {
            // Against plain rdkafka, in interleaved rounds on fresh topics, so that a noisy
            // neighbour hurts both sides alike; the medians are reported.
            let ours_topic = format!("{}-pub", config.events.topic);
            let raw_topic = format!("{}-raw", config.events.topic);
            bus.ensure_topics(&config.events, &[ours_topic.clone(), raw_topic.clone()])
                .await?;
            let ours = bus
                .publisher(&config.events, config.events.destination(&ours_topic))
                .await?;
            // [ours, plain, plain with our headers], each run in turn first.
            let mut seconds: [Vec<f64>; 3] = Default::default();
            for round in 0..PRODUCER_ROUNDS {
                eprintln!("{name}: producer round {} of {PRODUCER_ROUNDS}", round + 1);
                for i in 0..3 {
                    let which = (round + i) % 3;
                    let s = match which {
                        0 => publish_all(&ours, &events).await?,
                        1 => raw_produce(settings, &config, &raw_topic, &events, false).await?,
                        _ => raw_produce(settings, &config, &raw_topic, &events, true).await?,
                    };
                    seconds[which].push(s);
                }
            }
            let [mut ours_seconds, mut raw_seconds, mut headers_seconds] = seconds;
            report.throughput.push(Throughput {
                backend: name,
                path: "producer (bookstore publisher, median of 3 rounds)",
                events: spec.events,
                seconds: median(&mut ours_seconds),
            });
            report.throughput.push(Throughput {
                backend: name,
                path: "producer (plain rdkafka, baseline, median of 3 rounds)",
                events: spec.events,
                seconds: median(&mut raw_seconds),
            });
            report.throughput.push(Throughput {
                backend: name,
                path: "producer (plain rdkafka + our 2 headers, median of 3 rounds)",
                events: spec.events,
                seconds: median(&mut headers_seconds),
            });
            eprintln!("{name}: consuming with plain rdkafka");
            let seconds = raw_consume(settings, &config.events.topic, spec.events + 1).await?;
            report.throughput.push(Throughput {
                backend: name,
                path: "consumer (plain rdkafka, reads only, baseline)",
                events: spec.events,
                seconds,
            });
        } else {
            report.throughput.push(Throughput {
                backend: name,
                path: "producer (bookstore publisher)",
                events: spec.events,
                seconds,
            });
        }

        // Consumer through the framework into SQLite.
        eprintln!("{name}: consuming through the framework into SQLite");
        let counts = query_counts(&config.data_dir.join("counts.db")).await?;
        let stop = CancellationToken::new();
        let consumer = bus
            .consumer(
                &config.events,
                &format!("bench-{run_id}"),
                vec![config.events.topic.clone()],
                Arc::new(counts),
                stop.clone(),
            )
            .await?;
        let stats = consumer_stats(&consumer);
        let task = tokio::spawn(consumer.run());
        let seconds = wait_applied(&stats, spec.events + 1, Duration::from_secs(300)).await?;
        let batches = stats.batches.load(Ordering::Relaxed).max(1);
        eprintln!(
            "{name}: {batches} batches ({:.0} events each on average), {} retries, {} stale",
            stats.applied.load(Ordering::Relaxed) as f64 / batches as f64,
            stats.retries.load(Ordering::Relaxed),
            stats.stale.load(Ordering::Relaxed),
        );
        stop.cancel();
        task.await.context("consumer task")??;
        report.throughput.push(Throughput {
            backend: name,
            path: "consumer (framework, SQLite handler, exactly once)",
            events: spec.events,
            seconds,
        });

        // End-to-end latency at a fixed rate.
        eprintln!(
            "{name}: latency at {} events/s for {} s",
            spec.rate, spec.latency_secs
        );
        report
            .latency
            .push(latency(&bus, &config, name, spec, &run_id).await?);

        if let EventBus::Kafka(settings) = &bus {
            delete_topics(settings, &config.events.topic).await;
        }
        let _ = std::fs::remove_dir_all(&config.data_dir);
    }
    if !spec.trend_stores.is_empty() {
        report.trends = trend_bench(spec, &events, scratch).await?;
    }
    if !spec.recommend.stores.is_empty() {
        report.recommend = Some(crate::recommend::run(&spec.recommend, scratch).await?);
    }
    Ok(report)
}

/// Events the one-update-per-event baseline handles (it is slow).
const BASELINE_EVENTS: usize = 20_000;

/// The trend handler through the framework, per store, from an embedded log already holding
/// the events; and the tutorial's trend consumer as the baseline: per event, one `ZINCRBY` and
/// one `SET` of the books, each waiting for its answer.
async fn trend_bench(
    spec: &EventsBench,
    events: &[Event],
    scratch: &Path,
) -> anyhow::Result<Vec<Throughput>> {
    let run_id = Uuid::new_v4().simple().to_string();
    let mut config = Config {
        data_dir: scratch.join(format!("trends-{run_id}")),
        ..Config::default()
    };
    config.events.backend = EventsBackend::Embedded;
    config.events.topic = format!("bench-trends-{run_id}");
    config.events.batch_size = spec.batch_size;
    config.events.queue_capacity = events.len().saturating_add(1);
    config.events.queue_max_bytes = BENCH_QUEUE_BYTES;
    config.trend.redis_url = bookstore_app::config::Secret(spec.redis_url.clone().into());
    config.trend.redis_prefix = format!("bench:{run_id}:");
    let bus = EventBus::open(&config).await?;
    bus.ensure_topics(&config.events, &[config.events.topic.clone()])
        .await?;
    eprintln!("trends: writing {} events to an embedded log", events.len());
    let publisher = bus
        .publisher(&config.events, config.events.searches())
        .await?;
    publish_all(&publisher, events).await?;

    let mut out = Vec::new();
    for store in &spec.trend_stores {
        config.trend.store = *store;
        let name = match store {
            TrendStoreKind::Embedded => "embedded (SQLite)",
            TrendStoreKind::Redis => "redis",
        };
        eprintln!("trends: applying through the framework to {name}");
        let handler = bookstore_app::trend::open_trend_store(&config).await?;
        let stop = CancellationToken::new();
        let consumer = bus
            .consumer(
                &config.events,
                // A group per store, so that each store's committed offsets (lag) are its own.
                &format!("bench-trends-{run_id}-{}", out.len()),
                vec![config.events.topic.clone()],
                handler,
                stop.clone(),
            )
            .await?;
        let stats = consumer_stats(&consumer);
        let task = tokio::spawn(consumer.run());
        let seconds =
            wait_applied(&stats, events.len() as u64 + 1, Duration::from_secs(600)).await?;
        stop.cancel();
        task.await.context("consumer task")??;
        out.push(Throughput {
            backend: name,
            path: "trend handler (framework, batches, exactly once)",
            events: events.len() as u64,
            seconds,
        });
    }

    if spec.trend_stores.contains(&TrendStoreKind::Redis) {
        eprintln!("trends: the tutorial's one update per event on redis");
        let mut redis = bookstore_redis::connect(&spec.redis_url, Duration::from_secs(5)).await?;
        let sample = &events[..events.len().min(BASELINE_EVENTS)];
        let started = Instant::now();
        for event in sample {
            let Some(e) = event.as_search() else { continue };
            let books = serde_json::to_string(&e.results)?;
            let _: f64 = redis::cmd("ZINCRBY")
                .arg(format!("bench:{run_id}:baseline:trends"))
                .arg(1)
                .arg(&e.query)
                .query_async(&mut redis)
                .await?;
            let _: () = redis::cmd("SET")
                .arg(format!("bench:{run_id}:baseline:q-{}", e.query))
                .arg(books)
                .query_async(&mut redis)
                .await?;
        }
        out.push(Throughput {
            backend: "redis",
            path: "baseline: ZINCRBY + SET per event (the tutorial)",
            events: sample.len() as u64,
            seconds: started.elapsed().as_secs_f64(),
        });
        // Leave Redis as it was.
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("bench:{run_id}:*"))
            .query_async(&mut redis)
            .await?;
        for chunk in keys.chunks(500) {
            let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut redis).await?;
        }
    }
    let _ = std::fs::remove_dir_all(&config.data_dir);
    Ok(out)
}

/// Rounds of the Kafka producer comparison.
const PRODUCER_ROUNDS: usize = 3;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

async fn query_counts(path: &Path) -> anyhow::Result<SqliteQueryCounts> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let pool = bookstore_sqlite::connect(&format!("sqlite://{}", path.display()), 4).await?;
    Ok(SqliteQueryCounts::new(pool).await?)
}

fn consumer_stats(consumer: &bookstore_app::bus::Consumer) -> Arc<ConsumerStats> {
    consumer.stats()
}

async fn raw_produce(
    settings: &bookstore_kafka::KafkaSettings,
    config: &Config,
    topic: &str,
    events: &[Event],
    with_headers: bool,
) -> anyhow::Result<f64> {
    let producer: ThreadedProducer<DefaultProducerContext> = settings
        .client_config_with(&[
            ("enable.idempotence", "true".to_owned()),
            ("acks", "all".to_owned()),
            ("linger.ms", config.events.linger_ms.to_string()),
            ("compression.type", config.events.compression.clone()),
            (
                "queue.buffering.max.messages",
                (events.len() + 1).to_string(),
            ),
        ])
        .create()?;
    let payloads: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.key().into_owned(), e.to_json()))
        .collect();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        // The same warm-up as the publisher's.
        if let Some((key, payload)) = payloads.first() {
            let _ = producer.send(BaseRecord::to(&topic).key(key).payload(payload));
            producer.flush(Duration::from_secs(60))?;
        }
        let started = Instant::now();
        for (key, payload) in &payloads {
            let mut record = BaseRecord::to(&topic).key(key).payload(payload);
            if with_headers {
                record = record.headers(
                    OwnedHeaders::new_with_capacity(2)
                        .insert(Header {
                            key: TYPE_HEADER,
                            value: Some(BOOK_SEARCHED),
                        })
                        .insert(Header {
                            key: VERSION_HEADER,
                            value: Some("1"),
                        }),
                );
            }
            while let Err((_, back)) = producer.send(record) {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        producer.flush(Duration::from_secs(120))?;
        Ok(started.elapsed().as_secs_f64())
    })
    .await?
}

async fn raw_consume(
    settings: &bookstore_kafka::KafkaSettings,
    topic: &str,
    expected: u64,
) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = settings
        .client_config_with(&[
            ("group.id", format!("bench-raw-{}", Uuid::new_v4().simple())),
            ("enable.auto.commit", "false".to_owned()),
            ("auto.offset.reset", "earliest".to_owned()),
        ])
        .create()?;
    consumer.subscribe(&[topic])?;
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut first = None;
        let mut seen = 0u64;
        let mut bytes = 0usize;
        while seen < expected {
            if Instant::now() > deadline {
                bail!("plain consumer read {seen} of {expected} events");
            }
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message?;
                first.get_or_insert_with(Instant::now);
                bytes += message.payload().map_or(0, <[u8]>::len);
                seen += 1;
            }
        }
        std::hint::black_box(bytes);
        Ok(first.map_or(0.0, |f| f.elapsed().as_secs_f64()))
    })
    .await?
}

/// A handler that applies through another and records, per event, the time from `occurred_at`
/// to the end of its batch's commit.
struct Timed {
    inner: Arc<dyn EventHandler>,
    histogram: Mutex<Histogram<u64>>,
}

#[async_trait]
impl EventHandler for Timed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn positions(&self, group: &str) -> Result<Vec<Position>, HandlerError> {
        self.inner.positions(group).await
    }

    async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
        self.inner.apply(batch).await?;
        let now = Utc::now();
        let mut histogram = self.histogram.lock().unwrap_or_else(|e| e.into_inner());
        for record in &batch.records {
            let Some(e) = record.event.as_search() else {
                continue;
            };
            let micros = (now - e.occurred_at).num_microseconds().unwrap_or(i64::MAX);
            let _ = histogram.record(u64::try_from(micros).unwrap_or(0).max(1));
        }
        Ok(())
    }
}

async fn latency(
    bus: &EventBus,
    config: &Config,
    name: &'static str,
    spec: &EventsBench,
    run_id: &str,
) -> anyhow::Result<Latency> {
    let mut config_latency = config.events.clone();
    config_latency.topic = format!("{}-latency", config.events.topic);
    bus.ensure_topics(&config_latency, &[config_latency.topic.clone()])
        .await?;
    let counts = query_counts(&config.data_dir.join("latency.db")).await?;
    let timed = Arc::new(Timed {
        inner: Arc::new(counts),
        histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
    });
    let stop = CancellationToken::new();
    let consumer = bus
        .consumer(
            &config_latency,
            &format!("bench-latency-{run_id}"),
            vec![config_latency.topic.clone()],
            timed.clone(),
            stop.clone(),
        )
        .await?;
    let stats = consumer.stats();
    let task = tokio::spawn(consumer.run());
    let publisher = bus
        .publisher(&config_latency, config_latency.searches())
        .await?;
    // Warm up until the consumer has joined its group and applies events.
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.applied.load(Ordering::Relaxed) == 0 {
        if Instant::now() > deadline {
            bail!("the latency consumer applied nothing within a minute");
        }
        publisher.port.publish(&sample_events(1)[0]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let warm = stats.applied.load(Ordering::Relaxed);
    // Warm-up events trail in for a moment; wait until they stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warm = stats.applied.load(Ordering::Relaxed).max(warm);
    timed
        .histogram
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .reset();
    let total = spec.rate * spec.latency_secs;
    let pause = Duration::from_secs_f64(1.0 / spec.rate.max(1) as f64);
    let started = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(started + pause.mul_f64(i as f64)).await;
        let mut event = sample_events(1).remove(0);
        if let Event::BookSearched(e) = &mut event {
            e.occurred_at = Utc::now();
        }
        publisher.port.publish(&event);
    }
    let expected = warm + total;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.applied.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    task.await.context("latency consumer task")??;
    publisher.port.flush(Duration::from_secs(5)).await;
    let h = timed.histogram.lock().unwrap_or_else(|e| e.into_inner());
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(Latency {
        backend: name,
        rate: spec.rate,
        events: h.len(),
        p50_ms: ms(0.5),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        max_ms: h.max() as f64 / 1000.0,
    })
}

async fn delete_topics(settings: &bookstore_kafka::KafkaSettings, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let Ok(admin) = settings
        .client_config()
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let names = [
        topic.to_owned(),
        format!("{topic}-raw"),
        format!("{topic}-pub"),
        format!("{topic}-latency"),
        format!("{topic}.dlq"),
        format!("{topic}-latency.dlq"),
    ];
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
}

/// Search events shaped like the web service's: 1,000 distinct queries from 10,000 users, five
/// results each.
pub fn sample_events(count: u64) -> Vec<Event> {
    let published = NaiveDate::from_ymd_opt(1900, 1, 1);
    (0..count)
        .map(|i| {
            let results = (0..5)
                .map(|r| ResultBook {
                    id: i64::try_from(i % 5_000 + r).unwrap_or(0),
                    title: format!("The Collected Works of Author Number {}", i % 5_000 + r),
                    author: format!("Author Number {}", (i + r) % 700),
                    published_at: published.map(Into::into),
                })
                .collect();
            Event::BookSearched(SearchEvent::new(
                Uuid::now_v7(),
                Utc::now(),
                Some(format!("user-{}", i % 10_000)),
                &format!("query number {}", i % 1_000),
                0,
                results,
            ))
        })
        .collect()
}

/// The report as Markdown tables.
pub fn table(report: &Report) -> String {
    let mut out = throughput_table("backend", &report.throughput);
    let find = |backend: &str, prefix: &str| {
        report
            .throughput
            .iter()
            .find(|t| t.backend == backend && t.path.starts_with(prefix))
            .map(Throughput::per_second)
    };
    if let (Some(ours), Some(raw)) = (
        find("kafka", "producer (bookstore publisher, median"),
        find("kafka", "producer (plain"),
    ) {
        out.push_str(&format!(
            "\nKafka producer: {:.0}% of plain rdkafka (medians)\n",
            100.0 * ours / raw
        ));
        if let Some(headers) = find("kafka", "producer (plain rdkafka + our") {
            out.push_str(&format!(
                "Kafka producer: {:.0}% of plain rdkafka sending the same headers (the rest is JSON serialization and counting)\n",
                100.0 * ours / headers
            ));
        }
    }
    if let (Some(ours), Some(raw)) = (
        find("kafka", "consumer (framework"),
        find("kafka", "consumer (plain"),
    ) {
        out.push_str(&format!("Kafka consumer framework (with its SQLite commits): {:.0}% of a plain read-only consumer\n", 100.0 * ours / raw));
    }
    out.push_str(&format!(
        "\nmessage size: {} bytes; encoding one event as JSON alone takes {:.2} µs\n\n| backend | rate (events/s) | events | p50 ms | p95 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|\n",
        report.payload_bytes, report.encode_us
    ));
    for l in &report.latency {
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            l.backend, l.rate, l.events, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
        ));
    }
    if !report.trends.is_empty() {
        out.push('\n');
        out.push_str(&throughput_table("trend store", &report.trends));
        let ours = report
            .trends
            .iter()
            .find(|t| t.backend == "redis" && t.path.starts_with("trend handler"));
        let baseline = report
            .trends
            .iter()
            .find(|t| t.path.starts_with("baseline"));
        if let (Some(ours), Some(baseline)) = (ours, baseline) {
            out.push_str(&format!(
                "\nRedis trend handler: {:.0}x the one-update-per-event baseline\n",
                ours.per_second() / baseline.per_second()
            ));
        }
    }
    if let Some(recommend) = &report.recommend {
        out.push_str(&crate::recommend::table(recommend));
    }
    out
}
