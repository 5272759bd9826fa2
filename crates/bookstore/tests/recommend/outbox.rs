//! The outbox relay dies between publishing rows and marking them sent: on restart it publishes
//! them again, and the recommendation service keeps one copy of each book. The web service's
//! relay deletes the rows sent longer ago than `events.outbox_retention_hours`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bookstore::relay::PublisherSink;
use bookstore::{Catalog, Remotes, open_catalog};
use bookstore_domain::events::Event;
use bookstore_domain::{NewBook, NewBookInput, Outbox, OutboxRow, OutboxSink};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Recorder, wait_until};
use crate::infra;
use crate::support::{Infra, get_json, start_web, test_bus};

/// Delivers through the real publisher, then never answers: the relay's round is cut off there,
/// before the rows are marked sent, which is what a relay killed at that moment leaves behind.
struct KilledAfterDelivery<'a>(&'a PublisherSink);

#[async_trait]
impl OutboxSink for KilledAfterDelivery<'_> {
    async fn deliver(&self, rows: &[OutboxRow]) -> Result<(), String> {
        self.0.deliver(rows).await?;
        std::future::pending::<()>().await;
        Ok(())
    }
}

fn book(title: &str) -> NewBook {
    NewBook::parse(NewBookInput {
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
    let recording = tokio::spawn(consumer.run());

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
    assert_eq!(restarted.relay(100, &sink).await.unwrap(), 2);
    assert_eq!(restarted.waiting().await.unwrap(), 0);
    assert_eq!(restarted.relay(100, &sink).await.unwrap(), 0);

    let created_ids = |records: Vec<bookstore_domain::Record>| -> Vec<i64> {
        let mut ids: Vec<i64> = records
            .into_iter()
            .filter_map(|r| match r.event {
                Event::BookCreated(e) => Some(e.book.id),
                Event::BookSearched(_) => None,
            })
            .collect();
        ids.sort_unstable();
        ids
    };
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

    let app = bookstore::recommend::build(config).await.unwrap();
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
    stop.cancel();
    recording.await.unwrap().unwrap();
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
    assert_eq!(outbox.relay(100, &sink).await.unwrap(), 2);
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
