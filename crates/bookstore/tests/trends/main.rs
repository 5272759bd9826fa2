//! The trend service end to end: on the embedded log and on the real Kafka from `dev/services`,
//! with its store on SQLite (embedded) and on the real Redis from `dev/services`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod service;
mod tutorial;
mod views;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bookstore_app::config::{Config, TrendStoreKind};
use bookstore_app::trend::open_trend_store;
use bookstore_domain::trends::TrendRanking;

pub use bookstore_testkit::Backend;
use bookstore_testkit::servers::redis_url;

/// Runs a test body on each pair of event log and trend store: `stores!(name)` makes
/// `name::{embedded_log_sqlite, embedded_log_redis, kafka_sqlite, kafka_redis}`.
#[macro_export]
macro_rules! stores {
    ($name:ident) => {
        mod $name {
            use bookstore_app::config::TrendStoreKind;
            use bookstore_testkit::Backend;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded_log_sqlite() {
                super::$name(Backend::Embedded, TrendStoreKind::Embedded).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded_log_redis() {
                super::$name(Backend::Embedded, TrendStoreKind::Redis).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn kafka_sqlite() {
                super::$name(Backend::Kafka, TrendStoreKind::Embedded).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn kafka_redis() {
                super::$name(Backend::Kafka, TrendStoreKind::Redis).await;
            }
        }
    };
}

/// Points `config` at a fresh trend store of `kind` and a fresh consumer group; the trend
/// service on a free port.
pub fn use_store(config: &mut Config, kind: TrendStoreKind) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    config.trend.store = kind;
    config.trend.group_id = format!("trend-test-{run}");
    config.trend.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.trend.ops_listen =
        bookstore_app::config::OpsListen::Addr(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.trend.redis_url = bookstore_app::config::Secret(redis_url().into());
    config.trend.redis_prefix = format!("test:{run}:");
}

/// All-time counts per normalized query, read from the store itself. Panics, naming the fix,
/// when Redis is unreachable.
pub async fn counts(config: &Config) -> BTreeMap<String, u64> {
    let store = match open_trend_store(config).await {
        Ok(store) => store,
        Err(error) => panic!(
            "cannot open the trend store ({error:#}); start Redis with `dev/services start` \
             (or point BOOKSTORE_TEST_REDIS_URL at one)"
        ),
    };
    store
        .top(
            100,
            TrendRanking::Count,
            bookstore_domain::trends::Audience::Everyone,
            chrono::Utc::now(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.query_normalized, t.count))
        .collect()
}
