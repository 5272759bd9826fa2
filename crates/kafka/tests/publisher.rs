//! The publisher on the broker from `dev/services` (or `BOOKSTORE_TEST_KAFKA_BROKERS`): the
//! verdict on each event it is asked to deliver tells a refusal of that event (larger than the
//! producer or the topic takes) from a failure of the cluster (unreachable: a loopback port
//! nobody listens on, so that the shared broker is never stopped); its queue is bounded in bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use bookstore_domain::events::{
    BookEvent, BookViewedEvent, CatalogBook, Event, ReaderForgottenEvent, ResultBook,
    ResultDetails, SearchEvent, ViewSource, WireFormat, decode,
};
use bookstore_domain::{Delivery, EventPublisher, Published, StoredEvent};
use bookstore_kafka::{KafkaPublisher, KafkaSettings, PublisherSettings, TopicSpec, ensure_topic};
use bookstore_testkit::kafka::KafkaTopic;
use bookstore_testkit::servers::kafka_brokers;

fn settings() -> KafkaSettings {
    KafkaSettings::new(kafka_brokers().split(',').map(str::to_owned))
}

/// Settings naming a loopback port nobody listens on.
fn unreachable() -> KafkaSettings {
    KafkaSettings::new([format!("127.0.0.1:{}", bookstore_testkit::free_port())])
}

fn publisher_settings(topic: &str) -> PublisherSettings {
    PublisherSettings {
        topic: topic.to_owned(),
        queue_capacity: 100_000,
        queue_max_bytes: 32 * 1024 * 1024,
        max_message_bytes: 1_000_000,
        linger: Duration::from_millis(5),
        compression: "lz4".to_owned(),
        message_timeout: Duration::from_secs(30),
        format: WireFormat::V1,
    }
}

