//! A consumer-group member on Kafka feeding the consumer framework's [`Pipeline`].
//!
//! The member runs on its own thread with a `BaseConsumer`, so that the rebalance callback (which
//! librdkafka runs inside `poll`) can ask the handler's store where each new partition stands and
//! start it there: the store, not Kafka, holds the authoritative positions. A partition the store
//! knows nothing of (a new store, or a lost one) is read from its beginning. Kafka's committed
//! offsets are written after each applied batch, for lag monitoring and tools only.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bookstore_consumer::{Flushed, LogRange, Pipeline, RateLimited, RawMessage, Stopped};
use bookstore_domain::TopicPartition;
use chrono::DateTime;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;

use crate::KafkaSettings;

/// Consumer-group timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSettings {
    /// `session.timeout.ms`: how long a silent member keeps its partitions.
    pub session_timeout: Duration,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(10),
        }
    }
}

struct GroupContext {
    pipeline: Mutex<Pipeline>,
    runtime: Handle,
}

impl GroupContext {
    fn pipeline(&self) -> MutexGuard<'_, Pipeline> {
        self.pipeline.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for GroupContext {
    /// librdkafka's statistics (every `statistics.interval.ms`) carry each partition's low and
    /// high watermarks: the consumer lag is measured against them.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let ranges: std::collections::HashMap<(String, i32), LogRange> = statistics
            .topics
            .iter()
            .flat_map(|(topic, t)| {
                t.partitions
                    .iter()
                    .filter(|(p, part)| **p >= 0 && part.hi_offset >= 0)
                    .map(move |(p, part)| {
                        let range = LogRange {
                            start: (part.lo_offset >= 0).then_some(part.lo_offset),
                            end: part.hi_offset,
                        };
                        ((topic.clone(), *p), range)
                    })
            })
            .collect();
        self.pipeline()
            .record_lag(|tp| ranges.get(&(tp.topic.clone(), tp.partition)).copied());
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition {
                topic: e.topic().to_owned(),
                partition: e.partition(),
            })
            .collect();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Start each partition where the handler's store says; with no stored position,
                // at the beginning of the partition (its earliest retained offset), never at the
                // group's committed offset: a store that was lost must be rebuilt from the whole
                // log, not from where the group had got to.
                let starts = {
                    let mut pipeline = self.pipeline();
                    self.runtime.block_on(pipeline.assign(&partitions))
                };
                if let Ok(starts) = starts {
                    let rebuilt: Vec<&TopicPartition> = starts
                        .iter()
                        .filter(|(_, start)| start.is_none())
                        .map(|(tp, _)| tp)
                        .collect();
                    let committed = committed_offsets(consumer, &rebuilt);
                    for (tp, start) in &starts {
                        let offset = start.map_or(Offset::Beginning, Offset::Offset);
                        if let Err(error) =
                            tpl.set_partition_offset(&tp.topic, tp.partition, offset)
                        {
                            tracing::warn!(%error, "cannot set a partition's start offset");
                        }
                        if start.is_none() {
                            self.pipeline().log_rebuild(
                                tp,
                                committed.get(&(tp.topic.clone(), tp.partition)).copied(),
                            );
                        }
                    }
                }
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // What was read from these partitions and not applied is dropped; their next
                // owner reads it again from the stored position.
                self.pipeline().revoke(&partitions);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "consumer group rebalance failed");
                let mut pipeline = self.pipeline();
                let owned: Vec<_> = pipeline.owned().cloned().collect();
                pipeline.revoke(&owned);
                consumer.unassign()
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "cannot change the partition assignment");
        }
    }
}

/// One member of a consumer group reading Kafka topics into a [`Pipeline`].
pub struct KafkaConsumer {
    settings: KafkaSettings,
    topics: Vec<String>,
    pipeline: Pipeline,
    group: GroupSettings,
}

impl KafkaConsumer {
    pub fn new(
        settings: KafkaSettings,
        topics: Vec<String>,
        pipeline: Pipeline,
        group: GroupSettings,
    ) -> Self {
        Self {
            settings,
            topics,
            pipeline,
            group,
        }
    }

    pub fn stats(&self) -> std::sync::Arc<bookstore_consumer::ConsumerStats> {
        self.pipeline.stats()
    }

    /// Consumes on a dedicated thread until the pipeline's stop token is cancelled; then applies
    /// the batch in flight once more (or abandons it if the store is down) and leaves the group.
    pub async fn run(self) -> Result<(), KafkaError> {
        let runtime = Handle::current();
        tokio::task::spawn_blocking(move || self.run_blocking(runtime))
            .await
            .unwrap_or_else(|join| {
                tracing::error!(error = %join, "the Kafka consumer thread panicked");
                Ok(())
            })
    }

