//! Proves the test harness's Kafka: through rdkafka, create a topic, produce a message, and consume
//! it back in a consumer group. Needs the broker from `dev/services` (or
//! `BOOKSTORE_TEST_KAFKA_BROKERS`); an unreachable broker fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bookstore_kafka::{KafkaSettings, TopicSpec, ensure_topic};
use bookstore_testkit::kafka::KafkaTopic;
use bookstore_testkit::servers::kafka_brokers;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn settings() -> KafkaSettings {
    KafkaSettings::new(kafka_brokers().split(',').map(str::to_owned))
}

#[tokio::test]
async fn a_message_goes_through_a_real_broker_and_back_in_a_consumer_group() {
    let settings = settings();
    let made = KafkaTopic::new("smoke", &kafka_brokers());
    let topic = made.name.clone();
    let spec = TopicSpec {
        name: topic.clone(),
        partitions: 3,
        replication_factor: 1,
        configs: vec![("cleanup.policy".to_owned(), "compact".to_owned())],
    };
    let partitions = ensure_topic(&settings, &spec, Duration::from_secs(30))
        .await
        .unwrap_or_else(|err| {
            panic!(
                "Kafka is not reachable at {:?}: start it with `dev/services start`: {err}",
                settings.brokers
            )
        });
    assert_eq!(partitions, 3);
    // Its settings were given at creation.
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create().unwrap();
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(&topic)], &AdminOptions::new())
        .await
        .unwrap();
    let config = described.into_iter().next().unwrap().unwrap();
    let policy = config
        .entries
        .iter()
        .find(|e| e.name == "cleanup.policy")
        .and_then(|e| e.value.clone());
    assert_eq!(policy.as_deref(), Some("compact"));
    // Creating it again leaves it as it is.
    assert_eq!(
        ensure_topic(&settings, &spec, Duration::from_secs(30))
            .await
            .unwrap(),
        3
    );

    let producer: FutureProducer = settings
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    let delivery = producer
        .send(
            FutureRecord::to(&topic)
                .key("pride:reader-1")
                .payload(r#"[{"title":"Pride and Prejudice"}]"#)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "type",
                    value: Some("smoke"),
                })),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(err, _)| err)
        .expect("the broker acknowledges the message");
    let (partition, offset) = (delivery.partition, delivery.offset);
    assert!(offset >= 0);

    let group = format!("smoke-group-{}", uuid::Uuid::new_v4().simple());
    let consumer: StreamConsumer = settings
        .client_config()
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a message within 30 s")
        .unwrap();
    assert_eq!(message.partition(), partition);
    assert_eq!(message.offset(), offset);
    assert_eq!(message.key(), Some(&b"pride:reader-1"[..]));
    assert_eq!(
        message.payload_view::<str>().unwrap().unwrap(),
        r#"[{"title":"Pride and Prejudice"}]"#
    );
    let header = message.headers().unwrap().get(0);
    assert_eq!((header.key, header.value), ("type", Some(&b"smoke"[..])));
    consumer
        .commit_message(&message, rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    let committed = consumer
        .committed(Duration::from_secs(10))
        .unwrap()
        .find_partition(&topic, partition)
        .unwrap()
        .offset();
    assert_eq!(committed, rdkafka::Offset::Offset(offset + 1));
}
