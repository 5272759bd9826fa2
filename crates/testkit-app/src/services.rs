//! The services on a test bus: fresh stores on the real servers from `dev/services` (MariaDB,
//! Redis), fresh consumer groups, the services run in this process, and `bookstore` child
//! processes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bookstore_app::config::{Config, Secret, TrendStoreKind};
use bookstore_app::{Remotes, WebApp};
use bookstore_consumer::{ConsumerStats, PublisherStats};
use bookstore_testkit::http::{get_json, wait_ready};
use bookstore_testkit::process::bookstore_child_with;
use bookstore_testkit::redis::fresh_prefix;
use bookstore_testkit::servers::{self, redis_url};
use bookstore_testkit::{Backend, KillOnDrop, free_port, wait_until};
use tokio::sync::oneshot;

use crate::bus::TestBus;

// ------------------------------------------------------------------ stores on the real servers

/// Puts the trend store of `config` on the test Redis, under a fresh key prefix (its keys go
/// with the bus: [`crate::made_stores`]). Panics, naming the fix, when Redis does not answer.
pub async fn use_redis_trends(config: &mut Config) {
    config.trend.store = TrendStoreKind::Redis;
    config.trend.redis_url = Secret(redis_url().into());
    // The prefix only: the bus deletes what is under it, as its configuration says at the end.
    config.trend.redis_prefix = fresh_prefix();
    let reachable = match bookstore_app::trend::open_trend_store(config).await {
        Ok(store) => store.ping().await.map_err(|e| e.to_string()),
        Err(error) => Err(format!("{error:#}")),
    };
    if let Err(error) = reachable {
        servers::unreachable("Redis", &redis_url(), "BOOKSTORE_TEST_REDIS_URL", error);
    }
}

// ------------------------------------------------------------------ a bus with fresh stores

/// Where the events, the catalog and the consumers' stores are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Infra {
    /// The embedded log; the catalog, trends and recommendations in SQLite files in the data dir.
    Embedded,
    /// Kafka, MariaDB (catalog and recommendations, each its own database) and Redis (trends).
    Real,
}

impl Infra {
    pub fn backend(self) -> Backend {
        match self {
            Infra::Embedded => Backend::Embedded,
            Infra::Real => Backend::Kafka,
        }
    }
}

/// A test bus on `infra` whose trend and recommendation consumers are in fresh groups,
/// `trend-{name}-…` and `rec-{name}-…`.
pub async fn bus_with_fresh_groups(infra: Infra, name: &str) -> TestBus {
    let mut bus = TestBus::new(infra.backend()).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    bus.config.trend.group_id = format!("trend-{name}-{run}");
    bus.config.recommend.group_id = format!("rec-{name}-{run}");
    bus
}

/// Raises the bounds of query records and popularity lists out of reach, for tests that compare
/// a store fed by a topic of several partitions with the rules applied in one partition
/// ([`bookstore_domain::recommend::Snapshot::difference`]); they go to the services as
/// environment variables too ([`consumer_env`]).
pub fn unbounded_query_records(config: &mut Config) {
    config.recommend.books_per_query = 100_000;
    config.recommend.related_per_query = 100_000;
    config.recommend.popular_books = 100_000;
}

/// A test bus on `infra`, every service on a free port, fresh consumer groups and stores: on
/// `Infra::Real` a fresh MariaDB database for the catalog and one for the recommendations (which
/// the recommendation service creates), and a fresh Redis prefix for the trends; all of them go
/// with the bus.
pub async fn test_bus(infra: Infra) -> TestBus {
    let mut bus = bus_with_fresh_groups(infra, "test").await;
    if infra == Infra::Real {
        let catalog = bus.fresh_mysql_database("catalog").await;
        let rec = bus.fresh_mysql_url("rec").await;
        let config = &mut bus.config;
        config.db.url = Some(Secret(catalog.into()));
        config.recommend.db_url = Some(Secret(rec.into()));
        use_redis_trends(config).await;
    }
    bus
}

// ------------------------------------------------------------------ services in this process

