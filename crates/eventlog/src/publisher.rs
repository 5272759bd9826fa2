//! Publishing to the embedded log without making the caller wait.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bookstore_consumer::{PublisherStats, RateLimited, Waiting, verdicts};
use bookstore_domain::events::{Event, NotInFormat, WireFormat};
use bookstore_domain::{Delivery, EventPublisher, Published, StoredEvent};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::log::{Appended, EventLog, EventLogError};

/// How much the publisher holds, the largest event the log takes, and how events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublisherLimits {
    /// Events in the queue at most.
    pub queue_capacity: usize,
    /// Bytes (keys and values) in the queue at most; never less than `max_message_bytes`.
    pub queue_max_bytes: usize,
    /// The largest event (key and value) the log takes; a larger one is refused.
    pub max_message_bytes: usize,
    /// How events are written (`events.format`); an event the format has no message for is
    /// left out and counted ([`PublisherStats::omitted`]).
    pub format: WireFormat,
}

/// An event on its way to the log.
struct Message {
    key: Vec<u8>,
    value: Vec<u8>,
    /// The trace context of the span that published it, when tracing is on.
    trace_parent: Option<String>,
    /// The queue's bytes this message holds, given back once it has been appended (or lost).
    _bytes: OwnedSemaphorePermit,
    /// Who waits for the log's verdict (the outbox relay); `None` for a search event.
    confirm: Option<oneshot::Sender<Result<(), String>>>,
}

/// Why an event was not queued.
enum NotQueued {
    /// The queue holds `queue_capacity` events or `queue_max_bytes` bytes.
    Full,
    /// The event is larger than the log takes.
    TooLarge(usize),
    /// The format has no message for the event.
    NotInFormat(NotInFormat),
}

/// Hands events to a queue, bounded in events and in bytes, that a background task appends to
/// the log in batches. When the queue is full the event is dropped and counted; `publish` never
/// waits. An event larger than the log takes is refused and counted as failed.
pub struct EmbeddedPublisher {
    queue: mpsc::Sender<Message>,
    bytes: Arc<Semaphore>,
    queue_max_bytes: usize,
    max_message_bytes: usize,
    format: WireFormat,
    stats: Arc<PublisherStats>,
    drop_warning: RateLimited,
    refusal_warning: RateLimited,
    omit_notice: RateLimited,
}

const APPEND_BATCH: usize = 1024;
const APPEND_ATTEMPTS: u32 = 5;

impl EmbeddedPublisher {
    /// Creates `topic` in `log` if needed and starts the appender task on the current runtime.
    pub async fn start(
        log: Arc<EventLog>,
        topic: &str,
        partitions: u32,
        limits: PublisherLimits,
    ) -> Result<Self, EventLogError> {
        let partitions = log.ensure_topic(topic, partitions).await?;
        let (queue, receiver) = mpsc::channel(limits.queue_capacity.max(1));
        let stats = Arc::new(PublisherStats::default());
        tokio::spawn(append_loop(
            log,
            topic.to_owned(),
            partitions,
            receiver,
            stats.clone(),
        ));
        let max_message_bytes = limits.max_message_bytes.clamp(1, Semaphore::MAX_PERMITS);
        // A queue smaller than the largest event would turn such an event away for ever, as if
        // the queue were always full.
        let queue_max_bytes = limits
            .queue_max_bytes
            .clamp(max_message_bytes, Semaphore::MAX_PERMITS);
        Ok(Self {
            queue,
            bytes: Arc::new(Semaphore::new(queue_max_bytes)),
            queue_max_bytes,
            max_message_bytes,
            format: limits.format,
            stats,
            drop_warning: RateLimited::new(Duration::from_secs(10)),
            refusal_warning: RateLimited::new(Duration::from_secs(10)),
            omit_notice: RateLimited::new(Duration::from_secs(60)),
        })
    }

    pub fn stats(&self) -> Arc<PublisherStats> {
        self.stats.clone()
    }

    /// Bytes (keys and values) in the queue now.
    pub fn queued_bytes(&self) -> usize {
        self.queue_max_bytes
            .saturating_sub(self.bytes.available_permits())
    }

