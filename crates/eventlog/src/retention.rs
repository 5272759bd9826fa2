//! Retention: what the log forgets, so that its file stays bounded.
//!
//! - Topics are **trimmed** from their oldest end, per partition: messages appended longer ago
//!   than [`Retention::max_age`], and the oldest messages while the partition's keys and values
//!   take more than [`Retention::max_bytes`].
//! - Topics named in [`Retention::compacted`] are **compacted** instead: of the messages with the
//!   same key only the latest is kept (like Kafka's `cleanup.policy=compact`), whatever their
//!   age. Keyless messages are kept.
//! - Each partition's **newest message is always kept** (like Kafka's active segment): a new
//!   message gets the partition's last offset plus one, so offsets never restart.
//!
//! Each step is a small write transaction (at most [`CHUNK`] messages), so appends wait for one
//! step at most. A consumer whose position was trimmed away continues from the earliest message
//! left. SQLite reuses the pages freed by deletions for new messages, so the file stops growing
//! once retention takes effect; the WAL file is truncated by a checkpoint whenever it has grown
//! past [`Retention::wal_limit`] (readers that keep it busy can stop the automatic checkpoints
//! from restarting it).
//!
//! Compaction has no tombstones yet (no event deletes anything). When one is added it must be
//! kept long enough for every consumer group to read it before compaction removes it (Kafka's
//! `delete.retention.ms`), or a consumer that was behind never learns of the deletion.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use sqlx::{Row, Sqlite, Transaction};
use tokio_util::sync::CancellationToken;

use crate::log::{EventLog, EventLogError};

/// Messages one trimming or compaction step looks at, in one transaction.
pub const CHUNK: i64 = 1_000;
const MIB: u64 = 1024 * 1024;

/// Why messages were removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrimReason {
    /// Older than the retention time.
    Age,
    /// The partition was over its size.
    Size,
    /// A later message has the same key (compacted topics).
    Compaction,
}

impl TrimReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Age => "age",
            Self::Size => "size",
            Self::Compaction => "compaction",
        }
    }
}

/// What the log keeps, and how often the trimming task looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Messages appended longer ago are trimmed (`None`: kept whatever their age). Dead letters
    /// stored longer ago are deleted too.
    pub max_age: Option<Duration>,
    /// Per partition: the oldest messages are trimmed while its messages' keys and values take
    /// more bytes than this (`None`: no bound).
    pub max_bytes: Option<u64>,
    /// Topics compacted by key instead of trimmed.
    pub compacted: BTreeSet<String>,
    /// How often the task makes a pass…
    pub interval: Duration,
    /// …or sooner, once this process appended this many bytes since the last pass.
    pub after_bytes: u64,
    /// A WAL file larger than this is checkpointed and truncated (looked at four times a second).
    pub wal_limit: u64,
}

impl Retention {
    /// `max_age` and `max_bytes` (per partition) for every topic but the `compacted` ones, a pass
    /// every minute or after a quarter of `max_bytes` appended (between 64 KiB and 64 MiB), and a
    /// WAL bound of 8 MiB (twice what SQLite's automatic checkpoints leave when readers let them
    /// restart the WAL).
    pub fn new(
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
        compacted: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            max_age,
            max_bytes,
            compacted: compacted.into_iter().collect(),
            interval: Duration::from_secs(60),
            after_bytes: max_bytes
                .map_or(64 * MIB, |b| b / 4)
                .clamp(64 * 1024, 64 * MIB),
            wal_limit: 8 * MIB,
        }
    }
}

/// What one pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrimReport {
    /// Messages removed, per topic and reason. Dead letters count under `<topic>.dlq`, as on
    /// Kafka.
    pub removed: BTreeMap<(String, TrimReason), u64>,
    /// Bytes of keys and values removed.
    pub bytes: u64,
}

impl TrimReport {
    /// Messages removed in all.
    pub fn messages(&self) -> u64 {
        self.removed.values().sum()
    }

    fn add(&mut self, topic: &str, reason: TrimReason, messages: u64) {
        if messages > 0 {
            *self.removed.entry((topic.to_owned(), reason)).or_default() += messages;
        }
    }
}

