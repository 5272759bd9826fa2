//! A consumer-group member of the embedded log.
//!
//! Membership works through the log file: each member writes a heartbeat every
//! [`GroupSettings::heartbeat`]; members are ordered by id and member `i` of `n` wants the
//! partitions whose index modulo `n` is `i`. A member owns a partition through a lease it renews
//! with each heartbeat; it takes a partition only when the lease is free or expired (its owner
//! stopped beating for [`GroupSettings::session_timeout`]), and gives up the ones it no longer
//! wants. A member that leaves cleanly deletes its leases, so the others take over within one
//! heartbeat. Even if two members briefly read one partition, the handler's position check lets
//! only one of them apply each batch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bookstore_consumer::{Flushed, Pipeline, Stopped};
use bookstore_domain::{Position, TopicPartition};
use chrono::Utc;
use sqlx::Row;
use tokio::time::Instant;
use uuid::Uuid;

use crate::log::{EventLog, EventLogError, SAFETY_POLL};

/// Timing of group membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSettings {
    pub heartbeat: Duration,
    pub session_timeout: Duration,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            session_timeout: Duration::from_secs(10),
        }
    }
}

/// One member of a consumer group reading topics of the embedded log into a [`Pipeline`].
pub struct EmbeddedConsumer {
    log: Arc<EventLog>,
    topics: Vec<String>,
    pipeline: Pipeline,
    settings: GroupSettings,
    member: String,
}

impl EmbeddedConsumer {
    pub fn new(
        log: Arc<EventLog>,
        topics: Vec<String>,
        pipeline: Pipeline,
        settings: GroupSettings,
    ) -> Self {
        Self {
            log,
            topics,
            pipeline,
            settings,
            member: Uuid::new_v4().to_string(),
        }
    }

    pub fn stats(&self) -> Arc<bookstore_consumer::ConsumerStats> {
        self.pipeline.stats()
    }

    /// Consumes until the pipeline's stop token is cancelled, then applies what it has read once
    /// more (or abandons it if the store is down) and leaves the group.
    pub async fn run(mut self) -> Result<(), EventLogError> {
        let result = self.consume().await;
        // Finish the batch in flight if the store answers at once; else it is abandoned and read
        // again by the next owner.
        if self.pipeline.dirty() {
            if let Ok(Flushed::Applied(positions)) = self.pipeline.flush().await {
                let _ = self.log.commit(self.pipeline.group(), &positions).await;
            }
        }
        self.leave().await;
        result
    }

