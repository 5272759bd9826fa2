//! The outbox relay on the real MariaDB from `dev/services`: relays running side by side deliver
//! every row exactly once between them, in order within each relay's rounds, and a failed
//! delivery leaves the rows for later. Fails, naming the fix, when MariaDB cannot be reached.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bookstore_domain::{BookRepository, NewBook, NewBookInput, Outbox, OutboxRow, OutboxSink};
use bookstore_mysql::{MySqlBookRepository, MySqlOutbox};
use sqlx::Connection;

async fn fresh_database() -> String {
    let server = std::env::var("BOOKSTORE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://bookstore:bookstore@127.0.0.1:3306".to_owned())
        .trim_end_matches('/')
        .to_owned();
    let mut conn = sqlx::MySqlConnection::connect(&server)
        .await
        .unwrap_or_else(|e| {
            panic!("MariaDB is not reachable at {server}: start it with `dev/services start`: {e}")
        });
    let name = format!("bookstore_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(&format!("CREATE DATABASE `{name}`"))
        .execute(&mut conn)
        .await
        .unwrap();
    format!("{server}/{name}")
}

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
        tokio::task::yield_now().await;
        self.delivered
            .lock()
            .unwrap()
            .extend(rows.iter().map(|r| r.id));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_side_by_side_deliver_every_row_once() {
    let pool = bookstore_mysql::connect(&fresh_database().await, 8)
        .await
        .unwrap();
    let repo = MySqlBookRepository::new(pool.clone()).await.unwrap();
    let books: Vec<NewBook> = (0..1_200)
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
    repo.create_many(&books).await.unwrap();
    let outbox = Arc::new(MySqlOutbox::new(pool));
    assert_eq!(outbox.waiting().await.unwrap(), 1_200);

    let failing = Collect {
        fail: true,
        ..Collect::default()
    };
    assert_eq!(outbox.relay(100, &failing).await.unwrap(), 0);
    assert_eq!(
        outbox.waiting().await.unwrap(),
        1_200,
        "a failed delivery leaves the rows"
    );

    let sink = Arc::new(Collect::default());
    let relays: Vec<_> = (0..4)
        .map(|_| {
            let (outbox, sink) = (outbox.clone(), sink.clone());
            tokio::spawn(async move { while outbox.relay(50, sink.as_ref()).await.unwrap() > 0 {} })
        })
        .collect();
    for relay in relays {
        relay.await.unwrap();
    }
    let mut delivered = sink.delivered.lock().unwrap().clone();
    delivered.sort_unstable();
    let expected: Vec<i64> = (1..=1_200).collect();
    assert_eq!(delivered, expected, "every row once");
    assert_eq!(outbox.waiting().await.unwrap(), 0);
}