    /// Queues `event`, with `confirm` to tell of its fate.
    fn enqueue(
        &self,
        event: &Event,
        confirm: Option<oneshot::Sender<Result<(), String>>>,
    ) -> Result<(), NotQueued> {
        let message = self.format.encode(event).map_err(NotQueued::NotInFormat)?;
        self.enqueue_bytes(message.key.as_bytes().to_vec(), message.value, confirm)
    }

    /// Queues a message already in the publisher's format, with `confirm` to tell of its fate.
    fn enqueue_bytes(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        confirm: Option<oneshot::Sender<Result<(), String>>>,
    ) -> Result<(), NotQueued> {
        let size = key.len() + value.len();
        if size > self.max_message_bytes {
            return Err(NotQueued::TooLarge(size));
        }
        // `size` is at most `max_message_bytes`, which the semaphore can always grant in full.
        let permits = u32::try_from(size).map_err(|_| NotQueued::TooLarge(size))?;
        let bytes = self
            .bytes
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| NotQueued::Full)?;
        self.queue
            .try_send(Message {
                key,
                value,
                trace_parent: bookstore_telemetry::current_traceparent(),
                _bytes: bytes,
                confirm,
            })
            .map_err(|_| NotQueued::Full)
    }

    /// Queues each of `items` through `queue`, then waits at most `timeout` for the log's
    /// verdict on each.
    async fn deliver_each<T>(
        &self,
        items: &[T],
        timeout: Duration,
        queue: impl Fn(&T) -> Waiting<String>,
    ) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        let waiting = items.iter().map(queue).collect();
        verdicts(
            waiting,
            deadline,
            timeout,
            Delivery::Undelivered,
            "the appender has stopped",
            "not appended",
        )
        .await
    }

    /// Queues one message through `enqueue`, counted, with a channel for the log's verdict; or
    /// the verdict at once when it was not queued.
    fn queue_for_verdict(
        &self,
        enqueue: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Result<(), NotQueued>,
    ) -> Waiting<String> {
        let (confirm, verdict) = oneshot::channel();
        match enqueue(confirm) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Ok(verdict)
            }
            Err(NotQueued::Full) => {
                self.count_dropped();
                Err(Delivery::Undelivered(
                    "the publisher's queue is full".to_owned(),
                ))
            }
            Err(NotQueued::TooLarge(size)) => Err(Delivery::Refused(self.count_refused(size))),
            Err(NotQueued::NotInFormat(refused)) => {
                Err(Delivery::Refused(self.count_omitted(&refused)))
            }
        }
    }

    fn count_dropped(&self) {
        let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(suppressed) = self.drop_warning.check() {
            tracing::warn!(
                dropped_total = dropped,
                suppressed,
                "event queue full (events.queue_capacity or events.queue_max_bytes): event dropped"
            );
        }
    }

    /// Counts an event the format has no message for, never queued.
    fn count_omitted(&self, refused: &NotInFormat) -> String {
        let omitted = self.stats.omitted.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(suppressed) = self.omit_notice.check() {
            tracing::info!(reason = %refused, omitted_total = omitted, suppressed, "event not published (events.format)");
        }
        refused.to_string()
    }

    /// Counts an event the log refuses, as handed over and failed.
    fn count_refused(&self, size: usize) -> String {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let failed = self.stats.failed.fetch_add(1, Ordering::Relaxed) + 1;
        let reason = format!(
            "refused by the event log: the event is {size} bytes, over the {} it takes \
             (events.max_message_bytes)",
            self.max_message_bytes
        );
        if let Some(suppressed) = self.refusal_warning.check() {
            tracing::warn!(failed_total = failed, suppressed, "event refused: {reason}");
        }
        reason
    }
}

