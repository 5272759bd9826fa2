//! The log file: topics, partitions, messages, group membership, offsets and dead letters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bookstore_consumer::{DeadLetter, DeadLetters, LogRange, RawMessage, SinkError};
use bookstore_domain::{Position, TopicPartition};
use chrono::{DateTime, Utc};
use notify::{EventKind, RecursiveMode, Watcher};
use sqlx::sqlite::SqlitePool;
use sqlx::{Row, Sqlite, Transaction};
use tokio::sync::{Notify, watch};

/// Why the log could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("cannot open the event log {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: bookstore_sqlite::OpenError,
    },
    #[error("cannot create the event log's tables")]
    Schema(#[source] sqlx::Error),
    #[error("event log error")]
    Sql(#[from] sqlx::Error),
    #[error("topic {0:?} does not exist in the event log")]
    NoSuchTopic(String),
    #[error("a topic needs at least one partition")]
    NoPartitions,
}

/// A dead letter as stored, with when it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeadLetter {
    pub letter: DeadLetter,
    pub dead_at: DateTime<Utc>,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS topics (
        name TEXT PRIMARY KEY,
        partitions INTEGER NOT NULL CHECK (partitions > 0)
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS messages (
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        key BLOB,
        value BLOB NOT NULL,
        appended_at INTEGER NOT NULL,
        PRIMARY KEY (topic, partition, offset)
    ) STRICT, WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS group_members (
        group_id TEXT NOT NULL,
        member TEXT NOT NULL,
        heartbeat_at INTEGER NOT NULL,
        PRIMARY KEY (group_id, member)
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS partition_owners (
        group_id TEXT NOT NULL,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        member TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (group_id, topic, partition)
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS committed_offsets (
        group_id TEXT NOT NULL,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        next_offset INTEGER NOT NULL,
        PRIMARY KEY (group_id, topic, partition)
    ) STRICT",
    // Per partition: the bytes of its messages' keys and values (kept by `append` and the
    // trimming, so that size retention needs no scan), and how far compaction got.
    "CREATE TABLE IF NOT EXISTS partition_state (
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        bytes INTEGER NOT NULL DEFAULT 0,
        compacted_to INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (topic, partition)
    ) STRICT",
    // The latest offset of each key of a compacted topic.
    "CREATE TABLE IF NOT EXISTS compacted_keys (
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        key BLOB NOT NULL,
        offset INTEGER NOT NULL,
        PRIMARY KEY (topic, partition, key)
    ) STRICT, WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        group_id TEXT NOT NULL,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        key BLOB,
        value BLOB NOT NULL,
        error TEXT NOT NULL,
        dead_at INTEGER NOT NULL
    ) STRICT",
];

/// The schema version in `PRAGMA user_version`: 1 added `partition_state`, filled from the
/// messages already there; 2 added `messages.trace_parent`.
const SCHEMA_VERSION: i64 = 2;

/// A message to append: its key (which picks the partition), its value, and the W3C trace
/// context of the span that published it.
#[derive(Debug, Clone, Copy)]
pub struct Appended<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub trace_parent: Option<&'a str>,
}

/// An open event log file.
pub struct EventLog {
    pub(crate) pool: SqlitePool,
    path: PathBuf,
    changes: watch::Sender<u64>,
    _watcher: Option<notify::RecommendedWatcher>,
    /// Bytes this process appended since the last trimming pass, and the amount past which
    /// `append` wakes the trimming task early.
    pub(crate) appended: AtomicU64,
    pub(crate) trim_after: AtomicU64,
    pub(crate) trim_wakeup: Notify,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.path)
            .finish()
    }
}

