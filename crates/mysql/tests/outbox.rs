//! The outbox relay on the real MariaDB from `dev/services`: relays running side by side deliver
//! every row exactly once between them, in order within each relay's rounds, and a failed
//! delivery leaves the rows for later; a relay that dies between delivering and marking sent has
//! its rows delivered again by another; a catalog transaction that fails leaves no event behind.
//! Fails, naming the fix, when MariaDB cannot be reached.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bookstore_domain::{
    BookRepository, NewBook, NewBookInput, Outbox, OutboxRow, OutboxSink, Relayed, RepositoryError,
    RowOutcome,
};
use bookstore_mysql::{MySqlBookRepository, MySqlOutbox};
use bookstore_testkit::FreshDatabase;
use bookstore_testkit::conformance::outbox as outbox_conformance;

fn all_sent(rows: &[OutboxRow]) -> Vec<RowOutcome> {
    vec![RowOutcome::Sent; rows.len()]
}

#[derive(Default)]
struct Collect {
    delivered: Mutex<Vec<i64>>,
    fail: bool,
}

#[async_trait]
impl OutboxSink for Collect {
    async fn deliver(&self, rows: &[OutboxRow]) -> Result<Vec<RowOutcome>, String> {
        if self.fail {
            return Err("broker down".into());
        }
        tokio::task::yield_now().await;
        self.delivered
            .lock()
            .unwrap()
            .extend(rows.iter().map(|r| r.id));
        Ok(all_sent(rows))
    }
}

/// Records the rows it is given, as the log would have taken them; with `then_fail` it then
/// reports a failure, which leaves the rows as a relay that died before marking them sent leaves
/// them.
#[derive(Default)]
struct Record {
    rows: Mutex<Vec<OutboxRow>>,
    then_fail: bool,
}

impl Record {
    fn rows(&self) -> Vec<OutboxRow> {
        self.rows.lock().unwrap().clone()
    }
}

#[async_trait]
impl OutboxSink for Record {
    async fn deliver(&self, rows: &[OutboxRow]) -> Result<Vec<RowOutcome>, String> {
        self.rows.lock().unwrap().extend_from_slice(rows);
        if self.then_fail {
            return Err("the relay died before marking the rows sent".into());
        }
        Ok(all_sent(rows))
    }
}

fn ids(rows: &[OutboxRow]) -> Vec<i64> {
    rows.iter().map(|r| r.id).collect()
}