#[async_trait]
impl EventPublisher for EmbeddedPublisher {
    fn publish(&self, event: &Event) -> Published {
        match self.enqueue(event, None) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Published::Queued
            }
            Err(NotQueued::Full) => {
                self.count_dropped();
                Published::Dropped
            }
            Err(NotQueued::TooLarge(size)) => {
                self.count_refused(size);
                Published::Dropped
            }
            Err(NotQueued::NotInFormat(refused)) => {
                self.count_omitted(&refused);
                Published::Dropped
            }
        }
    }

    async fn deliver(&self, events: &[Event], timeout: Duration) -> Vec<Delivery> {
        self.deliver_each(events, timeout, |event| {
            self.queue_for_verdict(|confirm| self.enqueue(event, Some(confirm)))
        })
        .await
    }

    async fn deliver_stored(&self, events: &[StoredEvent<'_>], timeout: Duration) -> Vec<Delivery> {
        self.deliver_each(events, timeout, |stored| {
            self.format.takes_stored().map_err(Delivery::Refused)?;
            self.queue_for_verdict(|confirm| {
                let (key, value) = (stored.key.as_bytes().to_vec(), stored.payload.to_vec());
                self.enqueue_bytes(key, value, Some(confirm))
            })
        })
        .await
    }

    async fn flush(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        while self.stats.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.stats.in_flight()
    }
}

