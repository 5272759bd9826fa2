//! Publishing to the embedded log without making the caller wait.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bookstore_domain::events::Event;
use bookstore_domain::{EventPublisher, Published};
use bookstore_events::{PublisherStats, RateLimited};
use tokio::sync::mpsc;

use crate::log::{EventLog, EventLogError};

type Message = (Option<Vec<u8>>, Vec<u8>);

/// Hands events to a bounded queue that a background task appends to the log in batches. When
/// the queue is full the event is dropped and counted; `publish` never waits.
pub struct EmbeddedPublisher {
    queue: mpsc::Sender<Message>,
    stats: Arc<PublisherStats>,
    drop_warning: RateLimited,
}

const APPEND_BATCH: usize = 1024;
const APPEND_ATTEMPTS: u32 = 5;

impl EmbeddedPublisher {
    /// Creates `topic` in `log` if needed and starts the appender task on the current runtime.
    pub async fn start(
        log: Arc<EventLog>,
        topic: &str,
        partitions: u32,
        queue_capacity: usize,
    ) -> Result<Self, EventLogError> {
        let partitions = log.ensure_topic(topic, partitions).await?;
        let (queue, receiver) = mpsc::channel(queue_capacity.max(1));
        let stats = Arc::new(PublisherStats::default());
        tokio::spawn(append_loop(
            log,
            topic.to_owned(),
            partitions,
            receiver,
            stats.clone(),
        ));
        Ok(Self {
            queue,
            stats,
            drop_warning: RateLimited::new(Duration::from_secs(10)),
        })
    }

    pub fn stats(&self) -> Arc<PublisherStats> {
        self.stats.clone()
    }
}

#[async_trait]
impl EventPublisher for EmbeddedPublisher {
    fn publish(&self, event: &Event) -> Published {
        let message = (Some(event.key().as_bytes().to_vec()), event.to_json());
        match self.queue.try_send(message) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Published::Queued
            }
            Err(_) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(suppressed) = self.drop_warning.check() {
                    tracing::warn!(
                        dropped_total = dropped,
                        suppressed,
                        "event queue full: search event dropped"
                    );
                }
                Published::Dropped
            }
        }
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
    let mut batch = Vec::with_capacity(APPEND_BATCH);
    while receiver.recv_many(&mut batch, APPEND_BATCH).await > 0 {
        let count = batch.len() as u64;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match log.append(&topic, partitions, &batch).await {
                Ok(()) => {
                    stats.delivered.fetch_add(count, Ordering::Relaxed);
                    break;
                }
                Err(error) if attempt < APPEND_ATTEMPTS => {
                    tracing::warn!(%error, attempt, "cannot append to the event log; retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                Err(error) => {
                    tracing::error!(%error, events = count, "cannot append to the event log; events lost");
                    stats.failed.fetch_add(count, Ordering::Relaxed);
                    break;
                }
            }
        }
        batch.clear();
    }
}
