//! Wiring of the event pipeline: the log chosen by configuration (`events.backend`), its
//! publisher, and consumer-group members that feed a handler through the consumer framework.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bookstore_consumer::{BatchSettings, Pipeline, PublisherStats};
use bookstore_domain::{EventHandler, EventPublisher};
use bookstore_eventlog::{EmbeddedConsumer, EmbeddedPublisher, EventLog, PublisherLimits};
use bookstore_kafka::{
    KafkaConsumer, KafkaDeadLetters, KafkaPublisher, KafkaSettings, PublisherSettings, TopicSpec,
    dead_letter_topic, ensure_topic,
};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Destination, EventsBackend, EventsConfig};

/// The event log a process talks to.
#[derive(Clone)]
pub enum EventBus {
    Embedded { log: Arc<EventLog>, partitions: u32 },
    Kafka(KafkaSettings),
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded { log, .. } => write!(f, "embedded log {}", log.path().display()),
            Self::Kafka(settings) => write!(f, "Kafka at {}", settings.brokers.join(",")),
        }
    }
}

/// A running publisher and its counters.
pub struct Publisher {
    /// The port the services publish through.
    pub port: Arc<dyn EventPublisher>,
    pub stats: Arc<PublisherStats>,
}

impl EventBus {
    /// Opens the embedded log, or checks the Kafka settings; creates the search topic if needed.
    ///
    /// On Kafka the topic is created, and its metadata awaited, in the background when the
    /// brokers cannot be reached at start: the web service must serve searches without them.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let events = &config.events;
        match events.backend {
            EventsBackend::Embedded => {
                config.ensure_data_dir()?;
                let path = events.log_path(&config.data_dir);
                let log = EventLog::open(&path)
                    .await
                    .with_context(|| format!("cannot open the event log {}", path.display()))?;
                let partitions = log
                    .ensure_topic(&events.topic, events.partitions)
                    .await
                    .context("cannot create the topic in the event log")?;
                Ok(Self::Embedded { log, partitions })
            }
            EventsBackend::Kafka => {
                let mut settings = KafkaSettings::new(events.broker_list());
                settings.properties = events.librdkafka_properties();
                Ok(Self::Kafka(settings))
            }
        }
    }

    /// Creates `topics` on Kafka if missing and waits for their metadata (nothing to do on the
    /// embedded log, whose topics are created on open). Gives up after `events.topic_timeout_ms`.
    pub async fn ensure_topics(
        &self,
        events: &EventsConfig,
        topics: &[String],
    ) -> anyhow::Result<()> {
        match self {
            Self::Embedded { log, .. } => {
                for topic in topics {
                    log.ensure_topic(topic, events.partitions).await?;
                }
                Ok(())
            }
            Self::Kafka(settings) => {
                for topic in topics {
                    // The catalog topic is the recommendation service's only source of the
                    // catalog: compacted (keyed by book id), it keeps every book for good
                    // instead of dropping what is older than the retention time. The others
                    // get `events.retention_hours` and `events.retention_bytes`.
                    let spec = TopicSpec {
                        name: topic.clone(),
                        partitions: i32::try_from(events.partitions).unwrap_or(i32::MAX),
                        replication_factor: i32::try_from(events.replication_factor)
                            .unwrap_or(i32::MAX),
                        configs: events.kafka_topic_configs(topic),
                    };
                    ensure_topic(
                        settings,
                        &spec,
                        Duration::from_millis(events.topic_timeout_ms),
                    )
                    .await
                    .with_context(|| format!("cannot set up the Kafka topic {topic:?}"))?;
                }
                Ok(())
            }
        }
    }

    /// Starts a publisher writing to `to`, bounded by `events`' queue and message limits.
    pub async fn publisher(
        &self,
        events: &EventsConfig,
        to: Destination,
    ) -> anyhow::Result<Publisher> {
        let format = to.format;
        match self {
            Self::Embedded { log, partitions } => {
                let publisher = EmbeddedPublisher::start(
                    log.clone(),
                    &to.topic,
                    *partitions,
                    PublisherLimits {
                        queue_capacity: events.queue_capacity,
                        queue_max_bytes: events.queue_max_bytes,
                        max_message_bytes: events.max_message_bytes,
                        format,
                    },
                )
                .await
                .context("cannot start the embedded event publisher")?;
                let stats = publisher.stats();
                Ok(Publisher {
                    port: Arc::new(publisher),
                    stats,
                })
            }
            Self::Kafka(settings) => {
                let publisher = KafkaPublisher::new(
                    settings,
                    &PublisherSettings {
                        topic: to.topic.clone(),
                        queue_capacity: events.queue_capacity,
                        queue_max_bytes: events.queue_max_bytes,
                        max_message_bytes: events.max_message_bytes,
                        linger: Duration::from_millis(events.linger_ms),
                        compression: events.compression.clone(),
                        message_timeout: to.message_timeout,
                        format,
                    },
                )
                .context("cannot create the Kafka producer (events.*)")?;
                let stats = publisher.stats();
                // Searches must not wait for the brokers: set the topic up in the background.
                let bus = self.clone();
                let events = events.clone();
                tokio::spawn(async move {
                    let topics = [to.topic];
                    loop {
                        match bus.ensure_topics(&events, &topics).await {
                            Ok(()) => break,
                            Err(error) => {
                                tracing::warn!(error = %format!("{error:#}"), "Kafka topic not ready; retrying");
                                tokio::time::sleep(Duration::from_secs(5)).await;
                            }
                        }
                    }
                });
                Ok(Publisher {
                    port: Arc::new(publisher),
                    stats,
                })
            }
        }
    }

    /// A consumer-group member applying `topics` to `handler` until `stop` is cancelled. The
    /// topics and their dead-letter topics are created first if missing.
    pub async fn consumer(
        &self,
        events: &EventsConfig,
        group: &str,
        topics: Vec<String>,
        handler: Arc<dyn EventHandler>,
        stop: CancellationToken,
    ) -> anyhow::Result<Consumer> {
        let batch = BatchSettings {
            max_events: events.batch_size,
            max_wait: Duration::from_millis(events.batch_wait_ms),
        };
        let session_timeout = Duration::from_millis(events.session_timeout_ms);
        match self {
            Self::Embedded { log, .. } => {
                self.ensure_topics(events, &topics).await?;
                let pipeline = Pipeline::new(group, handler, log.clone(), batch, stop);
                let consumer = EmbeddedConsumer::new(
                    log.clone(),
                    topics,
                    pipeline,
                    bookstore_eventlog::GroupSettings {
                        heartbeat: (session_timeout / 5)
                            .clamp(Duration::from_millis(100), Duration::from_secs(1)),
                        session_timeout,
                    },
                );
                Ok(Consumer::Embedded(consumer))
            }
            Self::Kafka(settings) => {
                let mut all: Vec<String> = topics.clone();
                all.extend(topics.iter().map(|t| dead_letter_topic(t)));
                self.ensure_topics(events, &all).await?;
                let dead_letters = KafkaDeadLetters::new(settings)
                    .context("cannot create the dead-letter producer")?;
                let pipeline = Pipeline::new(group, handler, Arc::new(dead_letters), batch, stop);
                Ok(Consumer::Kafka(KafkaConsumer::new(
                    settings.clone(),
                    topics,
                    pipeline,
                    bookstore_kafka::GroupSettings { session_timeout },
                )))
            }
        }
    }
}

