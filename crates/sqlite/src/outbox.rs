//! The outbox relay on SQLite. SQLite has one writer at a time, so a claim is one atomic
//! `UPDATE … RETURNING` that leases the oldest unsent rows to this relay for its lease ([`LEASE`]
//! unless set with [`SqliteOutbox::with_lease`]). One relay at a time: while any row is leased,
//! another relay (another web instance on the same file) takes nothing, and it takes the rows
//! over, oldest first, if the lease runs out without them being marked sent (the holder crashed,
//! or its delivery failed). Taking newer rows past held ones would let a book's later event
//! reach the log before an earlier one, and a reader of the compacted topic keep the earlier. A row the sink refuses counts an attempt
//! and keeps the reason; one it gives up on is dead-lettered (`dead_at`) and never taken again.

use std::time::Duration;

use async_trait::async_trait;
use bookstore_domain::{Outbox, OutboxRow, OutboxSink, Relayed, RepositoryError, Settlement};
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

/// Applies `settlement` to the rows claimed until `until`, in one transaction.
async fn settle(
    pool: &SqlitePool,
    until: i64,
    settlement: &Settlement,
) -> Result<Relayed, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut relayed = Relayed::default();
    if !settlement.sent.is_empty() {
        relayed.sent = sqlx::query(concat!(
            "UPDATE outbox SET sent_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ",
            "claimed_until = NULL WHERE id IN (SELECT value FROM json_each(?1))"
        ))
        .bind(json_ids(&settlement.sent))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    for refusal in &settlement.refused {
        // Only while the claim is still this round's: a relay whose lease ran out leaves the
        // row to the relay that took it over.
        let counted = sqlx::query(concat!(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?1, claimed_until = NULL, ",
            "dead_at = CASE WHEN ?2 THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END ",
            "WHERE id = ?3 AND claimed_until = ?4 AND sent_at IS NULL AND dead_at IS NULL"
        ))
        .bind(&refusal.reason)
        .bind(refusal.dead)
        .bind(refusal.id)
        .bind(until)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if counted > 0 {
            relayed.record(refusal);
        }
    }
    if !settlement.retry.is_empty() {
        // Given back (if still ours), so that the next round takes them first and the order
        // holds.
        sqlx::query(concat!(
            "UPDATE outbox SET claimed_until = NULL WHERE sent_at IS NULL ",
            "AND claimed_until = ?1 AND id IN (SELECT value FROM json_each(?2))"
        ))
        .bind(until)
        .bind(json_ids(&settlement.retry))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(relayed)
}

fn json_ids(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_default()
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn relay(&self, limit: usize, sink: &dyn OutboxSink) -> Result<Relayed, RepositoryError> {
        let now = Utc::now().timestamp_millis();
        let until = now.saturating_add(self.lease_ms);
        let mut rows: Vec<(i64, String, Vec<u8>, i64)> = crate::retry_busy(|| {
            sqlx::query_as(concat!(
                "UPDATE outbox SET claimed_until = ?1 WHERE id IN (SELECT id FROM outbox ",
                "WHERE sent_at IS NULL AND dead_at IS NULL ",
                "AND NOT EXISTS (SELECT 1 FROM outbox AS held WHERE held.sent_at IS NULL ",
                "AND held.dead_at IS NULL AND held.claimed_until >= ?2) ",
                "ORDER BY id LIMIT ?3) RETURNING id, event_key, payload, attempts"
            ))
            .bind(until)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
        })
        .await
        .map_err(repo_error)?;
        if rows.is_empty() {
            return Ok(Relayed::default());
        }
        rows.sort_by_key(|r| r.0);
        let rows: Vec<OutboxRow> = rows
            .into_iter()
            .map(|(id, key, payload, attempts)| OutboxRow {
                id,
                key,
                payload,
                attempts: u32::try_from(attempts).unwrap_or(0),
            })
            .collect();
        let answer = sink.deliver(&rows).await;
        if let Err(error) = &answer {
            tracing::warn!(%error, rows = rows.len(), "outbox delivery failed; retrying later");
        }
        let settlement = Settlement::of(&rows, answer);
        // Should this fail, the rows the log took are sent again later, and the others wait for
        // their lease.
        crate::retry_busy(|| settle(&self.pool, until, &settlement))
            .await
            .map_err(repo_error)
    }

    async fn waiting(&self) -> Result<u64, RepositoryError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(repo_error)?;
        Ok(n.max(0) as u64)
    }

    async fn dead_letters(&self) -> Result<u64, RepositoryError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE dead_at IS NOT NULL")
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

    use bookstore_domain::{BookRepository, NewBook, NewBookInput, RowOutcome};
    use bookstore_testkit::conformance::outbox::{self as outbox_conformance, Scripted};

    use super::*;
    use crate::SqliteBookRepository;

    fn all_sent(rows: &[OutboxRow]) -> Vec<RowOutcome> {
        vec![RowOutcome::Sent; rows.len()]
    }

    #[derive(Default)]
    struct Collect {
        delivered: Mutex<Vec<i64>>,
        fail: bool,
    }

    #[async_trait]
    impl OutboxSink for Collect {
        async fn deliver(&self, rows: &[OutboxRow]) -> Result<Vec<RowOutcome>, String> {
            if self.fail {
                return Err("broker down".into());
            }
            self.delivered
                .lock()
                .unwrap()
                .extend(rows.iter().map(|r| r.id));
            Ok(all_sent(rows))
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
        async fn deliver(&self, rows: &[OutboxRow]) -> Result<Vec<RowOutcome>, String> {
            self.rows.lock().unwrap().extend_from_slice(rows);
            if self.then_hang {
                std::future::pending::<()>().await;
            }
            Ok(all_sent(rows))
        }
    }

    fn ids(rows: &[OutboxRow]) -> Vec<i64> {
        rows.iter().map(|r| r.id).collect()
    }

    fn new_books(n: usize) -> Vec<NewBook> {
        (0..n)
            .map(|i| {
                NewBook::parse(NewBookInput {
                    isbn: None,
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
        assert_eq!(outbox.relay(100, &failing).await.unwrap().sent, 0);
        assert_eq!(outbox.waiting().await.unwrap(), 250);

        // The failed round gave its rows back: the next rounds deliver everything, in order.
        let sink = Collect::default();
        while outbox.relay(100, &sink).await.unwrap().sent > 0 {}
        let delivered = sink.delivered.lock().unwrap().clone();
        assert_eq!(delivered, (1..=250).collect::<Vec<i64>>());
        assert_eq!(outbox.waiting().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn pruning_deletes_only_rows_sent_longer_ago_than_the_age_oldest_first() {
        let (repo, outbox) = catalog_with(6).await;
        let sink = Collect::default();
        assert_eq!(outbox.relay(4, &sink).await.unwrap().sent, 4);
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
        assert_eq!(outbox.relay(100, &sink).await.unwrap().sent, 2);
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
                tokio::spawn(async move {
                    while outbox.relay(37, sink.as_ref()).await.unwrap().sent > 0 {}
                })
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

    /// Each row's attempts, last error, whether it is dead, sent, claimed.
    async fn states(
        repo: &SqliteBookRepository,
    ) -> Vec<(i64, i64, Option<String>, bool, bool, bool)> {
        sqlx::query_as(concat!(
            "SELECT id, attempts, last_error, dead_at IS NOT NULL, sent_at IS NOT NULL, ",
            "claimed_until IS NOT NULL FROM outbox ORDER BY id"
        ))
        .fetch_all(repo.pool())
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn refused_rows_count_attempts_and_dead_letters_are_never_taken_again() {
        let (repo, outbox) = catalog_with(4).await;
        outbox_conformance::check_refusals(
            &outbox,
            || row_states(&repo),
            |id| {
                let pool = repo.pool().clone();
                async move {
                    sqlx::query("UPDATE outbox SET dead_at = NULL, attempts = 0 WHERE id = ?")
                        .bind(id)
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            },
        )
        .await;
    }

    /// [`states`] for the shared check, which also finds no row left claimed.
    async fn row_states(repo: &SqliteBookRepository) -> Vec<outbox_conformance::RowState> {
        states(repo)
            .await
            .into_iter()
            .map(|(id, attempts, error, dead, sent, claimed)| {
                assert!(!claimed, "row {id} is still claimed");
                (id, attempts, error, dead, sent)
            })
            .collect()
    }

    /// Refuses every row after a pause.
    struct SlowRefusal(Duration);

    #[async_trait]
    impl OutboxSink for SlowRefusal {
        async fn deliver(&self, rows: &[OutboxRow]) -> Result<Vec<RowOutcome>, String> {
            tokio::time::sleep(self.0).await;
            Ok(vec![RowOutcome::Dead("late".into()); rows.len()])
        }
    }

    #[tokio::test]
    async fn a_relay_whose_lease_ran_out_counts_no_refusal() {
        let (repo, _) = catalog_with(2).await;
        let late = SqliteOutbox::with_lease(repo.pool().clone(), Duration::from_millis(100));
        let round = tokio::spawn(async move {
            late.relay(100, &SlowRefusal(Duration::from_millis(400)))
                .await
                .unwrap()
        });
        // Past the lease another relay takes the rows, and gives them back.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let other = SqliteOutbox::new(repo.pool().clone());
        let given_back = Scripted {
            script: [(1, RowOutcome::Retry), (2, RowOutcome::Retry)].into(),
            ..Scripted::default()
        };
        assert_eq!(
            other.relay(100, &given_back).await.unwrap(),
            Relayed::default()
        );
        assert_eq!(round.await.unwrap(), Relayed::default());
        assert_eq!(
            states(&repo).await,
            [
                (1, 0, None, false, false, false),
                (2, 0, None, false, false, false),
            ]
        );
    }

    /// Delivers nothing until released, and says when it was given rows.
    #[derive(Default)]
    struct Held {
        given: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    #[async_trait]
    impl OutboxSink for Held {
        async fn deliver(&self, rows: &[OutboxRow]) -> Result<Vec<RowOutcome>, String> {
            self.given.notify_one();
            self.release.notified().await;
            Ok(vec![RowOutcome::Sent; rows.len()])
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn while_a_relay_holds_the_oldest_rows_another_takes_none() {
        let (repo, first) = catalog_with(4).await;
        let first = std::sync::Arc::new(first);
        let held = std::sync::Arc::new(Held::default());
        let round = tokio::spawn({
            let (first, held) = (first.clone(), held.clone());
            async move { first.relay(2, held.as_ref()).await.unwrap() }
        });
        held.given.notified().await;
        // Rows 3 and 4 are free, but taking them would put them in the log before rows 1 and 2
        // (a crashed holder's rows after the ones a later relay sent).
        let other = SqliteOutbox::new(repo.pool().clone());
        let sink = Scripted::default();
        assert_eq!(other.relay(100, &sink).await.unwrap(), Relayed::default());
        assert!(sink.given.lock().unwrap().is_empty());
        held.release.notify_one();
        assert_eq!(round.await.unwrap().sent, 2);
        assert_eq!(other.relay(100, &sink).await.unwrap().sent, 2);
        let given: Vec<i64> = sink.given.lock().unwrap().iter().map(|r| r.id).collect();
        assert_eq!(given, [3, 4]);
    }

    #[tokio::test]
    async fn concurrent_relays_count_each_refusal_once() {
        let (repo, outbox) = catalog_with(1_000).await;
        let outbox = std::sync::Arc::new(outbox);
        let sink = std::sync::Arc::new(outbox_conformance::Poisoned::default());
        let relays: Vec<_> = (0..4)
            .map(|_| {
                let (outbox, sink) = (outbox.clone(), sink.clone());
                tokio::spawn(async move {
                    while outbox.relay(37, sink.as_ref()).await.unwrap().progressed() {}
                })
            })
            .collect();
        for relay in relays {
            relay.await.unwrap();
        }
        outbox_conformance::check_poisoned(outbox.as_ref(), &sink, row_states(&repo)).await;
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
        assert_eq!(fresh.relay(100, &sink).await.unwrap().sent, 5);
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
        assert_eq!(fresh.relay(100, &third).await.unwrap().sent, 0);
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
        assert_eq!(outbox.relay(100, &sink).await.unwrap().sent, 0);
        assert!(sink.rows().is_empty());
    }
}