impl EventLog {
    /// Opens the log at `path`, creating it if needed, and starts watching it for appends made by
    /// other processes.
    pub async fn open(path: &Path) -> Result<Arc<Self>, EventLogError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| EventLogError::Open {
                path: path.to_owned(),
                source: bookstore_sqlite::OpenError::Connect {
                    url: path.display().to_string(),
                    source: sqlx::Error::Io(e),
                },
            })?;
        }
        let url = format!("sqlite://{}", path.display());
        let pool =
            bookstore_sqlite::connect(&url, 8)
                .await
                .map_err(|source| EventLogError::Open {
                    path: path.to_owned(),
                    source,
                })?;
        for statement in SCHEMA {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .map_err(EventLogError::Schema)?;
        }
        migrate(&pool).await.map_err(EventLogError::Schema)?;
        let (changes, _) = watch::channel(0);
        let watcher = watch_file(path, changes.clone());
        Ok(Arc::new(Self {
            pool,
            path: path.to_owned(),
            changes,
            _watcher: watcher,
            appended: AtomicU64::new(0),
            trim_after: AtomicU64::new(u64::MAX),
            trim_wakeup: Notify::new(),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A receiver that changes whenever the log file may hold something new.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn notify_change(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Creates `topic` with `partitions` partitions if it does not exist, and returns its
    /// partition count (an existing topic keeps its own).
    pub async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<u32, EventLogError> {
        if partitions == 0 {
            return Err(EventLogError::NoPartitions);
        }
        sqlx::query(
            "INSERT INTO topics (name, partitions) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(topic)
        .bind(i64::from(partitions))
        .execute(&self.pool)
        .await?;
        self.partitions(topic).await
    }

    /// How many partitions `topic` has.
    pub async fn partitions(&self, topic: &str) -> Result<u32, EventLogError> {
        let count: Option<i64> = sqlx::query_scalar("SELECT partitions FROM topics WHERE name = ?")
            .bind(topic)
            .fetch_optional(&self.pool)
            .await?;
        count
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| EventLogError::NoSuchTopic(topic.to_owned()))
    }

    /// Appends messages to `topic` in one transaction: each goes to the partition its key hashes
    /// to (keyless ones to partition 0), after the partition's last offset. Offsets never
    /// restart: trimming always keeps each partition's newest message.
    pub async fn append(
        &self,
        topic: &str,
        partitions: u32,
        messages: &[(Option<Vec<u8>>, Vec<u8>)],
    ) -> Result<(), EventLogError> {
        let messages: Vec<Appended<'_>> = messages
            .iter()
            .map(|(key, value)| Appended {
                key: key.as_deref(),
                value,
                trace_parent: None,
            })
            .collect();
        self.append_all(topic, partitions, &messages).await
    }

    /// [`EventLog::append`], with each message's trace context.
    pub async fn append_all(
        &self,
        topic: &str,
        partitions: u32,
        messages: &[Appended<'_>],
    ) -> Result<(), EventLogError> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = Utc::now().timestamp_millis();
        let mut sizes: BTreeMap<u32, i64> = BTreeMap::new();
        let mut tx = self.pool.begin().await?;
        for message in messages {
            let (key, value) = (message.key, message.value);
            let partition = partition_for(key, partitions);
            *sizes.entry(partition).or_default() += message_size(key, value);
            // A write is the transaction's first statement, so it takes the write lock before
            // reading the last offset: concurrent appenders (other processes) queue behind it.
            sqlx::query(concat!(
                "INSERT INTO messages (topic, partition, offset, key, value, appended_at, trace_parent) ",
                "SELECT ?1, ?2, COALESCE(MAX(offset) + 1, 0), ?3, ?4, ?5, ?6 ",
                "FROM messages WHERE topic = ?1 AND partition = ?2"
            ))
            .bind(topic)
            .bind(i64::from(partition))
            .bind(key)
            .bind(value)
            .bind(now)
            .bind(message.trace_parent)
            .execute(&mut *tx)
            .await?;
        }
        for (partition, bytes) in &sizes {
            sqlx::query(concat!(
                "INSERT INTO partition_state (topic, partition, bytes) VALUES (?, ?, ?) ",
                "ON CONFLICT (topic, partition) DO UPDATE SET bytes = bytes + excluded.bytes"
            ))
            .bind(topic)
            .bind(i64::from(*partition))
            .bind(bytes)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.notify_change();
        let total = sizes.values().sum::<i64>().max(0).unsigned_abs();
        let appended = self.appended.fetch_add(total, Ordering::Relaxed) + total;
        if appended >= self.trim_after.load(Ordering::Relaxed) {
            self.trim_wakeup.notify_one();
        }
        Ok(())
    }

    /// Up to `limit` messages of one partition from offset `from` on.
    pub async fn read(
        &self,
        tp: &TopicPartition,
        from: i64,
        limit: usize,
    ) -> Result<Vec<RawMessage>, EventLogError> {
        let rows = sqlx::query(concat!(
            "SELECT offset, key, value, appended_at, trace_parent FROM messages ",
            "WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?"
        ))
        .bind(&tp.topic)
        .bind(tp.partition)
        .bind(from)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(RawMessage {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: row.try_get("offset")?,
                    key: row.try_get("key")?,
                    value: row.try_get("value")?,
                    timestamp: DateTime::from_timestamp_millis(row.try_get("appended_at")?),
                    trace_parent: row.try_get("trace_parent")?,
                })
            })
            .collect()
    }

    /// The offsets `tp` holds: its earliest retained message (trimming and compaction move it)
    /// and the offset after its last one.
    pub async fn range(&self, tp: &TopicPartition) -> Result<LogRange, EventLogError> {
        // Two subqueries, so that each is one look-up in the primary key.
        let (start, last): (Option<i64>, Option<i64>) = sqlx::query_as(concat!(
            "SELECT (SELECT MIN(offset) FROM messages WHERE topic = ?1 AND partition = ?2), ",
            "(SELECT MAX(offset) FROM messages WHERE topic = ?1 AND partition = ?2)"
        ))
        .bind(&tp.topic)
        .bind(tp.partition)
        .fetch_one(&self.pool)
        .await?;
        Ok(LogRange {
            start,
            end: last.map_or(0, |last| last + 1),
        })
    }

    /// [`range`](Self::range) of every partition of `topic`.
    pub async fn ranges(
        &self,
        topic: &str,
    ) -> Result<Vec<(TopicPartition, LogRange)>, EventLogError> {
        let partitions = self.partitions(topic).await?;
        let mut ranges = Vec::new();
        for partition in 0..partitions {
            let tp = TopicPartition {
                topic: topic.to_owned(),
                partition: i32::try_from(partition).unwrap_or(i32::MAX),
            };
            let range = self.range(&tp).await?;
            ranges.push((tp, range));
        }
        Ok(ranges)
    }

    /// Answers when the log's database can be read (`/readyz`).
    pub async fn ping(&self) -> Result<(), EventLogError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The offset after the last message of each partition of `topic`.
    pub async fn end_offsets(&self, topic: &str) -> Result<Vec<Position>, EventLogError> {
        let partitions = self.partitions(topic).await?;
        let mut ends = Vec::new();
        for partition in 0..partitions {
            let partition = i32::try_from(partition).unwrap_or(i32::MAX);
            let end: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(offset) + 1, 0) FROM messages WHERE topic = ? AND partition = ?",
            )
            .bind(topic)
            .bind(partition)
            .fetch_one(&self.pool)
            .await?;
            ends.push(Position {
                topic: topic.to_owned(),
                partition,
                next_offset: end,
            });
        }
        Ok(ends)
    }

    /// Records how far `group` got, for lag monitoring and tools (a handler with no stored
    /// position starts at the earliest retained message, not here).
    pub async fn commit(&self, group: &str, positions: &[Position]) -> Result<(), EventLogError> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for p in positions {
            sqlx::query(concat!(
                "INSERT INTO committed_offsets (group_id, topic, partition, next_offset) VALUES (?, ?, ?, ?) ",
                "ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = excluded.next_offset"
            ))
            .bind(group)
            .bind(&p.topic)
            .bind(p.partition)
            .bind(p.next_offset)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The offsets `group` committed.
    pub async fn committed(&self, group: &str) -> Result<Vec<Position>, EventLogError> {
        let rows = sqlx::query(
            "SELECT topic, partition, next_offset FROM committed_offsets WHERE group_id = ? ORDER BY topic, partition",
        )
        .bind(group)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Position {
                    topic: row.try_get("topic")?,
                    partition: row.try_get("partition")?,
                    next_offset: row.try_get("next_offset")?,
                })
            })
            .collect()
    }

    /// The dead letters of `group`, oldest first.
    pub async fn dead_letters(&self, group: &str) -> Result<Vec<StoredDeadLetter>, EventLogError> {
        let rows = sqlx::query(concat!(
            "SELECT group_id, topic, partition, offset, key, value, error, dead_at ",
            "FROM dead_letters WHERE group_id = ? ORDER BY id"
        ))
        .bind(group)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(StoredDeadLetter {
                    letter: DeadLetter {
                        group: row.try_get("group_id")?,
                        message: RawMessage {
                            topic: row.try_get("topic")?,
                            partition: row.try_get("partition")?,
                            offset: row.try_get("offset")?,
                            key: row.try_get("key")?,
                            value: row.try_get("value")?,
                            timestamp: None,
                            trace_parent: None,
                        },
                        error: row.try_get("error")?,
                    },
                    dead_at: DateTime::from_timestamp_millis(row.try_get("dead_at")?)
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Sqlite>, EventLogError> {
        Ok(self.pool.begin().await?)
    }
}

/// The dead-letter table as the consumer framework's sink.
#[async_trait]
impl DeadLetters for EventLog {
    async fn send(&self, letter: &DeadLetter) -> Result<(), SinkError> {
        let m = &letter.message;
        sqlx::query(concat!(
            "INSERT INTO dead_letters (group_id, topic, partition, offset, key, value, error, dead_at) ",
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&letter.group)
        .bind(&m.topic)
        .bind(m.partition)
        .bind(m.offset)
        .bind(m.key.as_deref())
        .bind(m.value.as_slice())
        .bind(&letter.error)
        .bind(Utc::now().timestamp_millis())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(|e| SinkError(e.to_string()))
    }
}

/// Brings the schema of a file made by an older version up to [`SCHEMA_VERSION`], in one
/// write transaction, so that processes opening it together do it once.
async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut tx = begin_write(pool).await?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *tx)
        .await?;
    if version < 1 {
        // Sizes of the messages written before sizes were kept (a scan, once).
        sqlx::query(concat!(
            "INSERT INTO partition_state (topic, partition, bytes) ",
            "SELECT topic, partition, SUM(COALESCE(length(key), 0) + length(value)) ",
            "FROM messages WHERE true GROUP BY topic, partition ",
            "ON CONFLICT (topic, partition) DO UPDATE SET bytes = excluded.bytes"
        ))
        .execute(&mut *tx)
        .await?;
    }
    let has_trace_parent: bool = sqlx::query_scalar(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('messages') WHERE name = 'trace_parent'",
    )
    .fetch_one(&mut *tx)
    .await?;
    if !has_trace_parent {
        // The trace context of each message (NULL for those written before).
        sqlx::query("ALTER TABLE messages ADD COLUMN trace_parent TEXT")
            .execute(&mut *tx)
            .await?;
    }
    if version < SCHEMA_VERSION {
        // SCHEMA_VERSION
        sqlx::query("PRAGMA user_version = 2")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// A transaction that holds the write lock from its start (what `BEGIN IMMEDIATE` does), so that
/// what it reads cannot change before it writes: its first statement is a write that changes
/// nothing.
///
/// Not `begin_with("BEGIN IMMEDIATE")`: sqlx (0.8) checks a custom BEGIN with one more await
/// after SQLite ran it, and a caller cancelled at that await (a task told to stop) never gets the
/// `Transaction` that would roll it back. The connection then goes back to the pool inside the
/// transaction, holding the write lock, and every later append waits on it. A plain `begin()`
/// is rolled back whenever it is cancelled.
pub(crate) async fn begin_write(
    pool: &SqlitePool,
) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM topics WHERE false")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// What a message counts for in the size retention: its key and value.
pub(crate) fn message_size(key: Option<&[u8]>, value: &[u8]) -> i64 {
    i64::try_from(key.map_or(0, <[u8]>::len) + value.len()).unwrap_or(i64::MAX)
}

/// The partition a key goes to: a stable hash, so a key always lands on the same partition.
pub(crate) fn partition_for(key: Option<&[u8]>, partitions: u32) -> u32 {
    match key {
        Some(key) if partitions > 1 => crc32fast::hash(key) % partitions,
        _ => 0,
    }
}

/// Watches the log's files so that consumers in other processes learn of appends at once.
/// Without a watcher (an unsupported file system), consumers fall back to their slow timer.
fn watch_file(path: &Path, changes: watch::Sender<u64>) -> Option<notify::RecommendedWatcher> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let name = path.file_name()?.to_string_lossy().into_owned();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !matches!(event.kind, EventKind::Modify(_) | EventKind::Create(_)) {
            return;
        }
        let ours = event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(name.as_str()))
        });
        if ours {
            changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the event log; consumers will poll"))
    .ok()?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| tracing::warn!(error = %e, "cannot watch the event log; consumers will poll"))
        .ok()?;
    Some(watcher)
}