/// The trimming task's counters, for metrics.
#[derive(Debug, Default)]
pub struct RetentionStats {
    removed: Mutex<BTreeMap<(String, TrimReason), u64>>,
    /// Bytes of keys and values removed.
    pub bytes: AtomicU64,
    /// Passes made, and passes that failed.
    pub passes: AtomicU64,
    pub errors: AtomicU64,
    /// The log's files (the database and its WAL) after the last pass, in bytes.
    pub file_bytes: AtomicU64,
}

impl RetentionStats {
    /// Messages removed since the start, per topic and reason.
    pub fn removed(&self) -> BTreeMap<(String, TrimReason), u64> {
        self.removed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, report: &TrimReport) {
        self.bytes.fetch_add(report.bytes, Ordering::Relaxed);
        let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        for (key, n) in &report.removed {
            *removed.entry(key.clone()).or_default() += n;
        }
    }
}

/// A WAL checkpoint waits 100 ms at most for readers (holding up appends meanwhile) before it
/// gives up until the next look.
const CHECKPOINT_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 100";

/// How often the trimming task looks at the WAL file's size.
const WAL_CHECK: Duration = Duration::from_millis(250);

/// Trims `log` now, then every `retention.interval` or once `retention.after_bytes` were
/// appended, until `stop`; four times a second, truncates the WAL if it grew past `retention.wal_limit`.
/// Run it in the processes that append (the web service).
pub async fn run_retention(
    log: Arc<EventLog>,
    retention: Retention,
    stats: Arc<RetentionStats>,
    stop: CancellationToken,
) {
    log.trim_after
        .store(retention.after_bytes.max(1), Ordering::Relaxed);
    let mut next_pass = tokio::time::Instant::now();
    let mut appended_enough = false;
    loop {
        if appended_enough || tokio::time::Instant::now() >= next_pass {
            log.appended.store(0, Ordering::Relaxed);
            let pass = tokio::select! {
                pass = log.trim(&retention) => pass,
                () = stop.cancelled() => return,
            };
            stats.passes.fetch_add(1, Ordering::Relaxed);
            match pass {
                Ok(report) => {
                    stats.record(&report);
                    if report.messages() > 0 {
                        let removed: Vec<String> = report
                            .removed
                            .iter()
                            .map(|((topic, reason), n)| format!("{topic} {}: {n}", reason.as_str()))
                            .collect();
                        tracing::debug!(
                            messages = report.messages(),
                            bytes = report.bytes,
                            removed = %removed.join(", "),
                            "trimmed the event log"
                        );
                    }
                }
                Err(error) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, "cannot trim the event log; trying again later");
                }
            }
            next_pass = tokio::time::Instant::now() + retention.interval;
        }
        match log.checkpoint_if_over(retention.wal_limit).await {
            Ok(Some(before)) => tracing::debug!(
                wal_bytes = before,
                "checkpointed the event log and truncated its WAL file"
            ),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot checkpoint the event log"),
        }
        stats.file_bytes.store(log.file_size(), Ordering::Relaxed);
        appended_enough = tokio::select! {
            () = tokio::time::sleep_until(next_pass.min(tokio::time::Instant::now() + WAL_CHECK)) => false,
            () = log.trim_wakeup.notified() => true,
            () = stop.cancelled() => return,
        };
    }
}

