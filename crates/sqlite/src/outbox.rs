//! The outbox relay on SQLite. SQLite has one writer at a time, so a claim is one atomic
//! `UPDATE … RETURNING` that leases the oldest unsent rows to this relay for [`LEASE`]; another
//! relay (another web instance on the same file) skips leased rows, and takes them over if the
//! lease runs out without the rows being marked sent (the holder crashed).

use std::time::Duration;

use async_trait::async_trait;
use bookstore_domain::{Outbox, OutboxRow, OutboxSink, RepositoryError};
use chrono::Utc;
use sqlx::SqlitePool;

use crate::repo_error;

/// How long a relay holds the rows it took.
pub const LEASE: Duration = Duration::from_secs(30);

/// The outbox of a SQLite catalog.
pub struct SqliteOutbox {
    pool: SqlitePool,
}

impl SqliteOutbox {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn relay(&self, limit: usize, sink: &dyn OutboxSink) -> Result<u64, RepositoryError> {
        let now = Utc::now().timestamp_millis();
        let mut rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(concat!(
            "UPDATE outbox SET claimed_until = ?1 WHERE id IN (SELECT id FROM outbox ",
            "WHERE sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < ?2) ",
            "ORDER BY id LIMIT ?3) RETURNING id, event_key, payload"
        ))
        .bind(now + LEASE.as_millis() as i64)
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
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
        if let Err(error) = sink.deliver(&rows).await {
            // Leave them leased: they are taken again when the lease runs out.
            tracing::warn!(%error, rows = rows.len(), "outbox delivery failed; retrying later");
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let ids = serde_json::to_string(&ids).unwrap_or_default();
        let sent = sqlx::query(concat!(
            "UPDATE outbox SET sent_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), claimed_until = NULL ",
            "WHERE id IN (SELECT value FROM json_each(?1))"
        ))
        .bind(ids)
        .execute(&self.pool)
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

    async fn catalog_with(books: usize) -> (SqliteBookRepository, SqliteOutbox) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        std::mem::forget(dir); // lives as long as the test process
        let pool = crate::connect(&url, 4).await.unwrap();
        let repo = SqliteBookRepository::new(pool.clone()).await.unwrap();
        let many: Vec<NewBook> = (0..books)
            .map(|i| {
                NewBook::parse(NewBookInput {
                    title: Some(format!("Book {i}")),
                    author: Some("A".into()),
                    published_at: Some("1900-01-01".into()),
                    description: None,
                })
                .unwrap()
            })
            .collect();
        repo.create_many(&many).await.unwrap();
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

        // The failed rows are leased: a second relay takes the others first, in order.
        let sink = Collect::default();
        while outbox.relay(100, &sink).await.unwrap() > 0 {}
        let delivered = sink.delivered.lock().unwrap().clone();
        assert_eq!(delivered, (101..=250).collect::<Vec<i64>>());
        assert_eq!(
            outbox.waiting().await.unwrap(),
            100,
            "the leased rows wait for their lease"
        );
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
}
