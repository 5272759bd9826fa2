//! A test event bus per backend (a fresh topic on the real Kafka from `dev/services`, or a fresh
//! embedded log), the web service on it, consumers, and the query-count store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bookstore_app::WebApp;
use bookstore_app::bus::{EventBus, Publisher};
use bookstore_app::config::{Config, EventsBackend, OpsListen, Secret, TrendStoreKind};
use bookstore_consumer::{ConsumerStats, PublisherStats};
use bookstore_domain::EventHandler;
use bookstore_sqlite::SqliteQueryCounts;
use bookstore_testkit::servers::{self, kafka_brokers};
use bookstore_testkit::{Backend, Cleanup, FreshDatabase};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The stores of `config` that a test made on the shared Redis: the keys under a `test:` prefix.
/// (Its MariaDB databases have guards of their own: [`TestBus::fresh_mysql_url`].)
pub fn made_stores(config: &Config) -> Cleanup {
    let mut made = Cleanup::default();
    if config.trend.store == TrendStoreKind::Redis && config.trend.redis_prefix.starts_with("test:")
    {
        made.redis_prefixes.push(config.trend.redis_prefix.clone());
    }
    made
}

/// The key the test services sign visitor ids with (`web.cookie_secret`).
pub const TEST_COOKIE_SECRET: &str = "test-cookie-secret-of-at-least-32-characters";

/// A `Cookie` header value naming the visitor `uid` (a UUID), signed as the test services sign.
pub fn uid_cookie(uid: &str) -> String {
    let keys = bookstore_web::VisitorKeys::new(TEST_COOKIE_SECRET.into(), false, Vec::new());
    let uid = uid
        .parse()
        .unwrap_or_else(|e| panic!("a visitor id is a UUID, not {uid:?}: {e}"));
    format!("uid={}", keys.cookie_value(uid))
}

pub struct TestBus {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub bus: EventBus,
    /// The MariaDB databases made for this bus's test, dropped with it.
    databases: Vec<FreshDatabase>,
}

/// A test's topics, Redis keys and databases go with its bus, whether the test passed or not.
impl Drop for TestBus {
    fn drop(&mut self) {
        drop(self.made());
    }
}

impl TestBus {
    /// A fresh topic (Kafka) or log (embedded). Panics, naming the fix, when Kafka is unreachable.
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("cannot make a temporary directory");
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        config.web.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        // Services a test starts (the all-in-one starts them all) take free ports.
        config.trend.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.recommend.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let free = OpsListen::Addr(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.web.ops_listen = free;
        config.trend.ops_listen = free;
        config.recommend.ops_listen = free;
        config.events.topic = format!("test-{}", uuid::Uuid::new_v4().simple());
        config.events.catalog_topic = format!("{}-catalog", config.events.topic);
        config.web.admin_token = Some(Secret("test-token".to_owned().into()));
        config.web.cookie_secret = Some(Secret(TEST_COOKIE_SECRET.into()));
        // One reader makes a trend public, so that a test's own searches show on the page (the
        // tests of trend.min_readers set it back).
        config.trend.min_readers = 1;
        config.events.batch_wait_ms = 20;
        config.events.topic_timeout_ms = 30_000;
        match backend {
            Backend::Embedded => {
                config.events.backend = EventsBackend::Embedded;
                config.events.session_timeout_ms = 1_000;
            }
            Backend::Kafka => {
                config.events.backend = EventsBackend::Kafka;
                config.events.brokers = kafka_brokers();
                config.events.session_timeout_ms = 6_000;
            }
        }
        let bus = EventBus::open(&config)
            .await
            .unwrap_or_else(|e| panic!("cannot open the {backend:?} event bus: {e:#}"));
        if let Err(error) = bus
            .ensure_topics(&config.events, &[config.events.topic.clone()])
            .await
        {
            servers::unreachable(
                "Kafka",
                &config.events.brokers,
                "BOOKSTORE_TEST_KAFKA_BROKERS",
                format!("{error:#}"),
            );
        }
        Self {
            backend,
            dir,
            config,
            bus,
            databases: Vec::new(),
        }
    }