    async fn consume(&mut self) -> Result<(), EventLogError> {
        let stop = self.pipeline.stop_token().clone();
        let mut changes = self.log.changes();
        let mut next_heartbeat = Instant::now();
        let mut partitions = BTreeSet::new();
        for topic in &self.topics {
            let count = self.log.partitions(topic).await?;
            for p in 0..count {
                partitions.insert(TopicPartition {
                    topic: topic.clone(),
                    partition: i32::try_from(p).unwrap_or(i32::MAX),
                });
            }
        }
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            if Instant::now() >= next_heartbeat {
                if self.pipeline.dirty() && self.flush().await.is_err() {
                    return Ok(());
                }
                if self.rebalance(&partitions).await.is_err() {
                    return Ok(());
                }
                self.record_lag().await;
                next_heartbeat = Instant::now() + self.settings.heartbeat;
            }
            changes.borrow_and_update();
            let read = match self.read_some().await {
                Ok(read) => read,
                Err(Stopped) => return Ok(()),
            };
            if (read == 0 && self.pipeline.dirty()) || self.pipeline.due() {
                if self.flush().await.is_err() {
                    return Ok(());
                }
                continue;
            }
            if read > 0 {
                continue;
            }
            let wait = next_heartbeat
                .min(Instant::now() + SAFETY_POLL)
                .min(Instant::now() + self.pipeline.time_to_due().unwrap_or(SAFETY_POLL));
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                _ = changes.changed() => {}
                () = tokio::time::sleep_until(wait) => {}
            }
        }
    }

    /// Measures each owned partition's lag against the log's retained offsets.
    async fn record_lag(&self) {
        let mut ranges = BTreeMap::new();
        for topic in &self.topics {
            match self.log.ranges(topic).await {
                Ok(found) => ranges.extend(found),
                Err(error) => {
                    tracing::debug!(%error, "cannot read the event log's offsets");
                    return;
                }
            }
        }
        self.pipeline.record_lag(|tp| ranges.get(tp).copied());
    }

    /// Reads the next messages of every owned partition into the pipeline; returns how many.
    async fn read_some(&mut self) -> Result<usize, Stopped> {
        let owned: Vec<TopicPartition> = self.pipeline.owned().cloned().collect();
        let mut total = 0;
        for tp in owned {
            // Without a stored position, from the partition's earliest retained message.
            let position = self.pipeline.read_position(&tp);
            let from = position.unwrap_or(0);
            let messages = match self.log.read(&tp, from, 500).await {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the event log");
                    continue;
                }
            };
            if let (Some(from), Some(first)) = (position, messages.first()) {
                if first.offset > from {
                    self.report_trimmed(&tp, from).await;
                }
            }
            total += messages.len();
            for message in messages {
                self.pipeline.offer(message).await?;
                if self.pipeline.due() {
                    self.flush().await?;
                }
            }
        }
        Ok(total)
    }

    /// Says how many messages were trimmed from `tp` before this group applied them, when its
    /// position `from` is older than the earliest message the log still holds. (A gap further on
    /// is a compacted topic's, and no loss.)
    async fn report_trimmed(&self, tp: &TopicPartition, from: i64) {
        let Ok(range) = self.log.range(tp).await else {
            return;
        };
        if let Some(start) = range.start.filter(|start| *start > from) {
            tracing::warn!(
                group = %self.pipeline.group(),
                handler = self.pipeline.handler_name(),
                topic = %tp.topic,
                partition = tp.partition,
                position = from,
                earliest = start,
                missed = start - from,
                "the group's position is older than the earliest message the log still holds: \
                 {} messages were trimmed (or compacted away) before it applied them; continuing \
                 from the earliest",
                start - from
            );
        }
    }

    async fn flush(&mut self) -> Result<(), Stopped> {
        match self.pipeline.flush().await? {
            Flushed::Applied(positions) => {
                if let Err(error) = self.log.commit(self.pipeline.group(), &positions).await {
                    tracing::debug!(%error, "cannot record committed offsets (only used for lag)");
                }
            }
            Flushed::Reseek(_) => {}
        }
        Ok(())
    }

    /// Heartbeat, then take and give up partitions to match this member's share.
    async fn rebalance(&mut self, partitions: &BTreeSet<TopicPartition>) -> Result<(), Stopped> {
        let (wanted, held) = match self.heartbeat(partitions).await {
            Ok(v) => v,
            Err(error) => {
                tracing::warn!(%error, "cannot reach the event log for the group heartbeat");
                return Ok(());
            }
        };
        let owned: BTreeSet<TopicPartition> = self.pipeline.owned().cloned().collect();
        let revoked: Vec<_> = owned.difference(&held).cloned().collect();
        self.pipeline.revoke(&revoked);
        let assigned: Vec<_> = held.difference(&owned).cloned().collect();
        if !assigned.is_empty() {
            let starts = self.pipeline.assign(&assigned).await?;
            if starts.iter().any(|(_, start)| start.is_none()) {
                // Only to word the log line: a partition with no stored position is read from
                // its earliest retained message whatever the group committed.
                let committed: BTreeMap<TopicPartition, i64> = self
                    .log
                    .committed(self.pipeline.group())
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(Position::into_entry)
                    .collect();
                for (tp, _) in starts.iter().filter(|(_, start)| start.is_none()) {
                    self.pipeline.log_rebuild(tp, committed.get(tp).copied());
                }
            }
        }
        tracing::trace!(member = %self.member, ?wanted, ?held, "heartbeat");
        Ok(())
    }

    /// Writes this member's heartbeat and renews or takes the leases of its share; returns the
    /// share and the partitions it holds now.
    async fn heartbeat(
        &self,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Result<(BTreeSet<TopicPartition>, BTreeSet<TopicPartition>), EventLogError> {
        let group = self.pipeline.group();
        let now = Utc::now().timestamp_millis();
        let session = i64::try_from(self.settings.session_timeout.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.log.begin().await?;
        sqlx::query(concat!(
            "INSERT INTO group_members (group_id, member, heartbeat_at) VALUES (?, ?, ?) ",
            "ON CONFLICT (group_id, member) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
        ))
        .bind(group)
        .bind(&self.member)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM group_members WHERE group_id = ? AND heartbeat_at < ?")
            .bind(group)
            .bind(now - session)
            .execute(&mut *tx)
            .await?;
        let members: Vec<String> = sqlx::query_scalar(
            "SELECT member FROM group_members WHERE group_id = ? ORDER BY member",
        )
        .bind(group)
        .fetch_all(&mut *tx)
        .await?;
        let index = members.iter().position(|m| *m == self.member).unwrap_or(0);
        let wanted: BTreeSet<TopicPartition> = partitions
            .iter()
            .enumerate()
            .filter(|(i, _)| i % members.len().max(1) == index)
            .map(|(_, tp)| tp.clone())
            .collect();
        // Give up what is no longer this member's share.
        for tp in partitions.difference(&wanted) {
            sqlx::query(
                "DELETE FROM partition_owners WHERE group_id = ? AND topic = ? AND partition = ? AND member = ?",
            )
            .bind(group)
            .bind(&tp.topic)
            .bind(tp.partition)
            .bind(&self.member)
            .execute(&mut *tx)
            .await?;
        }
        // Renew or take the share's leases where free, expired or already ours.
        for tp in &wanted {
            sqlx::query(concat!(
                "INSERT INTO partition_owners (group_id, topic, partition, member, expires_at) ",
                "VALUES (?1, ?2, ?3, ?4, ?5) ",
                "ON CONFLICT (group_id, topic, partition) DO UPDATE ",
                "SET member = excluded.member, expires_at = excluded.expires_at ",
                "WHERE partition_owners.member = excluded.member OR partition_owners.expires_at < ?6"
            ))
            .bind(group)
            .bind(&tp.topic)
            .bind(tp.partition)
            .bind(&self.member)
            .bind(now + session)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let rows = sqlx::query(
            "SELECT topic, partition FROM partition_owners WHERE group_id = ? AND member = ?",
        )
        .bind(group)
        .bind(&self.member)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut held = BTreeSet::new();
        for row in rows {
            let tp = TopicPartition {
                topic: row.try_get("topic")?,
                partition: row.try_get("partition")?,
            };
            if partitions.contains(&tp) {
                held.insert(tp);
            }
        }
        Ok((wanted, held))
    }

    /// Deletes this member and its leases so that the others take over at their next heartbeat.
    async fn leave(&mut self) {
        let group = self.pipeline.group().to_owned();
        let result = async {
            let mut tx = self.log.begin().await?;
            sqlx::query("DELETE FROM partition_owners WHERE group_id = ? AND member = ?")
                .bind(&group)
                .bind(&self.member)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM group_members WHERE group_id = ? AND member = ?")
                .bind(&group)
                .bind(&self.member)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, EventLogError>(())
        }
        .await;
        let owned: Vec<_> = self.pipeline.owned().cloned().collect();
        self.pipeline.revoke(&owned);
        self.log.notify_change();
        match result {
            Ok(()) => {
                tracing::info!(group = %group, member = %self.member, "left the consumer group")
            }
            Err(error) => tracing::warn!(%error, "could not leave the consumer group cleanly"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bookstore_consumer::BatchSettings;
    use bookstore_domain::events::SearchEvent;
    use bookstore_domain::{Batch, EventHandler, HandlerError};
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// A handler keeping its positions and the queries it applied, checking positions as a
    /// store does.
    #[derive(Default)]
    struct Memory(Mutex<(BTreeMap<TopicPartition, i64>, Vec<String>)>);

    #[async_trait]
    impl EventHandler for Memory {
        fn name(&self) -> &str {
            "memory"
        }
        async fn positions(&self, _: &str) -> Result<Vec<Position>, HandlerError> {
            let state = self.0.lock().unwrap();
            Ok(state
                .0
                .iter()
                .map(|(tp, next)| Position {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    next_offset: *next,
                })
                .collect())
        }
        async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
            let mut state = self.0.lock().unwrap();
            for u in &batch.positions {
                let tp = TopicPartition {
                    topic: u.topic.clone(),
                    partition: u.partition,
                };
                if state.0.get(&tp).copied() != u.from {
                    return Err(HandlerError::StalePosition(tp.to_string()));
                }
                state.0.insert(tp, u.to);
            }
            state.1.extend(
                batch
                    .records
                    .iter()
                    .filter_map(|r| r.event.as_search().map(|e| e.query.clone())),
            );
            Ok(())
        }
    }

    fn search(query: &str) -> (Option<Vec<u8>>, Vec<u8>) {
        let event = SearchEvent::new(Uuid::now_v7(), Utc::now(), None, query, 0, vec![]);
        (Some(b"k".to_vec()), event.to_json())
    }

    fn tp() -> TopicPartition {
        TopicPartition {
            topic: "t".into(),
            partition: 0,
        }
    }

    /// Runs a consumer of group `g` on topic `t` into `memory` until it applied `queries`
    /// queries in all (panics after 10 s), then stops it.
    async fn consume(log: &Arc<EventLog>, memory: &Arc<Memory>, queries: usize) {
        let stop = CancellationToken::new();
        let pipeline = Pipeline::new(
            "g",
            memory.clone(),
            log.clone(),
            BatchSettings::default(),
            stop.clone(),
        );
        let consumer = EmbeddedConsumer::new(
            log.clone(),
            vec!["t".into()],
            pipeline,
            GroupSettings {
                heartbeat: Duration::from_millis(50),
                session_timeout: Duration::from_millis(500),
            },
        );
        let task = tokio::spawn(consumer.run());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while memory.0.lock().unwrap().1.len() < queries {
            assert!(
                std::time::Instant::now() < deadline,
                "applied only {:?}",
                memory.0.lock().unwrap().1
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Nothing more arrives.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_store_without_positions_is_rebuilt_from_the_beginning_not_the_committed_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&dir.path().join("events.db")).await.unwrap();
        log.ensure_topic("t", 1).await.unwrap();
        let messages: Vec<_> = (0..5).map(|i| search(&format!("q{i}"))).collect();
        log.append("t", 1, &messages).await.unwrap();
        // The group had applied everything into a store that is now lost.
        log.commit(
            "g",
            &[Position {
                topic: "t".into(),
                partition: 0,
                next_offset: 5,
            }],
        )
        .await
        .unwrap();
        let memory = Arc::new(Memory::default());
        consume(&log, &memory, 5).await;
        let state = memory.0.lock().unwrap();
        assert_eq!(state.1, ["q0", "q1", "q2", "q3", "q4"]);
        assert_eq!(state.0.get(&tp()), Some(&5));
    }

    #[tokio::test]
    async fn a_position_trimmed_away_continues_from_the_earliest_message() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&dir.path().join("events.db")).await.unwrap();
        log.ensure_topic("t", 1).await.unwrap();
        let messages: Vec<_> = (0..10).map(|i| search(&format!("q{i}"))).collect();
        log.append("t", 1, &messages).await.unwrap();
        sqlx::query("UPDATE messages SET appended_at = 0 WHERE offset < 6")
            .execute(&log.pool)
            .await
            .unwrap();
        let retention = crate::Retention::new(Some(Duration::from_secs(3600)), None, []);
        assert_eq!(log.trim(&retention).await.unwrap().messages(), 6);
        // The store had applied offsets 0 and 1.
        let memory = Arc::new(Memory::default());
        memory.0.lock().unwrap().0.insert(tp(), 2);
        consume(&log, &memory, 4).await;
        let state = memory.0.lock().unwrap();
        assert_eq!(state.1, ["q6", "q7", "q8", "q9"]);
        assert_eq!(state.0.get(&tp()), Some(&10));
    }
}
