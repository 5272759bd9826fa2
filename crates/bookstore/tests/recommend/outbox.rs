//! The outbox relay dies between publishing rows and marking them sent: on restart it publishes
//! them again, and the recommendation service keeps one copy of each book. The web service's
//! relay deletes the rows sent longer ago than `events.outbox_retention_hours`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bookstore_app::relay::PublisherSink;
use bookstore_app::{Catalog, Remotes, open_catalog};
use bookstore_domain::events::Event;
use bookstore_domain::{NewBook, NewBookInput, Outbox, OutboxRow, OutboxSink, RowOutcome};
use bookstore_testkit::{Recorder, http::get_json, wait_until};
use bookstore_testkit_app::{Infra, start_web, test_bus};
use tokio_util::sync::CancellationToken;

use crate::infra;

/// Delivers through the real publisher, then never answers: the relay's round is cut off there,
/// before the rows are marked sent, which is what a relay killed at that moment leaves behind.
struct KilledAfterDelivery<'a>(&'a PublisherSink);

#[async_trait]
impl OutboxSink for KilledAfterDelivery<'_> {
    async fn deliver(&self, rows: &[OutboxRow]) -> Result<Vec<RowOutcome>, String> {
        self.0.deliver(rows).await?;
        std::future::pending::<()>().await;
        Ok(Vec::new())
    }
}

fn book(title: &str) -> NewBook {
    NewBook::parse(NewBookInput {
        isbn: None,
        title: Some(title.to_owned()),
        author: Some("Ada Relay".to_owned()),
        published_at: Some("2026-11-27".to_owned()),
        description: None,
    })
    .unwrap()
}

/// The catalog's outbox, with a short lease on SQLite so that the dead relay's rows come back
/// quickly (MariaDB releases them with the dead relay's transaction).
fn outbox(catalog: &Catalog) -> Arc<dyn Outbox> {
    match catalog {
        Catalog::Sqlite(repo) => Arc::new(bookstore_sqlite::SqliteOutbox::with_lease(
            repo.pool().clone(),
            Duration::from_millis(200),
        )),
        Catalog::MySql(_) => catalog.outbox(),
    }
}

infra!(a_relay_killed_before_marking_publishes_again_and_one_copy_is_kept);
async fn a_relay_killed_before_marking_publishes_again_and_one_copy_is_kept(infra: Infra) {
    let bus = test_bus(infra).await;
    let config = &bus.config;
    let catalog = open_catalog(config).await.unwrap();
    let books = catalog.repository();
    let first = books.create(&book("Delivered Twice")).await.unwrap();
    let second = books.create(&book("Also Delivered Twice")).await.unwrap();

    // Everything that reaches the catalog topic, recorded.
    let recording = CatalogRecording::start(&bus).await;
    let recorder = recording.recorder.clone();

    let sink = PublisherSink::start(&bus.bus, &config.events)
        .await
        .unwrap();
    let dying = outbox(&catalog);
    let killed = tokio::time::timeout(
        Duration::from_secs(5),
        dying.relay(100, &KilledAfterDelivery(&sink)),
    )
    .await;
    assert!(killed.is_err(), "the round is cut off after delivery");
    assert_eq!(dying.waiting().await.unwrap(), 2, "nothing was marked sent");
    drop(dying);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let restarted = outbox(&catalog);
    assert_eq!(restarted.relay(100, &sink).await.unwrap().sent, 2);
    assert_eq!(restarted.waiting().await.unwrap(), 0);
    assert_eq!(restarted.relay(100, &sink).await.unwrap().sent, 0);

    wait_until(
        Duration::from_secs(30),
        "both deliveries recorded",
        || async { recorder.len() >= 4 },
    )
    .await;
    assert_eq!(
        created_ids(recorder.records()),
        [first.id.0, first.id.0, second.id.0, second.id.0],
        "each book was published twice"
    );

    let app = bookstore_app::recommend::build(config).await.unwrap();
    let rec_url = format!("http://{}", app.local_addr().unwrap());
    let rec_ops = format!("http://{}", app.ops_addr().unwrap().unwrap());
    let consumed = app.consumer_stats();
    let (rec_stop, rec_stopped) = tokio::sync::oneshot::channel::<()>();
    let rec = tokio::spawn(app.run_until_stopped(async move {
        let _ = rec_stopped.await;
    }));
    let http = reqwest::Client::new();
    wait_until(
        Duration::from_secs(30),
        "all four deliveries applied",
        || async { consumed.applied.load(std::sync::atomic::Ordering::Relaxed) >= 4 },
    )
    .await;
    let stats = get_json(&http, &format!("{rec_ops}/stats")).await;
    assert_eq!(stats["catalog_books"], 2, "one copy of each book: {stats}");
    for (book, title) in [
        (&first, "Delivered Twice"),
        (&second, "Also Delivered Twice"),
    ] {
        let copy = get_json(&http, &format!("{rec_url}/books/{}", book.id.0)).await;
        assert_eq!(copy["title"], title);
    }

    rec_stop.send(()).unwrap();
    rec.await.unwrap().unwrap();
    recording.stop().await;
}

