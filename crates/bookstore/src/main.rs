//! `bookstore`: the bookstore's one binary. Run with no subcommand to start everything on the
//! embedded defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use bookstore_app::config::Config;
use bookstore_app::telemetry::{self, LogFormat};
use bookstore_app::{WebApp, recommend, run_until_signalled, serve_all, tools, trend};
use bookstore_catalog::Format;
use clap::{Parser, Subcommand, ValueEnum};

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
    Bench(bookstore_bench::BenchCommand),
    /// Event pipeline tools.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Drive a running system over HTTP: search latency and throughput against a /healthz
    /// baseline, the delay from a search to /trends and to changed /recommendations, and each
    /// consumer group's lag (from the operations ports' /metrics).
    Loadgen(bookstore_bench::loadgen::LoadgenArgs),
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
        Command::Bench(command) => bookstore_bench::run(command, config).await,
        Command::Events(EventsCommand::Count { group, db, print }) => {
            tools::count_queries(&config, group, db, print).await
        }
        Command::Loadgen(args) => bookstore_bench::loadgen::run(args).await,
    }
}
