//! Wiring: the catalog database chosen by configuration, and the web service on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bookstore_consumer::PublisherStats;
use bookstore_domain::BookRepository;
use bookstore_mysql::MySqlBookRepository;
use bookstore_sqlite::SqliteBookRepository;
use bookstore_web::{
    ClickThrough, LiveTrends, RemoteRecommendations, RemoteTrends, VisitorKeys, WebState,
};
use secrecy::ExposeSecret;

use crate::bus::{EventBus, Publisher, flush_publisher};
use crate::config::{Config, DbKind, EventsConfig};
use crate::lifecycle::{Listeners, drained};

/// The catalog database, by technology: a `dyn BookRepository` and its outbox.
#[derive(Debug, Clone)]
pub enum Catalog {
    Sqlite(SqliteBookRepository),
    MySql(MySqlBookRepository),
}

impl Catalog {
    pub fn repository(&self) -> Arc<dyn BookRepository> {
        match self {
            Self::Sqlite(repo) => Arc::new(repo.clone()),
            Self::MySql(repo) => Arc::new(repo.clone()),
        }
    }

    /// The outbox of catalog events in the same database.
    pub fn outbox(&self) -> Arc<dyn bookstore_domain::Outbox> {
        self.outbox_leased(bookstore_sqlite::OUTBOX_LEASE)
    }

    /// [`Catalog::outbox`]; on SQLite a relay holds the rows it took for `lease` (MariaDB's
    /// relays hold their rows with locks, released when a relay dies).
    pub fn outbox_leased(&self, lease: Duration) -> Arc<dyn bookstore_domain::Outbox> {
        match self {
            Self::Sqlite(repo) => Arc::new(bookstore_sqlite::SqliteOutbox::with_lease(
                repo.pool().clone(),
                lease,
            )),
            Self::MySql(repo) => Arc::new(bookstore_mysql::MySqlOutbox::new(repo.pool().clone())),
        }
    }

    pub fn kind(&self) -> DbKind {
        match self {
            Self::Sqlite(_) => DbKind::Sqlite,
            Self::MySql(_) => DbKind::MySql,
        }
    }
}

/// Connects to the catalog database named by the configuration and runs its migrations.
pub async fn open_catalog(config: &Config) -> anyhow::Result<Catalog> {
    let db = config.catalog_db()?;
    let url = db.url.expose_secret();
    let max = config.db.max_connections;
    match db.kind {
        DbKind::Sqlite => {
            config.ensure_data_dir()?;
            let pool = bookstore_sqlite::connect(url, max)
                .await
                .context("cannot open the catalog database (db.url)")?;
            let repo = SqliteBookRepository::new(pool)
                .await
                .context("cannot migrate the SQLite catalog database (db.url)")?;
            backfilled(repo.backfill_outbox().await)?;
            Ok(Catalog::Sqlite(repo))
        }
        DbKind::MySql => {
            let pool = bookstore_mysql::connect(url, max)
                .await
                .context("cannot reach the catalog database (db.url)")?;
            let repo = MySqlBookRepository::new(pool)
                .await
                .context("cannot migrate the MySQL catalog database (db.url)")?;
            backfilled(repo.backfill_outbox().await)?;
            Ok(Catalog::MySql(repo))
        }
    }
}

/// The services the page calls (`None`: that section is left out).
#[derive(Debug, Clone, Default)]
pub struct Remotes {
    pub trend_url: Option<String>,
    pub recommend_url: Option<String>,
}

/// Logs what the outbox backfill did.
fn backfilled(done: Result<u64, bookstore_domain::RepositoryError>) -> anyhow::Result<()> {
    let written = done.context("cannot write the events of books stored before the outbox")?;
    if written > 0 {
        tracing::info!(
            books = written,
            "wrote the book.created events of books stored before the outbox"
        );
    }
    Ok(())
}

/// The web service, bound and ready to serve.
pub struct WebApp {
    listeners: Listeners,
    routers: bookstore_http::Routers,
    limits: bookstore_http::Limits,
    publisher: Publisher,
    events: EventsConfig,
    outbox: Arc<dyn bookstore_domain::Outbox>,
    sink: crate::relay::PublisherSink,
    /// On the embedded log, its trimming: this process appends to it.
    retention: Option<Trimming>,
    /// The search index and its consumer of the catalog topic.
    indexer: crate::search::Indexer,
    /// The live Trends panel and the trend service it follows (`None`: no trend service).
    live: Option<(Arc<RemoteTrends>, Arc<LiveTrends>)>,
}