/// A service running in this process until shut down.
pub struct Running {
    pub addr: SocketAddr,
    /// `http://` and `addr`.
    pub url: String,
    /// `http://` and the operations port (`None` when its `ops_listen` is `same`).
    pub ops_url: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// `path` on the operations port (`/metrics`, `/interests`, `/stats`).
    pub fn ops(&self, path: &str) -> String {
        let ops = self
            .ops_url
            .as_ref()
            .expect("the service has an operations port");
        format!("{ops}{path}")
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("stops within 30 s")
            .expect("the service's task panicked")
            .expect("the service failed");
    }
}

/// Runs a built app (`WebApp` or `ConsumerApp`) until its `Running` is shut down.
macro_rules! run_until_shutdown {
    ($app:expr) => {{
        let app = $app;
        let addr = app.local_addr().expect("the service's address");
        let ops_url = app
            .ops_addr()
            .expect("the service's operations address")
            .map(|ops| format!("http://{ops}"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Running {
            addr,
            url: format!("http://{addr}"),
            ops_url,
            stop: Some(tx),
            task,
        }
    }};
}

/// The trend service of `config` in this process, and its consumer's counters.
pub async fn start_trend(config: &Config) -> (Running, Arc<ConsumerStats>) {
    let app = bookstore_app::trend::build(config)
        .await
        .unwrap_or_else(|e| panic!("the trend service does not start: {e:#}"));
    let stats = app.consumer_stats();
    (run_until_shutdown!(app), stats)
}

/// The recommendation service of `config` in this process, and its consumer's counters.
pub async fn start_recommend(config: &Config) -> (Running, Arc<ConsumerStats>) {
    let app = bookstore_app::recommend::build(config)
        .await
        .unwrap_or_else(|e| panic!("the recommendation service does not start: {e:#}"));
    let stats = app.consumer_stats();
    (run_until_shutdown!(app), stats)
}

/// The web service of `config` in this process, its page calling the services of `remotes`, and
/// its search-event publisher's counters.
pub async fn start_web(config: &Config, remotes: Remotes) -> (Running, Arc<PublisherStats>) {
    let app = WebApp::build_with(config, remotes)
        .await
        .unwrap_or_else(|e| panic!("the web service does not start: {e:#}"));
    let stats = app.publisher_stats();
    let running = run_until_shutdown!(app);
    wait_ready(running.ops_url.as_deref().unwrap_or(&running.url)).await;
    (running, stats)
}

// ------------------------------------------------------------------ `bookstore` child processes

/// The trend and recommendation stores and groups of `config` as environment variables, for a
/// `bookstore trend` or `bookstore recommend` child process (each on a free port).
pub fn consumer_env(config: &Config) -> Vec<(String, String)> {
    let store = match config.trend.store {
        TrendStoreKind::Embedded => "embedded",
        TrendStoreKind::Redis => "redis",
    };
    let mut env: Vec<(String, String)> = vec![
        ("BOOKSTORE_TREND__STORE".into(), store.into()),
        (
            "BOOKSTORE_TREND__GROUP_ID".into(),
            config.trend.group_id.clone(),
        ),
        ("BOOKSTORE_TREND__LISTEN".into(), "127.0.0.1:0".into()),
        ("BOOKSTORE_TREND__OPS_LISTEN".into(), "127.0.0.1:0".into()),
        (
            "BOOKSTORE_TREND__REDIS_URL".into(),
            config.trend.redis_url.expose().to_owned(),
        ),
        (
            "BOOKSTORE_TREND__REDIS_PREFIX".into(),
            config.trend.redis_prefix.clone(),
        ),
        (
            "BOOKSTORE_RECOMMEND__GROUP_ID".into(),
            config.recommend.group_id.clone(),
        ),
        ("BOOKSTORE_RECOMMEND__LISTEN".into(), "127.0.0.1:0".into()),
        (
            "BOOKSTORE_RECOMMEND__BOOKS_PER_QUERY".into(),
            config.recommend.books_per_query.to_string(),
        ),
        (
            "BOOKSTORE_RECOMMEND__RELATED_PER_QUERY".into(),
            config.recommend.related_per_query.to_string(),
        ),
        (
            "BOOKSTORE_RECOMMEND__POPULAR_BOOKS".into(),
            config.recommend.popular_books.to_string(),
        ),
        (
            "BOOKSTORE_RECOMMEND__OPS_LISTEN".into(),
            "127.0.0.1:0".into(),
        ),
    ];
    if let Some(url) = &config.recommend.db_url {
        env.push((
            "BOOKSTORE_RECOMMEND__DB_URL".into(),
            url.expose().to_owned(),
        ));
    }
    env
}

/// `bookstore web`, `trend` and `recommend` as child processes on the bus, catalog and stores of
/// `bus` (as [`test_bus`] makes them), each on a free loopback port; killed when dropped.
pub struct Processes {
    /// The web service's URL.
    pub web: String,
    /// The trend service's URL.
    pub trend: String,
    /// The recommendation service's URL.
    pub rec: String,
    /// Their operations ports' URLs (`/metrics`, and the recommendation service's `/interests`
    /// and `/stats`).
    pub web_ops: String,
    pub trend_ops: String,
    pub rec_ops: String,
    _children: Vec<KillOnDrop>,
}

impl Processes {
    /// Starts the three from the binary `bin` (`env!("CARGO_BIN_EXE_bookstore")`) and returns
    /// once each answers `/readyz` and the sample catalog has reached the recommendation service.
    pub async fn start(bin: &str, bus: &TestBus) -> Self {
        Self::start_with(bin, bus, &[], None).await
    }

    /// [`Processes::start`], with `extra` variables for each process (after the bus's), and
    /// each one's stderr in `<logs>/<service>.log` when `logs` is given.
    pub async fn start_with(
        bin: &str,
        bus: &TestBus,
        extra: &[(String, String)],
        logs: Option<&Path>,
    ) -> Self {
        let config = &bus.config;
        let (web_port, trend_port, rec_port) = (free_port(), free_port(), free_port());
        let web = format!("http://127.0.0.1:{web_port}");
        let trend = format!("http://127.0.0.1:{trend_port}");
        let rec = format!("http://127.0.0.1:{rec_port}");
        let ops_ports = [free_port(), free_port(), free_port()];
        let [web_ops, trend_ops, rec_ops] = ops_ports.map(|port| format!("127.0.0.1:{port}"));
        let mut env = bus.env();
        env.extend(consumer_env(config));
        if let Some(url) = &config.db.url {
            env.push(("BOOKSTORE_DB__URL".into(), url.expose().to_owned()));
        }
        env.extend([
            (
                "BOOKSTORE_WEB__LISTEN".to_owned(),
                format!("127.0.0.1:{web_port}"),
            ),
            ("BOOKSTORE_WEB__TREND_URL".into(), trend.clone()),
            ("BOOKSTORE_WEB__RECOMMEND_URL".into(), rec.clone()),
            (
                "BOOKSTORE_TREND__LISTEN".into(),
                format!("127.0.0.1:{trend_port}"),
            ),
            (
                "BOOKSTORE_RECOMMEND__LISTEN".into(),
                format!("127.0.0.1:{rec_port}"),
            ),
            ("BOOKSTORE_WEB__OPS_LISTEN".into(), web_ops.clone()),
            ("BOOKSTORE_TREND__OPS_LISTEN".into(), trend_ops.clone()),
            ("BOOKSTORE_RECOMMEND__OPS_LISTEN".into(), rec_ops.clone()),
        ]);
        let [web_ops, trend_ops, rec_ops] =
            [web_ops, trend_ops, rec_ops].map(|a| format!("http://{a}"));
        let children = ["trend", "recommend", "web"]
            .into_iter()
            .map(|service| {
                let log = logs.map(|dir| dir.join(format!("{service}.log")));
                bookstore_child_with(bin, service, &env, extra, log.as_deref())
            })
            .collect();
        let http = reqwest::Client::new();
        for url in [&web, &rec, &trend] {
            wait_until(Duration::from_secs(60), "a service to answer", || async {
                http.get(format!("{url}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            })
            .await;
        }
        wait_until(
            Duration::from_secs(60),
            "the sample catalog copied to the recommendation service",
            || async {
                get_json(&http, &format!("{rec_ops}/stats")).await["catalog_books"].as_u64()
                    > Some(200)
            },
        )
        .await;
        Self {
            web,
            trend,
            rec,
            web_ops,
            trend_ops,
            rec_ops,
            _children: children,
        }
    }
}