async fn append_loop(
    log: Arc<EventLog>,
    topic: String,
    partitions: u32,
    mut receiver: mpsc::Receiver<Message>,
    stats: Arc<PublisherStats>,
) {
    let mut batch: Vec<Message> = Vec::with_capacity(APPEND_BATCH);
    while receiver.recv_many(&mut batch, APPEND_BATCH).await > 0 {
        let count = batch.len() as u64;
        let messages: Vec<Appended<'_>> = batch
            .iter()
            .map(|m| Appended {
                key: Some(&m.key),
                value: &m.value,
                trace_parent: m.trace_parent.as_deref(),
            })
            .collect();
        let mut attempt = 0;
        let verdict = loop {
            attempt += 1;
            match log.append_all(&topic, partitions, &messages).await {
                Ok(()) => {
                    stats.delivered.fetch_add(count, Ordering::Relaxed);
                    break Ok(());
                }
                Err(error) if attempt < APPEND_ATTEMPTS => {
                    tracing::warn!(%error, attempt, "cannot append to the event log; retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                Err(error) => {
                    tracing::error!(%error, events = count, "cannot append to the event log; events lost");
                    stats.failed.fetch_add(count, Ordering::Relaxed);
                    break Err(format!("cannot append to the event log: {error}"));
                }
            }
        };
        drop(messages);
        // Dropping the messages gives their bytes back to the queue.
        for message in batch.drain(..) {
            if let Some(confirm) = message.confirm {
                let _ = confirm.send(verdict.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bookstore_domain::events::{BookEvent, CatalogBook};
    use sqlx::Connection;

    use super::*;

    /// A `book.created` event whose description is `bytes` long.
    // A fixed time: `now()` prints 0, 3, 6 or 9 fraction digits, so sizes would differ.
    fn event(id: i64, bytes: usize) -> Event {
        let at = chrono::DateTime::from_timestamp(1_767_225_600, 123_456_789).unwrap();
        Event::BookCreated(BookEvent::new(
            uuid::Uuid::now_v7(),
            at,
            CatalogBook {
                isbn: None,
                id,
                title: "T".to_owned(),
                author: "A".to_owned(),
                published_at: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap().into(),
                description: "d".repeat(bytes),
                created_at: at,
            },
        ))
    }

    fn size(event: &Event) -> usize {
        event.key().len() + event.to_json().len()
    }

    async fn publisher(
        limits: PublisherLimits,
    ) -> (tempfile::TempDir, Arc<EventLog>, EmbeddedPublisher) {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&dir.path().join("events.db")).await.unwrap();
        let publisher = EmbeddedPublisher::start(log.clone(), "t", 1, limits)
            .await
            .unwrap();
        (dir, log, publisher)
    }

    async fn messages(log: &EventLog) -> usize {
        let tp = bookstore_domain::TopicPartition {
            topic: "t".to_owned(),
            partition: 0,
        };
        log.read(&tp, 0, 10_000).await.unwrap().len()
    }

    // One thread, and no await while publishing: the appender cannot run, as when the log is
    // slower than the searches.
    #[tokio::test(flavor = "current_thread")]
    async fn the_queue_is_bounded_in_bytes_too() {
        let limits = PublisherLimits {
            queue_capacity: 10_000,
            queue_max_bytes: 20_000,
            max_message_bytes: 5_000,
            format: WireFormat::V1,
        };
        let (_dir, log, publisher) = publisher(limits).await;
        // Ids of three digits: every event the same size.
        let one = size(&event(100, 1_000));
        let fit = 20_000 / one;
        let published: Vec<Published> = (0..100)
            .map(|i| publisher.publish(&event(100 + i, 1_000)))
            .collect();
        let queued = published
            .iter()
            .filter(|p| **p == Published::Queued)
            .count();
        assert_eq!(queued, fit, "{one} bytes each");
        assert!(published[..fit].iter().all(|p| *p == Published::Queued));
        assert_eq!(publisher.queued_bytes(), fit * one);
        let stats = publisher.stats();
        assert_eq!(stats.dropped.load(Ordering::Relaxed), (100 - fit) as u64);

        // Once appended, the bytes are free again.
        assert_eq!(publisher.flush(Duration::from_secs(10)).await, 0);
        assert_eq!(publisher.queued_bytes(), 0);
        assert_eq!(stats.delivered.load(Ordering::Relaxed), fit as u64);
        assert_eq!(publisher.publish(&event(200, 1_000)), Published::Queued);
        assert_eq!(publisher.flush(Duration::from_secs(10)).await, 0);
        assert_eq!(messages(&log).await, fit + 1);
    }

    #[tokio::test]
    async fn the_tutorial_format_appends_searches_as_the_tutorial_wrote_them_and_nothing_else() {
        use bookstore_domain::events::{
            BookViewedEvent, ReaderForgottenEvent, ResultBook, ResultDetails, SearchEvent,
            ViewSource, decode,
        };
        let limits = PublisherLimits {
            queue_capacity: 100,
            queue_max_bytes: 1_000_000,
            max_message_bytes: 5_000,
            format: WireFormat::Tutorial,
        };
        let (_dir, log, publisher) = publisher(limits).await;
        let book = ResultBook {
            id: 7,
            title: "Emma".to_owned(),
            author: "Jane Austen".to_owned(),
            published_at: chrono::NaiveDate::from_ymd_opt(1815, 12, 23).map(Into::into),
        };
        let search = SearchEvent::new(
            uuid::Uuid::now_v7(),
            chrono::Utc::now(),
            None,
            "std::io",
            0,
            vec![book.clone()],
        )
        .with_details(vec![ResultDetails {
            description: String::new(),
            created_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        }]);
        let view = Event::BookViewed(BookViewedEvent::now(
            None,
            Some("client-1".to_owned()),
            book,
            ViewSource::Direct,
            None,
            None,
        ));
        assert_eq!(publisher.publish(&view), Published::Dropped);
        let forgotten = Event::ReaderForgotten(ReaderForgottenEvent::now("reader-1"));
        let verdict = publisher
            .deliver(&[forgotten, event(1, 100)], Duration::from_secs(10))
            .await;
        assert!(
            matches!(&verdict[0], Delivery::Refused(r) if r.contains("reader.forgotten")),
            "{verdict:?}"
        );
        assert!(matches!(&verdict[1], Delivery::Refused(r) if r.contains("book.created")));
        assert_eq!(
            publisher.publish(&Event::BookSearched(search.clone())),
            Published::Queued
        );
        assert_eq!(publisher.flush(Duration::from_secs(10)).await, 0);
        let stats = publisher.stats();
        assert_eq!(stats.omitted.load(Ordering::Relaxed), 3);
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 1);
        assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);

        let tp = bookstore_domain::TopicPartition {
            topic: "t".to_owned(),
            partition: 0,
        };
        let stored = log.read(&tp, 0, 10).await.unwrap();
        assert_eq!(stored.len(), 1, "the search alone");
        assert_eq!(stored[0].key.as_deref(), Some(&b"std::io:"[..]));
        assert_eq!(
            String::from_utf8_lossy(&stored[0].value),
            r#"[{"id":7,"title":"Emma","author":"Jane Austen","published_at":"1815-12-23","description":"","created_at":"1970-01-01 00:00:00"}]"#
        );
        let read = decode(
            stored[0].key.as_deref(),
            &stored[0].value,
            stored[0].timestamp,
        )
        .unwrap();
        let read = read.as_search().unwrap();
        assert_eq!((read.version, read.query.as_str()), (0, "std::io"));
        assert_eq!(
            (read.user_id.as_deref(), &read.results),
            (None, &search.results)
        );
    }

    #[tokio::test]
    async fn an_event_larger_than_the_log_takes_is_refused_and_the_others_delivered() {
        let limits = PublisherLimits {
            queue_capacity: 100,
            queue_max_bytes: 1_000_000,
            max_message_bytes: 5_000,
            format: WireFormat::V1,
        };
        let (_dir, log, publisher) = publisher(limits).await;
        let events = [event(1, 100), event(2, 6_000), event(3, 100)];
        let deliveries = publisher.deliver(&events, Duration::from_secs(10)).await;
        assert_eq!(deliveries[0], Delivery::Delivered);
        assert!(
            matches!(&deliveries[1], Delivery::Refused(r) if r.contains("events.max_message_bytes")),
            "{deliveries:?}"
        );
        assert_eq!(deliveries[2], Delivery::Delivered);
        assert_eq!(messages(&log).await, 2);
        // A search event as large is refused too, and counted as failed.
        assert_eq!(publisher.publish(&event(4, 6_000)), Published::Dropped);
        let stats = publisher.stats();
        assert_eq!(stats.failed.load(Ordering::Relaxed), 2);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(stats.in_flight(), 0);
    }

    #[tokio::test]
    async fn stored_events_are_appended_byte_for_byte_and_only_in_version_1() {
        let limits = PublisherLimits {
            queue_capacity: 100,
            queue_max_bytes: 1_000_000,
            max_message_bytes: 5_000,
            format: WireFormat::V1,
        };
        let (_dir, log, v1) = publisher(limits).await;
        let created = event(1, 10);
        // As an outbox may hold it: the same event, laid out otherwise than `to_json` writes it.
        let mut payload = created.to_json();
        payload.push(b'\n');
        let stored = StoredEvent {
            key: "1",
            kind: created.kind(),
            version: created.version(),
            payload: &payload,
        };
        let verdict = v1.deliver_stored(&[stored], Duration::from_secs(10)).await;
        assert_eq!(verdict, [Delivery::Delivered]);
        let tp = bookstore_domain::TopicPartition {
            topic: "t".to_owned(),
            partition: 0,
        };
        let read = log.read(&tp, 0, 10).await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].key.as_deref(), Some(&b"1"[..]));
        assert_eq!(
            read[0].value, payload,
            "the stored bytes, not encoded again"
        );

        let limits = PublisherLimits {
            format: WireFormat::Tutorial,
            ..limits
        };
        let (_dir, _log, tutorial) = publisher(limits).await;
        let verdict = tutorial
            .deliver_stored(&[stored], Duration::from_secs(10))
            .await;
        assert!(
            matches!(&verdict[..], [Delivery::Refused(r)] if r.contains("stored in version 1")),
            "{verdict:?}"
        );
    }

    #[tokio::test]
    async fn while_the_log_cannot_be_written_events_are_undelivered_not_refused() {
        let limits = PublisherLimits {
            queue_capacity: 100,
            queue_max_bytes: 1_000_000,
            max_message_bytes: 5_000,
            format: WireFormat::V1,
        };
        let (dir, log, publisher) = publisher(limits).await;
        // Another process holds the log's write lock.
        let url = format!("sqlite://{}", dir.path().join("events.db").display());
        let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut locker)
            .await
            .unwrap();
        let deliveries = publisher
            .deliver(&[event(1, 100), event(2, 100)], Duration::from_millis(300))
            .await;
        assert_eq!(deliveries.len(), 2);
        for delivery in &deliveries {
            assert!(
                matches!(delivery, Delivery::Undelivered(r) if r.contains("not appended within")),
                "{delivery:?}"
            );
        }
        sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
        // They are still on their way, and arrive.
        assert_eq!(publisher.flush(Duration::from_secs(20)).await, 0);
        assert_eq!(messages(&log).await, 2);
    }
}
