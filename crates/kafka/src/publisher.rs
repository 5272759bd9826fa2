//! Publishing events to Kafka without making the caller wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bookstore_consumer::{PublisherStats, RateLimited, Waiting, verdicts};
use bookstore_domain::events::{
    Event, NotInFormat, TYPE_HEADER, VERSION_HEADER, WireFormat, WireMessage,
};
use bookstore_domain::{Delivery, EventPublisher, Published, StoredEvent};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::KafkaSettings;

/// How the producer batches and how much it holds while the brokers cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherSettings {
    pub topic: String,
    /// Events held in librdkafka's queue at most; past it, events are dropped and counted.
    pub queue_capacity: usize,
    /// Bytes (payloads) held in librdkafka's queue at most (`queue.buffering.max.kbytes`,
    /// rounded up to a KiB, and never under `max_message_bytes`); past it, events are dropped
    /// and counted.
    pub queue_max_bytes: usize,
    /// The largest message the producer sends (`message.max.bytes`); a larger one is refused.
    pub max_message_bytes: usize,
    /// How long librdkafka waits to fill a batch (`linger.ms`).
    pub linger: Duration,
    /// `compression.type`: none, gzip, snappy, lz4 or zstd.
    pub compression: String,
    /// How long an event may wait for the brokers before it counts as failed (`message.timeout.ms`).
    pub message_timeout: Duration,
    /// How events are written (`events.format`); an event the format has no message for is
    /// left out and counted ([`PublisherStats::omitted`]).
    pub format: WireFormat,
}

/// The verdict a delivery report brings to whoever waits for it.
type Verdict = Result<(), KafkaError>;

/// Counts every delivery report, and hands the report of an awaited event to its waiter.
struct DeliveryCounter {
    stats: Arc<PublisherStats>,
    failure_warning: RateLimited,
    /// The events someone waits for ([`EventPublisher::deliver`]), by ticket: the delivery
    /// opaque of such an event; 0 stands for an event nobody waits for (a search event).
    waiters: Mutex<HashMap<usize, tokio::sync::oneshot::Sender<Verdict>>>,
    next_ticket: AtomicUsize,
}

impl DeliveryCounter {
    /// A ticket for an awaited event, and where its verdict will arrive.
    fn wait_for(&self) -> (usize, tokio::sync::oneshot::Receiver<Verdict>) {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed).max(1);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.lock_waiters().insert(ticket, sender);
        (ticket, receiver)
    }

    /// Forgets a ticket whose event never reached the queue.
    fn forget(&self, ticket: usize) {
        self.lock_waiters().remove(&ticket);
    }

    fn lock_waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<usize, tokio::sync::oneshot::Sender<Verdict>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: usize) {
        let verdict = match result {
            Ok(_) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err((error, _)) => {
                let failed = self.stats.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(suppressed) = self.failure_warning.check() {
                    tracing::warn!(%error, failed_total = failed, suppressed, "event delivery failed");
                }
                Err(error.clone())
            }
        };
        if ticket == 0 {
            return;
        }
        let waiter = self.lock_waiters().remove(&ticket);
        if let Some(waiter) = waiter {
            // The waiter may have given up (timed out): the verdict is only counted then.
            let _ = waiter.send(verdict);
        }
    }
}

/// Whether Kafka refused this event for a reason of its own, for good: too large for the
/// producer or the topic, or invalid for the topic. Everything else (timeouts, unreachable
/// brokers, unknown topic, authorisation, a full queue) concerns every event alike.
pub fn refused_for_good(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::MessageBatchTooLarge
        )
    )
}

/// The [`Delivery`] a delivery error means.
fn delivery_of(error: &KafkaError) -> Delivery {
    if refused_for_good(error) {
        Delivery::Refused(format!("refused by Kafka: {error}"))
    } else {
        Delivery::Undelivered(error.to_string())
    }
}

/// An idempotent producer (`enable.idempotence`, `acks=all`) that batches and compresses, and
/// counts every event as delivered, failed or dropped. `publish` only enqueues into librdkafka's
/// bounded queue; librdkafka's own thread sends and retries while the brokers are down.
pub struct KafkaPublisher {
    producer: Arc<ThreadedProducer<DeliveryCounter>>,
    topic: String,
    format: WireFormat,
    stats: Arc<PublisherStats>,
    drop_warning: RateLimited,
    omit_notice: RateLimited,
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
                "queue.buffering.max.kbytes",
                queue_kbytes(publisher).to_string(),
            ),
            ("message.max.bytes", publisher.max_message_bytes.to_string()),
            (
                "message.timeout.ms",
                publisher.message_timeout.as_millis().max(1).to_string(),
            ),
        ]);
        let producer = config.create_with_context(DeliveryCounter {
            stats: stats.clone(),
            failure_warning: RateLimited::new(Duration::from_secs(10)),
            waiters: Mutex::new(HashMap::new()),
            next_ticket: AtomicUsize::new(1),
        })?;
        Ok(Self {
            producer: Arc::new(producer),
            topic: publisher.topic.clone(),
            format: publisher.format,
            stats,
            drop_warning: RateLimited::new(Duration::from_secs(10)),
            omit_notice: RateLimited::new(Duration::from_secs(60)),
        })
    }

    pub fn stats(&self) -> Arc<PublisherStats> {
        self.stats.clone()
    }
}

