//! The benchmarks and the load generator. Each measures a path of the system, against a
//! baseline taken in the same run on the same machine where there is one to compare with, and
//! prints a table; the `bookstore` binary only dispatches here (`bookstore bench ...`,
//! `bookstore loadgen`).
//!
//! - [`search`]: the search index against the catalog database's own full-text search.
//! - [`freshness`]: how long after a write's answer search shows it.
//! - [`events`]: the event pipeline's throughput and latency per backend against plain rdkafka,
//!   and the trend stores; [`recommend`] is its recommendation part.
//! - [`loadgen`]: a running system driven over HTTP, against its `/healthz` in the same run.

pub mod events;
pub mod freshness;
pub mod loadgen;
mod measure;
pub mod recommend;
pub mod search;

use std::path::PathBuf;

use anyhow::Context;
use bookstore_app::config::{Config, EventsBackend, TrendStoreKind};
use clap::{Subcommand, ValueEnum};

use crate::recommend::RecommendStoreKind;

/// `bookstore bench`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Search latency per kind of query on a generated catalog: the search index against the
    /// catalog database's own full-text search (FTS5 or FULLTEXT).
    Search(SearchArgs),
    /// How long after a write's answer search shows it (create, update, delete), against a
    /// running web service.
    Freshness(FreshnessArgs),
    /// Event pipeline throughput and end-to-end latency, per backend, against plain rdkafka.
    Events(EventsArgs),
}

/// `bookstore bench search` options.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// Books in the generated catalog.
    #[arg(long, default_value_t = 100_000)]
    books: u64,
    /// Searches of the index, taking turns through the kinds of query.
    #[arg(long, default_value_t = 7_000)]
    queries: usize,
    /// Searches of the database, per kind of query.
    #[arg(long, default_value_t = 50)]
    baseline_queries: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Database to fill and search (sqlite://FILE or mysql://...); by default a new SQLite
    /// file in a temporary directory.
    #[arg(long, value_name = "URL")]
    db_url: Option<String>,
}

/// `bookstore bench freshness` options.
#[derive(Debug, clap::Args)]
pub struct FreshnessArgs {
    /// The web service.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Its `web.admin_token` [default: BOOKSTORE_WEB__ADMIN_TOKEN].
    #[arg(long, env = "BOOKSTORE_WEB__ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    /// Books created, replaced and deleted, one after the other.
    #[arg(long, default_value_t = 100)]
    rounds: usize,
    /// How often search is asked while a write is awaited, in milliseconds.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
}

