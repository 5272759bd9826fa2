//! The recommendation service end to end: on the embedded defaults (embedded log, SQLite stores)
//! and on the real infrastructure from `dev/services` (Kafka, MariaDB for the catalog and the
//! recommendation store, Redis for trends).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../events/helpers.rs"]
#[allow(dead_code)]
mod helpers;

mod outbox;
mod processes;
mod service;

use std::net::SocketAddr;
use std::time::Duration;

use bookstore::config::{Config, Secret, TrendStoreKind};
use bookstore::{RecommendApp, Remotes, TrendApp, WebApp};
use sqlx::Connection;
use tokio::sync::oneshot;

use helpers::{Backend, TestBus};

/// Where the catalog and the recommendations are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Infra {
    /// The embedded log and SQLite files in the data dir.
    Embedded,
    /// Kafka, MariaDB (catalog and recommendations, each its own database) and Redis (trends).
    Real,
}

/// Runs a test body on both: `infra!(name)` makes `name::{embedded, kafka_mariadb_redis}`.
#[macro_export]
macro_rules! infra {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                super::$name($crate::Infra::Embedded).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn kafka_mariadb_redis() {
                super::$name($crate::Infra::Real).await;
            }
        }
    };
}

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

pub fn redis_url() -> String {
    std::env::var("BOOKSTORE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A test bus on `infra`, every service on a free port, fresh consumer groups and stores.
pub async fn test_bus(infra: Infra) -> TestBus {
    let backend = match infra {
        Infra::Embedded => Backend::Embedded,
        Infra::Real => Backend::Kafka,
    };
    let mut bus = TestBus::new(backend).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let config = &mut bus.config;
    config.recommend.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.recommend.group_id = format!("rec-test-{run}");
    config.trend.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.trend.group_id = format!("trend-test-{run}");
    if infra == Infra::Real {
        let catalog = fresh_mysql_url("catalog").await;
        bookstore_mysql::create_database_if_missing(&catalog)
            .await
            .unwrap();
        config.db.url = Some(Secret(catalog.into()));
        config.recommend.db_url = Some(Secret(fresh_mysql_url("rec").await.into()));
        config.trend.store = TrendStoreKind::Redis;
        config.trend.redis_url = Secret(redis_url().into());
        config.trend.redis_prefix = format!("test:{run}:");
    }
    bus
}

/// The stores' and groups' configuration as environment variables, for a child process.
pub fn service_env(config: &Config) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "BOOKSTORE_RECOMMEND__GROUP_ID".to_owned(),
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

/// A service running in this process until shut down.
pub struct Running {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
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

pub async fn start_recommend(config: &Config) -> Running {
    let app = RecommendApp::build(config).await.unwrap();
    let url = format!("http://{}", app.local_addr().unwrap());
    run_until_shutdown(url, |rx| {
        app.run_until_stopped(async move {
            let _ = rx.await;
        })
    })
}

pub async fn start_trend(config: &Config) -> Running {
    let app = TrendApp::build(config).await.unwrap();
    let url = format!("http://{}", app.local_addr().unwrap());
    run_until_shutdown(url, |rx| {
        app.run_until_stopped(async move {
            let _ = rx.await;
        })
    })
}

pub async fn start_web(config: &Config, remotes: Remotes) -> Running {
    let app = WebApp::build_with(config, remotes).await.unwrap();
    let url = format!("http://{}", app.local_addr().unwrap());
    run_until_shutdown(url, |rx| {
        app.run_until_stopped(async move {
            let _ = rx.await;
        })
    })
}

/// `GET url` as JSON, expecting 200.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.json().await.unwrap()
}