impl EventLog {
    /// One retention pass over every topic of the log (see the module's documentation).
    pub async fn trim(&self, retention: &Retention) -> Result<TrimReport, EventLogError> {
        let topics: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, partitions FROM topics ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        let cutoff = retention.max_age.map(|age| {
            Utc::now().timestamp_millis() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX)
        });
        let max_bytes = retention
            .max_bytes
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX));
        let mut report = TrimReport::default();
        for (topic, partitions) in topics {
            for partition in 0..partitions {
                if retention.compacted.contains(&topic) {
                    while self.compact_step(&topic, partition, &mut report).await? {
                        tokio::task::yield_now().await;
                    }
                } else if cutoff.is_some() || max_bytes.is_some() {
                    while self
                        .trim_step(&topic, partition, cutoff, max_bytes, &mut report)
                        .await?
                    {
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
        if let Some(cutoff) = cutoff {
            while self.trim_dead_letters(cutoff, &mut report).await? {
                tokio::task::yield_now().await;
            }
        }
        Ok(report)
    }

    /// A write transaction that holds the write lock from its start, so that what it reads
    /// cannot change before it writes (another process may be trimming too). Safe to cancel:
    /// the task stops in the middle of a step.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>, EventLogError> {
        Ok(crate::log::begin_write(&self.pool).await?)
    }

    /// Trims up to [`CHUNK`] of the partition's oldest messages that are too old or over its
    /// size, never its newest one. Returns whether there may be more to trim.
    async fn trim_step(
        &self,
        topic: &str,
        partition: i64,
        cutoff: Option<i64>,
        max_bytes: Option<i64>,
        report: &mut TrimReport,
    ) -> Result<bool, EventLogError> {
        let mut tx = self.write().await?;
        let (bytes, newest): (i64, Option<i64>) = sqlx::query_as(concat!(
            "SELECT COALESCE((SELECT bytes FROM partition_state WHERE topic = ?1 AND partition = ?2), 0), ",
            "(SELECT MAX(offset) FROM messages WHERE topic = ?1 AND partition = ?2)"
        ))
        .bind(topic)
        .bind(partition)
        .fetch_one(&mut *tx)
        .await?;
        let Some(newest) = newest else {
            return Ok(false);
        };
        let rows = sqlx::query(concat!(
            "SELECT offset, appended_at, COALESCE(length(key), 0) + length(value) AS size ",
            "FROM messages WHERE topic = ? AND partition = ? AND offset < ? ORDER BY offset LIMIT ?"
        ))
        .bind(topic)
        .bind(partition)
        .bind(newest)
        .bind(CHUNK)
        .fetch_all(&mut *tx)
        .await?;
        let (mut remaining, mut freed, mut cut) = (bytes, 0_i64, None);
        let (mut by_age, mut by_size) = (0_u64, 0_u64);
        for row in &rows {
            let offset: i64 = row.try_get("offset")?;
            let appended_at: i64 = row.try_get("appended_at")?;
            let size: i64 = row.try_get("size")?;
            if cutoff.is_some_and(|cutoff| appended_at < cutoff) {
                by_age += 1;
            } else if max_bytes.is_some_and(|max| remaining > max) {
                by_size += 1;
            } else {
                break;
            }
            remaining -= size;
            freed += size;
            cut = Some(offset + 1);
        }
        let Some(cut) = cut else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM messages WHERE topic = ? AND partition = ? AND offset < ?")
            .bind(topic)
            .bind(partition)
            .bind(cut)
            .execute(&mut *tx)
            .await?;
        sqlx::query(concat!(
            "UPDATE partition_state SET bytes = MAX(bytes - ?, 0) ",
            "WHERE topic = ? AND partition = ?"
        ))
        .bind(freed)
        .bind(topic)
        .bind(partition)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        report.add(topic, TrimReason::Age, by_age);
        report.add(topic, TrimReason::Size, by_size);
        report.bytes += freed.max(0).unsigned_abs();
        let trimmed = usize::try_from(by_age + by_size).unwrap_or(usize::MAX);
        Ok(trimmed == rows.len() && rows.len() as i64 == CHUNK)
    }

    /// Compacts up to [`CHUNK`] messages of the partition appended since the last step: each
    /// removes the message its key had before. Returns whether there may be more to compact.
    async fn compact_step(
        &self,
        topic: &str,
        partition: i64,
        report: &mut TrimReport,
    ) -> Result<bool, EventLogError> {
        let mut tx = self.write().await?;
        let from: i64 = sqlx::query_scalar(concat!(
            "SELECT COALESCE((SELECT compacted_to FROM partition_state ",
            "WHERE topic = ? AND partition = ?), 0)"
        ))
        .bind(topic)
        .bind(partition)
        .fetch_one(&mut *tx)
        .await?;
        let rows = sqlx::query(concat!(
            "SELECT offset, key FROM messages WHERE topic = ? AND partition = ? AND offset >= ? ",
            "ORDER BY offset LIMIT ?"
        ))
        .bind(topic)
        .bind(partition)
        .bind(from)
        .bind(CHUNK)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(false);
        };
        let next: i64 = last.try_get::<i64, _>("offset")? + 1;
        let (mut removed, mut freed) = (0_u64, 0_i64);
        for row in &rows {
            let offset: i64 = row.try_get("offset")?;
            let Some(key) = row.try_get::<Option<Vec<u8>>, _>("key")? else {
                continue;
            };
            let before: Option<i64> = sqlx::query_scalar(
                "SELECT offset FROM compacted_keys WHERE topic = ? AND partition = ? AND key = ?",
            )
            .bind(topic)
            .bind(partition)
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(before) = before.filter(|before| *before < offset) {
                let size: Option<i64> = sqlx::query_scalar(concat!(
                    "DELETE FROM messages WHERE topic = ? AND partition = ? AND offset = ? ",
                    "RETURNING COALESCE(length(key), 0) + length(value)"
                ))
                .bind(topic)
                .bind(partition)
                .bind(before)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(size) = size {
                    removed += 1;
                    freed += size;
                }
            }
            sqlx::query(concat!(
                "INSERT INTO compacted_keys (topic, partition, key, offset) VALUES (?, ?, ?, ?) ",
                "ON CONFLICT (topic, partition, key) DO UPDATE SET offset = excluded.offset"
            ))
            .bind(topic)
            .bind(partition)
            .bind(&key)
            .bind(offset)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(concat!(
            "INSERT INTO partition_state (topic, partition, bytes, compacted_to) VALUES (?1, ?2, 0, ?3) ",
            "ON CONFLICT (topic, partition) DO UPDATE ",
            "SET compacted_to = excluded.compacted_to, bytes = MAX(bytes - ?4, 0)"
        ))
        .bind(topic)
        .bind(partition)
        .bind(next)
        .bind(freed)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        report.add(topic, TrimReason::Compaction, removed);
        report.bytes += freed.max(0).unsigned_abs();
        Ok(rows.len() as i64 == CHUNK)
    }

    /// Deletes up to [`CHUNK`] dead letters stored before `cutoff`. Returns whether there may be
    /// more.
    async fn trim_dead_letters(
        &self,
        cutoff: i64,
        report: &mut TrimReport,
    ) -> Result<bool, EventLogError> {
        let topics: Vec<String> = sqlx::query_scalar(concat!(
            "DELETE FROM dead_letters WHERE id IN ",
            "(SELECT id FROM dead_letters WHERE dead_at < ? ORDER BY id LIMIT ?) RETURNING topic"
        ))
        .bind(cutoff)
        .bind(CHUNK)
        .fetch_all(&self.pool)
        .await?;
        let mut per_topic: BTreeMap<String, u64> = BTreeMap::new();
        for topic in &topics {
            *per_topic.entry(format!("{topic}.dlq")).or_default() += 1;
        }
        for (topic, n) in per_topic {
            report.add(&topic, TrimReason::Age, n);
        }
        Ok(topics.len() as i64 == CHUNK)
    }

    /// The log's WAL file.
    fn wal_path(&self) -> PathBuf {
        let mut wal = self.path().as_os_str().to_owned();
        wal.push("-wal");
        PathBuf::from(wal)
    }

    /// The bytes of the log's database file and its WAL file.
    pub fn file_size(&self) -> u64 {
        let size = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |m| m.len());
        size(self.path()) + size(&self.wal_path())
    }

    /// Checkpoints the log and truncates its WAL file when that has grown past `limit` bytes;
    /// returns the WAL's size before, if it did. The checkpoint holds up appends while it waits
    /// for readers to finish with the WAL, so it waits 100 ms at most: when readers
    /// are still busy it gives up, and the next look (a quarter of a second later) tries again.
    pub async fn checkpoint_if_over(&self, limit: u64) -> Result<Option<u64>, EventLogError> {
        let wal = std::fs::metadata(self.wal_path()).map_or(0, |m| m.len());
        if wal <= limit {
            return Ok(None);
        }
        // A connection of its own, taken out of the pool (which opens another in its place):
        // with its short wait it never serves anything else, even if this is cancelled midway.
        let mut conn = self.pool.acquire().await?.detach();
        sqlx::query(CHECKPOINT_BUSY_TIMEOUT)
            .execute(&mut conn)
            .await?;
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut conn)
            .await?;
        let _ = sqlx::Connection::close(conn).await;
        Ok((busy == 0).then_some(wal))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bookstore_domain::TopicPartition;

    use super::*;

    async fn log() -> (tempfile::TempDir, Arc<EventLog>) {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&dir.path().join("events.db")).await.unwrap();
        (dir, log)
    }

    fn tp(topic: &str) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition: 0,
        }
    }

    /// `n` messages with the key `k` (one partition) and 100-byte values.
    async fn append(log: &EventLog, topic: &str, n: usize) {
        let messages: Vec<_> = (0..n)
            .map(|i| (Some(b"k".to_vec()), format!("{i:0>100}").into_bytes()))
            .collect();
        log.append(topic, 1, &messages).await.unwrap();
    }

    async fn offsets(log: &EventLog, topic: &str) -> Vec<i64> {
        log.read(&tp(topic), 0, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|m| m.offset)
            .collect()
    }

    /// The bytes `partition_state` holds for the partition, and what its messages take.
    async fn sizes(log: &EventLog, topic: &str) -> (i64, i64) {
        sqlx::query_as(concat!(
            "SELECT (SELECT bytes FROM partition_state WHERE topic = ?1 AND partition = 0), ",
            "(SELECT COALESCE(SUM(COALESCE(length(key), 0) + length(value)), 0) FROM messages ",
            "WHERE topic = ?1 AND partition = 0)"
        ))
        .bind(topic)
        .fetch_one(&log.pool)
        .await
        .unwrap()
    }

    /// Makes the first `n` messages of the partition look `hours` old.
    async fn age(log: &EventLog, topic: &str, n: i64, hours: i64) {
        sqlx::query(
            "UPDATE messages SET appended_at = appended_at - ? WHERE topic = ? AND offset < ?",
        )
        .bind(hours * 3_600_000)
        .bind(topic)
        .bind(n)
        .execute(&log.pool)
        .await
        .unwrap();
    }

    fn by_age(hours: u64) -> Retention {
        Retention::new(Some(Duration::from_secs(hours * 3600)), None, [])
    }

    #[tokio::test]
    async fn age_trimming_removes_old_messages_and_offsets_go_on() {
        let (_dir, log) = log().await;
        log.ensure_topic("t", 1).await.unwrap();
        append(&log, "t", 10).await;
        age(&log, "t", 4, 200).await;
        let report = log.trim(&by_age(168)).await.unwrap();
        assert_eq!(
            report.removed,
            BTreeMap::from([(("t".into(), TrimReason::Age), 4)])
        );
        assert_eq!(report.bytes, 4 * 101);
        assert_eq!(offsets(&log, "t").await, (4..10).collect::<Vec<_>>());
        let range = log.range(&tp("t")).await.unwrap();
        assert_eq!((range.start, range.end), (Some(4), 10));
        // Nothing more to trim.
        assert_eq!(log.trim(&by_age(168)).await.unwrap().messages(), 0);
        // Everything old: the newest message stays, and offsets never restart.
        age(&log, "t", 10, 200).await;
        assert_eq!(log.trim(&by_age(168)).await.unwrap().messages(), 5);
        assert_eq!(offsets(&log, "t").await, [9]);
        append(&log, "t", 2).await;
        assert_eq!(offsets(&log, "t").await, [9, 10, 11]);
        assert_eq!(log.end_offsets("t").await.unwrap()[0].next_offset, 12);
        let (kept, actual) = sizes(&log, "t").await;
        assert_eq!(kept, actual);
        assert_eq!(actual, 3 * 101);
    }

    #[tokio::test]
    async fn size_trimming_keeps_each_partition_under_its_bytes() {
        let (_dir, log) = log().await;
        log.ensure_topic("t", 1).await.unwrap();
        log.ensure_topic("other", 1).await.unwrap();
        // 2,500 messages of 101 bytes: more than two steps of trimming.
        for _ in 0..5 {
            append(&log, "t", 500).await;
        }
        append(&log, "other", 5).await;
        let retention = Retention::new(None, Some(1_000), []);
        let report = log.trim(&retention).await.unwrap();
        // 1,000 bytes hold 9 messages of 101.
        assert_eq!(
            report.removed,
            BTreeMap::from([(("t".into(), TrimReason::Size), 2_491)])
        );
        assert_eq!(offsets(&log, "t").await, (2_491..2_500).collect::<Vec<_>>());
        assert_eq!(offsets(&log, "other").await.len(), 5);
        let (kept, actual) = sizes(&log, "t").await;
        assert_eq!((kept, actual), (909, 909));
        // A partition whose newest message alone is over the bound keeps it.
        let retention = Retention::new(None, Some(10), []);
        log.trim(&retention).await.unwrap();
        assert_eq!(offsets(&log, "t").await, [2_499]);
        append(&log, "t", 1).await;
        assert_eq!(offsets(&log, "t").await, [2_499, 2_500]);
        assert_eq!(log.end_offsets("t").await.unwrap()[0].next_offset, 2_501);
    }

    #[tokio::test]
    async fn compaction_keeps_the_latest_message_of_each_key() {
        let (_dir, log) = log().await;
        log.ensure_topic("catalog", 1).await.unwrap();
        let keyed = |keys: &[&str]| -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
            keys.iter()
                .enumerate()
                .map(|(i, k)| (Some(k.as_bytes().to_vec()), format!("{k}{i}").into_bytes()))
                .collect()
        };
        log.append("catalog", 1, &keyed(&["1", "2", "1", "3", "2"]))
            .await
            .unwrap();
        log.append("catalog", 1, &[(None, b"keyless".to_vec())])
            .await
            .unwrap();
        // Old messages of a compacted topic are not trimmed by age or size.
        age(&log, "catalog", 10, 1_000).await;
        let retention = Retention {
            max_bytes: Some(1),
            ..Retention::new(
                Some(Duration::from_secs(3600)),
                None,
                ["catalog".to_owned()],
            )
        };
        let report = log.trim(&retention).await.unwrap();
        assert_eq!(
            report.removed,
            BTreeMap::from([(("catalog".into(), TrimReason::Compaction), 2)])
        );
        assert_eq!(offsets(&log, "catalog").await, [2, 3, 4, 5]);
        // Compaction goes on from where it stopped; the newest message is the latest of its key.
        log.append("catalog", 1, &keyed(&["3", "4"])).await.unwrap();
        assert_eq!(log.trim(&retention).await.unwrap().messages(), 1);
        assert_eq!(offsets(&log, "catalog").await, [2, 4, 5, 6, 7]);
        assert_eq!(log.trim(&retention).await.unwrap().messages(), 0);
        assert_eq!(log.end_offsets("catalog").await.unwrap()[0].next_offset, 8);
        let values: Vec<String> = log
            .read(&tp("catalog"), 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| String::from_utf8(m.value).unwrap())
            .collect();
        assert_eq!(values, ["12", "24", "keyless", "30", "41"]);
        let (kept, actual) = sizes(&log, "catalog").await;
        assert_eq!(kept, actual);
    }

    #[tokio::test]
    async fn old_dead_letters_go_too() {
        use bookstore_consumer::{DeadLetter, DeadLetters, RawMessage};
        let (_dir, log) = log().await;
        let letter = DeadLetter {
            group: "g".into(),
            message: RawMessage {
                topic: "t".into(),
                partition: 0,
                offset: 1,
                key: None,
                value: b"x".to_vec(),
                timestamp: None,
                trace_parent: None,
            },
            error: "bad".into(),
        };
        log.send(&letter).await.unwrap();
        log.send(&letter).await.unwrap();
        sqlx::query("UPDATE dead_letters SET dead_at = dead_at - 1000000000 WHERE id = 1")
            .execute(&log.pool)
            .await
            .unwrap();
        let report = log.trim(&by_age(168)).await.unwrap();
        assert_eq!(
            report.removed,
            BTreeMap::from([(("t.dlq".into(), TrimReason::Age), 1)])
        );
        assert_eq!(log.dead_letters("g").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_file_from_before_sizes_were_kept_gets_them_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        {
            let log = EventLog::open(&path).await.unwrap();
            log.ensure_topic("t", 1).await.unwrap();
            append(&log, "t", 7).await;
            // As an older version left it.
            sqlx::query("DROP TABLE partition_state")
                .execute(&log.pool)
                .await
                .unwrap();
            sqlx::query("PRAGMA user_version = 0")
                .execute(&log.pool)
                .await
                .unwrap();
        }
        let log = EventLog::open(&path).await.unwrap();
        assert_eq!(sizes(&log, "t").await, (707, 707));
        append(&log, "t", 1).await;
        assert_eq!(sizes(&log, "t").await, (808, 808));
        // Opening again counts nothing twice.
        drop(log);
        let log = EventLog::open(&path).await.unwrap();
        assert_eq!(sizes(&log, "t").await, (808, 808));
    }

    // The task stops in the middle of a pass, at whatever await it is: the write lock must go
    // with it. (It did not, once: stopped right after its BEGIN IMMEDIATE, the transaction stayed
    // open on a pooled connection and appends waited on it until the process was killed.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pass_stopped_anywhere_leaves_the_log_writable() {
        let (_dir, log) = log().await;
        // Every pass has something to trim: each partition is over its size.
        let retention = Retention::new(None, Some(1), []);
        for round in 0..400 {
            append(&log, "t", 2).await;
            // Stopped after 0 to 39 polls: a whole pass, or only the start of one of its steps.
            let polls = round / 2 % 40;
            let stop = async {
                for _ in 0..polls {
                    tokio::task::yield_now().await;
                }
            };
            if round % 2 == 0 {
                tokio::select! {
                    biased;
                    _ = log.trim(&retention) => {}
                    () = stop => {}
                }
            } else {
                tokio::select! {
                    biased;
                    _ = log.write() => {}
                    () = stop => {}
                }
            }
            let messages = vec![(None, b"v".to_vec())];
            let appended =
                tokio::time::timeout(Duration::from_secs(3), log.append("t", 1, &messages)).await;
            assert!(
                matches!(appended, Ok(Ok(()))),
                "stopped after {polls} polls (round {round}), the log is still locked: {appended:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_task_trims_after_enough_bytes_were_appended() {
        let (_dir, log) = log().await;
        log.ensure_topic("t", 1).await.unwrap();
        let stats = Arc::new(RetentionStats::default());
        let stop = CancellationToken::new();
        let retention = Retention {
            interval: Duration::from_secs(3600),
            ..Retention::new(None, Some(2_000), [])
        };
        assert_eq!(retention.after_bytes, 64 * 1024);
        let task = tokio::spawn(run_retention(
            log.clone(),
            retention,
            stats.clone(),
            stop.clone(),
        ));
        // The first pass runs at once; the next only once 64 KiB were appended.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stats.passes.load(Ordering::Relaxed) == 0 {
            assert!(std::time::Instant::now() < deadline, "no first pass");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..6 {
            append(&log, "t", 100).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(stats.passes.load(Ordering::Relaxed), 1);
        assert_eq!(offsets(&log, "t").await.len(), 600);
        append(&log, "t", 100).await;
        while offsets(&log, "t").await.len() > 20 {
            assert!(std::time::Instant::now() < deadline, "never trimmed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // 2,000 bytes hold 19 messages of 101.
        assert_eq!(offsets(&log, "t").await.len(), 19);
        assert_eq!(
            stats.removed(),
            BTreeMap::from([(("t".into(), TrimReason::Size), 681)])
        );
        assert!(stats.file_bytes.load(Ordering::Relaxed) > 0);
        stop.cancel();
        task.await.unwrap();
    }
}
