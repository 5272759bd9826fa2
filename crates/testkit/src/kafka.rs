//! Kafka topics a test made on the shared test broker, deleted when the test ends, whether it
//! passed or not ([`KafkaTopic`], and [`crate::Cleanup`] for topics a configuration names).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

use crate::guard::{CLEANUP_TIMEOUT, on_own_runtime, report};

/// A fresh topic name `<prefix>-<uuid>` on `brokers` (usually [`crate::servers::kafka_brokers`]);
/// the test creates the topic (through the code under test), and the topic is deleted when this
/// guard is dropped (also while a failed test's panic unwinds). A topic never made is no error.
pub struct KafkaTopic {
    pub name: String,
    brokers: String,
}

impl KafkaTopic {
    pub fn new(prefix: &str, brokers: &str) -> Self {
        Self {
            name: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            brokers: brokers.to_owned(),
        }
    }
}

impl Drop for KafkaTopic {
    fn drop(&mut self) {
        let (brokers, topics) = (self.brokers.clone(), vec![self.name.clone()]);
        let deleted = on_own_runtime(CLEANUP_TIMEOUT, move || async move {
            delete_kafka_topics(&brokers, &topics).await
        });
        if let Err(error) = deleted {
            report(&format!(
                "could not delete the test topic {}: {error}",
                self.name
            ));
        }
    }
}

/// Deletes `topics` from the Kafka at `brokers`; a topic that does not exist is no error.
pub async fn delete_kafka_topics(brokers: &str, topics: &[String]) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| format!("cannot make a Kafka admin client for {brokers}: {e}"))?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    // Each topic's own result is `UnknownTopicOrPartition` for one that was never made.
    admin
        .delete_topics(&names, &options)
        .await
        .map(drop)
        .map_err(|e| format!("cannot delete the topics {topics:?} on {brokers}: {e}"))
}