/// A `book.created` event whose description is `bytes` of random hex digits (which
/// compression cannot shrink much).
fn event(id: i64, bytes: usize) -> Event {
    let mut description = String::with_capacity(bytes + 32);
    while description.len() < bytes {
        description.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    description.truncate(bytes);
    // A fixed time: `now()` prints 0, 3, 6 or 9 fraction digits, so sizes would differ.
    let at = chrono::DateTime::from_timestamp(1_767_225_600, 123_456_789).unwrap();
    Event::BookCreated(BookEvent::new(
        uuid::Uuid::now_v7(),
        at,
        CatalogBook {
            isbn: None,
            id,
            title: "T".to_owned(),
            author: "A".to_owned(),
            published_at: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap().into(),
            description,
            created_at: at,
        },
    ))
}

fn refused(delivery: &Delivery) -> bool {
    matches!(delivery, Delivery::Refused(reason) if reason.contains("too large"))
}

#[tokio::test]
async fn kafka_refuses_what_is_too_large_and_takes_the_rest() {
    let settings = settings();
    let made = KafkaTopic::new("test-refusals", &kafka_brokers());
    let topic = made.name.clone();
    // The topic takes 20 kB at most; the producer 1 MB.
    ensure_topic(
        &settings,
        &TopicSpec {
            name: topic.clone(),
            partitions: 1,
            replication_factor: 1,
            configs: vec![("max.message.bytes".to_owned(), "20000".to_owned())],
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|err| {
        panic!(
            "Kafka is not reachable at {:?}: start it with `dev/services start`: {err}",
            settings.brokers
        )
    });
    let publisher = KafkaPublisher::new(&settings, &publisher_settings(&topic)).unwrap();
    let timeout = Duration::from_secs(30);

    let small = publisher.deliver(&[event(1, 100)], timeout).await;
    assert_eq!(small, [Delivery::Delivered]);
    // Refused by the broker (over the topic's limit).
    let over_topic = publisher.deliver(&[event(2, 100_000)], timeout).await;
    assert!(refused(&over_topic[0]), "{over_topic:?}");
    // Refused by the producer (over message.max.bytes), at once.
    let over_producer = publisher.deliver(&[event(3, 1_200_000)], timeout).await;
    assert!(refused(&over_producer[0]), "{over_producer:?}");
    // The producer goes on delivering.
    let after = publisher
        .deliver(&[event(4, 100), event(5, 100)], timeout)
        .await;
    assert_eq!(after, [Delivery::Delivered, Delivery::Delivered]);

    let stats = publisher.stats();
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 3);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 2);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(stats.in_flight(), 0);
    // A search event that large is refused and counted as failed too.
    assert_eq!(publisher.publish(&event(6, 1_200_000)), Published::Dropped);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn an_unreachable_cluster_leaves_events_undelivered_never_refused() {
    let mut publisher_settings = publisher_settings("test-unreachable");
    publisher_settings.message_timeout = Duration::from_millis(1_500);
    let publisher = KafkaPublisher::new(&unreachable(), &publisher_settings).unwrap();

    // Not confirmed within the wait.
    let events = [event(1, 100), event(2, 100_000)];
    let deliveries = publisher.deliver(&events, Duration::from_millis(500)).await;
    for delivery in &deliveries {
        assert!(
            matches!(delivery, Delivery::Undelivered(r) if r.contains("not confirmed")),
            "{delivery:?}"
        );
    }
    // Failed by librdkafka once `message.timeout.ms` is over.
    let deliveries = publisher.deliver(&events, Duration::from_secs(10)).await;
    for delivery in &deliveries {
        assert!(
            matches!(delivery, Delivery::Undelivered(r) if r.contains("timed out")),
            "{delivery:?}"
        );
    }
    assert_eq!(publisher.flush(Duration::from_secs(10)).await, 0);
    assert_eq!(publisher.stats().failed.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn the_producer_queue_is_bounded_in_bytes() {
    let mut publisher_settings = publisher_settings("test-unreachable");
    publisher_settings.queue_max_bytes = 64 * 1024;
    publisher_settings.max_message_bytes = 10_000;
    let publisher = KafkaPublisher::new(&unreachable(), &publisher_settings).unwrap();
    let one = event(100, 5_000).to_json().len();
    let published: Vec<Published> = (0..100)
        .map(|i| publisher.publish(&event(100 + i, 5_000)))
        .collect();
    let queued = published
        .iter()
        .filter(|p| **p == Published::Queued)
        .count();
    // librdkafka counts the payloads.
    assert_eq!(queued, 64 * 1024 / one, "{one} bytes each");
    assert!(published[..queued].iter().all(|p| *p == Published::Queued));
    let stats = publisher.stats();
    assert_eq!(stats.dropped.load(Ordering::Relaxed), (100 - queued) as u64);
    assert_eq!(stats.in_flight(), queued as u64);
}

#[tokio::test]
async fn the_tutorial_format_writes_searches_bare_and_leaves_the_other_events_out() {
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;

    let settings = settings();
    let made = KafkaTopic::new("test-tutorial-format", &kafka_brokers());
    let topic = made.name.clone();
    ensure_topic(
        &settings,
        &TopicSpec {
            name: topic.clone(),
            partitions: 1,
            replication_factor: 1,
            configs: Vec::new(),
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|err| {
        panic!(
            "Kafka is not reachable at {:?}: start it with `dev/services start`: {err}",
            settings.brokers
        )
    });
    let mut tutorial = publisher_settings(&topic);
    tutorial.format = WireFormat::Tutorial;
    let publisher = KafkaPublisher::new(&settings, &tutorial).unwrap();
    let book = ResultBook {
        id: 7,
        title: "Emma".to_owned(),
        author: "Jane Austen".to_owned(),
        published_at: chrono::NaiveDate::from_ymd_opt(1815, 12, 23).map(Into::into),
    };
    let search = SearchEvent::new(
        uuid::Uuid::now_v7(),
        chrono::Utc::now(),
        Some("reader-1".to_owned()),
        "Emma",
        0,
        vec![book.clone()],
    )
    .with_details(vec![ResultDetails {
        description: "Matchmaking.".to_owned(),
        created_at: chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
    }]);
    let view = Event::BookViewed(BookViewedEvent::now(
        Some("reader-1".to_owned()),
        None,
        book,
        ViewSource::Search,
        Some(0),
        None,
    ));

    // The view is left out and counted; the search goes.
    assert_eq!(publisher.publish(&view), Published::Dropped);
    assert_eq!(
        publisher.publish(&Event::BookSearched(search.clone())),
        Published::Queued
    );
    // A request to be forgotten is refused for good, never sent.
    let forgotten = Event::ReaderForgotten(ReaderForgottenEvent::now("reader-1"));
    let verdict = publisher
        .deliver(&[forgotten], Duration::from_secs(30))
        .await;
    assert!(
        matches!(&verdict[..], [Delivery::Refused(r)] if r.contains("reader.forgotten") && r.contains("tutorial")),
        "{verdict:?}"
    );
    assert_eq!(publisher.flush(Duration::from_secs(30)).await, 0);
    let stats = publisher.stats();
    assert_eq!(stats.omitted.load(Ordering::Relaxed), 2);
    assert_eq!(stats.queued.load(Ordering::Relaxed), 1);
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 1);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);

    // On the topic: the search alone, keyed `<query>:<uid>`, its books as the tutorial writes
    // them, without type or version headers.
    let consumer: StreamConsumer = settings
        .client_config()
        .set(
            "group.id",
            format!("test-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a message within 30 s")
        .unwrap();
    assert_eq!(message.key(), Some(&b"Emma:reader-1"[..]));
    assert_eq!(
        message.payload_view::<str>().unwrap().unwrap(),
        r#"[{"id":7,"title":"Emma","author":"Jane Austen","published_at":"1815-12-23","description":"Matchmaking.","created_at":"2026-01-01 00:00:00"}]"#
    );
    let names: Vec<&str> = message
        .headers()
        .map(|h| h.iter().map(|h| h.key).collect())
        .unwrap_or_default();
    assert!(
        !names.contains(&"type") && !names.contains(&"version"),
        "{names:?}"
    );
    let read = decode(message.key(), message.payload().unwrap(), None).unwrap();
    let read = read.as_search().unwrap();
    assert_eq!((read.version, read.query.as_str()), (0, "Emma"));
    assert_eq!(read.user_id.as_deref(), Some("reader-1"));
    assert_eq!(read.results, search.results);
    // Nothing after it: the view and the request to be forgotten never reached the topic.
    let next = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await;
    assert!(next.is_err(), "only the search is on the topic");
}

#[tokio::test]
async fn stored_events_go_byte_for_byte_with_their_type_and_version_headers() {
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;

    let settings = settings();
    let made = KafkaTopic::new("test-stored-events", &kafka_brokers());
    let topic = made.name.clone();
    ensure_topic(
        &settings,
        &TopicSpec {
            name: topic.clone(),
            partitions: 1,
            replication_factor: 1,
            configs: Vec::new(),
        },
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|err| {
        panic!(
            "Kafka is not reachable at {:?}: start it with `dev/services start`: {err}",
            settings.brokers
        )
    });
    let publisher = KafkaPublisher::new(&settings, &publisher_settings(&topic)).unwrap();
    let created = event(1, 10);
    // As an outbox may hold it: the same event, laid out otherwise than `to_json` writes it.
    let mut payload = created.to_json();
    payload.push(b'\n');
    let stored = StoredEvent {
        key: "1",
        kind: created.kind(),
        version: created.version(),
        payload: &payload,
    };
    let verdict = publisher
        .deliver_stored(&[stored], Duration::from_secs(30))
        .await;
    assert_eq!(verdict, [Delivery::Delivered]);
    let stats = publisher.stats();
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 1);

    let consumer: StreamConsumer = settings
        .client_config()
        .set(
            "group.id",
            format!("test-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a message within 30 s")
        .unwrap();
    assert_eq!(message.key(), Some(&b"1"[..]));
    assert_eq!(
        message.payload(),
        Some(&payload[..]),
        "the stored bytes, not encoded again"
    );
    let headers: Vec<(&str, &[u8])> = message
        .headers()
        .map(|h| h.iter().filter_map(|h| Some((h.key, h.value?))).collect())
        .unwrap_or_default();
    assert!(
        headers.contains(&("type", &b"book.created"[..])),
        "{headers:?}"
    );
    let version = created.version().to_string();
    assert!(
        headers.contains(&("version", version.as_bytes())),
        "{headers:?}"
    );

    // A publisher of another format refuses them, and sends nothing.
    let mut tutorial = publisher_settings(&topic);
    tutorial.format = WireFormat::Tutorial;
    let tutorial = KafkaPublisher::new(&settings, &tutorial).unwrap();
    let verdict = tutorial
        .deliver_stored(&[stored], Duration::from_secs(30))
        .await;
    assert!(
        matches!(&verdict[..], [Delivery::Refused(r)] if r.contains("stored in version 1")),
        "{verdict:?}"
    );
    let next = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await;
    assert!(
        next.is_err(),
        "only the first publisher's message is on the topic"
    );
}
