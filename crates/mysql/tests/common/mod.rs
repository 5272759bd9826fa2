//! A database of its own on the test MariaDB from `dev/services` for each test, dropped when the
//! test ends, whether it passed or not.

use std::time::Duration;

use sqlx::Connection;

pub struct TestDb {
    /// The database's URL.
    pub url: String,
    server: String,
    name: String,
}

impl TestDb {
    /// Creates it on `BOOKSTORE_TEST_MYSQL_URL` (`dev/services`' server when unset). Panics,
    /// naming the fix, when MariaDB cannot be reached.
    pub async fn new() -> Self {
        let server = std::env::var("BOOKSTORE_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://bookstore:bookstore@127.0.0.1:3306".to_owned())
            .trim_end_matches('/')
            .to_owned();
        let mut conn = sqlx::MySqlConnection::connect(&server)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "MariaDB is not reachable at {server}: start it with `dev/services start`: {e}"
                )
            });
        let name = format!("bookstore_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(&format!("CREATE DATABASE `{name}`"))
            .execute(&mut conn)
            .await
            .unwrap();
        let url = format!("{server}/{name}");
        Self { url, server, name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: a runtime of its own
        // on a thread of its own. A failure fails the test, unless it is failing already.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            // Bounded: a server that does not answer must not hold the test up.
            // (The timer is made inside the runtime: it needs one.)
            runtime
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(60), drop_database(&server, &name))
                        .await
                })
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())
        })
        .join();
        match dropped {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => report(&format!(
                "could not drop the test database {}: {error}",
                self.name
            )),
            Err(_) => report(&format!("could not drop the test database {}", self.name)),
        }
    }
}

/// Ends the sessions still using the database `name` (the test's pools are dropped, not closed,
/// and one may be inside a transaction whose locks would hold the DROP up), then drops it.
pub async fn drop_database(server: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::MySqlConnection::connect(server).await?;
    // A lock taken after the sessions were listed makes the DROP fail rather than wait a year.
    sqlx::query("SET SESSION lock_wait_timeout = 30")
        .execute(&mut conn)
        .await?;
    let sessions: Vec<i64> = sqlx::query_scalar(
        "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = ?",
    )
    .bind(name)
    .fetch_all(&mut conn)
    .await?;
    for id in sessions {
        // It may have ended meanwhile.
        let _ = sqlx::raw_sql(&format!("KILL CONNECTION {id}"))
            .execute(&mut conn)
            .await;
    }
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS `{name}`"))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Fails the test, unless it is failing already (its own message matters more, and a second
/// panic would abort).
fn report(message: &str) {
    if std::thread::panicking() {
        eprintln!("{message}");
    } else {
        panic!("{message}");
    }
}