    pub fn topic(&self) -> &str {
        &self.config.events.topic
    }

    /// A fresh database name `bookstore_test_<purpose>_<uuid>` on the test MariaDB, for a
    /// service that creates its database itself (the recommendation service); the database goes
    /// with the bus. Panics, naming the fix, when MariaDB is unreachable.
    pub async fn fresh_mysql_url(&mut self, purpose: &str) -> String {
        let db = FreshDatabase::reserve(purpose).await;
        let url = db.url();
        self.databases.push(db);
        url
    }

    /// [`TestBus::fresh_mysql_url`], the database created (for the catalog, which the web
    /// service does not create).
    pub async fn fresh_mysql_database(&mut self, purpose: &str) -> String {
        let db = FreshDatabase::create_named(purpose).await;
        let url = db.url();
        self.databases.push(db);
        url
    }

    /// What this bus's test made on the shared servers, as its configuration says at the end:
    /// its Kafka topics, and its Redis keys (see [`made_stores`]).
    fn made(&self) -> Cleanup {
        let mut made = made_stores(&self.config);
        if self.backend == Backend::Kafka {
            let e = &self.config.events;
            made.kafka_brokers = e.brokers.clone();
            made.kafka_topics = [&e.topic, &e.catalog_topic]
                .into_iter()
                .filter(|t| t.starts_with("test-"))
                .flat_map(|t| [t.clone(), bookstore_kafka::dead_letter_topic(t)])
                .collect();
        }
        made
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The configuration as environment variables, for a `bookstore` child process.
    pub fn env(&self) -> Vec<(String, String)> {
        let e = &self.config.events;
        let backend = match self.backend {
            Backend::Embedded => "embedded",
            Backend::Kafka => "kafka",
        };
        vec![
            (
                "BOOKSTORE_DATA_DIR".into(),
                self.dir.path().display().to_string(),
            ),
            ("BOOKSTORE_EVENTS__BACKEND".into(), backend.into()),
            ("BOOKSTORE_EVENTS__BROKERS".into(), e.brokers.clone()),
            ("BOOKSTORE_EVENTS__TOPIC".into(), e.topic.clone()),
            (
                "BOOKSTORE_EVENTS__CATALOG_TOPIC".into(),
                e.catalog_topic.clone(),
            ),
            (
                "BOOKSTORE_EVENTS__BATCH_WAIT_MS".into(),
                e.batch_wait_ms.to_string(),
            ),
            (
                "BOOKSTORE_EVENTS__SESSION_TIMEOUT_MS".into(),
                e.session_timeout_ms.to_string(),
            ),
            (
                "BOOKSTORE_WEB__COOKIE_SECRET".into(),
                TEST_COOKIE_SECRET.into(),
            ),
            (
                "BOOKSTORE_TREND__MIN_READERS".into(),
                self.config.trend.min_readers.to_string(),
            ),
            // Operations ports: free ones, unless the test names them.
            ("BOOKSTORE_WEB__OPS_LISTEN".into(), "127.0.0.1:0".into()),
            ("BOOKSTORE_TREND__OPS_LISTEN".into(), "127.0.0.1:0".into()),
            (
                "BOOKSTORE_RECOMMEND__OPS_LISTEN".into(),
                "127.0.0.1:0".into(),
            ),
        ]
    }

    pub async fn publisher(&self) -> Publisher {
        self.bus
            .publisher(&self.config.events, self.config.events.searches())
            .await
            .unwrap_or_else(|e| panic!("cannot start a publisher on the test bus: {e:#}"))
    }

    /// Writes a message as a foreign producer would: plain rdkafka, or a raw append.
    pub async fn produce_raw(&self, key: Option<&[u8]>, value: &[u8]) {
        match &self.bus {
            EventBus::Embedded { log, partitions } => {
                log.append(
                    self.topic(),
                    *partitions,
                    &[(key.map(<[u8]>::to_vec), value.to_vec())],
                )
                .await
                .unwrap_or_else(|e| panic!("cannot append to the embedded log: {e}"));
            }
            EventBus::Kafka(settings) => {
                let producer: FutureProducer = settings
                    .client_config()
                    .create()
                    .unwrap_or_else(|e| panic!("cannot make a Kafka producer: {e}"));
                let mut record: FutureRecord<'_, [u8], [u8]> =
                    FutureRecord::to(self.topic()).payload(value);
                if let Some(key) = key {
                    record = record.key(key);
                }
                if let Err((error, _)) = producer.send(record, Duration::from_secs(10)).await {
                    panic!("cannot produce to {}: {error}", self.topic());
                }
            }
        }
    }

    /// A consumer-group member running in this process, reading the search topic.
    pub async fn consumer(&self, group: &str, handler: Arc<dyn EventHandler>) -> RunningConsumer {
        self.consumer_of(group, vec![self.topic().to_owned()], handler)
            .await
    }

    /// A consumer-group member running in this process, reading `topics`.
    pub async fn consumer_of(
        &self,
        group: &str,
        topics: Vec<String>,
        handler: Arc<dyn EventHandler>,
    ) -> RunningConsumer {
        let stop = CancellationToken::new();
        let consumer = self
            .bus
            .consumer(&self.config.events, group, topics, handler, stop.clone())
            .await
            .unwrap_or_else(|e| panic!("cannot start a consumer of group {group}: {e:#}"));
        let stats = consumer.stats();
        let task = tokio::spawn(consumer.run());
        RunningConsumer { stop, task, stats }
    }

    /// The web service on this bus, on a free port, with its catalog in the temporary directory.
    pub async fn web(&self) -> RunningWeb {
        let app = WebApp::build(&self.config)
            .await
            .unwrap_or_else(|e| panic!("the web service does not start: {e:#}"));
        let addr = app.local_addr().expect("the web service's address");
        let ops = app
            .ops_addr()
            .expect("the web service's operations address");
        let stats = app.publisher_stats();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        // Searches are answered by the search index: ready once it has the sample catalog.
        let readyz = format!("http://{}/readyz", ops.unwrap_or(addr));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while reqwest::get(&readyz)
            .await
            .map(|r| r.status().as_u16())
            .ok()
            != Some(200)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the web service is not ready after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        RunningWeb {
            addr,
            ops,
            stats,
            stop: Some(tx),
            task: Some(task),
        }
    }
}

pub struct RunningConsumer {
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
    pub stats: Arc<ConsumerStats>,
}

impl RunningConsumer {
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the consumer stops within 30 s")
            .expect("the consumer's task panicked")
            .expect("the consumer failed");
    }

    pub fn owned(&self) -> u64 {
        self.stats
            .owned_partitions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn applied(&self) -> u64 {
        self.stats
            .applied
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RunningConsumer {
    /// A test that panics still stops its consumer: a consumer thread left polling would keep
    /// the test binary from exiting.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub struct RunningWeb {
    pub addr: SocketAddr,
    /// The operations port (`/metrics`), unless `web.ops_listen` is `same`.
    pub ops: Option<SocketAddr>,
    pub stats: Arc<PublisherStats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningWeb {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `path` on the operations port (the public one when they are the same).
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops.unwrap_or(self.addr))
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the web service's task panicked")
                .expect("the web service failed");
        }
    }
}

/// The query-count store in `path`.
pub async fn counts_store(path: &Path) -> SqliteQueryCounts {
    let pool = bookstore_sqlite::connect(&format!("sqlite://{}", path.display()), 4)
        .await
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    SqliteQueryCounts::new(pool)
        .await
        .unwrap_or_else(|e| panic!("cannot open the query counts in {}: {e}", path.display()))
}

pub async fn total(counts: &SqliteQueryCounts) -> u64 {
    counts.counts().await.map(|c| c.values().sum()).unwrap_or(0)
}
