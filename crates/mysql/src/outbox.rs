//! The outbox relay on MySQL/MariaDB: a round is one transaction, held while its rows are
//! delivered. One relay at a time: a round first locks the one row of `outbox_relay` with
//! `FOR UPDATE NOWAIT`, and takes nothing if another relay's round holds it (a relay that skipped
//! ahead of rows another holds could let a book's later event reach the log before an earlier
//! one); then it locks the oldest waiting rows with `FOR UPDATE SKIP LOCKED` (rows of
//! transactions still open are skipped, not waited for). A relay that dies releases its locks with
//! its connection and the rows are taken again, oldest first. A row the sink refuses counts an
//! attempt and keeps the reason; one it gives up on is dead-lettered (`dead_at`) and never taken
//! again.

use async_trait::async_trait;
use bookstore_domain::{Outbox, OutboxRow, OutboxSink, Relayed, RepositoryError, Settlement};
use sqlx::{Connection, MySql, MySqlPool, QueryBuilder};

use crate::repo_error;

/// Whether `error` says the rows are locked by another transaction (`NOWAIT`: MariaDB's error
/// 1205, MySQL's 3572).
fn is_lock_wait(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|e| matches!(e.number(), 1205 | 3572))
}

/// The outbox of a MySQL catalog.
pub struct MySqlOutbox {
    pool: MySqlPool,
}

impl MySqlOutbox {
    pub fn new(pool: MySqlPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl Outbox for MySqlOutbox {
    async fn relay(&self, limit: usize, sink: &dyn OutboxSink) -> Result<Relayed, RepositoryError> {
        // READ COMMITTED: the claim locks the rows it takes and nothing else. Under REPEATABLE READ
        // it would also lock the gap after the last unsent row, and every new book's outbox insert
        // would wait for this round, and so for the log, to finish.
        let mut conn = crate::read_committed(&self.pool).await?;
        let mut tx = Connection::begin(&mut *conn).await.map_err(repo_error)?;
        // One relay at a time: another relay's round holds the lock row, and this round takes
        // nothing.
        let turn = sqlx::query("SELECT id FROM outbox_relay WHERE id = 1 FOR UPDATE NOWAIT")
            .fetch_optional(&mut *tx)
            .await;
        match turn {
            Ok(Some(_)) => {}
            // Without the row relays would not take turns: refuse rather than reorder events.
            Ok(None) => {
                return Err(RepositoryError::Internal(
                    "the outbox_relay table has no row 1 (migration 0007 puts it there)".into(),
                ));
            }
            Err(error) if is_lock_wait(&error) => return Ok(Relayed::default()),
            Err(error) => return Err(repo_error(error)),
        }
        // Rows of transactions still open are skipped, not waited for: a book's rows are written
        // under its row lock, so an open transaction's row of a book is newer than every
        // committed row of that book, and skipping it never reorders one book's events.
        let rows: Vec<(i64, String, Vec<u8>, i32)> = sqlx::query_as(concat!(
            "SELECT id, event_key, payload, attempts FROM outbox ",
            "WHERE dead_at IS NULL AND sent_at IS NULL ",
            "ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED"
        ))
        .bind(u64::try_from(limit).unwrap_or(u64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(repo_error)?;
        if rows.is_empty() {
            return Ok(Relayed::default());
        }
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
            return Ok(Relayed::default()); // the transaction rolls back: the rows stay unsent
        }
        let settlement = Settlement::of(&rows, answer);
        let mut relayed = Relayed::default();
        if !settlement.sent.is_empty() {
            let mut update: QueryBuilder<MySql> =
                QueryBuilder::new("UPDATE outbox SET sent_at = CURRENT_TIMESTAMP(6) WHERE id IN (");
            let mut ids = update.separated(", ");
            for id in &settlement.sent {
                ids.push_bind(id);
            }
            update.push(")");
            relayed.sent = update
                .build()
                .execute(&mut *tx)
                .await
                .map_err(repo_error)?
                .rows_affected();
        }
        // The rows are this transaction's (locked): nobody else counts their attempts.
        for refusal in &settlement.refused {
            sqlx::query(concat!(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, ",
                "dead_at = IF(?, CURRENT_TIMESTAMP(6), NULL) WHERE id = ?"
            ))
            .bind(&refusal.reason)
            .bind(refusal.dead)
            .bind(refusal.id)
            .execute(&mut *tx)
            .await
            .map_err(repo_error)?;
            relayed.record(refusal);
        }
        // The rows to retry are given back with the locks.
        tx.commit().await.map_err(repo_error)?;
        Ok(relayed)
    }

    async fn waiting(&self) -> Result<u64, RepositoryError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE dead_at IS NULL AND sent_at IS NULL",
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

    async fn prune(&self, age: std::time::Duration, limit: usize) -> Result<u64, RepositoryError> {
        // Nothing was sent a millennium ago (the server's dates start in year 1000).
        if age > std::time::Duration::from_secs(1_000 * 366 * 86_400) {
            return Ok(0);
        }
        // READ COMMITTED, as for a relay round: the delete locks the rows it deletes and no gap,
        // so new books' outbox rows never wait for it. `sent_at` is written by the server's
        // clock, so the cut-off is computed there too; with `dead_at IS NULL` (a sent row is
        // never dead) the order is the `outbox_waiting (dead_at, sent_at, id)` key's, so the
        // statement reads no further than the rows it deletes.
        let mut conn = crate::read_committed(&self.pool).await?;
        let deleted = sqlx::query(concat!(
            "DELETE FROM outbox WHERE dead_at IS NULL AND sent_at IS NOT NULL ",
            "AND sent_at < CURRENT_TIMESTAMP(6) - INTERVAL ? MICROSECOND ",
            "ORDER BY sent_at, id LIMIT ?"
        ))
        .bind(u64::try_from(age.as_micros()).unwrap_or(u64::MAX))
        .bind(u64::try_from(limit).unwrap_or(u64::MAX))
        .execute(&mut *conn)
        .await
        .map_err(repo_error)?
        .rows_affected();
        Ok(deleted)
    }
}
