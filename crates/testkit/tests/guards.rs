//! The guards remove what a test made on the shared servers of `dev/services` when they are
//! dropped: at the end of a test, and while a failed test's panic unwinds. Fails, naming the fix,
//! when MariaDB or Redis cannot be reached.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bookstore_testkit::FreshDatabase;
use bookstore_testkit::redis::RedisKeys;
use bookstore_testkit::servers::{mysql_server_url, redis_url};
use sqlx::Connection;

/// Whether the test MariaDB has a database `name`.
async fn exists(name: &str) -> bool {
    let mut conn = sqlx::MySqlConnection::connect(&mysql_server_url())
        .await
        .unwrap();
    let found: Option<String> = sqlx::query_scalar(
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name = ?",
    )
    .bind(name)
    .fetch_optional(&mut conn)
    .await
    .unwrap();
    found.is_some()
}

#[tokio::test]
async fn a_fresh_database_is_dropped_with_its_guard_even_while_in_use() {
    let db = FreshDatabase::create().await;
    let name = db.name().to_owned();
    assert!(name.starts_with("bookstore_test_") && db.url().ends_with(&name));
    assert!(exists(&name).await);
    // A session left inside a transaction, as a test's pool may be.
    let mut conn = sqlx::MySqlConnection::connect(&db.url()).await.unwrap();
    sqlx::raw_sql("CREATE TABLE t (id INT PRIMARY KEY); BEGIN; INSERT INTO t VALUES (1)")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(db);
    assert!(!exists(&name).await, "{name} is still there");
}

#[test]
fn a_fresh_database_is_dropped_when_its_test_panics() {
    let (named, name) = std::sync::mpsc::channel();
    let failed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let db = FreshDatabase::create_named("panics").await;
            named.send(db.name().to_owned()).unwrap();
            panic!("the test fails while its database exists");
        });
    })
    .join();
    assert!(failed.is_err(), "the test panicked");
    let name = name.recv().unwrap();
    assert!(name.starts_with("bookstore_test_panics_"), "{name}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(
        !runtime.block_on(exists(&name)),
        "{name} is still there after the panic"
    );
}

#[tokio::test]
async fn a_reserved_database_is_dropped_if_something_made_it() {
    let never = FreshDatabase::reserve("never").await;
    assert!(!exists(never.name()).await);
    drop(never);
    let made = FreshDatabase::reserve("made").await;
    let name = made.name().to_owned();
    let mut conn = sqlx::MySqlConnection::connect(made.server()).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE `{name}`"))
        .execute(&mut conn)
        .await
        .unwrap();
    drop(made);
    assert!(!exists(&name).await, "{name} is still there");
}

#[tokio::test]
async fn redis_keys_go_with_their_guard_and_no_others() {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let keys = RedisKeys::fresh();
    let other = RedisKeys::fresh();
    for key in ["a", "b:c"] {
        let _: () = redis::cmd("SET")
            .arg(format!("{}{key}", keys.prefix()))
            .arg(1)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let kept = format!("{}kept", other.prefix());
    let _: () = redis::cmd("SET")
        .arg(&kept)
        .arg(1)
        .query_async(&mut redis)
        .await
        .unwrap();
    let prefix = keys.prefix().to_owned();
    drop(keys);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    let exists: bool = redis::cmd("EXISTS")
        .arg(&kept)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(exists, "another prefix's keys stay");
}
