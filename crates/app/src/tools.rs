//! `bookstore import`, `bookstore generate` and `bookstore events count`.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bookstore_catalog::{Format, LineOutcome, generate, import, read};
use bookstore_domain::Imported;
use bookstore_sqlite::SqliteQueryCounts;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::bus::EventBus;
use crate::config::Config;
use crate::{open_catalog, shutdown_signal};

/// Imports a catalog file, matching books by ISBN (a book whose ISBN the catalog has is updated,
/// never added twice; a book without one is always added), reporting rejected rows by line number, and every line's outcome to
/// `report` when given. Fails (non-zero exit) only when the file cannot be read or the database
/// fails; rejected rows are reported and skipped.
pub async fn import_file(
    config: &Config,
    path: &Path,
    format: Option<Format>,
    batch_size: usize,
    report: Option<&Path>,
) -> anyhow::Result<()> {
    let format = format
        .or_else(|| Format::from_path(path))
        .with_context(|| {
            format!(
                "cannot tell the format of {} from its name: pass --format csv or --format jsonl",
                path.display()
            )
        })?;
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let catalog = open_catalog(config).await?;

    let progress = if std::io::stderr().is_terminal() {
        ProgressBar::new(size)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let rows = read::read(progress.wrap_read(file), format)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = match report {
        Some(report) => {
            let file = File::create(report)
                .with_context(|| format!("cannot create {}", report.display()))?;
            let mut writer = csv::Writer::from_writer(std::io::BufWriter::new(file));
            writer.write_record(["line", "outcome", "book_id", "reason"])?;
            Some(writer)
        }
        None => None,
    };
    let mut line_error = None;
    let started = Instant::now();
    let report_of_import = import(
        catalog.repository(),
        rows,
        batch_size,
        |n| progress.set_message(format!("{n} books")),
        |line, outcome| {
            let Some(writer) = lines.as_mut() else {
                return;
            };
            let line = line.to_string();
            let written = match outcome {
                LineOutcome::Imported(imported) => {
                    let (what, id) = match imported {
                        Imported::Created(id) => ("created", id),
                        Imported::Updated(id) => ("updated", id),
                        Imported::Unchanged(id) => ("unchanged", id),
                    };
                    writer.write_record([line.as_str(), what, &id.to_string(), ""])
                }
                LineOutcome::Rejected(reason) => {
                    writer.write_record([line.as_str(), "rejected", "", reason.as_str()])
                }
            };
            if let Err(error) = written {
                line_error.get_or_insert(error);
            }
        },
    )
    .await
    .with_context(|| format!("import of {} stopped", path.display()));
    if let Some(mut writer) = lines {
        writer.flush().context("cannot write the report")?;
    }
    if let Some(error) = line_error {
        return Err(error).context("cannot write the report");
    }
    let report = report_of_import?;
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();

    let mut err = std::io::stderr().lock();
    for rejected in &report.rejected {
        let _ = writeln!(err, "line {}: rejected: {}", rejected.line, rejected.reason);
    }
    if report.rejected_count > report.rejected.len() as u64 {
        let _ = writeln!(
            err,
            "... and {} more rejected rows",
            report.rejected_count - report.rejected.len() as u64
        );
    }
    println!(
        "imported {} books ({} created, {} updated and {} unchanged, matched by ISBN), rejected {} rows, in {:.2} s ({:.0} books/s)",
        report.imported(),
        report.created,
        report.updated,
        report.unchanged,
        report.rejected_count,
        elapsed,
        report.imported() as f64 / elapsed.max(1e-9)
    );
    Ok(())
}

/// Writes a synthetic catalog of `count` books to `output` (`-` for standard output).
pub fn generate_file(
    output: &Path,
    format: Option<Format>,
    count: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let to_stdout = output.as_os_str() == "-";
    let format = match format {
        Some(format) => format,
        None if to_stdout => Format::Csv,
        None => Format::from_path(output).with_context(|| {
            format!(
                "cannot tell the format of {} from its name: pass --format csv or --format jsonl",
                output.display()
            )
        })?,
    };
    if to_stdout {
        generate::write(std::io::stdout().lock(), format, count, seed)
            .context("cannot write the catalog to standard output")?;
    } else {
        if output.exists() && output.is_dir() {
            bail!("{} is a directory", output.display());
        }
        let file =
            File::create(output).with_context(|| format!("cannot create {}", output.display()))?;
        generate::write(
            std::io::BufWriter::with_capacity(1 << 20, file),
            format,
            count,
            seed,
        )
        .with_context(|| format!("cannot write {}", output.display()))?;
        eprintln!("wrote {count} books to {}", output.display());
    }
    Ok(())
}

/// `bookstore events count`: consume into per-query counts until SIGINT/SIGTERM, or print them.
pub async fn count_queries(
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