fn new_books(n: usize) -> Vec<NewBook> {
    (0..n)
        .map(|i| {
            NewBook::parse(NewBookInput {
                isbn: None,
                title: Some(format!("Book {i}")),
                author: Some("A".into()),
                published_at: Some("1900-01-01".into()),
                description: None,
            })
            .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_side_by_side_deliver_every_row_once() {
    let db = FreshDatabase::create().await;
    let pool = bookstore_mysql::connect(&db.url(), 8).await.unwrap();
    let repo = MySqlBookRepository::new(pool.clone()).await.unwrap();
    repo.create_many(&new_books(1_200)).await.unwrap();
    let outbox = Arc::new(MySqlOutbox::new(pool));
    assert_eq!(outbox.waiting().await.unwrap(), 1_200);

    let failing = Collect {
        fail: true,
        ..Collect::default()
    };
    assert_eq!(outbox.relay(100, &failing).await.unwrap().sent, 0);
    assert_eq!(
        outbox.waiting().await.unwrap(),
        1_200,
        "a failed delivery leaves the rows"
    );

    let sink = Arc::new(Collect::default());
    let relays: Vec<_> = (0..4)
        .map(|_| {
            let (outbox, sink) = (outbox.clone(), sink.clone());
            tokio::spawn(
                async move { while outbox.relay(50, sink.as_ref()).await.unwrap().sent > 0 {} },
            )
        })
        .collect();
    for relay in relays {
        relay.await.unwrap();
    }
    // One relay at a time holds the oldest rows, so the log gets them in the outbox's order.
    let delivered = sink.delivered.lock().unwrap().clone();
    let expected: Vec<i64> = (1..=1_200).collect();
    assert_eq!(delivered, expected, "every row once, in order");
    assert_eq!(outbox.waiting().await.unwrap(), 0);
}

/// Delivers nothing until released, and says when it was given rows.
#[derive(Default)]
struct Held {
    given: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait]
impl OutboxSink for Held {
    async fn deliver(&self, rows: &[OutboxRow]) -> Result<Vec<RowOutcome>, String> {
        self.given.notify_one();
        self.release.notified().await;
        Ok(vec![RowOutcome::Sent; rows.len()])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_relay_holds_the_oldest_rows_another_takes_none() {
    let db = FreshDatabase::create().await;
    let pool = bookstore_mysql::connect(&db.url(), 4).await.unwrap();
    let repo = MySqlBookRepository::new(pool.clone()).await.unwrap();
    repo.create_many(&new_books(4)).await.unwrap();
    let first = Arc::new(MySqlOutbox::new(pool.clone()));
    let held = Arc::new(Held::default());
    let round = tokio::spawn({
        let (first, held) = (first.clone(), held.clone());
        async move { first.relay(2, held.as_ref()).await.unwrap() }
    });
    held.given.notified().await;
    // Rows 3 and 4 are free, but taking them would put them in the log before rows 1 and 2.
    let other = MySqlOutbox::new(pool.clone());
    let sink = Collect::default();
    assert_eq!(other.relay(100, &sink).await.unwrap(), Relayed::default());
    assert!(sink.delivered.lock().unwrap().is_empty());
    held.release.notify_one();
    assert_eq!(round.await.unwrap().sent, 2);
    assert_eq!(other.relay(100, &sink).await.unwrap().sent, 2);
    assert_eq!(*sink.delivered.lock().unwrap(), [3, 4]);
}

#[tokio::test]
async fn a_relay_that_dies_between_delivering_and_marking_sent_delivers_again() {
    let db = FreshDatabase::create().await;
    let url = db.url();
    let repo = MySqlBookRepository::new(bookstore_mysql::connect(&url, 2).await.unwrap())
        .await
        .unwrap();
    repo.create_many(&new_books(5)).await.unwrap();

    // One web instance's relay takes the three oldest rows, hands them to the log, and dies
    // before marking them sent: its transaction never commits and its connections go away.
    let dying_pool = bookstore_mysql::connect(&url, 1).await.unwrap();
    let dying = MySqlOutbox::new(dying_pool.clone());
    let dies = Record {
        then_fail: true,
        ..Record::default()
    };
    assert_eq!(dying.relay(3, &dies).await.unwrap().sent, 0);
    let first = dies.rows();
    assert_eq!(ids(&first), [1, 2, 3]);
    assert_eq!(
        first.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"],
        "keyed by book id"
    );
    drop(dying);
    dying_pool.close().await;

    // Another instance's relay delivers them again, oldest first, then the rows nobody took, and
    // marks them all sent.
    let fresh = MySqlOutbox::new(bookstore_mysql::connect(&url, 1).await.unwrap());
    assert_eq!(fresh.waiting().await.unwrap(), 5);
    let sink = Record::default();
    assert_eq!(fresh.relay(100, &sink).await.unwrap().sent, 5);
    let again = sink.rows();
    assert_eq!(ids(&again), [1, 2, 3, 4, 5]);
    assert_eq!(
        again[..3],
        first[..],
        "the very same events again: same keys, same payloads (same event ids)"
    );
    assert_eq!(fresh.waiting().await.unwrap(), 0);

    // A third round has nothing left to deliver.
    let third = Record::default();
    assert_eq!(fresh.relay(100, &third).await.unwrap().sent, 0);
    assert!(third.rows().is_empty());
}

#[tokio::test]
async fn a_failed_transaction_publishes_nothing() {
    let db = FreshDatabase::create().await;
    let pool = bookstore_mysql::connect(&db.url(), 2).await.unwrap();
    let repo = MySqlBookRepository::new(pool.clone()).await.unwrap();
    let outbox = MySqlOutbox::new(pool.clone());
    // The books' AUTO_INCREMENT counter leaves ids for 600 more books: 2^63 - 600 up to 2^63 - 1,
    // the largest BIGINT.
    sqlx::query("ALTER TABLE books AUTO_INCREMENT = 9223372036854775208")
        .execute(&pool)
        .await
        .unwrap();

    // The first INSERT of the batch stores 500 books and their 500 events; the second stores 100
    // more, then strict mode refuses the next book: its id is out of range (error 167).
    let error = repo.create_many(&new_books(700)).await.unwrap_err();
    let RepositoryError::Internal(cause) = &error else {
        panic!("{error:?}")
    };
    let Some(sqlx::Error::Database(db)) = cause.downcast_ref::<sqlx::Error>() else {
        panic!("{cause:?}")
    };
    let number = db
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(|e| e.number());
    assert_eq!(number, Some(167), "{db}");
    assert!(db.message().ends_with("at row 101"), "{db}");

    assert_eq!(repo.count().await.unwrap(), 0, "no book of the batch");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "no event of the batch");
    assert_eq!(outbox.waiting().await.unwrap(), 0);
    let sink = Record::default();
    assert_eq!(outbox.relay(100, &sink).await.unwrap().sent, 0);
    assert!(sink.rows().is_empty());
}

#[tokio::test]
async fn pruning_deletes_only_rows_sent_longer_ago_than_the_age_oldest_first() {
    let db = FreshDatabase::create().await;
    let pool = bookstore_mysql::connect(&db.url(), 2).await.unwrap();
    let repo = MySqlBookRepository::new(pool.clone()).await.unwrap();
    let outbox = MySqlOutbox::new(pool.clone());
    repo.create_many(&new_books(6)).await.unwrap();
    let sink = Record::default();
    assert_eq!(outbox.relay(4, &sink).await.unwrap().sent, 4);
    let sent = ids(&sink.rows());
    // The three oldest were sent a day ago, the fourth two hours ago; two rows wait.
    sqlx::query(concat!(
        "UPDATE outbox SET sent_at = IF(id <= ?, CURRENT_TIMESTAMP(6) - INTERVAL 1 DAY, ",
        "CURRENT_TIMESTAMP(6) - INTERVAL 2 HOUR) WHERE id <= ?"
    ))
    .bind(sent[2])
    .bind(sent[3])
    .execute(&pool)
    .await
    .unwrap();
    let left = || async {
        sqlx::query_scalar::<_, i64>("SELECT id FROM outbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    let all = left().await;
    assert_eq!(all.len(), 6);
    let hours = |n: u64| std::time::Duration::from_secs(n * 3600);
    assert_eq!(outbox.prune(hours(3), 2).await.unwrap(), 2);
    assert_eq!(left().await, all[2..]);
    assert_eq!(outbox.prune(hours(3), 100).await.unwrap(), 1);
    assert_eq!(outbox.prune(hours(3), 100).await.unwrap(), 0);
    assert_eq!(left().await, all[3..]);
    assert_eq!(outbox.prune(hours(1), 100).await.unwrap(), 1);
    assert_eq!(left().await, all[4..]);

    // The rows waiting are relayed as before, and kept.
    assert_eq!(outbox.waiting().await.unwrap(), 2);
    assert_eq!(outbox.relay(100, &sink).await.unwrap().sent, 2);
    assert_eq!(ids(&sink.rows()), all);
    assert_eq!(outbox.prune(hours(1), 100).await.unwrap(), 0);
    assert_eq!(left().await, all[4..]);
    // A thousand years is past every stored date.
    assert_eq!(outbox.prune(hours(1_000 * 8_766), 100).await.unwrap(), 0);
}

/// Delivers after a pause, as a slow or unreachable log would.
struct Slow(std::time::Duration);

#[async_trait]
impl OutboxSink for Slow {
    async fn deliver(&self, rows: &[OutboxRow]) -> Result<Vec<RowOutcome>, String> {
        tokio::time::sleep(self.0).await;
        Ok(all_sent(rows))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_delivery_never_holds_up_new_books() {
    let db = FreshDatabase::create().await;
    let pool = bookstore_mysql::connect(&db.url(), 8).await.unwrap();
    let repo = MySqlBookRepository::new(pool.clone()).await.unwrap();
    repo.create_many(&new_books(3)).await.unwrap();
    let outbox = Arc::new(MySqlOutbox::new(pool));
    // The relay holds its rows for two seconds, having read to the end of the unsent rows.
    let relay = {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            outbox
                .relay(100, &Slow(std::time::Duration::from_secs(2)))
                .await
                .map(|r| r.sent)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    repo.create_many(&new_books(2)).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(1_000),
        "a new book waited {took:?} for the relay's round"
    );
    assert_eq!(relay.await.unwrap().unwrap(), 3);
    assert_eq!(
        outbox.waiting().await.unwrap(),
        2,
        "the new books wait for the next round"
    );
}

#[tokio::test]
async fn books_with_spaced_ids_each_get_their_own_event() {
    // One connection, so that the session's id spacing (as on a multi-primary cluster) holds.
    let db = FreshDatabase::create().await;
    let pool = bookstore_mysql::connect(&db.url(), 1).await.unwrap();
    sqlx::query("SET SESSION auto_increment_increment = 3")
        .execute(&pool)
        .await
        .unwrap();
    let repo = MySqlBookRepository::new(pool.clone()).await.unwrap();
    assert_eq!(repo.create_many(&new_books(4)).await.unwrap(), 4);
    let sink = Record::default();
    assert_eq!(
        MySqlOutbox::new(pool).relay(100, &sink).await.unwrap().sent,
        4
    );
    let keys: Vec<i64> = sink.rows().iter().map(|r| r.key.parse().unwrap()).collect();
    assert_eq!(keys.len(), 4);
    assert!(
        keys.windows(2).all(|w| w[1] - w[0] == 3),
        "one event per book, ids spaced by 3: {keys:?}"
    );
}

#[tokio::test]
async fn books_stored_before_the_outbox_get_their_events_once() {
    // A catalog from before the outbox: only the first migration, and books in it.
    let db = FreshDatabase::create().await;
    let pool = bookstore_mysql::connect(&db.url(), 4).await.unwrap();
    let mut first = sqlx::migrate!("./migrations");
    first.migrations = first
        .migrations
        .iter()
        .filter(|m| m.version == 1)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    first.run(&pool).await.unwrap();
    for i in 0..1_500 {
        sqlx::query(
            "INSERT INTO books (title, author, published_at, description) VALUES (?, 'A', '1900-01-01', '')",
        )
        .bind(format!("Old {i}"))
        .execute(&pool)
        .await
        .unwrap();
    }

    // The upgrade: the outbox migrations, then the backfill (twice at once, as two web
    // instances starting together would), in batches, in id order, once.
    let repo = MySqlBookRepository::new(pool.clone()).await.unwrap();
    let (a, b) = tokio::join!(repo.backfill_outbox(), repo.backfill_outbox());
    assert_eq!(a.unwrap() + b.unwrap(), 1_500);
    assert_eq!(repo.backfill_outbox().await.unwrap(), 0);
    repo.create_many(&new_books(1)).await.unwrap();
    assert_eq!(repo.backfill_outbox().await.unwrap(), 0);
    let sink = Record::default();
    let outbox = MySqlOutbox::new(pool);
    while outbox.relay(1_000, &sink).await.unwrap().sent > 0 {}
    let keys: Vec<i64> = sink.rows().iter().map(|r| r.key.parse().unwrap()).collect();
    assert_eq!(keys, (1..=1_501).collect::<Vec<i64>>());
}

/// Each row's attempts, last error, whether it is dead, whether it was sent.
async fn states(pool: &sqlx::MySqlPool) -> Vec<outbox_conformance::RowState> {
    sqlx::query_as::<_, (i64, i32, Option<String>, i64, i64)>(concat!(
        "SELECT id, attempts, last_error, dead_at IS NOT NULL, sent_at IS NOT NULL ",
        "FROM outbox ORDER BY id"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, attempts, error, dead, sent)| (id, i64::from(attempts), error, dead == 1, sent == 1))
    .collect()
}

#[tokio::test]
async fn refused_rows_count_attempts_and_dead_letters_are_never_taken_again() {
    let db = FreshDatabase::create().await;
    let pool = bookstore_mysql::connect(&db.url(), 2).await.unwrap();
    let repo = MySqlBookRepository::new(pool.clone()).await.unwrap();
    repo.create_many(&new_books(4)).await.unwrap();
    let outbox = MySqlOutbox::new(pool.clone());
    outbox_conformance::check_refusals(
        &outbox,
        || states(&pool),
        |id| {
            let pool = pool.clone();
            async move {
                sqlx::query("UPDATE outbox SET dead_at = NULL, attempts = 0 WHERE id = ?")
                    .bind(id)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_side_by_side_count_each_refusal_once() {
    let db = FreshDatabase::create().await;
    let pool = bookstore_mysql::connect(&db.url(), 8).await.unwrap();
    let repo = MySqlBookRepository::new(pool.clone()).await.unwrap();
    repo.create_many(&new_books(1_000)).await.unwrap();
    let outbox = Arc::new(MySqlOutbox::new(pool.clone()));
    let sink = Arc::new(outbox_conformance::Poisoned::default());
    let relays: Vec<_> = (0..4)
        .map(|_| {
            let (outbox, sink) = (outbox.clone(), sink.clone());
            tokio::spawn(async move {
                while outbox.relay(37, sink.as_ref()).await.unwrap().progressed() {}
            })
        })
        .collect();
    for relay in relays {
        relay.await.unwrap();
    }
    outbox_conformance::check_poisoned(outbox.as_ref(), &sink, states(&pool)).await;
}
