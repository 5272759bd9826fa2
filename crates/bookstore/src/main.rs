//! `bookstore`: the bookstore's one binary. Run with no subcommand to start everything on the
//! embedded defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use std::sync::Arc;

use bookstore::bench_recommend::RecommendStoreKind;
use bookstore::config::{Config, EventsBackend, TrendStoreKind};
use bookstore::events::EventBus;
use bookstore::telemetry::{self, LogFormat};
use bookstore::{
    WebApp, bench, bench_events, bench_recommend, open_catalog, recommend, run_until_signalled,
    serve_all, shutdown_signal, tools, trend,
};
use bookstore_catalog::Format;
use bookstore_sqlite::SqliteQueryCounts;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "bookstore", version, about = "An event-driven bookstore.")]
struct Cli {
    /// YAML configuration file; every key has a default, and BOOKSTORE_<SECTION>__<KEY>
    /// environment variables override it.
    #[arg(long, global = true, env = "BOOKSTORE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the embedded backends keep their data (data_dir).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format on standard error.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "BOOKSTORE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in this process (the default).
    Serve,
    /// Run the web service alone: the page and the REST API.
    Web,
    /// Run the trend service alone: its consumer group and `GET /trends`.
    Trend,
    /// Run the recommendation service alone: its consumer group and `GET /recommendations`.
    Recommend,
    /// Load books from a CSV (with a header row) or JSON Lines file into the catalog.
    Import {
        file: PathBuf,
        /// The file's format; by default taken from its extension.
        #[arg(long, value_enum)]
        format: Option<FileFormat>,
        /// Books per transaction.
        #[arg(long, default_value_t = 50_000)]
        batch_size: usize,
        /// Writes what became of every line (created, updated, unchanged, rejected) to this
        /// CSV file: `line,outcome,book_id,reason`.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Write a synthetic catalog (deterministic for a seed) for benchmarks.
    Generate {
        /// How many books.
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file, or - for standard output.
        #[arg(long, short, default_value = "-")]
        output: PathBuf,
        #[arg(long, value_enum)]
        format: Option<FileFormat>,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Event pipeline tools.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Drive a running system over HTTP: search latency and throughput against a /healthz
    /// baseline, the delay from a search to /trends and to changed /recommendations, and each
    /// consumer group's lag (from the operations ports' /metrics).
    Loadgen(bookstore::loadgen::LoadgenArgs),
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Consume search events into a count per normalized query, exactly once, until stopped: the
    /// smallest consumer there is, to check a deployment's events end to end.
    Count {
        /// Consumer group.
        #[arg(long, default_value = "query-counts")]
        group: String,
        /// SQLite file holding the counts and the group's positions [default: DATA_DIR/query-counts.db].
        #[arg(long, value_name = "FILE")]
        db: Option<PathBuf>,
        /// Print the counts (count, tab, query) and exit instead of consuming.
        #[arg(long)]
        print: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Search latency per kind of query on a generated catalog: the search index against the
    /// catalog database's own full-text search (FTS5 or FULLTEXT).
    Search {
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
    },
    /// How long after a write's answer search shows it (create, update, delete), against a
    /// running web service.
    Freshness {
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
    },
    /// Event pipeline throughput and end-to-end latency, per backend, against plain rdkafka.
    Events {
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
        /// a database bookstore_bench_<uuid> and drops it at the end.
        #[arg(
            long,
            env = "BOOKSTORE_TEST_MYSQL_URL",
            hide_env_values = true,
            default_value = "mysql://bookstore:bookstore@127.0.0.1:3306"
        )]
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
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BenchBackend {
    Embedded,
    Kafka,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchTrendStore {
    Embedded,
    Redis,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchRecommendStore {
    Embedded,
    Mysql,
    None,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FileFormat {
    Csv,
    Jsonl,
}

impl From<FileFormat> for Format {
    fn from(f: FileFormat) -> Self {
        match f {
            FileFormat::Csv => Format::Csv,
            FileFormat::Jsonl => Format::Jsonl,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The configuration comes first: it says where traces go. Its errors are reported below,
    // with logging on and tracing off.
    let config = Config::load(cli.config.as_deref());
    let settings = match &config {
        Ok(config) => config
            .telemetry
            .settings(&service_name(cli.command.as_ref())),
        Err(_) => Default::default(),
    };
    let (tracing, tracing_error) = telemetry::init(cli.log_format, &settings);
    if let Some(error) = tracing_error {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match config {
        Ok(config) => runtime.block_on(run(cli, config)),
        Err(err) => Err(err),
    };
    // A consumer thread stuck in a blocking call must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // The spans still queued are exported, for at most 2 s more (outside the runtime: the
    // exporter's client blocks).
    if let Some(tracing) = tracing {
        tracing.shutdown(std::time::Duration::from_secs(2));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `service.name` of a command's spans.
fn service_name(command: Option<&Command>) -> String {
    let name = match command {
        None | Some(Command::Serve) => "bookstore",
        Some(Command::Web) => "bookstore-web",
        Some(Command::Trend) => "bookstore-trend",
        Some(Command::Recommend) => "bookstore-recommend",
        Some(_) => "bookstore-tools",
    };
    name.to_owned()
}

async fn run(cli: Cli, mut config: Config) -> anyhow::Result<()> {
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    let stop_within = std::time::Duration::from_millis(config.shutdown_timeout_ms);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            run_until_signalled(|signal| serve_all(&config, signal), stop_within).await
        }
        Command::Web => {
            let app = WebApp::build(&config).await?;
            run_until_signalled(|signal| app.run_until_stopped(signal), stop_within).await
        }
        Command::Trend => {
            let app = trend::build(&config).await?;
            run_until_signalled(|signal| app.run_until_stopped(signal), stop_within).await
        }
        Command::Recommend => {
            let app = recommend::build(&config).await?;
            run_until_signalled(|signal| app.run_until_stopped(signal), stop_within).await
        }
        Command::Import {
            file,
            format,
            batch_size,
            report,
        } => {
            tools::import_file(
                &config,
                &file,
                format.map(Into::into),
                batch_size,
                report.as_deref(),
            )
            .await
        }
        Command::Generate {
            count,
            seed,
            output,
            format,
        } => tools::generate_file(&output, format.map(Into::into), count, seed),
        Command::Bench(BenchCommand::Search {
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
            let catalog = open_catalog(&config).await?;
            if let Some(rate) = bench::load(&catalog, books, seed).await? {
                eprintln!("loaded {books} books at {rate:.0} books/s");
            }
            let spec = bench::SearchBench {
                books,
                queries,
                baseline_queries,
                seed,
                page_size: config.web.page_size,
                index_dir: temp.join("search-index"),
                batch: config.events.batch_size.max(bookstore::search::INDEX_BATCH),
            };
            let report = bench::run(&catalog, &spec).await?;
            print!("{}", bench::table(&report));
            let _ = std::fs::remove_dir_all(&temp);
            Ok(())
        }
        Command::Bench(BenchCommand::Freshness {
            url,
            token,
            rounds,
            poll_ms,
        }) => {
            let spec = bookstore::bench_freshness::FreshnessBench {
                url,
                token,
                rounds,
                poll: std::time::Duration::from_millis(poll_ms.max(1)),
                give_up: std::time::Duration::from_secs(30),
            };
            let delays = bookstore::bench_freshness::run(&spec).await?;
            print!("{}", bookstore::bench_freshness::table(&delays));
            Ok(())
        }
        Command::Bench(BenchCommand::Events {
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
            let spec = bench_events::EventsBench {
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
                recommend: bench_recommend::RecommendBench {
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
            let report = bench_events::run(&spec, &temp).await;
            let _ = std::fs::remove_dir_all(&temp);
            print!("{}", bench_events::table(&report?));
            Ok(())
        }
        Command::Events(EventsCommand::Count { group, db, print }) => {
            count_queries(&config, group, db, print).await
        }
        Command::Loadgen(args) => bookstore::loadgen::run(args).await,
    }
}

/// `bookstore events count`: consume into per-query counts until SIGINT/SIGTERM, or print them.
async fn count_queries(
    config: &Config,
    group: String,
    db: Option<PathBuf>,
    print: bool,
) -> anyhow::Result<()> {
    config.ensure_data_dir()?;
    let db = db.unwrap_or_else(|| config.data_dir.join("query-counts.db"));
    let pool = bookstore_sqlite::connect(&format!("sqlite://{}", db.display()), 4)
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;
    let counts = SqliteQueryCounts::new(pool)
        .await
        .context("cannot create the counts tables")?;
    if print {
        for (query, count) in counts.counts().await? {
            println!("{count}\t{query}");
        }
        return Ok(());
    }
    let bus = EventBus::open(config).await?;
    let stop = CancellationToken::new();
    let consumer = bus
        .consumer(
            &config.events,
            &group,
            vec![config.events.topic.clone()],
            Arc::new(counts),
            stop.clone(),
        )
        .await?;
    let mut task = tokio::spawn(consumer.run());
    tokio::select! {
        () = shutdown_signal() => {
            stop.cancel();
            task.await.context("the consumer task failed")?
        }
        result = &mut task => result.context("the consumer task failed")?,
    }
}

/// A fresh directory for the benchmark's database under the system's temporary directory.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bookstore-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
