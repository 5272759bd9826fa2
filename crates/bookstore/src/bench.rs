//! `bookstore bench search`: loads a generated catalog and measures search latency and
//! throughput, with the tutorial's `LIKE '%q%'` scan measured on the same data in the same run as
//! the baseline.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bookstore_catalog::generate::{GeneratedBook, Generator};
use bookstore_domain::{BookQuery, NewBook, NewBookInput};
use hdrhistogram::Histogram;

use crate::Catalog;

/// What to measure.
#[derive(Debug, Clone)]
pub struct SearchBench {
    pub books: u64,
    pub queries: usize,
    pub baseline_queries: usize,
    pub seed: u64,
    pub page_size: u32,
}

/// One measured method.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub method: String,
    pub queries: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub qps: f64,
}

/// The queries a reader might type, drawn from books of the same generator (so they match),
/// in four kinds: an author's surname, an author's full name, a whole title, and a first name
/// with the start of a surname.
pub fn query_set(seed: u64, count: usize) -> Vec<String> {
    query_kinds(seed, count)
        .into_iter()
        .map(|(_, q)| q)
        .collect()
}

/// The kinds of query in [`query_set`], in the order they take turns.
pub const QUERY_KINDS: [&str; 4] = [
    "author surname",
    "author full name",
    "title",
    "name as typed",
];

/// [`query_set`] with each query's kind.
pub fn query_kinds(seed: u64, count: usize) -> Vec<(&'static str, String)> {
    let mut generator = Generator::new(seed.wrapping_add(0x5eed));
    (0..count)
        .map(|i| {
            let book: GeneratedBook = generator.book();
            let surname = book
                .author
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .to_owned();
            let query = match i % 4 {
                0 => surname,
                1 => book.author,
                2 => book.title,
                // A reader still typing: the first name and the start of the surname.
                _ => {
                    let first = book.author.split(' ').next().unwrap_or_default();
                    let start: String = surname.chars().take(4).collect();
                    format!("{} {}", first.to_lowercase(), start.to_lowercase())
                }
            };
            (QUERY_KINDS[i % 4], query)
        })
        .collect()
}

/// Loads `books` generated books into an empty catalog, or reuses a catalog that already holds
/// exactly that many (so a slow server needs loading once). Returns books/s of the load, if any.
pub async fn load(catalog: &Catalog, books: u64, seed: u64) -> anyhow::Result<Option<f64>> {
    let repo = catalog.repository();
    let existing = repo.count().await?;
    if existing == books {
        eprintln!("reusing the {existing} books already in the catalog");
        return Ok(None);
    }
    if existing != 0 {
        bail!(
            "the benchmark catalog holds {existing} books, neither 0 nor {books}: give an empty database"
        );
    }
    let started = Instant::now();
    let mut generator = Generator::new(seed);
    let mut loaded = 0;
    while loaded < books {
        let n = (books - loaded).min(10_000);
        let batch: Vec<NewBook> = (0..n)
            .filter_map(|_| {
                let b = generator.book();
                NewBook::parse(NewBookInput {
                    isbn: None,
                    title: Some(b.title),
                    author: Some(b.author),
                    published_at: Some(b.published_at.to_string()),
                    description: Some(b.description),
                })
                .ok()
            })
            .collect();
        loaded += repo.create_many(&batch).await?;
    }
    Ok(Some(loaded as f64 / started.elapsed().as_secs_f64()))
}

/// Runs the indexed search and the baseline scan over the same queries.
pub async fn run(catalog: &Catalog, bench: &SearchBench) -> anyhow::Result<Vec<Measurement>> {
    let repo = catalog.repository();
    let queries = query_set(bench.seed, bench.queries.max(1));
    // Warm the caches, as a running service would be.
    for q in queries.iter().take(100) {
        repo.search(&BookQuery::new(q, 0, bench.page_size)).await?;
    }

    let kinds = query_kinds(bench.seed, bench.queries.max(1));
    let mut hist = histogram()?;
    let mut by_kind = Vec::new();
    for _ in QUERY_KINDS {
        by_kind.push((histogram()?, Duration::ZERO, 0));
    }
    let started = Instant::now();
    for (i, (_, q)) in kinds.iter().enumerate() {
        let t = Instant::now();
        let page = repo.search(&BookQuery::new(q, 0, bench.page_size)).await?;
        let elapsed = t.elapsed();
        record(&mut hist, elapsed);
        let (kind_hist, kind_time, kind_count) = &mut by_kind[i % QUERY_KINDS.len()];
        record(kind_hist, elapsed);
        *kind_time += elapsed;
        *kind_count += 1;
        std::hint::black_box(page);
    }
    let indexed = measurement(
        "full-text index".to_owned(),
        queries.len(),
        &hist,
        started.elapsed(),
    );

    let baseline_queries = &queries[..bench.baseline_queries.min(queries.len())];
    let mut hist = histogram()?;
    let started = Instant::now();
    for q in baseline_queries {
        let t = Instant::now();
        let rows = match catalog {
            Catalog::Sqlite(repo) => repo.search_like_scan(q, 0, bench.page_size).await?,
            Catalog::MySql(repo) => repo.search_like_scan(q, 0, bench.page_size).await?,
        };
        record(&mut hist, t.elapsed());
        std::hint::black_box(rows);
    }
    let baseline = measurement(
        "LIKE scan (baseline)".to_owned(),
        baseline_queries.len(),
        &hist,
        started.elapsed(),
    );
    let mut results = vec![indexed, baseline];
    for (kind, (hist, time, count)) in QUERY_KINDS.iter().zip(&by_kind) {
        results.push(measurement(
            format!("  full-text: {kind}"),
            *count,
            hist,
            *time,
        ));
    }
    Ok(results)
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("cannot create a histogram")
}

fn record(hist: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    hist.saturating_record(micros);
}

fn measurement(
    method: String,
    queries: usize,
    hist: &Histogram<u64>,
    total: Duration,
) -> Measurement {
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Measurement {
        method,
        queries,
        median_ms: ms(0.5),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        qps: queries as f64 / total.as_secs_f64().max(1e-9),
    }
}

/// The results as a Markdown table, with the speed-up over the baseline.
pub fn table(backend: &str, books: u64, results: &[Measurement]) -> String {
    let mut out = String::from(
        "| backend | books | method | queries | median ms | p95 ms | p99 ms | queries/s |\n\
         |---|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for m in results {
        out.push_str(&format!(
            "| {backend} | {books} | {} | {} | {:.3} | {:.3} | {:.3} | {:.1} |\n",
            m.method, m.queries, m.median_ms, m.p95_ms, m.p99_ms, m.qps
        ));
    }
    if let [indexed, baseline, ..] = results {
        // Rows after the first two break the full-text figures down by kind of query.
        out.push_str(&format!(
            "\nspeed-up over the baseline: {:.0}x by median latency, {:.0}x by queries/s\n",
            baseline.median_ms / indexed.median_ms.max(1e-9),
            indexed.qps / baseline.qps.max(1e-9)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_set_is_deterministic_and_mixed() {
        let a = query_set(1, 8);
        assert_eq!(a, query_set(1, 8));
        assert!(a.iter().all(|q| !q.is_empty()), "{a:?}");
        assert!(a[1].contains(' '), "{a:?}");
        let typed: Vec<&str> = a[3].split(' ').collect();
        assert!(typed.len() == 2 && typed[1].len() <= 4, "{a:?}");
    }
}
