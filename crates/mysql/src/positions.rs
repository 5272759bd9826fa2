//! Consumer positions kept in the same MySQL/MariaDB database as a handler's state, so that a
//! batch and the position it reaches commit in one transaction.
//!
//! The protocol is SQLite's (`bookstore_sqlite::positions`): [`advance`] runs first in the
//! handler's transaction and refuses the whole batch as stale when a stored position is not the
//! update's `from`. InnoDB has no database-wide write lock, so each position row is read with
//! `SELECT … FOR UPDATE` and held until the transaction ends: a second instance applying the same
//! partition waits on that row, then finds it moved. Checking the row read, rather than the
//! affected-rows count of a conditional `UPDATE`, keeps the check independent of
//! `CLIENT_FOUND_ROWS` (without it, an `UPDATE` that leaves a value unchanged reports 0 rows).

use bookstore_domain::{Batch, HandlerError, Position};
use sqlx::Row;
use sqlx::error::ErrorKind;
use sqlx::mysql::{MySqlConnection, MySqlDatabaseError, MySqlPool};

/// Creates the positions table if it is missing. `partition` is a reserved word in MySQL, hence
/// the backquotes.
pub async fn create_table(pool: &MySqlPool) -> Result<(), sqlx::Error> {
    sqlx::query(concat!(
        "CREATE TABLE IF NOT EXISTS consumer_positions (",
        "group_id VARCHAR(255) NOT NULL, topic VARCHAR(255) NOT NULL, `partition` INT NOT NULL, ",
        "next_offset BIGINT NOT NULL, PRIMARY KEY (group_id, topic, `partition`)) ",
        "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
    ))
    .execute(pool)
    .await
    .map(|_| ())
}

/// The positions stored for `group`.
pub async fn load(pool: &MySqlPool, group: &str) -> Result<Vec<Position>, HandlerError> {
    let rows = sqlx::query(
        "SELECT topic, `partition`, next_offset FROM consumer_positions WHERE group_id = ?",
    )
    .bind(group)
    .fetch_all(pool)
    .await
    .map_err(handler_error)?;
    rows.into_iter()
        .map(|row| {
            Ok(Position {
                // A binary collation makes the server flag the column BINARY, which sqlx's
                // checked decoding refuses as a `String`; the bytes are still checked as UTF-8.
                topic: row.try_get_unchecked(0).map_err(handler_error)?,
                partition: row.try_get(1).map_err(handler_error)?,
                next_offset: row.try_get(2).map_err(handler_error)?,
            })
        })
        .collect()
}

/// Moves the positions of `batch` inside the caller's transaction, checking each against its
/// `from`. Call it FIRST in the transaction: the position rows it locks serialize the instances
/// that apply the same partition, before anything else is read.
pub async fn advance(conn: &mut MySqlConnection, batch: &Batch) -> Result<(), HandlerError> {
    for update in &batch.positions {
        let stored: Option<i64> = sqlx::query_scalar(concat!(
            "SELECT next_offset FROM consumer_positions ",
            "WHERE group_id = ? AND topic = ? AND `partition` = ? FOR UPDATE"
        ))
        .bind(&batch.group)
        .bind(&update.topic)
        .bind(update.partition)
        .fetch_optional(&mut *conn)
        .await
        .map_err(handler_error)?;
        let stale = || {
            HandlerError::StalePosition(format!(
                "{}/{} is at {stored:?}, not at {:?}",
                update.topic, update.partition, update.from
            ))
        };
        match (update.from, stored) {
            (Some(from), Some(at)) if from == at => {
                sqlx::query(concat!(
                    "UPDATE consumer_positions SET next_offset = ? ",
                    "WHERE group_id = ? AND topic = ? AND `partition` = ?"
                ))
                .bind(update.to)
                .bind(&batch.group)
                .bind(&update.topic)
                .bind(update.partition)
                .execute(&mut *conn)
                .await
                .map_err(handler_error)?;
            }
            (None, None) => {
                let inserted = sqlx::query(concat!(
                    "INSERT INTO consumer_positions (group_id, topic, `partition`, next_offset) ",
                    "VALUES (?, ?, ?, ?)"
                ))
                .bind(&batch.group)
                .bind(&update.topic)
                .bind(update.partition)
                .bind(update.to)
                .execute(&mut *conn)
                .await;
                match inserted {
                    Ok(_) => {}
                    // Another instance stored the first position meanwhile (possible when the
                    // server runs READ COMMITTED, which takes no gap lock on the missing row).
                    Err(sqlx::Error::Database(db)) if db.kind() == ErrorKind::UniqueViolation => {
                        return Err(stale());
                    }
                    Err(err) => return Err(handler_error(err)),
                }
            }
            _ => return Err(stale()),
        }
    }
    Ok(())
}

/// MySQL errors of data that can never be stored, whatever the retries: a value too long for its
/// column (1406), out of its range (1264, 1690), or not valid in its character set (1366).
const DATA_ERRORS: [u16; 4] = [1406, 1264, 1690, 1366];

/// Sorts a database error into "retry later" and "this batch can never be applied". Deadlocks
/// (1213), lock wait timeouts (1205), lost connections and a pool that cannot connect are retried;
/// constraint violations and data the columns cannot hold are rejected. Anything unknown is
/// retried: stalling is visible and recoverable, skipping events is neither.
pub fn handler_error(err: sqlx::Error) -> HandlerError {
    match &err {
        sqlx::Error::Database(db)
            if matches!(
                db.kind(),
                ErrorKind::CheckViolation
                    | ErrorKind::NotNullViolation
                    | ErrorKind::ForeignKeyViolation
            ) || db
                .try_downcast_ref::<MySqlDatabaseError>()
                .is_some_and(|e| DATA_ERRORS.contains(&e.number())) =>
        {
            HandlerError::Rejected(err.to_string())
        }
        _ => HandlerError::Transient(Box::new(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_transient() {
        assert!(matches!(
            handler_error(sqlx::Error::PoolTimedOut),
            HandlerError::Transient(_)
        ));
        assert!(matches!(
            handler_error(sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset
            ))),
            HandlerError::Transient(_)
        ));
    }
}