/// How long a slow timer waits when no change notice comes (the safety net).
pub(crate) const SAFETY_POLL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_always_land_on_the_same_partition() {
        assert_eq!(
            partition_for(Some(b"user-1"), 3),
            partition_for(Some(b"user-1"), 3)
        );
        assert_eq!(partition_for(None, 3), 0);
        assert_eq!(partition_for(Some(b"x"), 1), 0);
        let spread: std::collections::BTreeSet<u32> = (0..100)
            .map(|i| partition_for(Some(format!("user-{i}").as_bytes()), 3))
            .collect();
        assert_eq!(spread.len(), 3);
    }

    // What the trimming relies on: from its start, nobody else can write.
    #[tokio::test]
    async fn a_write_transaction_holds_the_write_lock_from_its_start() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let log = EventLog::open(&path).await.unwrap();
        let tx = begin_write(&log.pool).await.unwrap();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(Duration::ZERO);
        let mut other = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        let refused = sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await;
        assert!(refused.is_err(), "another writer got in: {refused:?}");
        tx.rollback().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_message_keeps_its_trace_context_even_in_a_file_made_before_it_was_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        {
            // A file as version 1 made it: no trace_parent column, one message already in it.
            let url = format!("sqlite://{}", path.display());
            let pool = bookstore_sqlite::connect(&url, 1).await.unwrap();
            for statement in SCHEMA {
                sqlx::query(statement).execute(&pool).await.unwrap();
            }
            sqlx::query("PRAGMA user_version = 1")
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query(concat!(
                "INSERT INTO messages (topic, partition, offset, key, value, appended_at) ",
                "VALUES ('t', 0, 0, x'6f', x'30', 0)"
            ))
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let log = EventLog::open(&path).await.unwrap();
        log.ensure_topic("t", 1).await.unwrap();
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        log.append_all(
            "t",
            1,
            &[
                Appended {
                    key: Some(b"a"),
                    value: b"1",
                    trace_parent: Some(traceparent),
                },
                Appended {
                    key: Some(b"b"),
                    value: b"2",
                    trace_parent: None,
                },
            ],
        )
        .await
        .unwrap();
        let tp = TopicPartition {
            topic: "t".into(),
            partition: 0,
        };
        let read = log.read(&tp, 0, 10).await.unwrap();
        let traces: Vec<_> = read.iter().map(|m| m.trace_parent.as_deref()).collect();
        assert_eq!(traces, [None, Some(traceparent), None]);
        // Opening it again migrates nothing twice.
        drop(log);
        EventLog::open(&path).await.unwrap();
    }

    #[tokio::test]
    async fn append_and_read_in_order_per_partition() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&dir.path().join("events.db")).await.unwrap();
        assert_eq!(log.ensure_topic("t", 2).await.unwrap(), 2);
        // An existing topic keeps its partition count.
        assert_eq!(log.ensure_topic("t", 5).await.unwrap(), 2);
        let key = Some(b"k".to_vec());
        let messages: Vec<_> = (0..5)
            .map(|i| (key.clone(), format!("{i}").into_bytes()))
            .collect();
        log.append("t", 2, &messages).await.unwrap();
        let partition = i32::try_from(partition_for(key.as_deref(), 2)).unwrap();
        let tp = TopicPartition {
            topic: "t".into(),
            partition,
        };
        let read = log.read(&tp, 2, 10).await.unwrap();
        let values: Vec<_> = read
            .iter()
            .map(|m| String::from_utf8(m.value.clone()).unwrap())
            .collect();
        assert_eq!(values, ["2", "3", "4"]);
        assert_eq!(read[0].offset, 2);
        let ends = log.end_offsets("t").await.unwrap();
        assert_eq!(ends.iter().map(|p| p.next_offset).sum::<i64>(), 5);
        assert!(matches!(
            log.partitions("missing").await,
            Err(EventLogError::NoSuchTopic(_))
        ));
    }
}
