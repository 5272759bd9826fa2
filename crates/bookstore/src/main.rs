//! `bookstore`: the bookstore's one binary. Run with no subcommand to start everything on the
//! embedded defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bookstore::config::Config;
use bookstore::telemetry::{self, LogFormat};
use bookstore::{WebApp, bench, open_catalog, shutdown_signal, tools};
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
    #[arg(long, global = true, value_enum, default_value = "text")]
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
    /// Load books from a CSV (with a header row) or JSON Lines file into the catalog.
    Import {
        file: PathBuf,
        /// The file's format; by default taken from its extension.
        #[arg(long, value_enum)]
        format: Option<FileFormat>,
        /// Books per transaction.
        #[arg(long, default_value_t = 50_000)]
        batch_size: usize,
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
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Search latency and throughput on a generated catalog, against the tutorial's LIKE scan.
    Search {
        /// Books in the generated catalog.
        #[arg(long, default_value_t = 100_000)]
        books: u64,
        /// Searches through the full-text index.
        #[arg(long, default_value_t = 2_000)]
        queries: usize,
        /// Searches through the LIKE scan (slow on big catalogs).
        #[arg(long, default_value_t = 50)]
        baseline_queries: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Database to fill and search (sqlite://FILE or mysql://...); by default a new SQLite
        /// file in a temporary directory.
        #[arg(long, value_name = "URL")]
        db_url: Option<String>,
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
    telemetry::init(cli.log_format);
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
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve | Command::Web => {
            let app = WebApp::build(&config).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Import {
            file,
            format,
            batch_size,
        } => tools::import_file(&config, &file, format.map(Into::into), batch_size).await,
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
            };
            let results = bench::run(&catalog, &spec).await?;
            print!("{}", bench::table(catalog.backend_name(), books, &results));
            let _ = std::fs::remove_dir_all(&temp);
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
