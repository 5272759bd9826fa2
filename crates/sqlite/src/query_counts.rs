//! The simplest useful event handler: how many times each normalized query was searched.
//! It serves the events benchmark and `bookstore events count`, and it is what the exactly-once
//! tests check: after any number of crashes its counts must equal the searches made.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bookstore_domain::{Batch, EventHandler, HandlerError, Position};
use sqlx::sqlite::SqlitePool;

use crate::positions;

/// Counts of searches per normalized query, in SQLite.
#[derive(Clone)]
pub struct SqliteQueryCounts {
    pool: SqlitePool,
}

impl SqliteQueryCounts {
    /// Creates the tables if needed.
    pub async fn new(pool: SqlitePool) -> Result<Self, sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS query_counts (query TEXT PRIMARY KEY, count INTEGER NOT NULL) STRICT",
        )
        .execute(&pool)
        .await?;
        positions::create_table(&pool).await?;
        Ok(Self { pool })
    }

    /// Every counted query and its count.
    pub async fn counts(&self) -> Result<BTreeMap<String, u64>, sqlx::Error> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT query, count FROM query_counts")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(q, n)| (q, u64::try_from(n).unwrap_or(0)))
            .collect())
    }
}

#[async_trait]
impl EventHandler for SqliteQueryCounts {
    fn name(&self) -> &str {
        "query-counts"
    }

    async fn positions(&self, group: &str) -> Result<Vec<Position>, HandlerError> {
        positions::load(&self.pool, group).await
    }

    async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
        let mut per_query: BTreeMap<&str, i64> = BTreeMap::new();
        for record in &batch.records {
            // Other events (a catalog event on a shared topic) are not counted; the position
            // still moves past them with the batch.
            if let Some(e) = record.event.as_search() {
                *per_query.entry(&e.query_normalized).or_default() += 1;
            }
        }
        // One statement per batch, whatever the number of queries: the counts go in as a JSON
        // array of [query, n] pairs.
        let rows: Vec<(&str, i64)> = per_query.into_iter().collect();
        let rows =
            serde_json::to_string(&rows).map_err(|e| HandlerError::Rejected(e.to_string()))?;
        let mut tx = self.pool.begin().await.map_err(positions::handler_error)?;
        positions::advance(&mut tx, batch).await?;
        sqlx::query(concat!(
            "INSERT INTO query_counts (query, count) ",
            "SELECT value ->> 0, value ->> 1 FROM json_each(?) WHERE true ",
            "ON CONFLICT (query) DO UPDATE SET count = count + excluded.count"
        ))
        .bind(rows)
        .execute(&mut *tx)
        .await
        .map_err(positions::handler_error)?;
        tx.commit().await.map_err(positions::handler_error)
    }
}
