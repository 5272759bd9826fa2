//! From messages read in partitions to batches applied exactly once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bookstore_domain::events::decode;
use bookstore_domain::{
    Batch, EventHandler, HandlerError, Position, PositionUpdate, Record, TopicPartition,
};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::stats::{ConsumerStats, RateLimited, add, event_time};

/// A message as a backend read it, before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// When the log stored it, if it says.
    pub timestamp: Option<DateTime<Utc>>,
    /// The W3C trace context of the span that published it (its `traceparent` header), if any.
    pub trace_parent: Option<String>,
}

impl RawMessage {
    fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }
}

/// A message no handler will apply, kept with why and where it was read so that it can be
/// inspected and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub group: String,
    pub message: RawMessage,
    pub error: String,
}

/// The sink could not store a dead letter; the consumer retries.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Where dead letters go: a `<topic>.dlq` topic on Kafka, a table in the embedded log.
#[async_trait]
pub trait DeadLetters: Send + Sync + 'static {
    async fn send(&self, letter: &DeadLetter) -> Result<(), SinkError>;
}

/// How big a batch may grow and how long it may wait before it is applied. A batch is also
/// applied as soon as no more messages are ready, so an idle consumer applies each event at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    pub max_events: usize,
    pub max_wait: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_events: 1000,
            max_wait: Duration::from_millis(100),
        }
    }
}

/// The consumer is shutting down; the work in hand was abandoned and nothing of it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// The offsets a partition holds, as its backend last saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRange {
    /// The earliest retained offset (`None`: not known, or the partition is empty).
    pub start: Option<i64>,
    /// The offset after the partition's last message.
    pub end: i64,
}

/// What a flush achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flushed {
    /// Applied; these are the positions now stored (for the backend to report to its log).
    Applied(Vec<Position>),
    /// Another consumer moved the stored positions. The pending batch was dropped and the
    /// positions reloaded; the backend must read these partitions again from the given offsets
    /// (`None`: from the beginning of the partition).
    Reseek(Vec<(TopicPartition, Option<i64>)>),
}

/// How a failing apply ended.
enum ApplyError {
    Rejected(String),
    Stale,
    Stopped,
}

/// One consumer's state: the partitions it owns, the positions stored for them, and the batch
/// being gathered. Backends drive it: [`assign`](Self::assign) and [`revoke`](Self::revoke) on
/// ownership changes, [`offer`](Self::offer) for every message read, [`flush`](Self::flush) when
/// [`due`](Self::due) or when no more messages are ready.
pub struct Pipeline {
    group: String,
    handler: Arc<dyn EventHandler>,
    dead_letters: Arc<dyn DeadLetters>,
    settings: BatchSettings,
    stop: CancellationToken,
    stats: Arc<ConsumerStats>,
    /// Owned partitions and the position the handler's store holds for each.
    stored: BTreeMap<TopicPartition, Option<i64>>,
    /// Partitions read past their stored position, and how far.
    read: BTreeMap<TopicPartition, i64>,
    pending: Vec<(Record, RawMessage)>,
    opened_at: Option<Instant>,
    retry_warning: RateLimited,
    ahead_warning: RateLimited,
}

