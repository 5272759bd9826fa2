//! Operations wiring: the readiness probes over the ports, and the collectors that turn the
//! services' counters into Prometheus metrics (`GET /metrics`, crate `bookstore-http`).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bookstore_consumer::{ConsumerStats, PublisherStats};
use bookstore_domain::TopicPartition;
use bookstore_http::{Collector, Probe, ProbeError};

use crate::bus::EventBus;

/// A probe from an async check.
struct FnProbe<F>(F);

#[async_trait]
impl<F, Fut> Probe for FnProbe<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), String>> + Send,
{
    async fn check(&self) -> Result<(), ProbeError> {
        (self.0)().await.map_err(ProbeError)
    }
}

/// A readiness probe running `check`.
pub fn probe<F, Fut>(check: F) -> Arc<dyn Probe>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(FnProbe(check))
}

/// How long the broker check waits for the brokers' answer.
const BROKER_TIMEOUT: Duration = Duration::from_millis(1500);

/// The event log's probe, and its name for `/readyz`: `kafka` or `embedded log`.
pub fn broker_probe(bus: &EventBus, topic: &str) -> anyhow::Result<(&'static str, Arc<dyn Probe>)> {
    match bus {
        EventBus::Embedded { log, .. } => {
            let log = log.clone();
            Ok((
                "embedded log",
                probe(move || {
                    let log = log.clone();
                    async move { log.ping().await.map_err(|e| e.to_string()) }
                }),
            ))
        }
        EventBus::Kafka(settings) => {
            let check = Arc::new(bookstore_kafka::BrokerCheck::new(settings, topic)?);
            Ok((
                "kafka",
                probe(move || {
                    let check = check.clone();
                    async move { check.check(BROKER_TIMEOUT).await.map_err(|e| e.to_string()) }
                }),
            ))
        }
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// `bookstore_events_{queued,delivered,failed,dropped,omitted}_total` and
/// `bookstore_producer_queue_depth` of one publisher (`searches` or `catalog`).
pub fn publisher_collector(publisher: &'static str, stats: Arc<PublisherStats>) -> Collector {
    Arc::new(move || {
        let labels = [("publisher", publisher)];
        metrics::counter!("bookstore_events_published_total", &labels)
            .absolute(load(&stats.queued));
        metrics::counter!("bookstore_events_delivered_total", &labels)
            .absolute(load(&stats.delivered));
        metrics::counter!("bookstore_events_failed_total", &labels).absolute(load(&stats.failed));
        metrics::counter!("bookstore_events_dropped_total", &labels).absolute(load(&stats.dropped));
        metrics::counter!("bookstore_events_omitted_total", &labels).absolute(load(&stats.omitted));
        metrics::gauge!("bookstore_producer_queue_depth", &labels).set(stats.in_flight() as f64);
    })
}

/// A consumer group's counters, its store errors (attempts that failed because the store was
/// down), its lag per partition, and `bookstore_consumer_oldest_unapplied_age_seconds`: an upper
/// bound of the age (event time, `occurred_at`) of the oldest event the group has not applied yet,
/// 0 when it is caught up, NaN when not known (see
/// [`ConsumerStats::oldest_unapplied_age`]; not set before the lag is first measured).
pub fn consumer_collector(
    service: &'static str,
    group: String,
    stats: Arc<ConsumerStats>,
) -> Collector {
    let reported: Mutex<BTreeSet<TopicPartition>> = Mutex::default();
    Arc::new(move || {
        let labels = [("service", service.to_owned()), ("group", group.clone())];
        let counters = [
            ("bookstore_events_consumed_total", &stats.consumed),
            ("bookstore_events_applied_total", &stats.applied),
            ("bookstore_consumer_batches_total", &stats.batches),
            ("bookstore_events_dead_lettered_total", &stats.dead_lettered),
            ("bookstore_events_skipped_total", &stats.skipped),
            ("bookstore_consumer_stale_batches_total", &stats.stale),
        ];
        for (name, counter) in counters {
            metrics::counter!(name, &labels).absolute(load(counter));
        }
        metrics::counter!(
            "bookstore_store_errors_total",
            "service" => service,
            "store" => "consumer",
            "kind" => "retry",
            "group" => group.clone()
        )
        .absolute(load(&stats.retries));
        metrics::gauge!("bookstore_consumer_owned_partitions", &labels)
            .set(load(&stats.owned_partitions) as f64);
        metrics::gauge!("bookstore_consumer_store_ahead_of_log_partitions", &labels)
            .set(load(&stats.ahead_of_log) as f64);
        let (lag, measured_ago) = stats.lag();
        if let Some(ago) = measured_ago {
            metrics::gauge!("bookstore_consumer_lag_age_seconds", &labels).set(ago.as_secs_f64());
        }
        let unapplied_age = stats.oldest_unapplied_age(chrono::Utc::now());
        if unapplied_age.is_some() || measured_ago.is_some() {
            metrics::gauge!("bookstore_consumer_oldest_unapplied_age_seconds", &labels)
                .set(unapplied_age.map_or(f64::NAN, |age| age.as_secs_f64()));
        }
        let mut reported = reported.lock().unwrap_or_else(|e| e.into_inner());
        // A partition given up since the last scrape shows 0, not its last lag.
        for tp in reported.iter().filter(|tp| !lag.contains_key(tp)) {
            lag_gauge(service, &group, tp).set(0.0);
        }
        for (tp, lag) in &lag {
            lag_gauge(service, &group, tp).set(*lag as f64);
        }
        *reported = lag.into_keys().collect();
    })
}

/// The embedded log's trimming: `bookstore_eventlog_trimmed_total{topic, reason}` (messages
/// removed by age, size or compaction; dead letters under `<topic>.dlq`),
/// `bookstore_eventlog_trimmed_bytes_total` (their keys and values),
/// `bookstore_eventlog_trim_errors_total` and `bookstore_eventlog_file_bytes` (the database and
/// its WAL after the last pass).
pub fn retention_collector(stats: Arc<bookstore_eventlog::RetentionStats>) -> Collector {
    Arc::new(move || {
        for ((topic, reason), n) in stats.removed() {
            metrics::counter!(
                "bookstore_eventlog_trimmed_total",
                "topic" => topic,
                "reason" => reason.as_str()
            )
            .absolute(n);
        }
        metrics::counter!("bookstore_eventlog_trimmed_bytes_total").absolute(load(&stats.bytes));
        metrics::counter!("bookstore_eventlog_trim_errors_total").absolute(load(&stats.errors));
        metrics::gauge!("bookstore_eventlog_file_bytes").set(load(&stats.file_bytes) as f64);
    })
}

fn lag_gauge(service: &'static str, group: &str, tp: &TopicPartition) -> metrics::Gauge {
    metrics::gauge!(
        "bookstore_consumer_lag",
        "service" => service,
        "group" => group.to_owned(),
        "topic" => tp.topic.clone(),
        "partition" => tp.partition.to_string()
    )
}
