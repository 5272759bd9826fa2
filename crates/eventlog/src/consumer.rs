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

use bookstore_domain::{Position, TopicPartition};
use bookstore_events::{Flushed, Pipeline, Stopped};
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
    /// Where to start partitions for which the handler stores no position: the group's
    /// committed offset, else the beginning.
    fallback: BTreeMap<TopicPartition, i64>,
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
            fallback: BTreeMap::new(),
        }
    }

    pub fn stats(&self) -> Arc<bookstore_events::ConsumerStats> {
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

    /// Measures each owned partition's lag against the log's end offsets.
    async fn record_lag(&self) {
        let mut ends = BTreeMap::new();
        for topic in &self.topics {
            match self.log.end_offsets(topic).await {
                Ok(positions) => ends.extend(positions.into_iter().map(Position::into_entry)),
                Err(error) => {
                    tracing::debug!(%error, "cannot read the event log's end offsets");
                    return;
                }
            }
        }
        self.pipeline.record_lag(|tp| ends.get(tp).copied());
    }

    /// Reads the next messages of every owned partition into the pipeline; returns how many.
    async fn read_some(&mut self) -> Result<usize, Stopped> {
        let owned: Vec<TopicPartition> = self.pipeline.owned().cloned().collect();
        let mut total = 0;
        for tp in owned {
            let from = self
                .pipeline
                .read_position(&tp)
                .or_else(|| self.fallback.get(&tp).copied())
                .unwrap_or(0);
            let messages = match self.log.read(&tp, from, 500).await {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the event log");
                    continue;
                }
            };
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
        for tp in &revoked {
            self.fallback.remove(tp);
        }
        let assigned: Vec<_> = held.difference(&owned).cloned().collect();
        if !assigned.is_empty() {
            let committed: BTreeMap<TopicPartition, i64> = self
                .log
                .committed(self.pipeline.group())
                .await
                .unwrap_or_default()
                .into_iter()
                .map(Position::into_entry)
                .collect();
            for (tp, start) in self.pipeline.assign(&assigned).await? {
                if start.is_none() {
                    self.fallback
                        .insert(tp.clone(), committed.get(&tp).copied().unwrap_or(0));
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