/// The embedded log's trimming task, to start with the service.
struct Trimming {
    log: Arc<bookstore_eventlog::EventLog>,
    retention: bookstore_eventlog::Retention,
    stats: Arc<bookstore_eventlog::RetentionStats>,
}

impl WebApp {
    /// Opens the catalog (loading the sample catalog into an empty one) and binds `web.listen`
    /// (port 0 picks a free port).
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        Self::build_with(
            config,
            Remotes {
                trend_url: config.trend_url(),
                recommend_url: config.recommend_url(),
            },
        )
        .await
    }

    /// [`WebApp::build`], with the page calling the services `remotes` names.
    pub async fn build_with(config: &Config, remotes: Remotes) -> anyhow::Result<Self> {
        let catalog = open_catalog(config).await?;
        let books = catalog.repository();
        bookstore_catalog::sample::load_if_empty(books.as_ref())
            .await
            .context("cannot load the sample catalog")?;
        let bus = EventBus::open(config).await?;
        let publisher = bus
            .publisher(&config.events, config.events.searches())
            .await?;
        let sink = crate::relay::PublisherSink::start(&bus, &config.events).await?;
        let indexer = crate::search::Indexer::open(config, &bus).await?;
        let visitors = VisitorKeys::new(
            config.cookie_secret()?,
            config.cookie_secure(),
            config.trusted_proxies()?,
        );
        let timeout = Duration::from_millis(config.web.remote_timeout_ms);
        let cache_ttl = Duration::from_millis(config.web.remote_cache_ms);
        let trends = match remotes.trend_url {
            Some(url) => Some(Arc::new(
                RemoteTrends::new(&url, timeout, cache_ttl)
                    .context("cannot create the trend service client")?,
            )),
            None => None,
        };
        // The live Trends panel follows the trend service, if there is one. A visitor stream
        // ends itself at the request timeout, before the server would cut it as a response
        // that takes too long; the browser reconnects at once.
        // At most half the port's connections may be live streams, so that they never leave the
        // page itself without a connection.
        let live = trends.as_ref().map(|remote| {
            let live = Arc::new(LiveTrends::new(
                config
                    .web
                    .live_streams
                    .min(config.http.limits().max_connections / 2)
                    .max(1),
                config.http.limits().request_timeout,
                Duration::from_millis(config.web.live_refresh_ms),
            ));
            (remote.clone(), live)
        });
        let state = WebState {
            books,
            search: Arc::new(indexer.index.clone()),
            events: publisher.port.clone(),
            page_size: config.web.page_size,
            admin_token: config.web.admin_token.as_ref().map(|t| t.0.clone()),
            trends,
            recommendations: match remotes.recommend_url {
                Some(url) => Some(Arc::new(
                    RemoteRecommendations::new(&url, timeout, cache_ttl)
                        .context("cannot create the recommendation service client")?,
                )),
                None => None,
            },
            visitors: Arc::new(visitors),
            trend_min_readers: config.trend.min_readers,
            click_through: Arc::new(ClickThrough::default()),
            live: live.as_ref().map(|(_, live)| live.clone()),
            search_details: config.events.format == bookstore_domain::events::WireFormat::Tutorial,
        };
        let listeners = Listeners::bind(
            "web",
            (config.web.listen, "web.listen"),
            (config.web.ops_listen, "web.ops_listen"),
        )
        .await?;
        let (broker, broker_probe) = crate::ops::broker_probe(&bus, &config.events.topic)?;
        let retention = match &bus {
            EventBus::Embedded { log, .. } => Some(Trimming {
                log: log.clone(),
                retention: config.events.retention(),
                stats: Arc::default(),
            }),
            EventBus::Kafka(_) => None,
        };
        let database = catalog.repository();
        let surface = bookstore_http::Surface {
            continue_traces: config.telemetry.web_continues_traces,
            service: "web",
            title: "bookstore web service",
            description: "The bookstore page and its REST API. Every search publishes a book.searched event; every created, replaced or deleted book a book.created, book.updated or book.deleted event (through the outbox).",
            readiness: bookstore_http::Readiness::new()
                .with(
                    "database",
                    catalog.kind().name(),
                    crate::ops::probe(move || {
                        let database = database.clone();
                        async move { database.ping().await.map_err(|e| e.to_string()) }
                    }),
                )
                .with("broker", broker, broker_probe)
                .with_details("search index", "tantivy", indexer.probe()),
            collectors: [
                crate::ops::publisher_collector("searches", publisher.stats.clone()),
                crate::ops::publisher_collector("catalog", sink.stats()),
                indexer.collector(),
            ]
            .into_iter()
            .chain(
                retention
                    .as_ref()
                    .map(|t| crate::ops::retention_collector(t.stats.clone())),
            )
            .collect(),
            request_timeout: config.http.limits().request_timeout,
            ops: config.web.ops_listen.routes(),
        };
        Ok(Self {
            listeners,
            routers: bookstore_web::router(state, surface),
            limits: config.http.limits(),
            publisher,
            events: config.events.clone(),
            // A relay that died holds its rows until its lease runs out, and until then no other
            // relay sends anything (so that the log keeps the outbox's order): as short as is
            // safe, a few times the longest delivery round.
            outbox: catalog
                .outbox_leased((config.events.flush_timeout() * 3).max(Duration::from_secs(10))),
            sink,
            retention,
            indexer,
            live,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners.local_addr()
    }

    /// The address of the operations port (`None`: `web.ops_listen: same`).
    pub fn ops_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.listeners.ops_addr()
    }

    /// The search-event publisher's counters (queued, delivered, failed, dropped).
    pub fn publisher_stats(&self) -> Arc<PublisherStats> {
        self.publisher.stats.clone()
    }

    /// The embedded log's trimming counters (`None` on Kafka).
    pub fn retention_stats(&self) -> Option<Arc<bookstore_eventlog::RetentionStats>> {
        self.retention.as_ref().map(|t| t.stats.clone())
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight and delivers the
    /// queued events (within `events.flush_timeout_ms`).
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.listeners.log("web service");
        // The search index follows the catalog topic while the service runs.
        let indexer = self.indexer.start();
        let _stop_indexer_when_dropped = indexer.guard();
        // The outbox relay runs beside the server and makes one last round after it.
        let relay_stop = tokio_util::sync::CancellationToken::new();
        let relay = tokio::spawn(crate::relay::run(
            self.outbox,
            self.sink,
            self.events.outbox_retention(),
            relay_stop.clone(),
        ));
        // The embedded log is trimmed by the process that appends to it; it stops with the relay
        // (a step in flight is rolled back).
        let trimming = self.retention.map(|t| {
            tokio::spawn(bookstore_eventlog::run_retention(
                t.log,
                t.retention,
                t.stats,
                relay_stop.clone(),
            ))
        });
        // One subscription to the trend service's stream for every visitor of the live panel.
        let following = self.live.as_ref().map(|(remote, live)| {
            tokio::spawn(bookstore_web::follow_trends(remote.clone(), live.clone()))
        });
        let live = self.live.map(|(_, live)| live);
        // The service also stops when the search index's consumer fails.
        let index_failed = indexer.failed();
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {}
                () = index_failed => {}
            }
            // Open live streams would hold the drain up: they end now (browsers reconnect to
            // another instance).
            if let Some(live) = live {
                live.stop();
            }
        };
        let served = drained(self.listeners, self.routers, self.limits, shutdown)
            .await
            .context("the web server failed");
        // The relay's last round and the search events' flush share one window
        // (`events.flush_timeout_ms`), so that a broker outage cannot hold the exit up; rows the
        // relay could not send stay in the outbox for the next start.
        relay_stop.cancel();
        let window = self.events.flush_timeout();
        let mut relay = relay;
        let (relayed, ()) = tokio::join!(
            tokio::time::timeout(window, &mut relay),
            flush_publisher(&self.publisher, &self.events)
        );
        if relayed.is_err() {
            relay.abort();
            tracing::warn!(
                "the outbox relay did not finish within events.flush_timeout_ms; its rows stay in \
                 the outbox for the next start"
            );
        }
        if let Some(trimming) = trimming {
            let _ = trimming.await;
        }
        if let Some(following) = following {
            let _ = following.await;
        }
        let indexed = indexer
            .stop()
            .await
            .context("the search index's consumer of the catalog topic failed");
        served?;
        indexed
    }
}