    fn run_blocking(self, runtime: Handle) -> Result<(), KafkaError> {
        let stop = self.pipeline.stop_token().clone();
        let group_id = self.pipeline.group().to_owned();
        let config = self.settings.client_config_with(&[
            ("group.id", group_id.clone()),
            ("enable.auto.commit", "false".to_owned()),
            ("enable.auto.offset.store", "false".to_owned()),
            ("auto.offset.reset", "earliest".to_owned()),
            // Statistics every few seconds: the partitions' high watermarks, for the lag.
            ("statistics.interval.ms", "5000".to_owned()),
            (
                "session.timeout.ms",
                self.group.session_timeout.as_millis().to_string(),
            ),
            (
                "heartbeat.interval.ms",
                (self.group.session_timeout.as_millis() / 4)
                    .max(100)
                    .to_string(),
            ),
        ]);
        let consumer: BaseConsumer<GroupContext> = config.create_with_context(GroupContext {
            pipeline: Mutex::new(self.pipeline),
            runtime: runtime.clone(),
        })?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        tracing::info!(group = %group_id, topics = ?self.topics, "consumer started");
        let poll_warning = RateLimited::new(Duration::from_secs(10));
        while !stop.is_cancelled() {
            // With a batch open, only take what librdkafka already holds: when nothing more is
            // ready the batch is applied at once, so an idle consumer adds no delay and a busy one
            // applies whole fetches.
            let wait = if consumer.context().pipeline().dirty() {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            };
            // No lock is held across poll: the rebalance callback runs inside it.
            let polled = consumer.poll(wait).map(|m| m.map(|m| to_raw(&m)));
            let mut pipeline = consumer.context().pipeline();
            let outcome = match polled {
                Some(Ok(message)) => runtime.block_on(pipeline.offer(message)).and_then(|()| {
                    if pipeline.due() {
                        flush(&consumer, &mut pipeline, &runtime)
                    } else {
                        Ok(())
                    }
                }),
                Some(Err(error)) => {
                    if let Some(suppressed) = poll_warning.check() {
                        tracing::warn!(%error, suppressed, "Kafka consumer error");
                    }
                    Ok(())
                }
                None if pipeline.dirty() => flush(&consumer, &mut pipeline, &runtime),
                None => Ok(()),
            };
            if outcome.is_err() {
                break;
            }
        }
        // Finish the batch in flight if the store answers now; else abandon it.
        {
            let mut pipeline = consumer.context().pipeline();
            if pipeline.dirty() {
                let _ = flush(&consumer, &mut pipeline, &runtime);
            }
        }
        consumer.unsubscribe();
        drop(consumer); // closes the consumer: leaves the group at once
        tracing::info!(group = %group_id, "left the consumer group");
        Ok(())
    }
}

fn flush(
    consumer: &BaseConsumer<GroupContext>,
    pipeline: &mut Pipeline,
    runtime: &Handle,
) -> Result<(), Stopped> {
    match runtime.block_on(pipeline.flush())? {
        Flushed::Applied(positions) if !positions.is_empty() => {
            let mut tpl = TopicPartitionList::new();
            for p in &positions {
                let _ =
                    tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next_offset));
            }
            if let Err(error) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(%error, "cannot commit offsets to Kafka (only used for lag)");
            }
        }
        Flushed::Applied(_) => {}
        Flushed::Reseek(starts) => {
            for (tp, start) in starts {
                let offset = start.map_or(Offset::Beginning, Offset::Offset);
                if let Err(error) =
                    consumer.seek(&tp.topic, tp.partition, offset, Duration::from_secs(5))
                {
                    tracing::warn!(%error, topic = %tp.topic, partition = tp.partition, "cannot seek");
                }
            }
        }
    }
    Ok(())
}

/// How long the rebalance callback waits for the group's committed offsets (only used to word
/// the log line of a partition read from the beginning).
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(2);

/// The group's committed offsets of `partitions` (those it has), or none if the coordinator does
/// not answer in time.
fn committed_offsets(
    consumer: &BaseConsumer<GroupContext>,
    partitions: &[&TopicPartition],
) -> std::collections::HashMap<(String, i32), i64> {
    if partitions.is_empty() {
        return std::collections::HashMap::new();
    }
    let mut tpl = TopicPartitionList::new();
    for tp in partitions {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    match consumer.committed_offsets(tpl, COMMITTED_TIMEOUT) {
        Ok(committed) => committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some(((e.topic().to_owned(), e.partition()), offset)),
                _ => None,
            })
            .collect(),
        Err(error) => {
            tracing::debug!(%error, "cannot read the group's committed offsets");
            std::collections::HashMap::new()
        }
    }
}

fn to_raw<M: Message>(message: &M) -> RawMessage {
    RawMessage {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        timestamp: message
            .timestamp()
            .to_millis()
            .and_then(DateTime::from_timestamp_millis),
        trace_parent: trace_parent(message),
    }
}

/// The `traceparent` header of a message, when tracing is on and the header is text.
fn trace_parent<M: Message>(message: &M) -> Option<String> {
    if !bookstore_telemetry::enabled() {
        return None;
    }
    message
        .headers()?
        .iter()
        .find(|h| h.key == bookstore_telemetry::TRACEPARENT)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}