/// A consumer ready to run.
pub enum Consumer {
    Embedded(EmbeddedConsumer),
    Kafka(KafkaConsumer),
}

impl Consumer {
    /// The consumer's counters.
    pub fn stats(&self) -> Arc<bookstore_consumer::ConsumerStats> {
        match self {
            Self::Embedded(c) => c.stats(),
            Self::Kafka(c) => c.stats(),
        }
    }

    /// Consumes until the stop token is cancelled, then leaves the group.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Embedded(c) => c.run().await.context("the embedded consumer failed"),
            Self::Kafka(c) => c.run().await.context("the Kafka consumer failed"),
        }
    }
}

/// Delivers what the publisher still holds, within `events.flush_timeout_ms`, and says how it went.
pub async fn flush_publisher(publisher: &Publisher, events: &EventsConfig) {
    let left = publisher.port.flush(events.flush_timeout()).await;
    let stats = &publisher.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    if left > 0 {
        tracing::warn!(
            undelivered = left,
            delivered = load(&stats.delivered),
            failed = load(&stats.failed),
            dropped = load(&stats.dropped),
            "events still undelivered at shutdown"
        );
    } else {
        tracing::info!(
            delivered = load(&stats.delivered),
            failed = load(&stats.failed),
            dropped = load(&stats.dropped),
            "all queued events delivered"
        );
    }
}
