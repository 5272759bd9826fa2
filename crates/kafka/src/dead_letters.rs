//! The dead-letter topic `<topic>.dlq`.

use std::time::Duration;

use async_trait::async_trait;
use bookstore_consumer::{DeadLetter, DeadLetters, SinkError};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::KafkaSettings;

/// Headers a dead letter carries besides the original key and value.
pub const DLQ_ERROR: &str = "dlq.error";
pub const DLQ_GROUP: &str = "dlq.group";
pub const DLQ_TOPIC: &str = "dlq.topic";
pub const DLQ_PARTITION: &str = "dlq.partition";
pub const DLQ_OFFSET: &str = "dlq.offset";

/// The name of the dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Produces dead letters to `<topic>.dlq`, with the original key and value, and the error and
/// original position in headers; waits for each delivery.
pub struct KafkaDeadLetters {
    producer: FutureProducer,
}

impl KafkaDeadLetters {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let producer = settings
            .client_config_with(&[
                ("enable.idempotence", "true".to_owned()),
                ("acks", "all".to_owned()),
                ("message.timeout.ms", "15000".to_owned()),
            ])
            .create()?;
        Ok(Self { producer })
    }
}

#[async_trait]
impl DeadLetters for KafkaDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), SinkError> {
        let m = &letter.message;
        let topic = dead_letter_topic(&m.topic);
        let partition = m.partition.to_string();
        let offset = m.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: DLQ_ERROR,
                value: Some(letter.error.as_str()),
            })
            .insert(Header {
                key: DLQ_GROUP,
                value: Some(letter.group.as_str()),
            })
            .insert(Header {
                key: DLQ_TOPIC,
                value: Some(m.topic.as_str()),
            })
            .insert(Header {
                key: DLQ_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: DLQ_OFFSET,
                value: Some(offset.as_str()),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic)
            .payload(m.value.as_slice())
            .headers(headers);
        if let Some(key) = &m.key {
            record = record.key(key.as_slice());
        }
        self.producer
            .send(record, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|(error, _)| SinkError(format!("cannot produce to {topic}: {error}")))
    }
}
