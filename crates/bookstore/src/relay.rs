//! The outbox relay of the web service: publishes the catalog events waiting in the catalog
//! database's outbox to `events.catalog_topic`, in order, and marks them sent only once the log
//! has confirmed them. After a crash it resumes from the outbox, so no created book is ever
//! missing from the topic (one may appear twice; consumers are idempotent by book id).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bookstore_domain::events::decode;
use bookstore_domain::{Outbox, OutboxRow, OutboxSink, Published};
use tokio_util::sync::CancellationToken;

use crate::config::EventsConfig;
use crate::events::{EventBus, Publisher};

/// Rows per relay round.
const ROUND: usize = 500;
/// How often an idle relay looks at the outbox.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Delivers outbox rows through a publisher of its own, so that a flush waits for these rows
/// only.
pub struct PublisherSink {
    publisher: Publisher,
    timeout: Duration,
}

impl PublisherSink {
    /// The catalog publisher's counters.
    pub fn stats(&self) -> Arc<bookstore_events::PublisherStats> {
        self.publisher.stats.clone()
    }

    pub async fn start(bus: &EventBus, events: &EventsConfig) -> anyhow::Result<Self> {
        let mut catalog = events.clone();
        catalog.topic = events.catalog_topic.clone();
        let publisher = bus.publisher(&catalog).await?;
        Ok(Self {
            publisher,
            timeout: Duration::from_millis(events.flush_timeout_ms.max(1)),
        })
    }
}

#[async_trait]
impl OutboxSink for PublisherSink {
    async fn deliver(&self, rows: &[OutboxRow]) -> Result<(), String> {
        // A round that timed out left its events queued in the producer (they are still being
        // retried): wait for them rather than queueing the same rows again on every round of an
        // outage.
        let left = self.publisher.publisher.flush(self.timeout).await;
        if left > 0 {
            return Err(format!(
                "{left} events of an earlier round are still undelivered"
            ));
        }
        let stats = &self.publisher.stats;
        let failed = stats.failed.load(Ordering::Relaxed);
        for row in rows {
            let event = decode(Some(row.key.as_bytes()), &row.payload, None)
                .map_err(|e| format!("outbox row {} is not an event: {e}", row.id))?;
            if self.publisher.publisher.publish(&event) == Published::Dropped {
                return Err("the publisher's queue is full".into());
            }
        }
        let left = self.publisher.publisher.flush(self.timeout).await;
        let newly_failed = stats.failed.load(Ordering::Relaxed) - failed;
        if left > 0 || newly_failed > 0 {
            return Err(format!("{left} events undelivered, {newly_failed} failed"));
        }
        Ok(())
    }
}

/// How often the relay counts the rows waiting (`bookstore_outbox_waiting`).
const COUNT_EVERY: Duration = Duration::from_secs(2);
/// How often the rows sent longer ago than the retention are deleted, and how many rows one
/// statement deletes (a pass stops after [`PRUNE_ROUNDS`] of them; the rest waits for the next
/// pass).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const PRUNE_BATCH: usize = 1_000;
const PRUNE_ROUNDS: usize = 100;

/// Relays until `stop`, then one last round. Beside it, a task of its own deletes the rows sent
/// more than `retention` ago (never, with `None`), from the start and every [`PRUNE_EVERY`].
pub async fn run(
    outbox: Arc<dyn Outbox>,
    sink: PublisherSink,
    retention: Option<Duration>,
    stop: CancellationToken,
) {
    let pruner = retention
        .map(|retention| tokio::spawn(prune_hourly(outbox.clone(), retention, stop.clone())));
    let mut counted_at: Option<tokio::time::Instant> = None;
    loop {
        let sent = match outbox.relay(ROUND, &sink).await {
            Ok(sent) => {
                metrics::counter!("bookstore_outbox_relayed_total").increment(sent);
                sent
            }
            Err(error) => {
                metrics::counter!("bookstore_store_errors_total", "service" => "web", "store" => "outbox", "kind" => "relay").increment(1);
                tracing::warn!(%error, "the outbox relay cannot read the outbox; retrying");
                0
            }
        };
        if counted_at.is_none_or(|t| t.elapsed() >= COUNT_EVERY) {
            counted_at = Some(tokio::time::Instant::now());
            if let Ok(waiting) = outbox.waiting().await {
                metrics::gauge!("bookstore_outbox_waiting").set(waiting as f64);
            }
        }
        if stop.is_cancelled() {
            break;
        }
        if sent == 0 {
            tokio::select! {
                () = tokio::time::sleep(IDLE_POLL) => {}
                () = stop.cancelled() => {}
            }
        }
    }
    if let Some(pruner) = pruner {
        // It ends at `stop` too; a statement in flight is dropped, not waited for.
        pruner.abort();
    }
    let _ = outbox.relay(ROUND, &sink).await;
}

/// Prunes now and then every [`PRUNE_EVERY`], until `stop`.
async fn prune_hourly(outbox: Arc<dyn Outbox>, retention: Duration, stop: CancellationToken) {
    metrics::counter!("bookstore_outbox_pruned_total").increment(0);
    loop {
        tokio::select! {
            () = prune(&*outbox, retention) => {}
            () = stop.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Deletes the rows sent more than `retention` ago, a batch at a time, until none is left or
/// the pass has made [`PRUNE_ROUNDS`] batches.
async fn prune(outbox: &dyn Outbox, retention: Duration) {
    let mut pruned = 0;
    for _ in 0..PRUNE_ROUNDS {
        match outbox.prune(retention, PRUNE_BATCH).await {
            Ok(deleted) => {
                pruned += deleted;
                metrics::counter!("bookstore_outbox_pruned_total").increment(deleted);
                if deleted < PRUNE_BATCH as u64 {
                    break;
                }
            }
            Err(error) => {
                metrics::counter!("bookstore_store_errors_total", "service" => "web", "store" => "outbox", "kind" => "prune").increment(1);
                tracing::warn!(%error, "cannot delete the sent outbox rows; trying again later");
                break;
            }
        }
    }
    if pruned > 0 {
        tracing::info!(
            rows = pruned,
            "deleted outbox rows sent more than events.outbox_retention_hours ago"
        );
    }
}