const BACKOFF_START: Duration = Duration::from_millis(50);
/// The events of one batch that are linked to its span and get a span of their own, at most.
const MAX_TRACED_EVENTS: usize = 128;
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Pipeline {
    pub fn new(
        group: impl Into<String>,
        handler: Arc<dyn EventHandler>,
        dead_letters: Arc<dyn DeadLetters>,
        settings: BatchSettings,
        stop: CancellationToken,
    ) -> Self {
        Self {
            group: group.into(),
            handler,
            dead_letters,
            settings: BatchSettings {
                max_events: settings.max_events.max(1),
                max_wait: settings.max_wait,
            },
            stop,
            stats: Arc::default(),
            stored: BTreeMap::new(),
            read: BTreeMap::new(),
            pending: Vec::new(),
            opened_at: None,
            retry_warning: RateLimited::new(Duration::from_secs(10)),
            ahead_warning: RateLimited::new(Duration::from_secs(60)),
        }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn handler_name(&self) -> &str {
        self.handler.name()
    }

    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.stats.clone()
    }

    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    fn update_owned(&self) {
        self.stats.owned_partitions.store(
            self.stored.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The partitions this consumer owns.
    pub fn owned(&self) -> impl Iterator<Item = &TopicPartition> {
        self.stored.keys()
    }

    /// The next offset to read in `tp`: past the batch being gathered, else the stored position.
    /// `None` when nothing is stored: the backend reads the partition from its earliest retained
    /// message (never from the group's committed offset, which a lost store would skip past).
    pub fn read_position(&self, tp: &TopicPartition) -> Option<i64> {
        self.read
            .get(tp)
            .copied()
            .or_else(|| self.stored.get(tp).copied().flatten())
    }

    /// Records each owned partition's lag: the messages between the next one to apply and the
    /// partition's end. `range` gives, when the backend knows it, the partition's retained range:
    /// a partition with no stored position is read from its earliest retained message, and one
    /// whose stored position was trimmed away continues from there too.
    pub fn record_lag(&self, range: impl Fn(&TopicPartition) -> Option<LogRange>) {
        let mut ahead = 0u64;
        let lag = self
            .stored
            .iter()
            .filter_map(|(tp, stored)| {
                let LogRange { start, end } = range(tp)?;
                if let Some(next) = stored.filter(|next| *next > end) {
                    ahead += 1;
                    if self.ahead_warning.check().is_some() {
                        tracing::error!(
                            group = %self.group,
                            handler = self.handler.name(),
                            topic = %tp.topic,
                            partition = tp.partition,
                            stored = next,
                            end,
                            "the handler's store is ahead of the log: the log was lost or \
                             replaced while the store was kept, and events appended below the \
                             stored position will be skipped; delete the store to have it rebuilt \
                             from the log"
                        );
                    }
                }
                let next = match (stored, start) {
                    (Some(next), Some(start)) => (*next).max(start),
                    (Some(next), None) => *next,
                    (None, Some(start)) => start,
                    // The start is not known: no figure rather than a wrong one, unless the
                    // partition is empty.
                    (None, None) if end <= 0 => 0,
                    (None, None) => return None,
                };
                Some((tp.clone(), end.saturating_sub(next).max(0)))
            })
            .collect();
        self.stats.set_lag(lag);
        self.stats
            .ahead_of_log
            .store(ahead, std::sync::atomic::Ordering::Relaxed);
    }

    /// Says, once per partition assigned without a stored position, that the partition is read
    /// from its earliest retained message: the handler's store is new, or it was lost and is
    /// being rebuilt. `committed` is the group's committed offset there, when the backend knows
    /// it: a group that had got somewhere while its store knows nothing means a lost store, which
    /// is worth a warning.
    pub fn log_rebuild(&self, tp: &TopicPartition, committed: Option<i64>) {
        match committed.filter(|c| *c > 0) {
            Some(committed) => tracing::warn!(
                group = %self.group,
                handler = self.handler.name(),
                topic = %tp.topic,
                partition = tp.partition,
                committed,
                "the handler's store has no position for this partition although the group had \
                 committed offset {committed}: the store was lost or replaced; rebuilding it from \
                 the beginning of the partition"
            ),
            None => tracing::info!(
                group = %self.group,
                handler = self.handler.name(),
                topic = %tp.topic,
                partition = tp.partition,
                "the handler's store has no position for this partition: reading it from the \
                 beginning (a new store, or a lost one being rebuilt)"
            ),
        }
    }

    /// Takes ownership of `partitions` and returns where to start reading each: the position the
    /// handler's store holds, or `None` when it holds none. Retries while the store is down.
    pub async fn assign(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<i64>)>, Stopped> {
        let stored = self.load_positions().await?;
        self.stats.reset(partitions);
        let mut starts = Vec::with_capacity(partitions.len());
        for tp in partitions {
            let position = stored.get(tp).copied();
            self.stored.insert(tp.clone(), position);
            self.read.remove(tp);
            starts.push((tp.clone(), position));
        }
        self.update_owned();
        if !partitions.is_empty() {
            tracing::info!(
                group = %self.group,
                handler = self.handler.name(),
                partitions = %describe(&starts),
                "partitions assigned"
            );
        }
        Ok(starts)
    }

    /// Gives up `partitions`: what was read from them and not yet applied is dropped (their
    /// next owner reads it again from the stored position).
    pub fn revoke(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.stored.remove(tp);
            self.read.remove(tp);
        }
        self.pending
            .retain(|(_, raw)| !partitions.contains(&raw.topic_partition()));
        if self.read.is_empty() {
            self.opened_at = None;
        }
        self.stats.forget(partitions);
        self.update_owned();
        if !partitions.is_empty() {
            let partitions: Vec<String> = partitions.iter().map(ToString::to_string).collect();
            tracing::info!(
                group = %self.group,
                handler = self.handler.name(),
                partitions = %partitions.join(", "),
                "partitions revoked"
            );
        }
    }

    /// Takes one message. Messages of partitions not owned, and below the position already
    /// reached, are skipped; undecodable ones are dead-lettered at once.
    pub async fn offer(&mut self, message: RawMessage) -> Result<(), Stopped> {
        let tp = message.topic_partition();
        let offset = message.offset;
        if !self.stored.contains_key(&tp) {
            return Ok(());
        }
        add(&self.stats.consumed, 1);
        if self
            .read_position(&tp)
            .is_some_and(|next| message.offset < next)
        {
            add(&self.stats.skipped, 1);
            return Ok(());
        }
        match decode(message.key.as_deref(), &message.value, message.timestamp) {
            Ok(event) => {
                self.stats.read_unapplied(&tp, event_time(&event));
                let record = Record {
                    topic: message.topic.clone(),
                    partition: message.partition,
                    offset: message.offset,
                    event,
                };
                self.pending.push((record, message));
            }
            Err(error) => {
                tracing::warn!(
                    group = %self.group,
                    topic = %message.topic,
                    partition = message.partition,
                    offset = message.offset,
                    %error,
                    "undecodable message sent to the dead-letter sink"
                );
                self.dead_letter(&message, error.to_string()).await?;
            }
        }
        self.read.insert(tp, offset + 1);
        self.opened_at.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Whether something was read and not yet applied.
    pub fn dirty(&self) -> bool {
        !self.read.is_empty()
    }

    /// Whether the batch is full or has waited long enough.
    pub fn due(&self) -> bool {
        self.pending.len() >= self.settings.max_events
            || self
                .opened_at
                .is_some_and(|t| t.elapsed() >= self.settings.max_wait)
    }

    /// How long until the open batch is due (`None` when there is none).
    pub fn time_to_due(&self) -> Option<Duration> {
        self.opened_at
            .map(|t| self.settings.max_wait.saturating_sub(t.elapsed()))
    }

    /// Applies what was read, with the positions it reaches, in one atomic handler call; retries
    /// while the store is down. A batch the handler rejects is applied one event at a time and the
    /// events it rejects are dead-lettered.
    pub async fn flush(&mut self) -> Result<Flushed, Stopped> {
        if self.read.is_empty() {
            return Ok(Flushed::Applied(Vec::new()));
        }
        // Every log line of this batch names it: group, handler, and the offsets it covers.
        let span = tracing::info_span!(
            "batch",
            otel.name = tracing::field::Empty,
            group = %self.group,
            handler = self.handler.name(),
            events = self.pending.len(),
            offsets = %self.batch_offsets(),
            trace_id = tracing::field::Empty,
        );
        let _traced = self.trace_batch(&span);
        let started = Instant::now();
        let flushed = tracing::Instrument::instrument(self.flush_batch(), span.clone()).await;
        span.in_scope(|| {
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                applied = flushed.is_ok(),
                "batch done"
            );
        });
        flushed
    }

    /// When tracing is on: names the batch's span, links it to the spans that published its
    /// events, and opens a `process` span in each event's own trace (a child of its producer's
    /// span, linked back to the batch), so that one search's trace reaches every consumer. The
    /// event spans end when the returned guard is dropped, after the batch. At most
    /// [`MAX_TRACED_EVENTS`] events of a batch are linked and get a span.
    fn trace_batch(&self, batch: &tracing::Span) -> Vec<tracing::Span> {
        if !bookstore_telemetry::enabled() {
            return Vec::new();
        }
        let handler = self.handler.name();
        batch.record("otel.name", format!("{handler} apply batch"));
        let traced: Vec<&RawMessage> = self
            .pending
            .iter()
            .map(|(_, raw)| raw)
            .filter(|raw| raw.trace_parent.is_some())
            .take(MAX_TRACED_EVENTS)
            .collect();
        for raw in &traced {
            bookstore_telemetry::add_link(batch, raw.trace_parent.as_deref());
        }
        bookstore_telemetry::record_trace_id(batch);
        traced
            .into_iter()
            .map(|raw| {
                let span = tracing::info_span!(
                    parent: None,
                    "process",
                    otel.name = %format_args!("{} process", raw.topic),
                    otel.kind = "consumer",
                    messaging.destination.name = %raw.topic,
                    messaging.destination.partition.id = raw.partition,
                    messaging.kafka.offset = raw.offset,
                    messaging.consumer.group.name = %self.group,
                    handler,
                );
                bookstore_telemetry::set_parent(&span, raw.trace_parent.as_deref());
                bookstore_telemetry::link_to(&span, batch);
                span
            })
            .collect()
    }

    /// `topic/partition:from..to` for each partition of the batch being gathered.
    fn batch_offsets(&self) -> String {
        self.read
            .iter()
            .map(|(tp, to)| {
                let from = self.stored.get(tp).copied().flatten().unwrap_or(0);
                format!("{}/{}:{from}..{to}", tp.topic, tp.partition)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn flush_batch(&mut self) -> Result<Flushed, Stopped> {
        let pending = std::mem::take(&mut self.pending);
        let targets = std::mem::take(&mut self.read);
        self.opened_at = None;
        let records: Vec<Record> = pending.iter().map(|(r, _)| r.clone()).collect();
        let batch = self.batch(records, &targets);
        let result = match self.apply(&batch).await {
            Ok(()) => Ok(()),
            Err(ApplyError::Rejected(reason)) => {
                tracing::warn!(
                    group = %self.group,
                    handler = self.handler.name(),
                    %reason,
                    events = pending.len(),
                    "batch rejected; applying its events one at a time"
                );
                self.apply_one_by_one(&pending, &targets).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                for (tp, to) in &targets {
                    self.stored.insert(tp.clone(), Some(*to));
                }
                self.stats.applied(targets.keys().map(|tp| {
                    let last = pending
                        .iter()
                        .rev()
                        .filter(|(r, _)| r.partition == tp.partition && r.topic == tp.topic)
                        .find_map(|(r, _)| event_time(&r.event));
                    (tp, last)
                }));
                add(&self.stats.applied, pending.len() as u64);
                add(&self.stats.batches, 1);
                Ok(Flushed::Applied(
                    targets
                        .into_iter()
                        .map(|(tp, next_offset)| Position {
                            topic: tp.topic,
                            partition: tp.partition,
                            next_offset,
                        })
                        .collect(),
                ))
            }
            Err(ApplyError::Stale) => {
                add(&self.stats.stale, 1);
                self.stats.unread();
                let stored = self.load_positions().await?;
                let mut reseek = Vec::new();
                for (tp, position) in self.stored.iter_mut() {
                    *position = stored.get(tp).copied();
                    reseek.push((tp.clone(), *position));
                }
                tracing::warn!(
                    group = %self.group,
                    handler = self.handler.name(),
                    partitions = %describe(&reseek),
                    "stored positions moved under this consumer; reading again from them"
                );
                Ok(Flushed::Reseek(reseek))
            }
            Err(ApplyError::Stopped) => Err(Stopped),
            // apply_one_by_one dead-letters rejected events and never returns Rejected.
            Err(ApplyError::Rejected(_)) => Err(Stopped),
        }
    }

    fn batch(&self, records: Vec<Record>, targets: &BTreeMap<TopicPartition, i64>) -> Batch {
        Batch {
            group: self.group.clone(),
            records,
            positions: targets
                .iter()
                .map(|(tp, to)| PositionUpdate {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    from: self.stored.get(tp).copied().flatten(),
                    to: *to,
                })
                .collect(),
        }
    }

    async fn apply_one_by_one(
        &mut self,
        pending: &[(Record, RawMessage)],
        targets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), ApplyError> {
        for (record, raw) in pending {
            let tp = raw.topic_partition();
            let step = BTreeMap::from([(tp.clone(), record.offset + 1)]);
            let single = self.batch(vec![record.clone()], &step);
            match self.apply(&single).await {
                Ok(()) => {}
                Err(ApplyError::Rejected(reason)) => {
                    tracing::warn!(
                        group = %self.group,
                        handler = self.handler.name(),
                        topic = %raw.topic,
                        partition = raw.partition,
                        offset = raw.offset,
                        %reason,
                        "event rejected by the handler sent to the dead-letter sink"
                    );
                    self.dead_letter(
                        raw,
                        format!("rejected by {}: {reason}", self.handler.name()),
                    )
                    .await
                    .map_err(|Stopped| ApplyError::Stopped)?;
                    self.apply(&self.batch(Vec::new(), &step)).await?;
                }
                Err(e) => return Err(e),
            }
            self.stored.insert(tp, Some(record.offset + 1));
        }
        // Positions past trailing undecodable messages.
        self.apply(&self.batch(Vec::new(), targets)).await
    }

    /// One handler call, retried with backoff while the store is down.
    async fn apply(&self, batch: &Batch) -> Result<(), ApplyError> {
        let mut delay = BACKOFF_START;
        loop {
            // The store write, as a span of its own when tracing is on.
            let span = if bookstore_telemetry::enabled() {
                tracing::info_span!(
                    "store write",
                    otel.name = %format_args!("{} store write", self.handler.name()),
                    otel.kind = "client",
                    events = batch.records.len(),
                )
            } else {
                tracing::Span::none()
            };
            let applied = tracing::Instrument::instrument(self.handler.apply(batch), span).await;
            match applied {
                Ok(()) => return Ok(()),
                Err(HandlerError::Rejected(reason)) => return Err(ApplyError::Rejected(reason)),
                Err(HandlerError::StalePosition(_)) => return Err(ApplyError::Stale),
                Err(HandlerError::Transient(error)) => {
                    add(&self.stats.retries, 1);
                    if let Some(suppressed) = self.retry_warning.check() {
                        tracing::warn!(
                            group = %self.group,
                            handler = self.handler.name(),
                            error = %error,
                            suppressed,
                            "store unavailable; retrying the batch"
                        );
                    }
                    self.pause(&mut delay)
                        .await
                        .map_err(|Stopped| ApplyError::Stopped)?;
                }
            }
        }
    }

    async fn load_positions(&self) -> Result<HashMap<TopicPartition, i64>, Stopped> {
        let mut delay = BACKOFF_START;
        loop {
            match self.handler.positions(&self.group).await {
                Ok(positions) => {
                    return Ok(positions.into_iter().map(Position::into_entry).collect());
                }
                Err(error) => {
                    add(&self.stats.retries, 1);
                    if let Some(suppressed) = self.retry_warning.check() {
                        tracing::warn!(
                            group = %self.group,
                            handler = self.handler.name(),
                            %error,
                            suppressed,
                            "cannot read stored positions; retrying"
                        );
                    }
                    self.pause(&mut delay).await?;
                }
            }
        }
    }

    async fn dead_letter(&self, message: &RawMessage, error: String) -> Result<(), Stopped> {
        let letter = DeadLetter {
            group: self.group.clone(),
            message: message.clone(),
            error,
        };
        let mut delay = BACKOFF_START;
        loop {
            match self.dead_letters.send(&letter).await {
                Ok(()) => {
                    add(&self.stats.dead_lettered, 1);
                    return Ok(());
                }
                Err(error) => {
                    add(&self.stats.retries, 1);
                    if let Some(suppressed) = self.retry_warning.check() {
                        tracing::warn!(group = %self.group, %error, suppressed, "cannot store a dead letter; retrying");
                    }
                    self.pause(&mut delay).await?;
                }
            }
        }
    }

    async fn pause(&self, delay: &mut Duration) -> Result<(), Stopped> {
        tokio::select! {
            () = self.stop.cancelled() => Err(Stopped),
            () = tokio::time::sleep(*delay) => {
                *delay = (*delay * 2).min(BACKOFF_MAX);
                Ok(())
            }
        }
    }
}

fn describe(starts: &[(TopicPartition, Option<i64>)]) -> String {
    starts
        .iter()
        .map(|(tp, at)| match at {
            Some(offset) => format!("{tp}@{offset}"),
            None => format!("{tp}@start"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;

    use bookstore_domain::events::SearchEvent;

    use super::*;

    /// An in-memory store with the handler contract: check-and-move positions, apply, all or
    /// nothing. It rejects events whose query is "poison", and fails transiently `outages` times.
    #[derive(Default)]
    struct Memory {
        state: Mutex<(BTreeMap<TopicPartition, i64>, Vec<String>)>,
        outages: Mutex<u32>,
    }

    #[async_trait]
    impl EventHandler for Memory {
        fn name(&self) -> &str {
            "memory"
        }
        async fn positions(&self, _: &str) -> Result<Vec<Position>, HandlerError> {
            let state = self.state.lock().unwrap();
            Ok(state
                .0
                .iter()
                .map(|(tp, n)| Position {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    next_offset: *n,
                })
                .collect())
        }
        async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
            {
                let mut outages = self.outages.lock().unwrap();
                if *outages > 0 {
                    *outages -= 1;
                    return Err(HandlerError::Transient("down".into()));
                }
            }
            let mut state = self.state.lock().unwrap();
            for u in &batch.positions {
                let tp = TopicPartition {
                    topic: u.topic.clone(),
                    partition: u.partition,
                };
                if state.0.get(&tp).copied() != u.from {
                    return Err(HandlerError::StalePosition("moved".into()));
                }
            }
            let queries: Vec<String> = batch
                .records
                .iter()
                .filter_map(|r| r.event.as_search().map(|e| e.query_normalized.clone()))
                .collect();
            if queries.iter().any(|q| q == "poison") {
                return Err(HandlerError::Rejected("poison".into()));
            }
            for u in &batch.positions {
                state.0.insert(
                    TopicPartition {
                        topic: u.topic.clone(),
                        partition: u.partition,
                    },
                    u.to,
                );
            }
            state.1.extend(queries);
            Ok(())
        }
    }

    #[derive(Default)]
    struct Letters(Mutex<Vec<DeadLetter>>);

    #[async_trait]
    impl DeadLetters for Letters {
        async fn send(&self, letter: &DeadLetter) -> Result<(), SinkError> {
            self.0.lock().unwrap().push(letter.clone());
            Ok(())
        }
    }

    fn message(partition: i32, offset: i64, query: &str) -> RawMessage {
        let event = SearchEvent::new(
            uuid::Uuid::now_v7(),
            chrono::Utc::now(),
            None,
            query,
            0,
            vec![],
        );
        RawMessage {
            topic: "t".into(),
            partition,
            offset,
            key: Some(query.as_bytes().to_vec()),
            value: event.to_json(),
            timestamp: None,
            trace_parent: None,
        }
    }

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition {
            topic: "t".into(),
            partition,
        }
    }

    fn pipeline(handler: Arc<Memory>, letters: Arc<Letters>) -> Pipeline {
        Pipeline::new(
            "g",
            handler,
            letters,
            BatchSettings {
                max_events: 3,
                max_wait: Duration::from_secs(60),
            },
            CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn batches_apply_with_their_positions_and_duplicates_are_skipped() {
        let memory = Arc::new(Memory::default());
        let mut p = pipeline(memory.clone(), Arc::default());
        assert_eq!(
            p.assign(&[tp(0), tp(1)]).await.unwrap(),
            vec![(tp(0), None), (tp(1), None)]
        );
        p.offer(message(0, 0, "a")).await.unwrap();
        p.offer(message(1, 5, "b")).await.unwrap();
        assert!(!p.due());
        p.offer(message(0, 1, "c")).await.unwrap();
        assert!(p.due());
        assert_eq!(p.read_position(&tp(0)), Some(2));
        let Flushed::Applied(positions) = p.flush().await.unwrap() else {
            panic!()
        };
        assert_eq!(positions.len(), 2);
        // Re-delivered messages below the stored position are skipped.
        p.offer(message(0, 1, "c")).await.unwrap();
        p.offer(message(1, 5, "b")).await.unwrap();
        assert!(!p.dirty());
        assert_eq!(p.stats().skipped.load(Ordering::Relaxed), 2);
        let state = memory.state.lock().unwrap();
        assert_eq!(state.1, ["a", "b", "c"]);
        assert_eq!(state.0.get(&tp(0)), Some(&2));
        assert_eq!(state.0.get(&tp(1)), Some(&6));
    }

    #[tokio::test]
    async fn a_new_owner_resumes_from_the_stored_positions() {
        let memory = Arc::new(Memory::default());
        let mut first = pipeline(memory.clone(), Arc::default());
        first.assign(&[tp(0)]).await.unwrap();
        first.offer(message(0, 0, "a")).await.unwrap();
        first.flush().await.unwrap();
        first
            .offer(message(0, 1, "lost-with-the-crash"))
            .await
            .unwrap();
        drop(first);
        let mut second = pipeline(memory.clone(), Arc::default());
        assert_eq!(
            second.assign(&[tp(0)]).await.unwrap(),
            vec![(tp(0), Some(1))]
        );
    }

    #[tokio::test]
    async fn a_stale_consumer_applies_nothing_and_rereads_from_the_store() {
        let memory = Arc::new(Memory::default());
        let mut zombie = pipeline(memory.clone(), Arc::default());
        let mut owner = pipeline(memory.clone(), Arc::default());
        zombie.assign(&[tp(0)]).await.unwrap();
        owner.assign(&[tp(0)]).await.unwrap();
        owner.offer(message(0, 0, "a")).await.unwrap();
        owner.offer(message(0, 1, "b")).await.unwrap();
        owner.flush().await.unwrap();
        zombie.offer(message(0, 0, "a")).await.unwrap();
        assert_eq!(
            zombie.flush().await.unwrap(),
            Flushed::Reseek(vec![(tp(0), Some(2))])
        );
        assert_eq!(zombie.read_position(&tp(0)), Some(2));
        assert_eq!(memory.state.lock().unwrap().1, ["a", "b"]);
    }

    #[tokio::test]
    async fn poison_is_dead_lettered_and_the_rest_applied() {
        let memory = Arc::new(Memory::default());
        let letters = Arc::new(Letters::default());
        let mut p = pipeline(memory.clone(), letters.clone());
        p.assign(&[tp(0)]).await.unwrap();
        p.offer(message(0, 0, "a")).await.unwrap();
        p.offer(RawMessage {
            value: b"{not json".to_vec(),
            ..message(0, 1, "x")
        })
        .await
        .unwrap();
        p.offer(message(0, 2, "poison")).await.unwrap();
        p.offer(message(0, 3, "b")).await.unwrap();
        p.offer(RawMessage {
            value: b"[]".to_vec(),
            key: None,
            ..message(0, 4, "x")
        })
        .await
        .unwrap();
        p.flush().await.unwrap();
        let state = memory.state.lock().unwrap();
        assert_eq!(state.1, ["a", "b"]);
        assert_eq!(state.0.get(&tp(0)), Some(&5));
        let letters = letters.0.lock().unwrap();
        let offsets: Vec<i64> = letters.iter().map(|l| l.message.offset).collect();
        assert_eq!(offsets, [1, 4, 2]);
        assert!(
            letters[0].error.contains("not JSON"),
            "{}",
            letters[0].error
        );
        assert!(
            letters[2].error.contains("rejected by memory"),
            "{}",
            letters[2].error
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_outage_is_retried_without_skipping() {
        let memory = Arc::new(Memory::default());
        *memory.outages.lock().unwrap() = 5;
        let mut p = pipeline(memory.clone(), Arc::default());
        p.assign(&[tp(0)]).await.unwrap();
        p.offer(message(0, 0, "a")).await.unwrap();
        p.flush().await.unwrap();
        assert_eq!(memory.state.lock().unwrap().1, ["a"]);
        assert_eq!(p.stats().retries.load(Ordering::Relaxed), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_during_an_outage_abandons_the_batch() {
        let memory = Arc::new(Memory::default());
        *memory.outages.lock().unwrap() = u32::MAX;
        let mut p = pipeline(memory.clone(), Arc::default());
        p.assign(&[tp(0)]).await.unwrap();
        p.offer(message(0, 0, "a")).await.unwrap();
        let stop = p.stop_token().clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.cancel();
        });
        assert_eq!(p.flush().await, Err(Stopped));
        assert!(memory.state.lock().unwrap().1.is_empty());
    }

    #[tokio::test]
    async fn lag_counts_from_the_earliest_retained_offset() {
        let memory = Arc::new(Memory::default());
        let mut p = pipeline(memory.clone(), Arc::default());
        p.assign(&[tp(0), tp(1), tp(2), tp(3)]).await.unwrap();
        p.offer(message(1, 0, "a")).await.unwrap();
        p.offer(message(3, 7, "b")).await.unwrap();
        p.flush().await.unwrap();
        p.record_lag(|tp| match tp.partition {
            // No position: read from the earliest retained offset.
            0 => Some(LogRange {
                start: Some(5),
                end: 8,
            }),
            // A position older than the earliest retained offset continues from there.
            1 => Some(LogRange {
                start: Some(4),
                end: 10,
            }),
            // No position and no known start: no figure.
            2 => Some(LogRange {
                start: None,
                end: 3,
            }),
            _ => Some(LogRange {
                start: Some(0),
                end: 9,
            }),
        });
        let (lag, measured) = p.stats().lag();
        assert!(measured.is_some());
        assert_eq!(lag, BTreeMap::from([(tp(0), 3), (tp(1), 6), (tp(3), 1)]));
    }

    #[tokio::test]
    async fn a_store_ahead_of_the_log_is_reported() {
        let memory = Arc::new(Memory::default());
        let mut p = pipeline(memory.clone(), Arc::default());
        p.assign(&[tp(0), tp(1)]).await.unwrap();
        p.offer(message(0, 41, "a")).await.unwrap();
        p.offer(message(1, 2, "b")).await.unwrap();
        p.flush().await.unwrap();
        // Partition 0's store is at 42; the log (lost and begun again) ends at 5.
        p.record_lag(|tp| {
            Some(LogRange {
                start: Some(0),
                end: if tp.partition == 0 { 5 } else { 3 },
            })
        });
        let ahead = p
            .stats()
            .ahead_of_log
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(ahead, 1);
        p.record_lag(|_| {
            Some(LogRange {
                start: Some(0),
                end: 50,
            })
        });
        let ahead = p
            .stats()
            .ahead_of_log
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(ahead, 0, "caught up again");
    }

    #[tokio::test]
    async fn the_oldest_unapplied_age_follows_reads_batches_and_lag() {
        let memory = Arc::new(Memory::default());
        let mut p = pipeline(memory.clone(), Arc::default());
        let stats = p.stats();
        p.assign(&[tp(0)]).await.unwrap();
        p.offer(message(0, 0, "a")).await.unwrap();
        // Read and not applied: its own age.
        let later = chrono::Utc::now() + chrono::TimeDelta::seconds(10);
        let age = stats.oldest_unapplied_age(later).unwrap();
        assert!(
            age >= Duration::from_secs(10) && age < Duration::from_secs(15),
            "{age:?}"
        );
        p.flush().await.unwrap();
        assert_eq!(
            stats.oldest_unapplied_age(later),
            None,
            "applied, and the lag not measured yet"
        );
        p.record_lag(|_| {
            Some(LogRange {
                start: Some(0),
                end: 1,
            })
        });
        assert_eq!(stats.oldest_unapplied_age(later), Some(Duration::ZERO));
        // Two more in the log, not read yet: no older than the last time it was caught up.
        p.record_lag(|_| {
            Some(LogRange {
                start: Some(0),
                end: 3,
            })
        });
        let age = stats.oldest_unapplied_age(later).unwrap();
        assert!(
            age > Duration::from_secs(5) && age <= Duration::from_secs(10),
            "{age:?}"
        );
        // Given up: neither its lag nor its events count.
        p.revoke(&[tp(0)]);
        assert_eq!(stats.oldest_unapplied_age(later), Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn revoked_partitions_drop_their_unapplied_messages() {
        let memory = Arc::new(Memory::default());
        let mut p = pipeline(memory.clone(), Arc::default());
        p.assign(&[tp(0), tp(1)]).await.unwrap();
        p.offer(message(0, 0, "a")).await.unwrap();
        p.offer(message(1, 0, "b")).await.unwrap();
        p.revoke(&[tp(1)]);
        p.offer(message(1, 1, "not-ours")).await.unwrap();
        p.flush().await.unwrap();
        assert_eq!(memory.state.lock().unwrap().1, ["a"]);
    }
}
