//! The outbox relay on SQLite. SQLite has one writer at a time, so a claim is one atomic
//! `UPDATE … RETURNING` that leases the oldest unsent rows to this relay for its lease ([`LEASE`]
//! unless set with [`SqliteOutbox::with_lease`]); another relay (another web instance on the same
//! file) skips leased rows, and takes them over if the lease runs out without the rows being marked
//! sent (the holder crashed, or its delivery failed).

use std::time::Duration;

use async_trait::async_trait;
use bookstore_domain::{Outbox, OutboxRow, OutboxSink, RepositoryError};
use chrono::Utc;
use sqlx::SqlitePool;

use crate::repo_error;

/// How long a relay holds the rows it took, unless set with [`SqliteOutbox::with_lease`].
pub const LEASE: Duration = Duration::from_secs(30);

/// The outbox of a SQLite catalog.
pub struct SqliteOutbox {
    pool: SqlitePool,
    /// How long a claim holds its rows, in milliseconds.
    lease_ms: i64,
}

impl SqliteOutbox {
    /// The outbox in `pool`'s database; claims hold their rows for [`LEASE`].
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_lease(pool, LEASE)
    }

    /// The outbox in `pool`'s database; claims hold their rows for `lease`. A relay round must
    /// finish within it: past it another relay may take the same rows and deliver them again.
    pub fn with_lease(pool: SqlitePool, lease: Duration) -> Self {
        Self {
            pool,
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn relay(&self, limit: usize, sink: &dyn OutboxSink) -> Result<u64, RepositoryError> {
        let now = Utc::now().timestamp_millis();
        let until = now.saturating_add(self.lease_ms);
        let mut rows: Vec<(i64, String, Vec<u8>)> = crate::retry_busy(|| {
            sqlx::query_as(concat!(
                "UPDATE outbox SET claimed_until = ?1 WHERE id IN (SELECT id FROM outbox ",
                "WHERE sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < ?2) ",
                "ORDER BY id LIMIT ?3) RETURNING id, event_key, payload"
            ))
            .bind(until)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
        })
        .await
        .map_err(repo_error)?;
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_by_key(|r| r.0);
        let rows: Vec<OutboxRow> = rows
            .into_iter()
            .map(|(id, key, payload)| OutboxRow { id, key, payload })
            .collect();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let ids = serde_json::to_string(&ids).unwrap_or_default();
        if let Err(error) = sink.deliver(&rows).await {
            tracing::warn!(%error, rows = rows.len(), "outbox delivery failed; retrying later");
            // Give the rows back (if still ours), so that the next round takes them first and the
            // order holds. Should this fail too, the lease runs out instead.
            let released = crate::retry_busy(|| {
                sqlx::query(concat!(
                    "UPDATE outbox SET claimed_until = NULL WHERE sent_at IS NULL ",
                    "AND claimed_until = ?1 AND id IN (SELECT value FROM json_each(?2))"
                ))
                .bind(until)
                .bind(ids.clone())
                .execute(&self.pool)
            })
            .await;
            if let Err(error) = released {
                tracing::warn!(%error, "cannot release the outbox rows; they wait for their lease");
            }
            return Ok(0);
        }
        let sent = crate::retry_busy(|| {
            sqlx::query(concat!(
            "UPDATE outbox SET sent_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), claimed_until = NULL ",
            "WHERE id IN (SELECT value FROM json_each(?1))"
        ))
        .bind(ids.clone())
        .execute(&self.pool)
        })
        .await
        .map_err(repo_error)?
        .rows_affected();
        Ok(sent)
    }

    async fn waiting(&self) -> Result<u64, RepositoryError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(repo_error)?;
        Ok(n.max(0) as u64)
    }

    async fn prune(&self, age: Duration, limit: usize) -> Result<u64, RepositoryError> {
        // `sent_at` is written by SQLite's clock, which is this machine's: the cut-off can be
        // computed here, in the same text format, and compared as text. The `outbox_sent` index
        // keeps the statement to the rows it deletes.
        let Some(cutoff) = chrono::Duration::from_std(age)
            .ok()
            .and_then(|age| Utc::now().checked_sub_signed(age))
        else {
            return Ok(0);
        };
        let cutoff = cutoff.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let deleted = crate::retry_busy(|| {
            sqlx::query(concat!(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ",
                "WHERE sent_at IS NOT NULL AND sent_at < ?1 ORDER BY sent_at, id LIMIT ?2)"
            ))
            .bind(cutoff.clone())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&self.pool)
        })
        .await
        .map_err(repo_error)?
        .rows_affected();
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bookstore_domain::{BookRepository, NewBook, NewBookInput};

    use super::*;
    use crate::SqliteBookRepository;

    #[derive(Default)]
    struct Collect {
        delivered: Mutex<Vec<i64>>,
        fail: bool,
    }

    #[async_trait]
    impl OutboxSink for Collect {
        async fn deliver(&self, rows: &[OutboxRow]) -> Result<(), String> {
            if self.fail {
                return Err("broker down".into());
            }
            self.delivered
                .lock()
                .unwrap()
                .extend(rows.iter().map(|r| r.id));
            Ok(())
        }
    }

    /// Records the rows it is given, as the log would have taken them; with `then_fail` it then
    /// reports a failure, which leaves the rows as a relay that died before marking them sent
    /// leaves them.
    #[derive(Default)]
    struct Record {
        rows: Mutex<Vec<OutboxRow>>,
        /// After recording, never answer: the relay's round is then dropped, as a killed process
        /// would leave it (delivered, not marked, nothing released).
        then_hang: bool,
    }

    impl Record {
        fn rows(&self) -> Vec<OutboxRow> {
            self.rows.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl OutboxSink for Record {
        async fn deliver(&self, rows: &[OutboxRow]) -> Result<(), String> {
            self.rows.lock().unwrap().extend_from_slice(rows);
            if self.then_hang {
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    }

    fn ids(rows: &[OutboxRow]) -> Vec<i64> {
        rows.iter().map(|r| r.id).collect()
    }

    fn new_books(n: usize) -> Vec<NewBook> {
        (0..n)
            .map(|i| {
                NewBook::parse(NewBookInput {
                    title: Some(format!("Book {i}")),
                    author: Some("A".into()),
                    published_at: Some("1900-01-01".into()),
                    description: None,
                })
                .unwrap()
            })
            .collect()
    }

    /// The URL of a new, empty database file.
    fn new_database_url() -> String {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        std::mem::forget(dir); // lives as long as the test process
        url
    }

    async fn catalog_with(books: usize) -> (SqliteBookRepository, SqliteOutbox) {
        let pool = crate::connect(&new_database_url(), 4).await.unwrap();
        let repo = SqliteBookRepository::new(pool.clone()).await.unwrap();
        repo.create_many(&new_books(books)).await.unwrap();
        (repo, SqliteOutbox::new(pool))
    }

    #[tokio::test]
    async fn rows_go_out_in_order_once_and_stay_when_delivery_fails() {
        let (_repo, outbox) = catalog_with(250).await;
        let failing = Collect {
            fail: true,
            ..Collect::default()
        };
        assert_eq!(outbox.relay(100, &failing).await.unwrap(), 0);
        assert_eq!(outbox.waiting().await.unwrap(), 250);

        // The failed round gave its rows back: the next rounds deliver everything, in order.
        let sink = Collect::default();
        while outbox.relay(100, &sink).await.unwrap() > 0 {}
        let delivered = sink.delivered.lock().unwrap().clone();
        assert_eq!(delivered, (1..=250).collect::<Vec<i64>>());
        assert_eq!(outbox.waiting().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn pruning_deletes_only_rows_sent_longer_ago_than_the_age_oldest_first() {
        let (repo, outbox) = catalog_with(6).await;
        let sink = Collect::default();
        assert_eq!(outbox.relay(4, &sink).await.unwrap(), 4);
        // Rows 1 to 3 were sent a day ago, row 4 two hours ago; rows 5 and 6 wait.
        sqlx::query(concat!(
            "UPDATE outbox SET sent_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ",
            "CASE WHEN id <= 3 THEN '-1 day' ELSE '-2 hours' END) WHERE id <= 4"
        ))
        .execute(repo.pool())
        .await
        .unwrap();
        let left = || async {
            sqlx::query_scalar::<_, i64>("SELECT id FROM outbox ORDER BY id")
                .fetch_all(repo.pool())
                .await
                .unwrap()
        };
        let hours = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(outbox.prune(hours(3), 2).await.unwrap(), 2);
        assert_eq!(left().await, [3, 4, 5, 6]);
        assert_eq!(outbox.prune(hours(3), 100).await.unwrap(), 1);
        assert_eq!(outbox.prune(hours(3), 100).await.unwrap(), 0);
        assert_eq!(left().await, [4, 5, 6]);
        assert_eq!(outbox.prune(hours(1), 100).await.unwrap(), 1);
        assert_eq!(left().await, [5, 6]);

        // The rows waiting are relayed as before, and kept.
        assert_eq!(outbox.waiting().await.unwrap(), 2);
        assert_eq!(outbox.relay(100, &sink).await.unwrap(), 2);
        assert_eq!(*sink.delivered.lock().unwrap(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(outbox.prune(hours(1), 100).await.unwrap(), 0);
        assert_eq!(left().await, [5, 6]);
        // An age beyond the calendar deletes nothing.
        assert_eq!(outbox.prune(Duration::MAX, 100).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn concurrent_relays_never_deliver_a_row_twice() {
        let (_repo, outbox) = catalog_with(1_000).await;
        let outbox = std::sync::Arc::new(outbox);
        let sink = std::sync::Arc::new(Collect::default());
        let relays: Vec<_> = (0..4)
            .map(|_| {
                let (outbox, sink) = (outbox.clone(), sink.clone());
                tokio::spawn(
                    async move { while outbox.relay(37, sink.as_ref()).await.unwrap() > 0 {} },
                )
            })
            .collect();
        for relay in relays {
            relay.await.unwrap();
        }
        let mut delivered = sink.delivered.lock().unwrap().clone();
        delivered.sort_unstable();
        assert_eq!(delivered, (1..=1_000).collect::<Vec<i64>>());
        assert_eq!(outbox.waiting().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_relay_that_dies_between_delivering_and_marking_sent_delivers_again() {
        const SHORT: Duration = Duration::from_millis(200);
        let url = new_database_url();
        let repo = SqliteBookRepository::new(crate::connect(&url, 2).await.unwrap())
            .await
            .unwrap();
        repo.create_many(&new_books(5)).await.unwrap();

        // One web instance's relay takes the three oldest rows, hands them to the log, and dies
        // before marking them sent.
        let dying_pool = crate::connect(&url, 1).await.unwrap();
        let dying = SqliteOutbox::with_lease(dying_pool.clone(), SHORT);
        let dies = Record {
            then_hang: true,
            ..Record::default()
        };
        let before = Utc::now().timestamp_millis();
        let killed = tokio::time::timeout(Duration::from_millis(50), dying.relay(3, &dies)).await;
        assert!(killed.is_err(), "the round was cut off after delivery");
        let after = Utc::now().timestamp_millis();
        let first = dies.rows();
        assert_eq!(ids(&first), [1, 2, 3]);
        assert_eq!(
            first.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            ["1", "2", "3"],
            "keyed by book id"
        );
        // Its claim holds them for its own lease, not the default one.
        let claims: Vec<Option<i64>> =
            sqlx::query_scalar("SELECT claimed_until FROM outbox ORDER BY id")
                .fetch_all(repo.pool())
                .await
                .unwrap();
        for claim in &claims[..3] {
            let until = claim.unwrap();
            assert!(
                (before + 200..=after + 200).contains(&until),
                "{until} not within 200 ms of [{before}, {after}]"
            );
        }
        assert_eq!(claims[3..], [None, None]);
        drop(dying);
        dying_pool.close().await;
        assert_eq!(repo.count().await.unwrap(), 5);

        // Another instance's relay, once the lease ran out, delivers them again, oldest first,
        // then the rows nobody took, and marks them all sent.
        tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
        let fresh = SqliteOutbox::with_lease(crate::connect(&url, 1).await.unwrap(), SHORT);
        assert_eq!(fresh.waiting().await.unwrap(), 5);
        let sink = Record::default();
        assert_eq!(fresh.relay(100, &sink).await.unwrap(), 5);
        let again = sink.rows();
        assert_eq!(ids(&again), [1, 2, 3, 4, 5]);
        assert_eq!(
            again[..3],
            first[..],
            "the very same events again: same keys, same payloads (same event ids)"
        );
        assert_eq!(fresh.waiting().await.unwrap(), 0);

        // A third round has nothing left to deliver.
        let third = Record::default();
        assert_eq!(fresh.relay(100, &third).await.unwrap(), 0);
        assert!(third.rows().is_empty());
    }

    #[tokio::test]
    async fn a_failed_transaction_publishes_nothing() {
        let (repo, outbox) = catalog_with(0).await;
        // The books' AUTOINCREMENT counter is 1,200 short of the largest rowid.
        sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ('books', ?1)")
            .bind(i64::MAX - 1_200)
            .execute(repo.pool())
            .await
            .unwrap();

        // The first INSERT of the batch stores 1,000 books and their 1,000 events; the second
        // stores 200 more, then SQLite refuses the next book: no rowid is left (SQLITE_FULL).
        let error = repo.create_many(&new_books(1_500)).await.unwrap_err();
        let RepositoryError::Internal(cause) = &error else {
            panic!("{error:?}")
        };
        let Some(sqlx::Error::Database(db)) = cause.downcast_ref::<sqlx::Error>() else {
            panic!("{cause:?}")
        };
        assert_eq!(db.code().as_deref(), Some("13"), "SQLITE_FULL: {db}");

        assert_eq!(repo.count().await.unwrap(), 0, "no book of the batch");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(repo.pool())
            .await
            .unwrap();
        assert_eq!(rows, 0, "no event of the batch");
        assert_eq!(outbox.waiting().await.unwrap(), 0);
        let sink = Record::default();
        assert_eq!(outbox.relay(100, &sink).await.unwrap(), 0);
        assert!(sink.rows().is_empty());
    }
}