/// `bookstore bench events` options.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Events for the throughput runs.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Events per second during the latency run.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Seconds the latency run lasts.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Backends to measure, comma-separated: embedded, kafka.
    #[arg(long, value_delimiter = ',', default_value = "embedded,kafka")]
    backends: Vec<BenchBackend>,
    /// Kafka bootstrap servers [default: events.brokers].
    #[arg(long)]
    brokers: Option<String>,
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// Consumer batch size.
    #[arg(long, default_value_t = 1_000)]
    batch_size: usize,
    /// Trend stores to measure the trend handler on, comma-separated: embedded, redis; none
    /// to skip.
    #[arg(long, value_delimiter = ',', default_value = "embedded,redis")]
    trend_stores: Vec<BenchTrendStore>,
    /// Redis for the trend store [default: trend.redis_url].
    #[arg(long)]
    redis_url: Option<String>,
    /// Recommendation stores to measure the recommendation handler and API on,
    /// comma-separated: embedded, mysql; none to skip.
    #[arg(long, value_delimiter = ',', default_value = "embedded,mysql")]
    recommend_stores: Vec<BenchRecommendStore>,
    /// MySQL server for the recommendation store, without a database: the benchmark creates
    /// a database bookstore_bench_<uuid> and drops it at the end. The default is the server
    /// `dev/services` starts.
    #[arg(long, default_value = "mysql://bookstore:bookstore@127.0.0.1:3306")]
    mysql_url: String,
    /// Users of the recommendation history.
    #[arg(long, default_value_t = 10_000)]
    rec_users: u64,
    /// Books of the recommendation history (in topics of 50).
    #[arg(long, default_value_t = 100_000)]
    rec_books: u64,
    /// Search events of the recommendation history (10 results each).
    #[arg(long, default_value_t = 50_000)]
    rec_searches: u64,
    /// Members of one consumer group applying the searches together into one fresh MySQL
    /// database, measured after the single member (1: not measured).
    #[arg(long, default_value_t = 2)]
    rec_members: usize,
    /// Requests to GET /recommendations, and as many to GET /interests, per store.
    #[arg(long, default_value_t = 2_000)]
    rec_requests: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BenchBackend {
    Embedded,
    Kafka,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchTrendStore {
    Embedded,
    Redis,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchRecommendStore {
    Embedded,
    Mysql,
    None,
}

/// Runs one benchmark with the configuration's defaults (`config`), and prints its table.
pub async fn run(command: BenchCommand, mut config: Config) -> anyhow::Result<()> {
    match command {
        BenchCommand::Search(SearchArgs {
            books,
            queries,
            baseline_queries,
            seed,
            db_url,
        }) => {
            let temp = tempfile_dir()?;
            config.db.url = Some(
                db_url
                    .unwrap_or_else(|| format!("sqlite://{}", temp.join("bench.db").display()))
                    .into(),
            );
            config.data_dir = temp.clone();
            let catalog = bookstore_app::open_catalog(&config).await?;
            if let Some(rate) = search::load(&catalog, books, seed).await? {
                eprintln!("loaded {books} books at {rate:.0} books/s");
            }
            let spec = search::SearchBench {
                books,
                queries,
                baseline_queries,
                seed,
                page_size: config.web.page_size,
                index_dir: temp.join("search-index"),
                batch: config
                    .events
                    .batch_size
                    .max(bookstore_app::search::INDEX_BATCH),
            };
            let report = search::run(&catalog, &spec).await?;
            print!("{}", search::table(&report));
            let _ = std::fs::remove_dir_all(&temp);
            Ok(())
        }
        BenchCommand::Freshness(FreshnessArgs {
            url,
            token,
            rounds,
            poll_ms,
        }) => {
            let spec = freshness::FreshnessBench {
                url,
                token,
                rounds,
                poll: std::time::Duration::from_millis(poll_ms.max(1)),
                give_up: std::time::Duration::from_secs(30),
            };
            let delays = freshness::run(&spec).await?;
            print!("{}", freshness::table(&delays));
            Ok(())
        }
        BenchCommand::Events(EventsArgs {
            events,
            rate,
            latency_secs,
            backends,
            brokers,
            partitions,
            batch_size,
            trend_stores,
            redis_url,
            recommend_stores,
            mysql_url,
            rec_users,
            rec_books,
            rec_searches,
            rec_requests,
            rec_members,
        }) => {
            let temp = tempfile_dir()?;
            let spec = events::EventsBench {
                events,
                rate,
                latency_secs,
                backends: backends
                    .into_iter()
                    .map(|b| match b {
                        BenchBackend::Embedded => EventsBackend::Embedded,
                        BenchBackend::Kafka => EventsBackend::Kafka,
                    })
                    .collect(),
                brokers: brokers.unwrap_or_else(|| config.events.brokers.clone()),
                partitions,
                batch_size,
                trend_stores: trend_stores
                    .into_iter()
                    .filter_map(|s| match s {
                        BenchTrendStore::Embedded => Some(TrendStoreKind::Embedded),
                        BenchTrendStore::Redis => Some(TrendStoreKind::Redis),
                        BenchTrendStore::None => None,
                    })
                    .collect(),
                redis_url: redis_url.unwrap_or_else(|| config.trend.redis_url.expose().to_owned()),
                recommend: recommend::RecommendBench {
                    stores: recommend_stores
                        .into_iter()
                        .filter_map(|s| match s {
                            BenchRecommendStore::Embedded => Some(RecommendStoreKind::Embedded),
                            BenchRecommendStore::Mysql => Some(RecommendStoreKind::MySql),
                            BenchRecommendStore::None => None,
                        })
                        .collect(),
                    mysql_url,
                    users: rec_users,
                    books: rec_books,
                    searches: rec_searches,
                    requests: rec_requests,
                    members: rec_members,
                },
            };
            let report = events::run(&spec, &temp).await;
            let _ = std::fs::remove_dir_all(&temp);
            print!("{}", events::table(&report?));
            Ok(())
        }
    }
}

/// A fresh directory for the benchmark's database under the system's temporary directory.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bookstore-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
