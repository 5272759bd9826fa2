//! `bookstore bench search`: loads a generated catalog into the catalog database and the same
//! books into a search index, and measures the index's search latency per kind of query against
//! the database's own full-text search (the services' search before the index), on the same data
//! in the same run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bookstore_catalog::generate::{GeneratedBook, Generator};
use bookstore_domain::events::CatalogBook;
use bookstore_domain::{BookQuery, NewBook, NewBookInput, Position};
use bookstore_search::{BookIndex, Change};
use hdrhistogram::Histogram;

use bookstore_app::Catalog;

/// What to measure.
#[derive(Debug, Clone)]
pub struct SearchBench {
    pub books: u64,
    /// Searches of the index (they take turns through [`BENCH_KINDS`]).
    pub queries: usize,
    /// Searches of the database, per kind of query.
    pub baseline_queries: usize,
    pub seed: u64,
    pub page_size: u32,
    /// Where the index is built (emptied first).
    pub index_dir: PathBuf,
    /// Books per index commit, as the web service's consumer commits them while it catches up
    /// (`events.batch_size`, at least `bookstore_app::search::INDEX_BATCH`).
    pub batch: usize,
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

/// The kinds of query [`bench_queries`] makes: [`QUERY_KINDS`] and the costly ones for a
/// full-text index (a typo, one letter, stop words only).
pub const BENCH_KINDS: [&str; 7] = [
    "author surname",
    "author full name",
    "title",
    "name as typed",
    "typo",
    "one letter",
    "stop words",
];

/// `count` queries, taking turns through [`BENCH_KINDS`].
pub fn bench_queries(seed: u64, count: usize) -> Vec<(&'static str, String)> {
    const LETTERS: [&str; 5] = ["a", "t", "s", "m", "e"];
    const STOP: [&str; 5] = ["the", "of the", "and", "in", "to a"];
    let kinds = BENCH_KINDS.len();
    let typed = query_kinds(seed, (count / kinds + 1) * 4);
    (0..count)
        .map(|i| {
            let (round, k) = (i / kinds, i % kinds);
            let query = match k {
                0..=3 => typed[round * 4 + k].1.clone(),
                4 => with_a_typo(&format!(
                    "{} {}",
                    typed[round * 4 + 1].1,
                    typed[round * 4 + 2].1
                )),
                5 => LETTERS[round % LETTERS.len()].to_owned(),
                _ => STOP[round % STOP.len()].to_owned(),
            };
            (BENCH_KINDS[k], query)
        })
        .collect()
}

/// The longest word of `text` with a letter in its middle left out (as in "dikens"), and a
/// space after it, so that it is read as a whole word with a typo, not as a prefix.
fn with_a_typo(text: &str) -> String {
    let word = text
        .split(|c: char| !c.is_alphanumeric())
        .max_by_key(|w| w.chars().count())
        .unwrap_or_default();
    let chars: Vec<char> = word.chars().collect();
    if chars.len() < 6 {
        return format!("{word} ");
    }
    let middle = chars.len() / 2;
    let mut typo: String = chars[..middle].iter().collect();
    typo.extend(&chars[middle + 1..]);
    format!("{} ", typo.to_lowercase())
}

/// One kind of query, measured on the index and on the database.
#[derive(Debug, Clone)]
pub struct KindResult {
    pub kind: String,
    pub index: Measurement,
    pub database: Option<Measurement>,
}

/// What the search benchmark found.
#[derive(Debug, Clone)]
pub struct SearchReport {
    pub backend: &'static str,
    pub books: u64,
    /// Books put in the index per second, in batches of the consumer's size, each committed
    /// with its positions as the consumer does.
    pub build_books_per_s: f64,
    pub index_bytes: u64,
    pub segments: usize,
    /// The process's anonymous memory (RssAnon) before the index was opened and after it was
    /// built and searched, in MiB; `None` where the system does not say.
    pub rss_anon_mib: Option<(f64, f64)>,
    pub overall: KindResult,
    pub kinds: Vec<KindResult>,
}

/// Builds the search index of the same generated books as `load` and measures it against the
/// catalog database's own full-text search (FTS5 on SQLite, FULLTEXT on MariaDB): the same
/// queries, in the same run.
pub async fn run(catalog: &Catalog, bench: &SearchBench) -> anyhow::Result<SearchReport> {
    let rss_before = rss_anon_mib();
    let dir = bench.index_dir.clone();
    let books = bench.books;
    let seed = bench.seed;
    let batch = bench.batch.max(1);
    let (index, build_rate) =
        tokio::task::spawn_blocking(move || build_index(&dir, books, seed, batch))
            .await
            .context("the index build failed")??;
    let index = std::sync::Arc::new(index);
    let queries = bench_queries(bench.seed, bench.queries.max(BENCH_KINDS.len()));
    // Warm the caches, as a running service would be.
    for (_, q) in queries.iter().take(200) {
        index.page(&BookQuery::new(q, 0, bench.page_size))?;
    }
    let on_index = {
        let index = index.clone();
        let queries = queries.clone();
        let page_size = bench.page_size;
        tokio::task::spawn_blocking(move || {
            measure(&queries, |q| {
                let page = index.page(&BookQuery::new(q, 0, page_size))?;
                Ok(page.books.len())
            })
        })
        .await
        .context("the index benchmark failed")??
    };
    let rss_after = rss_anon_mib();
    let repo = catalog.repository();
    let per_kind = bench.baseline_queries;
    let mut taken = vec![0usize; BENCH_KINDS.len()];
    let baseline: Vec<(&'static str, String)> = queries
        .iter()
        .filter(|(kind, _)| {
            let k = BENCH_KINDS.iter().position(|b| b == kind).unwrap_or(0);
            taken[k] += 1;
            taken[k] <= per_kind
        })
        .cloned()
        .collect();
    for (_, q) in baseline.iter().take(20) {
        repo.search(&BookQuery::new(q, 0, bench.page_size)).await?;
    }
    let mut on_database = Vec::new();
    for (kind, q) in &baseline {
        let t = Instant::now();
        let page = repo.search(&BookQuery::new(q, 0, bench.page_size)).await?;
        on_database.push((*kind, t.elapsed()));
        std::hint::black_box(page);
    }
    let index_bytes = dir_size(&bench.index_dir);
    let segments = index.segments();
    let result = |kind: Option<&str>| -> anyhow::Result<KindResult> {
        let pick = |samples: &[(&'static str, Duration)]| -> anyhow::Result<Option<Measurement>> {
            let chosen: Vec<Duration> = samples
                .iter()
                .filter(|(k, _)| kind.is_none_or(|kind| kind == *k))
                .map(|(_, d)| *d)
                .collect();
            if chosen.is_empty() {
                return Ok(None);
            }
            let mut hist = histogram()?;
            for d in &chosen {
                record(&mut hist, *d);
            }
            Ok(Some(measurement(
                String::new(),
                chosen.len(),
                &hist,
                chosen.iter().sum(),
            )))
        };
        Ok(KindResult {
            kind: kind.unwrap_or("all").to_owned(),
            index: pick(&on_index)?.context("no query was measured")?,
            database: pick(&on_database)?,
        })
    };
    let overall = result(None)?;
    let kinds = BENCH_KINDS
        .iter()
        .map(|k| result(Some(k)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(SearchReport {
        backend: catalog.kind().name(),
        books: bench.books,
        build_books_per_s: build_rate,
        index_bytes,
        segments,
        rss_anon_mib: rss_before.zip(rss_after),
        overall,
        kinds,
    })
}

/// Runs every query once, timing each.
fn measure(
    queries: &[(&'static str, String)],
    mut search: impl FnMut(&str) -> anyhow::Result<usize>,
) -> anyhow::Result<Vec<(&'static str, Duration)>> {
    let mut samples = Vec::with_capacity(queries.len());
    for (kind, q) in queries {
        let t = Instant::now();
        let found = search(q)?;
        samples.push((*kind, t.elapsed()));
        std::hint::black_box(found);
    }
    Ok(samples)
}

/// Puts `books` generated books (the same as [`load`]'s, with the same ids) in a new index in
/// `dir`, `batch` books per commit; returns the index and the books per second.
fn build_index(
    dir: &Path,
    books: u64,
    seed: u64,
    batch: usize,
) -> anyhow::Result<(BookIndex, f64)> {
    let _ = std::fs::remove_dir_all(dir);
    let index = BookIndex::open(Some(dir)).context("cannot create the benchmark's index")?;
    let mut generator = Generator::new(seed);
    let created_at = chrono::Utc::now();
    let started = Instant::now();
    let mut id = 0i64;
    let mut changes = Vec::with_capacity(batch);
    let mut done = 0u64;
    while done < books {
        changes.clear();
        while changes.len() < batch && done < books {
            let b = generator.book();
            done += 1;
            // The same books `load` stores, with the ids the database gives them.
            if NewBook::parse(NewBookInput {
                isbn: None,
                title: Some(b.title.clone()),
                author: Some(b.author.clone()),
                published_at: Some(b.published_at.to_string()),
                description: Some(b.description.clone()),
            })
            .is_err()
            {
                continue;
            }
            id += 1;
            changes.push(Change::Upsert(CatalogBook {
                id,
                title: b.title,
                author: b.author,
                published_at: b.published_at.into(),
                description: b.description,
                created_at,
                isbn: None,
            }));
        }
        index.apply(
            &changes,
            &[Position {
                topic: "bench".to_owned(),
                partition: 0,
                next_offset: i64::try_from(done).unwrap_or(i64::MAX),
            }],
        )?;
    }
    let rate = books as f64 / started.elapsed().as_secs_f64().max(1e-9);
    // As the web service does once its index has caught up.
    let merging = Instant::now();
    index
        .merge_segments()
        .context("cannot merge the index's segments")?;
    eprintln!(
        "built the index at {rate:.0} books/s, merged its segments in {:.1} s",
        merging.elapsed().as_secs_f64()
    );
    Ok((index, rate))
}

/// The bytes of the files in `dir`.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// This process's anonymous resident memory, in MiB (Linux's `RssAnon`).
fn rss_anon_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
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

/// The report as Markdown: per kind of query, the index against the database's full-text
/// search, and the ratio of their medians and p99s.
pub fn table(report: &SearchReport) -> String {
    let database = match report.backend {
        "sqlite" => "FTS5",
        "mysql" => "FULLTEXT",
        other => other,
    };
    let mut out = format!(
        "{} books; baseline: the catalog database's own full-text search ({database} on {})\n\n\
         | query kind | index queries | index median ms | index p99 ms | {database} queries | {database} median ms | {database} p99 ms | median speed-up | p99 speed-up |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        report.books, report.backend
    );
    for k in std::iter::once(&report.overall).chain(&report.kinds) {
        let (db_n, db_median, db_p99, up_median, up_p99) = match &k.database {
            Some(db) => (
                db.queries.to_string(),
                format!("{:.3}", db.median_ms),
                format!("{:.3}", db.p99_ms),
                format!("{:.0}x", db.median_ms / k.index.median_ms.max(1e-9)),
                format!("{:.0}x", db.p99_ms / k.index.p99_ms.max(1e-9)),
            ),
            None => Default::default(),
        };
        out.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} | {db_n} | {db_median} | {db_p99} | {up_median} | {up_p99} |\n",
            k.kind, k.index.queries, k.index.median_ms, k.index.p99_ms
        ));
    }
    out.push_str(&format!(
        "\nindex: {:.0} queries/s on one thread; built at {:.0} books/s; {:.0} MiB on disk in {} segments",
        report.overall.index.qps,
        report.build_books_per_s,
        report.index_bytes as f64 / (1024.0 * 1024.0),
        report.segments
    ));
    if let Some((before, after)) = report.rss_anon_mib {
        out.push_str(&format!(
            "; anonymous memory {before:.0} MiB before opening it, {after:.0} MiB after building and searching it"
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_queries_take_turns_through_the_kinds() {
        let queries = bench_queries(1, 15);
        assert_eq!(queries, bench_queries(1, 15));
        for (i, (kind, q)) in queries.iter().enumerate() {
            assert_eq!(*kind, BENCH_KINDS[i % BENCH_KINDS.len()]);
            assert!(!q.trim().is_empty(), "{kind}: {q:?}");
        }
        assert_eq!(queries[5].1.chars().count(), 1, "{queries:?}");
        assert!(
            queries[4].1.ends_with(' '),
            "a typo is a whole word: {queries:?}"
        );
    }

    #[test]
    fn a_typo_leaves_out_a_letter_of_the_longest_word() {
        assert_eq!(with_a_typo("Charles Dickens"), "dicens ");
        assert_eq!(with_a_typo("Frankenstein"), "frankestein ");
    }

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