/// The outbox's row ids, oldest first.
async fn outbox_ids(catalog: &Catalog) -> Vec<i64> {
    const IDS: &str = "SELECT id FROM outbox ORDER BY id";
    match catalog {
        Catalog::Sqlite(repo) => sqlx::query_scalar(IDS).fetch_all(repo.pool()).await,
        Catalog::MySql(repo) => sqlx::query_scalar(IDS).fetch_all(repo.pool()).await,
    }
    .unwrap()
}

/// Makes every sent row of the outbox a week old.
async fn sent_a_week_ago(catalog: &Catalog) {
    match catalog {
        Catalog::Sqlite(repo) => sqlx::query(concat!(
            "UPDATE outbox SET sent_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-7 days') ",
            "WHERE sent_at IS NOT NULL"
        ))
        .execute(repo.pool())
        .await
        .map(drop),
        Catalog::MySql(repo) => sqlx::query(concat!(
            "UPDATE outbox SET sent_at = CURRENT_TIMESTAMP(6) - INTERVAL 7 DAY ",
            "WHERE sent_at IS NOT NULL"
        ))
        .execute(repo.pool())
        .await
        .map(drop),
    }
    .unwrap();
}

infra!(the_web_service_deletes_rows_sent_longer_ago_than_the_retention);
async fn the_web_service_deletes_rows_sent_longer_ago_than_the_retention(infra: Infra) {
    let mut bus = test_bus(infra).await;
    bus.config.events.outbox_retention_hours = 24;
    let config = &bus.config;
    let catalog = open_catalog(config).await.unwrap();
    let books = catalog.repository();
    for title in ["Sent Last Week", "Also Sent Last Week"] {
        books.create(&book(title)).await.unwrap();
    }
    let sink = PublisherSink::start(&bus.bus, &config.events)
        .await
        .unwrap();
    let outbox = catalog.outbox();
    assert_eq!(outbox.relay(100, &sink).await.unwrap().sent, 2);
    sent_a_week_ago(&catalog).await;
    // Written now, not sent yet: the web service's relay sends it and keeps it.
    books.create(&book("Sent Today")).await.unwrap();
    let before = outbox_ids(&catalog).await;
    assert_eq!(before.len(), 3);

    let (web, _) = start_web(
        config,
        Remotes {
            trend_url: None,
            recommend_url: None,
        },
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "the week-old rows deleted and the new one sent",
        || async {
            outbox_ids(&catalog).await == before[2..] && outbox.waiting().await.unwrap() == 0
        },
    )
    .await;
    let metrics = reqwest::get(web.ops("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let pruned: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("bookstore_outbox_pruned_total "))
        .unwrap_or_else(|| panic!("no bookstore_outbox_pruned_total in\n{metrics}"))
        .parse()
        .unwrap();
    // The registry is the test process's, shared with the other tests.
    assert!(pruned >= 2.0, "{pruned}");
    web.shutdown().await;
}

/// A `book.created` payload for book `id` whose description is `bytes` long, of random hex
/// digits (compression cannot shrink it much).
fn created_payload(id: i64, bytes: usize) -> Vec<u8> {
    let mut description = String::with_capacity(bytes + 32);
    while description.len() < bytes {
        description.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    description.truncate(bytes);
    let now = chrono::Utc::now();
    serde_json::to_vec(&serde_json::json!({
        "id": uuid::Uuid::now_v7(),
        "type": "book.created",
        "version": 1,
        "occurred_at": now,
        "book": {
            "id": id,
            "title": format!("Oversized {id}"),
            "author": "Ada Relay",
            "published_at": "2026-11-27",
            "description": description,
            "created_at": now,
        },
    }))
    .unwrap()
}

/// Writes a row to the outbox as a foreign writer (or a bug) could, and returns its id.
async fn insert_outbox_row(catalog: &Catalog, key: &str, payload: &[u8]) -> i64 {
    const INSERT: &str =
        "INSERT INTO outbox (event_type, event_key, payload) VALUES ('book.created', ?, ?)";
    match catalog {
        Catalog::Sqlite(repo) => sqlx::query(INSERT)
            .bind(key)
            .bind(payload)
            .execute(repo.pool())
            .await
            .unwrap()
            .last_insert_rowid(),
        Catalog::MySql(repo) => {
            let id = sqlx::query(INSERT)
                .bind(key)
                .bind(payload)
                .execute(repo.pool())
                .await
                .unwrap()
                .last_insert_id();
            i64::try_from(id).unwrap()
        }
    }
}

/// The outbox's dead-lettered rows: id, attempts and reason, oldest first.
async fn dead_rows(catalog: &Catalog) -> Vec<(i64, i64, String)> {
    const DEAD: &str = concat!(
        "SELECT id, attempts, last_error FROM outbox WHERE dead_at IS NOT NULL ",
        "AND sent_at IS NULL ORDER BY id"
    );
    match catalog {
        Catalog::Sqlite(repo) => sqlx::query_as(DEAD).fetch_all(repo.pool()).await,
        Catalog::MySql(repo) => sqlx::query_as::<_, (i64, i32, String)>(DEAD)
            .fetch_all(repo.pool())
            .await
            .map(|rows| {
                rows.into_iter()
                    .map(|(id, attempts, error)| (id, i64::from(attempts), error))
                    .collect()
            }),
    }
    .unwrap()
}

/// The book ids of the `book.created` events recorded, sorted, each as often as it came.
fn created_ids(records: Vec<bookstore_domain::Record>) -> Vec<i64> {
    let mut ids: Vec<i64> = records
        .into_iter()
        .filter_map(|r| match r.event {
            Event::BookCreated(e) => Some(e.book.id),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// The book ids of the `book.created` events recorded, sorted, each once.
fn distinct_created_ids(records: Vec<bookstore_domain::Record>) -> Vec<i64> {
    let mut ids = created_ids(records);
    ids.dedup();
    ids
}

/// A consumer group in this process recording everything that reaches the catalog topic; it
/// stops when dropped too, so that a failing test does not leave its consumer running.
struct CatalogRecording {
    recorder: Arc<Recorder>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _stop: tokio_util::sync::DropGuard,
    stop: CancellationToken,
}

impl CatalogRecording {
    async fn start(bus: &bookstore_testkit_app::TestBus) -> Self {
        let config = &bus.config;
        let recorder = Arc::new(Recorder::default());
        let stop = CancellationToken::new();
        let consumer = bus
            .bus
            .consumer(
                &config.events,
                &format!("{}-recorder", config.recommend.group_id),
                vec![config.events.catalog_topic.clone()],
                recorder.clone(),
                stop.clone(),
            )
            .await
            .unwrap();
        Self {
            recorder,
            task: tokio::spawn(consumer.run()),
            _stop: stop.clone().drop_guard(),
            stop,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// The value of a counter in a `/metrics` text, 0 when it is absent.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

infra!(rows_the_log_can_never_take_go_to_dead_letters_and_later_rows_flow);
async fn rows_the_log_can_never_take_go_to_dead_letters_and_later_rows_flow(infra: Infra) {
    let bus = test_bus(infra).await;
    let config = &bus.config;
    if let bookstore_app::bus::EventBus::Kafka(settings) = &bus.bus {
        // The catalog topic takes messages of 20 kB at most: the broker refuses larger ones,
        // although the producer (1 MB) lets them through.
        bookstore_kafka::ensure_topic(
            settings,
            &bookstore_kafka::TopicSpec {
                name: config.events.catalog_topic.clone(),
                partitions: 3,
                replication_factor: 1,
                configs: vec![
                    ("cleanup.policy".to_owned(), "compact".to_owned()),
                    ("max.message.bytes".to_owned(), "20000".to_owned()),
                ],
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    let catalog = open_catalog(config).await.unwrap();
    let books = catalog.repository();
    let before = books.create(&book("Before the Poison")).await.unwrap();
    // Not an event at all; a book of 100 kB (over the topic's limit on Kafka, taken by the
    // embedded log); a book of 1.2 MB (over what either log takes).
    let undecodable = insert_outbox_row(&catalog, "900001", b"{\"type\": \"book.cre").await;
    let large = insert_outbox_row(&catalog, "900002", &created_payload(900_002, 100_000)).await;
    let huge = insert_outbox_row(&catalog, "900003", &created_payload(900_003, 1_200_000)).await;
    // Good rows after them, many in one round.
    let mut expected: Vec<i64> = vec![before.id.0];
    for i in 0..20 {
        let created = books
            .create(&book(&format!("After the Poison {i}")))
            .await
            .unwrap();
        expected.push(created.id.0);
    }
    let mut dead = vec![undecodable, huge];
    if infra == Infra::Embedded {
        expected.push(900_002);
    } else {
        dead.push(large);
    }
    expected.sort_unstable();
    dead.sort_unstable();

    let recording = CatalogRecording::start(&bus).await;
    let recorder = recording.recorder.clone();

    let (web, _) = start_web(
        config,
        Remotes {
            trend_url: None,
            recommend_url: None,
        },
    )
    .await;
    wait_until(
        Duration::from_secs(60),
        "every good row in the catalog topic",
        || async { distinct_created_ids(recorder.records()) == expected },
    )
    .await;
    let outbox = catalog.outbox();
    wait_until(Duration::from_secs(10), "no row waiting", || async {
        outbox.waiting().await.unwrap() == 0
    })
    .await;
    let rows = dead_rows(&catalog).await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        dead,
        "dead letters: {rows:?}"
    );
    for (id, attempts, error) in &rows {
        assert_eq!(*attempts, 5, "row {id}: {error}");
        let expected_reason = if *id == undecodable {
            "not an event"
        } else {
            "refused"
        };
        assert!(error.contains(expected_reason), "row {id}: {error}");
    }
    // The registry is the test process's, shared with the other tests; the relay counts a
    // round once it is committed.
    wait_until(
        Duration::from_secs(10),
        "the dead letters counted",
        || async {
            let metrics = reqwest::get(web.ops("/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            counter(&metrics, "bookstore_outbox_dead_lettered_total") >= dead.len() as f64
        },
    )
    .await;
    // Nothing more comes out of the outbox.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(distinct_created_ids(recorder.records()), expected);

    web.shutdown().await;
    recording.stop().await;
}

/// Each outbox row's attempts and whether it is dead-lettered, oldest first.
async fn attempts(catalog: &Catalog) -> Vec<(i64, i64, bool)> {
    const ATTEMPTS: &str = "SELECT id, attempts, dead_at IS NOT NULL FROM outbox ORDER BY id";
    match catalog {
        Catalog::Sqlite(repo) => sqlx::query_as(ATTEMPTS).fetch_all(repo.pool()).await,
        Catalog::MySql(repo) => sqlx::query_as::<_, (i64, i32, i64)>(ATTEMPTS)
            .fetch_all(repo.pool())
            .await
            .map(|rows| {
                rows.into_iter()
                    .map(|(id, attempts, dead)| (id, i64::from(attempts), dead == 1))
                    .collect()
            }),
    }
    .unwrap()
}

infra!(an_outage_of_the_log_dead_letters_nothing);
async fn an_outage_of_the_log_dead_letters_nothing(infra: Infra) {
    let bus = test_bus(infra).await;
    let config = &bus.config;
    let catalog = open_catalog(config).await.unwrap();
    let books = catalog.repository();
    books.create(&book("Through the Outage")).await.unwrap();
    // A row that is not an event, among good ones: during the outage it is not judged either.
    insert_outbox_row(&catalog, "900001", b"not an event").await;
    books
        .create(&book("Also Through the Outage"))
        .await
        .unwrap();
    let outbox = outbox(&catalog);

    // The log is out of reach, without touching the shared broker: on Kafka the relay's
    // publisher talks to a loopback port nobody listens on; the embedded log's file is locked by
    // another writer. One refusal would be enough to dead-letter a row.
    let mut events = config.events.clone();
    events.flush_timeout_ms = 300;
    events.message_timeout_ms = 1_000;
    events.outbox_max_attempts = 1;
    let mut locker = None;
    let sink = match &bus.bus {
        bookstore_app::bus::EventBus::Kafka(_) => {
            let port = bookstore_testkit::free_port();
            let unreachable =
                bookstore_app::bus::EventBus::Kafka(bookstore_kafka::KafkaSettings::new([
                    format!("127.0.0.1:{port}"),
                ]));
            PublisherSink::start(&unreachable, &events).await.unwrap()
        }
        bookstore_app::bus::EventBus::Embedded { log, .. } => {
            let sink = PublisherSink::start(&bus.bus, &events).await.unwrap();
            use sqlx::Connection;
            let url = format!("sqlite://{}", log.path().display());
            let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut connection)
                .await
                .unwrap();
            locker = Some(connection);
            sink
        }
    };
    let started = std::time::Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let relayed = outbox.relay(100, &sink).await.unwrap();
        assert_eq!(
            relayed,
            bookstore_domain::Relayed::default(),
            "round {rounds}"
        );
        rounds += 1;
    }
    assert!(rounds >= 3, "{rounds} rounds");
    assert_eq!(outbox.waiting().await.unwrap(), 3);
    assert_eq!(outbox.dead_letters().await.unwrap(), 0);
    assert!(
        attempts(&catalog)
            .await
            .iter()
            .all(|(_, attempts, dead)| *attempts == 0 && !dead),
        "{:?}",
        attempts(&catalog).await
    );

    // The log is back: the good rows go out, and the bad one is judged.
    if let Some(mut locker) = locker.take() {
        sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    }
    drop(sink);
    let sink = PublisherSink::start(&bus.bus, &config.events)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while outbox.waiting().await.unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "the rows still wait");
        outbox.relay(100, &sink).await.unwrap();
    }
    let rows = attempts(&catalog).await;
    assert_eq!(
        rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        [false, true, false],
        "{rows:?}"
    );
    assert_eq!(rows[1].1, 5, "{rows:?}");
}
