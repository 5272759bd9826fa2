//! Apache Kafka adapters, on rdkafka (librdkafka): the event publisher, the consumer-group member
//! that feeds the consumer framework, the dead-letter topic, and what they share (client settings,
//! creating a topic and waiting until its metadata is visible).

mod consumer;
mod dead_letters;
mod publisher;

pub use consumer::{GroupSettings, KafkaConsumer};
pub use dead_letters::{
    DLQ_ERROR, DLQ_GROUP, DLQ_OFFSET, DLQ_PARTITION, DLQ_TOPIC, KafkaDeadLetters, dead_letter_topic,
};
pub use publisher::{KafkaPublisher, PublisherSettings, refused_for_good};

/// Asks the brokers for a topic's metadata: whether the cluster answers (`/readyz`). One client,
/// kept for the process's life.
pub struct BrokerCheck {
    client: Arc<rdkafka::producer::BaseProducer>,
    topic: String,
}

impl BrokerCheck {
    pub fn new(settings: &KafkaSettings, topic: &str) -> Result<Self, KafkaError> {
        Ok(Self {
            client: Arc::new(settings.client_config().create()?),
            topic: topic.to_owned(),
        })
    }

    /// `Ok` when a broker answered with the topic's metadata within `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<(), KafkaError> {
        let client = self.client.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            // Nothing else polls this client: serve its queued events (errors, logs) so that
            // they do not pile up during an outage.
            client.poll(Duration::ZERO);
            client
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map(|_| ())
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }
}

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::util::Timeout;

/// How to reach a Kafka cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port` each.
    pub brokers: Vec<String>,
    /// librdkafka properties passed through as they are (security.protocol, sasl.*, ssl.*, ...).
    pub properties: BTreeMap<String, String>,
}

impl KafkaSettings {
    pub fn new(brokers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            brokers: brokers.into_iter().map(Into::into).collect(),
            properties: BTreeMap::new(),
        }
    }

    /// A client configuration with the bootstrap servers and the pass-through properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers.join(","));
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// A client configuration with `defaults` set first, so that the pass-through properties can
    /// override any of them.
    pub fn client_config_with(&self, defaults: &[(&str, String)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers.join(","));
        for (key, value) in defaults {
            config.set(*key, value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// Why a topic could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot create a Kafka admin client")]
    Client(#[source] KafkaError),
    #[error("cannot create the Kafka topic {topic:?}")]
    Create {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("the Kafka topic {topic:?} did not appear within {waited:?}: {last_error}")]
    NotVisible {
        topic: String,
        waited: Duration,
        last_error: String,
    },
}

/// A topic's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Topic-level settings given at creation, such as `cleanup.policy=compact`.
    pub configs: Vec<(String, String)>,
}

/// Creates `spec.name` if it does not exist, then waits (up to `timeout`) until the cluster's
/// metadata lists it with all its partitions. An existing topic is left as it is. Returns the
/// number of partitions the topic has.
pub async fn ensure_topic(
    settings: &KafkaSettings,
    spec: &TopicSpec,
    timeout: Duration,
) -> Result<usize, TopicError> {
    let admin: Arc<AdminClient<DefaultClientContext>> = Arc::new(
        settings
            .client_config()
            .create()
            .map_err(TopicError::Client)?,
    );
    let mut new_topic = NewTopic::new(
        &spec.name,
        spec.partitions,
        TopicReplication::Fixed(spec.replication_factor),
    );
    for (key, value) in &spec.configs {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Timeout::After(timeout)));
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .map_err(|source| TopicError::Create {
            topic: spec.name.clone(),
            source,
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(TopicError::Create {
                    topic: spec.name.clone(),
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    wait_for_topic(admin, &spec.name, timeout).await
}

/// Polls the cluster's metadata, with a growing pause, until `topic` has partitions that all
/// have a leader.
async fn wait_for_topic(
    admin: Arc<AdminClient<DefaultClientContext>>,
    topic: &str,
    timeout: Duration,
) -> Result<usize, TopicError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    let mut last_error;
    loop {
        let remaining = timeout.saturating_sub(started.elapsed());
        // librdkafka's metadata call blocks: keep it off the async workers.
        let client = Arc::clone(&admin);
        let name = topic.to_owned();
        let wait = remaining.min(Duration::from_secs(5));
        let fetched = tokio::task::spawn_blocking(move || {
            client
                .inner()
                .fetch_metadata(Some(&name), wait)
                .map(|metadata| {
                    metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == name)
                        .map(|t| {
                            let leaders = t.partitions().iter().all(|p| p.leader() >= 0);
                            (t.error(), t.partitions().len(), leaders)
                        })
                })
        })
        .await;
        match fetched {
            Err(join) => last_error = join.to_string(),
            Ok(Ok(found)) => match found {
                Some((None, partitions, true)) if partitions > 0 => return Ok(partitions),
                Some((error, partitions, _)) => {
                    last_error = format!("{partitions} partitions ready, error {error:?}");
                }
                None => last_error = "not listed yet".to_owned(),
            },
            Ok(Err(err)) => last_error = err.to_string(),
        }
        if started.elapsed() >= timeout {
            return Err(TopicError::NotVisible {
                topic: topic.to_owned(),
                waited: started.elapsed(),
                last_error,
            });
        }
        tokio::time::sleep(pause.min(remaining)).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
