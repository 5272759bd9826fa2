//! Shared by the fault tests (`store_restarts`, `consumer_crashes`): the real servers from
//! `dev/services`, fresh databases on them, services run in this process, and `bookstore`
//! child processes. Include it with `#[path = "faults/common.rs"] mod common;` next to
//! `#[path = "events/helpers.rs"] mod helpers;`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bookstore::config::{Config, TrendStoreKind};
use bookstore::{RecommendApp, Remotes, TrendApp, WebApp};
use bookstore_events::{ConsumerStats, PublisherStats};
use sqlx::Connection;
use tokio::sync::oneshot;

use crate::helpers::KillOnDrop;

/// The MariaDB server the tests use: `BOOKSTORE_TEST_MYSQL_URL`, or `dev/services`' default.
pub fn mysql_server_url() -> String {
    std::env::var("BOOKSTORE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://bookstore:bookstore@127.0.0.1:3306".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A fresh, uniquely named database URL on the test MariaDB (created by whoever opens it first).
/// Panics, naming the fix, when MariaDB is unreachable.
pub async fn fresh_mysql_url(purpose: &str) -> String {
    let server = mysql_server_url();
    if let Err(err) = sqlx::MySqlConnection::connect(&server).await {
        panic!(
            "MariaDB is not reachable at {server}: start it with `dev/services start` \
             (or set BOOKSTORE_TEST_MYSQL_URL): {err}"
        );
    }
    format!(
        "{server}/bookstore_test_{purpose}_{}",
        uuid::Uuid::new_v4().simple()
    )
}

/// The Redis server the tests use: `BOOKSTORE_TEST_REDIS_URL`, or `dev/services`' default.
pub fn redis_url() -> String {
    std::env::var("BOOKSTORE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Puts the trend store of `config` on the test Redis, under a fresh key prefix. Panics, naming
/// the fix, when Redis does not answer.
pub async fn use_redis_trends(config: &mut Config) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    config.trend.store = TrendStoreKind::Redis;
    config.trend.redis_url = bookstore::config::Secret(redis_url().into());
    config.trend.redis_prefix = format!("test:{run}:");
    let reachable = match bookstore::trend::open_trend_store(config).await {
        Ok(store) => store.ping().await.map_err(|e| e.to_string()),
        Err(error) => Err(format!("{error:#}")),
    };
    if let Err(error) = reachable {
        panic!(
            "Redis is not reachable at {}: start it with `dev/services start` (or set \
             BOOKSTORE_TEST_REDIS_URL): {error}",
            redis_url()
        );
    }
}

/// A service running in this process until shut down.
pub struct Running {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("stops within 30 s")
            .unwrap()
            .unwrap();
    }
}

fn run_until_shutdown<F>(url: String, run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Running
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (tx, rx) = oneshot::channel::<()>();
    Running {
        url,
        stop: Some(tx),
        task: tokio::spawn(run(rx)),
    }
}

/// The trend service of `config` in this process, and its consumer's counters.
pub async fn start_trend(config: &Config) -> (Running, Arc<ConsumerStats>) {
    let app = TrendApp::build(config).await.unwrap();
    let stats = app.consumer_stats();
    let url = format!("http://{}", app.local_addr().unwrap());
    let running = run_until_shutdown(url, |rx| {
        app.run_until_stopped(async move {
            let _ = rx.await;
        })
    });
    (running, stats)
}

/// The recommendation service of `config` in this process, and its consumer's counters.
pub async fn start_recommend(config: &Config) -> (Running, Arc<ConsumerStats>) {
    let app = RecommendApp::build(config).await.unwrap();
    let stats = app.consumer_stats();
    let url = format!("http://{}", app.local_addr().unwrap());
    let running = run_until_shutdown(url, |rx| {
        app.run_until_stopped(async move {
            let _ = rx.await;
        })
    });
    (running, stats)
}

/// The web service of `config` in this process (its page calls no other service), and its
/// search-event publisher's counters.
pub async fn start_web(config: &Config) -> (Running, Arc<PublisherStats>) {
    let app = WebApp::build_with(config, Remotes::default())
        .await
        .unwrap();
    let stats = app.publisher_stats();
    let url = format!("http://{}", app.local_addr().unwrap());
    let running = run_until_shutdown(url, |rx| {
        app.run_until_stopped(async move {
            let _ = rx.await;
        })
    });
    (running, stats)
}

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
            "BOOKSTORE_RECOMMEND__NEIGHBOURS_PER_BOOK".into(),
            config.recommend.neighbours_per_book.to_string(),
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

/// `bookstore <service>` as a child process with `env`, its stdout discarded and warnings on
/// stderr; killed if the test ends while it runs.
pub fn bookstore_child(service: &str, env: &[(String, String)]) -> KillOnDrop {
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_bookstore"))
            .arg(service)
            .envs(env.iter().cloned())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start bookstore {service}: {e}")),
    )
}
