//! The trend service: a consumer group applying search events to a trend store, and the HTTP API
//! that serves the trends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bookstore_domain::{EventHandler, TrendStore};
use bookstore_events::ConsumerStats;
use bookstore_redis::RedisTrends;
use bookstore_sqlite::SqliteTrends;
use bookstore_trend::TrendState;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TrendStoreKind};
use crate::events::{Consumer, EventBus};

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

/// The trend service, bound and ready to run.
pub struct TrendApp {
    listener: TcpListener,
    router: axum::Router,
    consumer: Consumer,
    stop: CancellationToken,
}

impl TrendApp {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let store = open_trend_store(config).await?;
        let bus = EventBus::open(config).await?;
        let stop = CancellationToken::new();
        let handler: Arc<dyn EventHandler> = store.clone();
        let consumer = bus
            .consumer(
                &config.events,
                &config.trend.group_id,
                vec![config.events.topic.clone()],
                handler,
                stop.clone(),
            )
            .await?;
        let listener = TcpListener::bind(config.trend.listen)
            .await
            .with_context(|| format!("cannot listen on {} (trend.listen)", config.trend.listen))?;
        let trends: Arc<dyn TrendStore> = store;
        let ping = trends.clone();
        let surface = crate::ops::ConsumerSurface {
            service: "trend",
            title: "bookstore trend service",
            description: "Trending searches, from the book.searched events its consumer group applies.",
            store: match config.trend.store {
                TrendStoreKind::Embedded => "sqlite",
                TrendStoreKind::Redis => "redis",
            },
            store_probe: crate::ops::probe(move || {
                let ping = ping.clone();
                async move { ping.ping().await.map_err(|e| e.to_string()) }
            }),
            bus: &bus,
            topic: &config.events.topic,
            group: &config.trend.group_id,
            stats: consumer.stats(),
        }
        .build()?;
        Ok(Self {
            listener,
            router: bookstore_trend::router(TrendState { store: trends }, surface),
            consumer,
            stop,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn consumer_stats(&self) -> Arc<ConsumerStats> {
        self.consumer.stats()
    }

    /// Consumes and serves until `shutdown` completes; then finishes the batch in flight and
    /// leaves the group.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        serve_and_consume(
            "trend",
            self.listener,
            self.router,
            self.consumer,
            self.stop,
            shutdown,
        )
        .await
    }
}

/// Runs a consumer service: its HTTP API and its consumer group, until `shutdown` completes or
/// either of them fails; then the server finishes its requests and the consumer its batch.
pub(crate) async fn serve_and_consume(
    service: &'static str,
    listener: TcpListener,
    router: axum::Router,
    consumer: Consumer,
    stop: CancellationToken,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "{service} service listening on http://{addr}");
    }
    let mut consumer = tokio::spawn(consumer.run());
    let served = crate::app::drained(listener, router, {
        let stop = stop.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                () = stop.cancelled() => {}
            }
        }
    });
    let served = tokio::select! {
        served = served => served.with_context(|| format!("the {service} HTTP server failed")),
        consumed = &mut consumer => {
            // The consumer only ends by itself on a fatal error.
            stop.cancel();
            return consumed.with_context(|| format!("the {service} consumer task failed"))?;
        }
    };
    stop.cancel();
    consumer
        .await
        .with_context(|| format!("the {service} consumer task failed"))??;
    served
}
