//! The outbox relay of the web service: publishes the catalog events waiting in the catalog
//! database's outbox to `events.catalog_topic`, in order, and marks them sent only once the log
//! has confirmed them. After a crash it resumes from the outbox, so no created book is ever
//! missing from the topic (one may appear twice; consumers are idempotent by book id).
//!
//! A row the log can never take does not hold up the rows after it. The log's verdict on each
//! event tells a refusal of that event (too large, invalid: [`Delivery::Refused`]), or a payload
//! that is not an event, from a failure of the log itself (unreachable, slow, queue full:
//! [`Delivery::Undelivered`]). A failure of the log is retried for ever and counts against no
//! row. A refusal counts an attempt against its row, which is then tried alone (so that a
//! batch-mate of a bad event is never blamed for it), and after `events.outbox_max_attempts`
//! the row goes to the outbox's dead letters with the reason.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bookstore_domain::events::decode;
use bookstore_domain::{
    Delivery, EventPublisher, Outbox, OutboxRow, OutboxSink, Relayed, RowOutcome, StoredEvent,
};
use tokio_util::sync::CancellationToken;

use crate::bus::{EventBus, Publisher};
use crate::config::EventsConfig;

/// Rows per relay round.
const ROUND: usize = 500;
/// How often an idle relay looks at the outbox.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Delivers outbox rows through a publisher of its own, so that a flush waits for these rows
/// only.
pub struct PublisherSink {
    publisher: Publisher,
    timeout: Duration,
    max_attempts: u32,
}

impl PublisherSink {
    /// The catalog publisher's counters.
    pub fn stats(&self) -> Arc<bookstore_consumer::PublisherStats> {
        self.publisher.stats.clone()
    }

    pub async fn start(bus: &EventBus, events: &EventsConfig) -> anyhow::Result<Self> {
        let mut catalog = events.catalog();
        // A round gives its rows back when the log has not confirmed them within the flush
        // timeout, and another web instance may then send them and the rows after them: an event
        // still queued here must not reach the log after those. So the producer gives up on an
        // event (Kafka's `message.timeout.ms`) when the round does
        // (librdkafka wants it above `linger.ms`.) Not airtight: librdkafka looks for expired
        // events about once a second and cannot take back one already on the wire.
        catalog.message_timeout = Duration::from_millis(
            events
                .flush_timeout_ms
                .max(events.linger_ms.saturating_add(1)),
        );
        let publisher = bus.publisher(events, catalog).await?;
        Ok(Self::new(
            publisher,
            Duration::from_millis(events.flush_timeout_ms.max(1)),
            events.outbox_max_attempts,
        ))
    }

    /// Delivers through `publisher`, waiting at most `timeout` per round for the log, and gives
    /// up on a row after `max_attempts` refusals.
    pub fn new(publisher: Publisher, timeout: Duration, max_attempts: u32) -> Self {
        Self {
            publisher,
            timeout,
            max_attempts: max_attempts.max(1),
        }
    }
}

#[async_trait]
impl OutboxSink for PublisherSink {
    async fn deliver(&self, rows: &[OutboxRow]) -> Result<Vec<RowOutcome>, String> {
        // A round that timed out left its events queued in the producer (they are still being
        // retried): wait for them rather than queueing the same rows again on every round of an
        // outage.
        let left = self.publisher.port.flush(self.timeout).await;
        if left > 0 {
            return Err(format!(
                "{left} events of an earlier round are still undelivered"
            ));
        }
        Ok(judge(
            rows,
            self.max_attempts,
            self.publisher.port.as_ref(),
            self.timeout,
        )
        .await)
    }
}

