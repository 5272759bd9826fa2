//! The catalog topic is compacted: only the latest message of each book stays. A consumer that
//! reads it from the beginning after compaction must still end with exactly the live catalog, so
//! a delete is an ordinary `book.deleted` message that stays the latest of its key (see
//! docs/events.md). On Kafka the broker's own log cleaner compacts the topic; on the embedded
//! log, its retention pass.

use std::collections::BTreeMap;
use std::time::Duration;

use bookstore_app::bus::EventBus;
use bookstore_domain::events::{BookDeletedEvent, BookEvent, CatalogBook, Event};
use bookstore_testkit::wait_until;
use bookstore_testkit_app::stores::Replay;
use bookstore_testkit_app::{Infra, TestBus, test_bus};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::infra;

const PARTITIONS: i32 = 3;

fn book(id: i64, title: &str) -> CatalogBook {
    CatalogBook {
        isbn: None,
        id,
        title: title.to_owned(),
        author: "Ada Compaction".to_owned(),
        published_at: chrono::NaiveDate::from_ymd_opt(2026, 12, 6).unwrap().into(),
        description: String::new(),
        created_at: chrono::Utc::now(),
    }
}

fn created(id: i64) -> Event {
    Event::BookCreated(BookEvent::new(
        uuid::Uuid::now_v7(),
        chrono::Utc::now(),
        book(id, &format!("Book {id}")),
    ))
}

/// Publishes `events` and waits until the log has every one.
async fn deliver_all(publisher: &bookstore_app::bus::Publisher, events: &[Event]) {
    let delivered = publisher
        .port
        .deliver(events, Duration::from_secs(30))
        .await;
    assert!(
        delivered
            .iter()
            .all(|d| *d == bookstore_domain::Delivery::Delivered),
        "{delivered:?}"
    );
}

/// How many messages the catalog topic holds, read from its beginning.
async fn messages_in(bus: &TestBus, topic: &str) -> usize {
    match &bus.bus {
        EventBus::Embedded { log, partitions } => {
            let mut n = 0;
            for partition in 0..*partitions {
                let tp = bookstore_domain::TopicPartition {
                    topic: topic.to_owned(),
                    partition: i32::try_from(partition).unwrap(),
                };
                n += log.read(&tp, 0, 100_000).await.unwrap().len();
            }
            n
        }
        EventBus::Kafka(settings) => {
            let consumer: BaseConsumer = settings
                .client_config_with(&[
                    ("group.id", format!("count-{}", uuid::Uuid::new_v4())),
                    ("enable.auto.commit", "false".to_owned()),
                    ("enable.partition.eof", "true".to_owned()),
                ])
                .create()
                .unwrap();
            let mut assignment = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                assignment
                    .add_partition_offset(topic, p, Offset::Beginning)
                    .unwrap();
            }
            consumer.assign(&assignment).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let (mut n, mut ended) = (0, std::collections::BTreeSet::new());
            while ended.len() < PARTITIONS as usize {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{topic} never read to its end"
                );
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(_)) => n += 1,
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        ended.insert(p);
                    }
                    Some(Err(error)) => panic!("reading {topic}: {error}"),
                    None => {}
                }
            }
            n
        }
    }
}

infra!(a_replay_after_compaction_ends_with_exactly_the_live_catalog);
async fn a_replay_after_compaction_ends_with_exactly_the_live_catalog(infra: Infra) {
    let bus = test_bus(infra).await;
    let config = &bus.config;
    let topic = config.events.catalog_topic.clone();
    if let EventBus::Kafka(settings) = &bus.bus {
        // Compacted as soon as the broker's cleaner looks: segments rolled after 100 ms, cleaned
        // whatever their share of superseded messages.
        let configs = [
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.001"),
            ("min.compaction.lag.ms", "0"),
            ("delete.retention.ms", "100"),
        ];
        bookstore_kafka::ensure_topic(
            settings,
            &bookstore_kafka::TopicSpec {
                name: topic.clone(),
                partitions: PARTITIONS,
                replication_factor: 1,
                configs: configs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    }
    let publisher = bus
        .bus
        .publisher(&config.events, config.events.destination(&topic))
        .await
        .unwrap();

    // Books 1 to 30 created; 1 to 10 replaced; 11 to 20 deleted.
    let mut events: Vec<Event> = (1..=30).map(created).collect();
    events.extend((1..=10).map(|id| {
        Event::BookUpdated(BookEvent::new(
            uuid::Uuid::now_v7(),
            chrono::Utc::now(),
            book(id, &format!("Book {id}, revised")),
        ))
    }));
    events.extend((11..=20).map(|id| {
        Event::BookDeleted(BookDeletedEvent::new(
            uuid::Uuid::now_v7(),
            chrono::Utc::now(),
            id,
        ))
    }));
    deliver_all(&publisher, &events).await;
    // Books 31 to 40, a while later: on Kafka they land in new segments on every partition, so
    // that the segments holding the first 50 messages are no longer active and can be cleaned.
    tokio::time::sleep(Duration::from_millis(300)).await;
    deliver_all(&publisher, &(31..=40).map(created).collect::<Vec<_>>()).await;

    // Compaction: the 20 superseded creates go; 40 messages stay (one per book).
    match &bus.bus {
        EventBus::Embedded { log, .. } => {
            let retention = bookstore_eventlog::Retention::new(None, None, [topic.clone()]);
            log.trim(&retention).await.unwrap();
        }
        EventBus::Kafka(_) => {}
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let held = messages_in(&bus, &topic).await;
        if held == 40 {
            break;
        }
        assert!(
            held > 40 && std::time::Instant::now() < deadline,
            "the catalog topic holds {held} messages, not one per book (40)"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // A fresh recommendation store replays the compacted topic from its beginning.
    let replay = Replay::start(&bus, config).await;
    let store = replay.recommendations.clone();
    wait_until(Duration::from_secs(60), "the replay's catalog", || async {
        store.stats().await.is_ok_and(|s| s.catalog_books == 30)
    })
    .await;
    let mut copy = BTreeMap::new();
    for id in 1..=40 {
        if let Some(entry) = store.catalog_book(id).await.unwrap() {
            copy.insert(id, entry.title);
        }
    }
    let live: BTreeMap<i64, String> = (1..=10)
        .map(|id| (id, format!("Book {id}, revised")))
        .chain((21..=40).map(|id| (id, format!("Book {id}"))))
        .collect();
    assert_eq!(copy, live, "the replay holds exactly the live catalog");
    replay.shutdown().await;
}
