//! Consumer positions kept in the same SQLite database as a handler's state, so that a batch and
//! the position it reaches commit in one transaction.

use bookstore_domain::{Batch, HandlerError, Position};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqlitePool};

/// Creates the positions table if it is missing.
pub async fn create_table(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query(concat!(
        "CREATE TABLE IF NOT EXISTS consumer_positions (",
        "group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL, ",
        "next_offset INTEGER NOT NULL, PRIMARY KEY (group_id, topic, partition)) STRICT"
    ))
    .execute(pool)
    .await
    .map(|_| ())
}

/// The positions stored for `group`.
pub async fn load(pool: &SqlitePool, group: &str) -> Result<Vec<Position>, HandlerError> {
    let rows = sqlx::query(
        "SELECT topic, partition, next_offset FROM consumer_positions WHERE group_id = ?",
    )
    .bind(group)
    .fetch_all(pool)
    .await
    .map_err(handler_error)?;
    rows.into_iter()
        .map(|row| {
            Ok(Position {
                topic: row.try_get("topic").map_err(handler_error)?,
                partition: row.try_get("partition").map_err(handler_error)?,
                next_offset: row.try_get("next_offset").map_err(handler_error)?,
            })
        })
        .collect()
}

/// Moves the positions of `batch` inside the caller's transaction, checking each against its
/// `from`. Call it FIRST in the transaction: being a write, it takes SQLite's write lock before
/// anything is read, so the check and the state change see the same database.
pub async fn advance(conn: &mut SqliteConnection, batch: &Batch) -> Result<(), HandlerError> {
    for update in &batch.positions {
        let result = match update.from {
            Some(from) => {
                sqlx::query(concat!(
                    "UPDATE consumer_positions SET next_offset = ? ",
                    "WHERE group_id = ? AND topic = ? AND partition = ? AND next_offset = ?"
                ))
                .bind(update.to)
                .bind(&batch.group)
                .bind(&update.topic)
                .bind(update.partition)
                .bind(from)
                .execute(&mut *conn)
                .await
            }
            None => {
                sqlx::query(concat!(
                    "INSERT INTO consumer_positions (group_id, topic, partition, next_offset) ",
                    "VALUES (?, ?, ?, ?) ON CONFLICT (group_id, topic, partition) DO NOTHING"
                ))
                .bind(&batch.group)
                .bind(&update.topic)
                .bind(update.partition)
                .bind(update.to)
                .execute(&mut *conn)
                .await
            }
        }
        .map_err(handler_error)?;
        if result.rows_affected() != 1 {
            return Err(HandlerError::StalePosition(format!(
                "{}/{} is no longer at {:?}",
                update.topic, update.partition, update.from
            )));
        }
    }
    Ok(())
}

/// Sorts a database error into "retry later" and "this batch can never be applied". Anything
/// unknown is retried: stalling is visible and recoverable, skipping events is neither.
pub fn handler_error(err: sqlx::Error) -> HandlerError {
    match &err {
        sqlx::Error::Database(db)
            if matches!(
                db.kind(),
                sqlx::error::ErrorKind::CheckViolation
                    | sqlx::error::ErrorKind::NotNullViolation
                    | sqlx::error::ErrorKind::ForeignKeyViolation
            ) =>
        {
            HandlerError::Rejected(err.to_string())
        }
        _ => HandlerError::Transient(Box::new(err)),
    }
}