/// The type and version headers of an event (`typed`: when its format has them), and the trace
/// context of the span that publishes it (when tracing is on).
fn event_headers(typed: Option<(&str, u32)>) -> OwnedHeaders {
    let headers = OwnedHeaders::new_with_capacity(3);
    let headers = if let Some((kind, version)) = typed {
        let version = version.to_string();
        headers
            .insert(Header {
                key: TYPE_HEADER,
                value: Some(kind),
            })
            .insert(Header {
                key: VERSION_HEADER,
                value: Some(version.as_str()),
            })
    } else {
        headers
    };
    match bookstore_telemetry::current_traceparent() {
        Some(traceparent) => headers.insert(Header {
            key: bookstore_telemetry::TRACEPARENT,
            value: Some(traceparent.as_str()),
        }),
        None => headers,
    }
}

/// `queue.buffering.max.kbytes`: the byte bound in KiB, rounded up, never under the largest
/// message (librdkafka would answer "queue full" for ever to a message larger than its queue),
/// within librdkafka's range.
fn queue_kbytes(publisher: &PublisherSettings) -> usize {
    publisher
        .queue_max_bytes
        .max(publisher.max_message_bytes)
        .div_ceil(1024)
        .clamp(1, i32::MAX as usize)
}

impl KafkaPublisher {
    /// `event` in the publisher's format; an event the format has no message for is counted.
    fn encode<'a>(&self, event: &'a Event) -> Result<WireMessage<'a>, NotInFormat> {
        self.format.encode(event).inspect_err(|refused| {
            let omitted = self.stats.omitted.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(suppressed) = self.omit_notice.check() {
                tracing::info!(reason = %refused, omitted_total = omitted, suppressed, "event not published (events.format)");
            }
        })
    }

    /// Sends each of `items` through `send`, then waits at most `timeout` for Kafka's verdict
    /// on each.
    async fn deliver_each<T>(
        &self,
        items: &[T],
        timeout: Duration,
        send: impl Fn(&T) -> Waiting<KafkaError>,
    ) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        let waiting = items.iter().map(send).collect();
        verdicts(
            waiting,
            deadline,
            timeout,
            |error| delivery_of(&error),
            "no delivery report",
            "not confirmed by Kafka",
        )
        .await
    }

    /// Sends one message through `send`, given a ticket, and the channel of Kafka's verdict on
    /// it; or the verdict at once when librdkafka did not take it.
    fn send_for_verdict(
        &self,
        send: impl FnOnce(usize) -> Result<(), KafkaError>,
    ) -> Waiting<KafkaError> {
        let context = self.producer.context();
        let (ticket, verdict) = context.wait_for();
        send(ticket).map(|()| verdict).map_err(|error| {
            context.forget(ticket);
            delivery_of(&error)
        })
    }

    /// Hands `message`, the encoding of `event`, to librdkafka's queue, with `ticket` as its
    /// delivery opaque.
    fn send(
        &self,
        event: &Event,
        message: &WireMessage<'_>,
        ticket: usize,
    ) -> Result<(), KafkaError> {
        let typed = message.typed.then(|| (event.kind(), event.version()));
        self.send_bytes(message.key.as_ref(), &message.value, typed, ticket)
    }

    /// Hands a message to librdkafka's queue, with the type and version headers `typed` and
    /// `ticket` as its delivery opaque.
    fn send_bytes(
        &self,
        key: &str,
        value: &[u8],
        typed: Option<(&str, u32)>,
        ticket: usize,
    ) -> Result<(), KafkaError> {
        let record = BaseRecord::with_opaque_to(&self.topic, ticket)
            .key(key)
            .payload(value)
            .headers(event_headers(typed));
        match self.producer.send(record) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err((error, _)) if refused_for_good(&error) => {
                // Handed over and refused at once: counted as failed.
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                let failed = self.stats.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(suppressed) = self.producer.context().failure_warning.check() {
                    tracing::warn!(%error, failed_total = failed, suppressed, "event refused by the producer");
                }
                Err(error)
            }
            Err((error, _)) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(suppressed) = self.drop_warning.check() {
                    tracing::warn!(%error, dropped_total = dropped, suppressed, "event dropped: the producer's queue is full (events.queue_capacity or events.queue_max_bytes), or it took no more");
                }
                Err(error)
            }
        }
    }
}

#[async_trait]
impl EventPublisher for KafkaPublisher {
    fn publish(&self, event: &Event) -> Published {
        let Ok(message) = self.encode(event) else {
            return Published::Dropped;
        };
        match self.send(event, &message, 0) {
            Ok(()) => Published::Queued,
            Err(_) => Published::Dropped,
        }
    }

    async fn deliver(&self, events: &[Event], timeout: Duration) -> Vec<Delivery> {
        self.deliver_each(events, timeout, |event| {
            // Refused for good: the format cannot carry it, whatever Kafka does.
            let message = self
                .encode(event)
                .map_err(|refused| Delivery::Refused(refused.to_string()))?;
            self.send_for_verdict(|ticket| self.send(event, &message, ticket))
        })
        .await
    }

    async fn deliver_stored(&self, events: &[StoredEvent<'_>], timeout: Duration) -> Vec<Delivery> {
        self.deliver_each(events, timeout, |stored| {
            self.format.takes_stored().map_err(Delivery::Refused)?;
            let typed = Some((stored.kind, stored.version));
            self.send_for_verdict(|ticket| {
                self.send_bytes(stored.key, stored.payload, typed, ticket)
            })
        })
        .await
    }

    async fn flush(&self, timeout: Duration) -> u64 {
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            let _ = producer.flush(timeout);
            producer.in_flight_count()
        })
        .await;
        // Both counts can be briefly too high: librdkafka's queue also holds events that are not
        // messages (an error report about a broker that cannot be reached), and our count drops
        // only once a delivery report's callback has run. The smaller is the undelivered events.
        match flushed {
            Ok(left) => u64::try_from(left)
                .unwrap_or(u64::MAX)
                .min(self.stats.in_flight()),
            Err(_) => self.stats.in_flight(),
        }
    }
}
