//! A database of its own on the test MariaDB for each test ([`FreshDatabase`]), dropped when the
//! test ends, whether it passed or not.

use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::migrate::MigrateDatabase;

use crate::guard::{CLEANUP_TIMEOUT, on_own_runtime, report};
use crate::servers::{self, mysql_server_url};

/// What every test database's name starts with; nothing else is ever dropped.
pub const PREFIX: &str = "bookstore_test_";

/// A uniquely named database `bookstore_test_[<purpose>_]<uuid>` on the test MariaDB
/// ([`servers::mysql_server_url`]), dropped when this guard is dropped: at the end of the test,
/// and also while a failed test's panic unwinds. Dropping never hangs: it gives up after
/// [`CLEANUP_TIMEOUT`] (and then fails the test, unless it is failing already).
///
/// Made with [`FreshDatabase::create`] (the database exists) or [`FreshDatabase::reserve`] (only
/// the name is taken, for a service that creates its database itself).
#[derive(Debug)]
pub struct FreshDatabase {
    /// The server's URL, without a path or parameters.
    server: String,
    /// The server URL's parameters (`?…`), if any, kept in the database's URL.
    params: String,
    name: String,
}

impl FreshDatabase {
    /// Creates an empty database `bookstore_test_<uuid>`. Panics, naming the fix, when MariaDB
    /// cannot be reached.
    pub async fn create() -> Self {
        Self::create_named("").await
    }

    /// Creates an empty database `bookstore_test_<purpose>_<uuid>` (`purpose` says which test
    /// made it, for whoever finds it). Panics, naming the fix, when MariaDB cannot be reached.
    pub async fn create_named(purpose: &str) -> Self {
        let db = Self::new(purpose);
        drop(db.connect().await);
        if let Err(error) = sqlx::MySql::create_database(&db.url()).await {
            panic!(
                "cannot create the test database {} on {}: {error} (the user of \
                 BOOKSTORE_TEST_MYSQL_URL needs the CREATE and DROP privileges)",
                db.name, db.server
            );
        }
        db
    }

    /// Takes a fresh name `bookstore_test_<purpose>_<uuid>` without creating the database: for
    /// a service that creates its own (as the recommendation service does). Whatever made it, it
    /// is dropped with the guard. Panics, naming the fix, when MariaDB cannot be reached.
    pub async fn reserve(purpose: &str) -> Self {
        let db = Self::new(purpose);
        drop(db.connect().await);
        db
    }

    fn new(purpose: &str) -> Self {
        let url = mysql_server_url();
        let (server, params) = match url.split_once('?') {
            Some((server, params)) => (server.trim_end_matches('/'), format!("?{params}")),
            None => (url.as_str(), String::new()),
        };
        let purpose = if purpose.is_empty() {
            String::new()
        } else {
            format!("{purpose}_")
        };
        Self {
            server: server.to_owned(),
            params,
            name: format!("{PREFIX}{purpose}{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// A connection to the server (no database), or a failed test naming the fix.
    async fn connect(&self) -> sqlx::MySqlConnection {
        let url = format!("{}{}", self.server, self.params);
        match sqlx::MySqlConnection::connect(&url).await {
            Ok(conn) => conn,
            Err(error) => {
                servers::unreachable("MariaDB", &self.server, "BOOKSTORE_TEST_MYSQL_URL", error)
            }
        }
    }

    /// The database's URL, for a pool or a service's configuration.
    pub fn url(&self) -> String {
        format!("{}/{}{}", self.server, self.name, self.params)
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's URL (no database).
    pub fn server(&self) -> &str {
        &self.server
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let url = self.url();
        let dropped = on_own_runtime(CLEANUP_TIMEOUT, move || async move {
            drop_database(&url).await.map_err(|e| e.to_string())
        });
        if let Err(error) = dropped {
            report(&format!(
                "could not drop the test database {} on {}: {error}; drop it by hand \
                 (`DROP DATABASE {}`)",
                self.name, self.server, self.name
            ));
        }
    }
}

/// Drops the test database `url` names (`…/bookstore_test_…`) if it exists. First it ends the
/// sessions still using it: a test's pools are dropped, not closed, and one may be inside a
/// transaction whose locks would hold the DROP up; a session that comes back meanwhile (a service
/// still running) is ended again, for at most [`CLEANUP_TIMEOUT`].
pub async fn drop_database(url: &str) -> Result<(), sqlx::Error> {
    let (base, params) = match url.split_once('?') {
        Some((base, params)) => (base, format!("?{params}")),
        None => (url, String::new()),
    };
    let Some((server, name)) = base.rsplit_once('/') else {
        return Err(sqlx::Error::Configuration(
            format!("{url} names no database").into(),
        ));
    };
    assert!(
        name.starts_with(PREFIX),
        "refusing to drop the database {name:?}: not a test database"
    );
    let mut conn = sqlx::MySqlConnection::connect(&format!("{server}{params}")).await?;
    // Within the guard's own bound, so that a DROP held up past it says so.
    let deadline = Instant::now() + CLEANUP_TIMEOUT.saturating_sub(Duration::from_secs(15));
    loop {
        let sessions: Vec<i64> = sqlx::query_scalar(
            "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = ? \
             AND id <> CONNECTION_ID()",
        )
        .bind(name)
        .fetch_all(&mut conn)
        .await?;
        for id in sessions {
            // It may have ended meanwhile.
            let _ = sqlx::query("KILL CONNECTION ?")
                .bind(id)
                .execute(&mut conn)
                .await;
        }
        // A lock taken after the sessions were ended (a service still running) holds the DROP
        // up: end them again, and again, until the deadline.
        let attempt =
            tokio::time::timeout(Duration::from_secs(10), sqlx::MySql::drop_database(url));
        match attempt.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) if Instant::now() < deadline => {
                eprintln!("dropping the test database {name} again after: {error}");
            }
            Err(_) if Instant::now() < deadline => {
                eprintln!("dropping the test database {name} again: a session holds it");
            }
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(sqlx::Error::Protocol(format!(
                    "DROP DATABASE {name} was held up for {:?}",
                    CLEANUP_TIMEOUT.saturating_sub(Duration::from_secs(15))
                )));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Drops the test database `url` names (`…/bookstore_test_…`), if it exists: a store lost in the
/// middle of a test. Panics when it cannot.
pub async fn drop_mysql_database(url: &str) {
    if let Err(error) = drop_database(url).await {
        panic!("cannot drop the test database of {url}: {error}");
    }
}
