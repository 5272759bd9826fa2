//! The trend service: a consumer group applying search events to a trend store, and the HTTP API
//! that serves the trends.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bookstore_domain::{EventHandler, TrendStore};
use bookstore_redis::RedisTrends;
use bookstore_sqlite::SqliteTrends;
use bookstore_trend::{Changes, Notifying, TrendApi};

use crate::config::{Config, TrendStoreKind};
use crate::consumer_service::{ConsumerApp, ConsumerSpec};

/// How long a Redis command may take before the store counts as unavailable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// A trend store that is also the handler filling it.
pub trait TrendBackend: TrendStore + EventHandler {}
impl<T: TrendStore + EventHandler> TrendBackend for T {}

/// Opens the trend store `trend.store` names.
pub async fn open_trend_store(config: &Config) -> anyhow::Result<Arc<dyn TrendBackend>> {
    let settings = config.trend.settings();
    match config.trend.store {
        TrendStoreKind::Embedded => {
            config.ensure_data_dir()?;
            let path = config.data_dir.join("trends.db");
            let pool = bookstore_sqlite::connect(&format!("sqlite://{}", path.display()), 4)
                .await
                .with_context(|| format!("cannot open the trend store {}", path.display()))?;
            let store = SqliteTrends::new(pool, settings)
                .await
                .context("cannot create the trend tables")?;
            Ok(Arc::new(store))
        }
        TrendStoreKind::Redis => {
            let redis = bookstore_redis::connect(config.trend.redis_url.expose(), REDIS_TIMEOUT)
                .await
                .context("cannot reach Redis (trend.redis_url)")?;
            Ok(Arc::new(RedisTrends::new(
                redis,
                &config.trend.redis_prefix,
                settings,
            )))
        }
    }
}

/// The trend service of `config`, bound and ready to run.
pub async fn build(config: &Config) -> anyhow::Result<ConsumerApp> {
    let store = open_trend_store(config).await?;
    let ping = store.clone();
    let trends: Arc<dyn TrendStore> = store.clone();
    // The consumer announces its batches to the streams of GET /trends/stream.
    let changes = Changes::new(
        config.trend.max_streams,
        config.http.limits().request_timeout,
    );
    let handler = Arc::new(Notifying::new(store, changes.clone()));
    ConsumerSpec {
        service: "trend",
        name: "trend",
        title: "bookstore trend service",
        description: "Trending searches and the most viewed books, from the book.searched and book.viewed events its consumer group applies; GET /trends/stream tells when they change.",
        store: match config.trend.store {
            TrendStoreKind::Embedded => "sqlite",
            TrendStoreKind::Redis => "redis",
        },
        store_probe: crate::ops::probe(move || {
            let ping = ping.clone();
            async move { ping.ping().await.map_err(|e| e.to_string()) }
        }),
        batch_size: None,
        handler,
        group: &config.trend.group_id,
        topics: vec![config.events.topic.clone()],
        listen: config.trend.listen,
        ops_listen: config.trend.ops_listen,
        listen_key: "trend.listen",
        ops_listen_key: "trend.ops_listen",
    }
    .build(config, |surface| {
        bookstore_trend::router(
            TrendApi {
                store: trends,
                changes,
            },
            surface,
        )
    })
    .await
}
