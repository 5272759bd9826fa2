//! Wiring: the catalog database chosen by configuration, and the web service on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bookstore_domain::BookRepository;
use bookstore_events::PublisherStats;
use bookstore_mysql::MySqlBookRepository;
use bookstore_sqlite::SqliteBookRepository;
use bookstore_web::{
    ClickThrough, LiveTrends, RemoteRecommendations, RemoteTrends, VisitorKeys, WebState,
};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::config::{Config, DbKind, EventsConfig, OpsListen};
use crate::events::{EventBus, Publisher, flush_publisher};

/// The catalog database, by technology. Most code uses it as a `dyn BookRepository`; the
/// benchmark also uses each adapter's baseline scan.
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

    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::MySql(_) => "mysql",
        }
    }
}

/// Connects to the catalog database named by the configuration and runs its migrations.
pub async fn open_catalog(config: &Config) -> anyhow::Result<Catalog> {
    let url = config.db_url();
    let url = url.expose_secret();
    let max = config.db.max_connections;
    match config.db_kind()? {
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
        let publisher = bus.publisher(&config.events).await?;
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
            events: publisher.publisher.clone(),
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
                    catalog.backend_name(),
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
        self.listeners.public.local_addr()
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

/// How long a stopping server waits for the requests in flight before it closes them, so that
/// a hung request cannot use up `shutdown_timeout_ms`.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(4);

/// A service's listeners: its public address and, unless its `ops_listen` is `same`, the
/// operations port.
pub(crate) struct Listeners {
    service: &'static str,
    public: TcpListener,
    ops: Option<TcpListener>,
}

impl Listeners {
    /// Binds `listen` and `ops_listen` (each with its configuration key, for the error).
    pub(crate) async fn bind(
        service: &'static str,
        (listen, listen_key): (SocketAddr, &str),
        (ops_listen, ops_key): (OpsListen, &str),
    ) -> anyhow::Result<Self> {
        let public = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} ({listen_key})"))?;
        let ops = match ops_listen {
            OpsListen::Same => None,
            OpsListen::Addr(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} ({ops_key})"))?,
            ),
        };
        Ok(Self {
            service,
            public,
            ops,
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }

    pub(crate) fn ops_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.ops.as_ref().map(TcpListener::local_addr).transpose()
    }

    /// Logs where `what` listens.
    pub(crate) fn log(&self, what: &str) {
        if let Ok(addr) = self.public.local_addr() {
            tracing::info!(%addr, "{what} listening on http://{addr}");
        }
        if let Ok(Some(addr)) = self.ops_addr() {
            tracing::info!(%addr, "{what} operations port on http://{addr}");
        }
    }

    /// The operations listener's name in logs and metrics.
    fn ops_name(&self) -> &'static str {
        match self.service {
            "web" => "web-ops",
            "trend" => "trend-ops",
            "recommend" => "recommend-ops",
            _ => "ops",
        }
    }
}

/// Serves `routers` on `listeners` within `limits` until `shutdown` completes, then lets the
/// requests in flight finish for at most [`DRAIN_TIMEOUT`].
pub(crate) async fn drained(
    listeners: Listeners,
    routers: bookstore_http::Routers,
    limits: bookstore_http::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = tokio_util::sync::CancellationToken::new();
    let ops_name = listeners.ops_name();
    let public = bookstore_http::serve(
        listeners.public,
        routers.public,
        limits,
        listeners.service,
        stop.clone().cancelled_owned(),
        DRAIN_TIMEOUT,
    );
    let ops = async {
        match (listeners.ops, routers.ops) {
            (Some(listener), Some(router)) => {
                bookstore_http::serve(
                    listener,
                    router,
                    limits,
                    ops_name,
                    stop.clone().cancelled_owned(),
                    DRAIN_TIMEOUT,
                )
                .await
            }
            _ => Ok(()),
        }
    };
    let signal = async {
        shutdown.await;
        stop.cancel();
    };
    let ((), public, ops) = tokio::join!(signal, public, ops);
    public.and(ops)
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// Runs a service until SIGINT or SIGTERM, then gives it `timeout` to stop: `service` gets the
/// future that completes on the signal. Past the timeout, an error (the process exits non-zero).
pub async fn run_until_signalled<F, Fut>(service: F, timeout: Duration) -> anyhow::Result<()>
where
    F: FnOnce(tokio_util::sync::WaitForCancellationFutureOwned) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let signalled = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let signalled = signalled.clone();
        async move {
            shutdown_signal().await;
            signalled.cancel();
        }
    });
    let run = service(signalled.clone().cancelled_owned());
    tokio::pin!(run);
    tokio::select! {
        done = &mut run => done,
        () = signalled.cancelled() => {
            let started = std::time::Instant::now();
            match tokio::time::timeout(timeout, &mut run).await {
                Ok(done) => {
                    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "stopped");
                    done
                }
                Err(_) => anyhow::bail!(
                    "did not stop within {} ms of the signal (shutdown_timeout_ms); exiting anyway",
                    timeout.as_millis()
                ),
            }
        }
    }
}

/// Every service in one process (`bookstore serve`): the trend and recommendation services
/// first, then the web service calling them; all stop on `shutdown`, or when one of them fails.
pub async fn serve_all(
    config: &Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let trend = crate::trend::build(config).await?;
    let recommend = crate::recommend::build(config).await?;
    let remotes = Remotes {
        trend_url: match &config.web.trend_url {
            None => Some(format!("http://{}", trend.local_addr()?)),
            Some(_) => config.trend_url(),
        },
        recommend_url: match &config.web.recommend_url {
            None => Some(format!("http://{}", recommend.local_addr()?)),
            Some(_) => config.recommend_url(),
        },
    };
    let web = WebApp::build_with(config, remotes).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let mut services = tokio::task::JoinSet::new();
    services.spawn(web.run_until_stopped(stop.clone().cancelled_owned()));
    services.spawn(trend.run_until_stopped(stop.clone().cancelled_owned()));
    services.spawn(recommend.run_until_stopped(stop.clone().cancelled_owned()));
    // When one service ends (a fatal error), the others stop too, and the first error is
    // returned.
    let mut result = Ok(());
    while let Some(done) = services.join_next().await {
        stop.cancel();
        let done = done.context("a service task failed").and_then(|r| r);
        if result.is_ok() {
            result = done;
        }
    }
    result
}
