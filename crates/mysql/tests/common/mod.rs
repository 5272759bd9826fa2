//! `TestDb`, as `recommend.rs` names it: a database of its own on the test MariaDB from
//! `dev/services` for each test, dropped when the test ends, whether it passed or not (the guard
//! is `bookstore_testkit::FreshDatabase`; the other tests use it directly).

use bookstore_testkit::FreshDatabase;

pub struct TestDb {
    /// The database's URL.
    pub url: String,
    _db: FreshDatabase,
}

impl TestDb {
    /// Creates it on `BOOKSTORE_TEST_MYSQL_URL` (`dev/services`' server when unset). Panics,
    /// naming the fix, when MariaDB cannot be reached.
    pub async fn new() -> Self {
        let db = FreshDatabase::create().await;
        Self {
            url: db.url(),
            _db: db,
        }
    }
}