/// Publishes the rows of this round through `publisher` and says what became of each.
///
/// The round is the rows up to the first one refused before, or that row alone when it comes
/// first: a refused row is always tried again alone. Then, per row, in order:
/// - in the log: sent, unless an earlier row of the same key was not (it goes again after
///   that one, so the key's last event stays the last);
/// - refused (by the log, or not an event): an attempt counted, or the dead letters once it has
///   been refused `max_attempts` times, the last of them alone; but if any event of the round
///   failed for the log's own reasons, nothing is counted (the log is not well);
/// - not delivered: given back, to be tried again.
async fn judge(
    rows: &[OutboxRow],
    max_attempts: u32,
    publisher: &dyn EventPublisher,
    timeout: Duration,
) -> Vec<RowOutcome> {
    let take = match rows.iter().position(|r| r.attempts > 0) {
        Some(0) => 1,
        Some(first_refused) => first_refused,
        None => rows.len(),
    };
    let round = &rows[..take];
    let alone = round.len() == 1;
    // A row is read only to refuse what is not an event (it would be dead-lettered by every
    // consumer) and for the type and version headers; its stored bytes are what is published.
    let decoded: Vec<Result<StoredEvent<'_>, String>> = round
        .iter()
        .map(|row| {
            let event = decode(Some(row.key.as_bytes()), &row.payload, None)
                .map_err(|e| format!("not an event: {e}"))?;
            Ok(StoredEvent {
                key: &row.key,
                kind: event.kind(),
                version: event.version(),
                payload: &row.payload,
            })
        })
        .collect();
    let events: Vec<StoredEvent<'_>> = decoded.iter().filter_map(|d| d.clone().ok()).collect();
    let mut deliveries = if events.is_empty() {
        Vec::new()
    } else {
        publisher.deliver_stored(&events, timeout).await
    }
    .into_iter();
    let verdicts: Vec<Delivery> = decoded
        .into_iter()
        .map(|decoded| match decoded {
            Ok(_) => deliveries.next().unwrap_or_else(|| {
                Delivery::Undelivered("the publisher gave no verdict".to_owned())
            }),
            Err(reason) => Delivery::Refused(reason),
        })
        .collect();
    let log_failed = verdicts
        .iter()
        .any(|v| matches!(v, Delivery::Undelivered(_)));
    let mut held: HashSet<&str> = HashSet::new();
    let mut outcomes: Vec<RowOutcome> = round
        .iter()
        .zip(verdicts)
        .map(|(row, verdict)| match verdict {
            Delivery::Delivered if held.contains(row.key.as_str()) => RowOutcome::Retry,
            Delivery::Delivered => RowOutcome::Sent,
            Delivery::Undelivered(_) => {
                held.insert(&row.key);
                RowOutcome::Retry
            }
            Delivery::Refused(reason) => {
                held.insert(&row.key);
                if log_failed {
                    RowOutcome::Retry
                } else if alone && row.attempts.saturating_add(1) >= max_attempts {
                    RowOutcome::Dead(reason)
                } else {
                    tracing::info!(
                        row = row.id,
                        key = %row.key,
                        attempt = row.attempts.saturating_add(1),
                        max_attempts,
                        %reason,
                        "outbox row refused; it will be tried again alone"
                    );
                    RowOutcome::Refused(reason)
                }
            }
        })
        .collect();
    outcomes.resize(rows.len(), RowOutcome::Retry);
    outcomes
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
    metrics::counter!("bookstore_outbox_dead_lettered_total").increment(0);
    metrics::counter!("bookstore_outbox_refused_total").increment(0);
    let mut counted_at: Option<tokio::time::Instant> = None;
    loop {
        let relayed = match outbox.relay(ROUND, &sink).await {
            Ok(relayed) => {
                record(&relayed);
                relayed
            }
            Err(error) => {
                metrics::counter!("bookstore_store_errors_total", "service" => "web", "store" => "outbox", "kind" => "relay").increment(1);
                tracing::warn!(%error, "the outbox relay cannot read the outbox; retrying");
                Relayed::default()
            }
        };
        if counted_at.is_none_or(|t| t.elapsed() >= COUNT_EVERY) {
            counted_at = Some(tokio::time::Instant::now());
            if let Ok(waiting) = outbox.waiting().await {
                metrics::gauge!("bookstore_outbox_waiting").set(waiting as f64);
            }
            if let Ok(dead) = outbox.dead_letters().await {
                metrics::gauge!("bookstore_outbox_dead_letters").set(dead as f64);
            }
        }
        if stop.is_cancelled() {
            break;
        }
        if !relayed.progressed() {
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
    if let Ok(relayed) = outbox.relay(ROUND, &sink).await {
        record(&relayed);
    }
}

/// Counts what a round did, and names every row it dead-lettered.
fn record(relayed: &Relayed) {
    metrics::counter!("bookstore_outbox_relayed_total").increment(relayed.sent);
    let dead = relayed.dead_lettered.len() as u64;
    // Every refusal, the last one of a dead-lettered row included.
    metrics::counter!("bookstore_outbox_refused_total").increment(relayed.refused + dead);
    metrics::counter!("bookstore_outbox_dead_lettered_total").increment(dead);
    for row in &relayed.dead_lettered {
        tracing::warn!(
            row = row.id,
            key = %row.key,
            reason = %row.reason,
            "outbox row {} dead-lettered: {}; it will not be relayed again (the README's Events \
             section tells how to replay it)",
            row.id,
            row.reason
        );
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bookstore_domain::Published;
    use bookstore_domain::events::{BookEvent, CatalogBook, Event};

    use super::*;

    /// Answers each event by the description of its book: `delivered`, `refused` or
    /// `undelivered`; and records the book ids of every call.
    #[derive(Default)]
    struct Scripted {
        calls: Mutex<Vec<Vec<i64>>>,
    }

    #[async_trait]
    impl EventPublisher for Scripted {
        fn publish(&self, _: &Event) -> Published {
            Published::Queued
        }

        async fn deliver(&self, events: &[Event], _: Duration) -> Vec<Delivery> {
            let mut ids = Vec::new();
            let verdicts = events
                .iter()
                .map(|event| {
                    let Event::BookCreated(created) = event else {
                        panic!("{event:?}")
                    };
                    ids.push(created.book.id);
                    match created.book.description.as_str() {
                        "delivered" => Delivery::Delivered,
                        "refused" => Delivery::Refused("too large".to_owned()),
                        _ => Delivery::Undelivered("timed out".to_owned()),
                    }
                })
                .collect();
            self.calls.lock().unwrap().push(ids);
            verdicts
        }

        async fn flush(&self, _: Duration) -> u64 {
            0
        }
    }

    /// Row `id` holding book `book`'s event, whose description scripts its verdict.
    fn row(id: i64, book: i64, verdict: &str, attempts: u32) -> OutboxRow {
        let event = BookEvent::new(
            uuid::Uuid::now_v7(),
            chrono::Utc::now(),
            CatalogBook {
                isbn: None,
                id: book,
                title: "T".to_owned(),
                author: "A".to_owned(),
                published_at: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap().into(),
                description: verdict.to_owned(),
                created_at: chrono::Utc::now(),
            },
        );
        OutboxRow {
            id,
            key: book.to_string(),
            payload: event.to_json(),
            attempts,
        }
    }

    fn undecodable(id: i64, attempts: u32) -> OutboxRow {
        OutboxRow {
            id,
            key: "0".to_owned(),
            payload: b"{\"type\": \"book.cre".to_vec(),
            attempts,
        }
    }

    async fn judged(rows: &[OutboxRow], max_attempts: u32) -> (Vec<RowOutcome>, Vec<Vec<i64>>) {
        let publisher = Scripted::default();
        let outcomes = judge(rows, max_attempts, &publisher, Duration::from_secs(1)).await;
        assert_eq!(outcomes.len(), rows.len());
        (outcomes, publisher.calls.into_inner().unwrap())
    }

    fn refused(reason: &str) -> RowOutcome {
        RowOutcome::Refused(reason.to_owned())
    }

    #[tokio::test]
    async fn a_refused_row_counts_an_attempt_and_the_others_are_sent() {
        let rows = [
            row(1, 10, "delivered", 0),
            undecodable(2, 0),
            row(3, 30, "refused", 0),
            row(4, 40, "delivered", 0),
        ];
        let (outcomes, calls) = judged(&rows, 5).await;
        assert_eq!(calls, [vec![10, 30, 40]], "the undecodable row is not sent");
        assert!(
            matches!(&outcomes[1], RowOutcome::Refused(r) if r.starts_with("not an event")),
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes,
            [
                RowOutcome::Sent,
                outcomes[1].clone(),
                refused("too large"),
                RowOutcome::Sent,
            ]
        );
    }

    #[tokio::test]
    async fn a_row_refused_before_goes_alone_and_dead_after_the_last_attempt() {
        // At the head of the round: alone.
        let rows = [row(3, 30, "refused", 3), row(4, 40, "delivered", 0)];
        let (outcomes, calls) = judged(&rows, 5).await;
        assert_eq!(calls, [vec![30]]);
        assert_eq!(outcomes, [refused("too large"), RowOutcome::Retry]);

        let rows = [row(3, 30, "refused", 4), row(4, 40, "delivered", 0)];
        let (outcomes, _) = judged(&rows, 5).await;
        assert_eq!(
            outcomes,
            [RowOutcome::Dead("too large".to_owned()), RowOutcome::Retry]
        );
        // Alone, a row that is not an event is judged without asking the log.
        let rows = [undecodable(2, 4), row(4, 40, "undelivered", 0)];
        let (outcomes, calls) = judged(&rows, 5).await;
        assert!(calls.is_empty());
        assert!(matches!(&outcomes[0], RowOutcome::Dead(r) if r.starts_with("not an event")));

        // Further on: the round ends before it.
        let rows = [
            row(1, 10, "delivered", 0),
            row(2, 20, "delivered", 2),
            row(3, 30, "delivered", 0),
        ];
        let (outcomes, calls) = judged(&rows, 5).await;
        assert_eq!(calls, [vec![10]]);
        assert_eq!(
            outcomes,
            [RowOutcome::Sent, RowOutcome::Retry, RowOutcome::Retry]
        );
    }

    #[tokio::test]
    async fn a_row_is_dead_only_once_refused_alone() {
        // One attempt allowed, but a refusal among others may be a batch-mate's doing.
        let rows = [row(1, 10, "refused", 0), row(2, 20, "delivered", 0)];
        let (outcomes, _) = judged(&rows, 1).await;
        assert_eq!(outcomes, [refused("too large"), RowOutcome::Sent]);
        let (outcomes, _) = judged(&[row(1, 10, "refused", 1)], 1).await;
        assert_eq!(outcomes, [RowOutcome::Dead("too large".to_owned())]);
        // A row alone from the start is judged at once.
        let (outcomes, _) = judged(&[row(1, 10, "refused", 0)], 1).await;
        assert_eq!(outcomes, [RowOutcome::Dead("too large".to_owned())]);
    }

    #[tokio::test]
    async fn while_the_log_fails_nothing_is_counted_against_any_row() {
        let rows = [
            row(1, 10, "delivered", 0),
            row(2, 20, "undelivered", 0),
            undecodable(3, 0),
            row(4, 40, "refused", 0),
            row(5, 50, "delivered", 0),
        ];
        let (outcomes, _) = judged(&rows, 5).await;
        assert_eq!(
            outcomes,
            [
                RowOutcome::Sent,
                RowOutcome::Retry,
                RowOutcome::Retry,
                RowOutcome::Retry,
                RowOutcome::Sent,
            ]
        );
    }

    #[tokio::test]
    async fn a_key_stays_in_order_behind_its_undelivered_or_refused_event() {
        let rows = [
            row(1, 10, "undelivered", 0),
            row(2, 20, "refused", 0),
            row(3, 10, "delivered", 0),
            row(4, 20, "delivered", 0),
            row(5, 30, "delivered", 0),
        ];
        let (outcomes, _) = judged(&rows, 5).await;
        assert_eq!(
            outcomes,
            [
                RowOutcome::Retry,
                RowOutcome::Retry,
                RowOutcome::Retry,
                RowOutcome::Retry,
                RowOutcome::Sent,
            ]
        );
        let rows = [row(2, 20, "refused", 0), row(4, 20, "delivered", 0)];
        let (outcomes, _) = judged(&rows, 5).await;
        assert_eq!(outcomes, [refused("too large"), RowOutcome::Retry]);
    }
}
