//! Publishing events to Kafka without making the caller wait.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bookstore_domain::events::{Event, TYPE_HEADER, VERSION_HEADER};
use bookstore_domain::{EventPublisher, Published};
use bookstore_events::{PublisherStats, RateLimited};
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::KafkaSettings;

/// How the producer batches and how much it holds while the brokers cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherSettings {
    pub topic: String,
    /// Events held in librdkafka's queue at most; past it, events are dropped and counted.
    pub queue_capacity: usize,
    /// How long librdkafka waits to fill a batch (`linger.ms`).
    pub linger: Duration,
    /// `compression.type`: none, gzip, snappy, lz4 or zstd.
    pub compression: String,
    /// How long an event may wait for the brokers before it counts as failed (`message.timeout.ms`).
    pub message_timeout: Duration,
}

/// Counts every delivery report.
struct DeliveryCounter {
    stats: Arc<PublisherStats>,
    failure_warning: RateLimited,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                let failed = self.stats.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(suppressed) = self.failure_warning.check() {
                    tracing::warn!(%error, failed_total = failed, suppressed, "event delivery failed");
                }
            }
        }
    }
}

/// An idempotent producer (`enable.idempotence`, `acks=all`) that batches and compresses, and
/// counts every event as delivered, failed or dropped. `publish` only enqueues into librdkafka's
/// bounded queue; librdkafka's own thread sends and retries while the brokers are down.
pub struct KafkaPublisher {
    producer: Arc<ThreadedProducer<DeliveryCounter>>,
    topic: String,
    stats: Arc<PublisherStats>,
    drop_warning: RateLimited,
}

impl KafkaPublisher {
    pub fn new(
        settings: &KafkaSettings,
        publisher: &PublisherSettings,
    ) -> Result<Self, KafkaError> {
        let stats = Arc::new(PublisherStats::default());
        let config = settings.client_config_with(&[
            ("enable.idempotence", "true".to_owned()),
            ("acks", "all".to_owned()),
            ("linger.ms", publisher.linger.as_millis().to_string()),
            ("compression.type", publisher.compression.clone()),
            (
                "queue.buffering.max.messages",
                publisher.queue_capacity.max(1).to_string(),
            ),
            (
                "message.timeout.ms",
                publisher.message_timeout.as_millis().max(1).to_string(),
            ),
        ]);
        let producer = config.create_with_context(DeliveryCounter {
            stats: stats.clone(),
            failure_warning: RateLimited::new(Duration::from_secs(10)),
        })?;
        Ok(Self {
            producer: Arc::new(producer),
            topic: publisher.topic.clone(),
            stats,
            drop_warning: RateLimited::new(Duration::from_secs(10)),
        })
    }

    pub fn stats(&self) -> Arc<PublisherStats> {
        self.stats.clone()
    }
}

/// The type and version headers of an event.
pub(crate) fn event_headers(event: &Event) -> OwnedHeaders {
    let version = event.version().to_string();
    OwnedHeaders::new_with_capacity(2)
        .insert(Header {
            key: TYPE_HEADER,
            value: Some(event.kind()),
        })
        .insert(Header {
            key: VERSION_HEADER,
            value: Some(version.as_str()),
        })
}

#[async_trait]
impl EventPublisher for KafkaPublisher {
    fn publish(&self, event: &Event) -> Published {
        let payload = event.to_json();
        let record = BaseRecord::to(&self.topic)
            .key(event.key())
            .payload(&payload)
            .headers(event_headers(event));
        match self.producer.send(record) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Published::Queued
            }
            Err((error, _)) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(suppressed) = self.drop_warning.check() {
                    tracing::warn!(%error, dropped_total = dropped, suppressed, "event queue full: search event dropped");
                }
                Published::Dropped
            }
        }
    }

    async fn flush(&self, timeout: Duration) -> u64 {
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            let _ = producer.flush(timeout);
            producer.in_flight_count()
        })
        .await;
        match flushed {
            Ok(left) => u64::try_from(left).unwrap_or(0),
            Err(_) => self.stats.in_flight(),
        }
    }
}
