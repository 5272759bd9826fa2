//! `bookstore loadgen`: drives a running system over HTTP and reports what a reader would feel.
//!
//! - **Workload**: page views (`GET /?q=…`) and API searches (`GET /api/books?q=…`), in the share
//!   `--page-share`, each from one of `--users` visitors (each visitor's signed `uid` cookie is
//!   fetched from the page before the run, as a browser gets it), for a
//!   word of the sample catalog's titles and authors drawn with a Zipf-like skew (the catalog's
//!   most common words first, weight `1 / rank^s`). Deterministic for a `--seed`.
//! - **Open loop** (`--rate N`): a request is due every `1/N` s and its latency counts from when it
//!   was due, not from when it left, so a system that falls behind cannot hide it (no coordinated
//!   omission); at most `--max-in-flight` requests are outstanding, and a due request waits for a
//!   slot with its clock running. **Closed loop** (`--concurrency N`): N clients, each sending its
//!   next request when the previous one is answered.
//! - **Baseline**: before the run, `GET /healthz` driven the same way for `--baseline-secs`; the
//!   search latencies are also given as ratios to it, as machines are noisy.
//! - **Trend delay**: about every second, an API search for this run's marker query
//!   (`loadgen<nonce>`, a single word no book has) whose trend count the load generator knows, from
//!   the visitors in turn; `GET /trends?q=<marker>&all=true` (that one trend, public or not) every
//!   20 ms until the marker's count reaches it, for at most `--trend-wait-ms`. Zero-result
//!   searches are published and counted like any other.
//!
//! Every phase stops by itself at its duration; requests still outstanding then are awaited (each
//! is bounded by `--timeout-ms`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ArgGroup;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How often the trend service is asked while a marker is awaited.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// How often a marker search is sent.
const MARKER_EVERY: Duration = Duration::from_secs(1);

/// `bookstore loadgen` options.
#[derive(Debug, Clone, clap::Args)]
#[command(group(ArgGroup::new("load").required(true).args(["rate", "concurrency"])))]
pub struct LoadgenArgs {
    /// The web service.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub web_url: String,
    /// The trend service.
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    pub trend_url: String,
    /// Seconds the run lasts.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Open loop: requests per second, latency counted from when each was due.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed loop: clients each sending a request as soon as the previous one is answered.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Distinct visitors (`uid` cookies).
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Fraction of requests that are page views (`GET /?q=`); the rest are API searches
    /// (`GET /api/books?q=`).
    #[arg(long, default_value_t = 0.5)]
    pub page_share: f64,
    /// Skew of the query distribution: the word of rank r is drawn with weight 1 / r^s.
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Seconds of `GET /healthz` before the run, driven the same way, as the baseline.
    #[arg(long, default_value_t = 5)]
    pub baseline_secs: u64,
    /// Open loop: at most this many requests outstanding.
    #[arg(long, default_value_t = 512)]
    pub max_in_flight: usize,
    /// Time limit of one request.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// How long a marker search may take to show in `/trends` before it counts as never seen.
    #[arg(long, default_value_t = 5_000)]
    pub trend_wait_ms: u64,
    /// Seed of the visitors and queries.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    Open { rate: f64 },
    Closed { concurrency: usize },
}

impl LoadgenArgs {
    fn load(&self) -> anyhow::Result<Load> {
        match (self.rate, self.concurrency) {
            (Some(rate), None) if rate.is_finite() && rate > 0.0 => Ok(Load::Open { rate }),
            (Some(rate), None) => bail!("--rate must be a positive number, not {rate}"),
            (None, Some(concurrency)) if concurrency > 0 => Ok(Load::Closed { concurrency }),
            (None, Some(_)) => bail!("--concurrency must be at least 1"),
            _ => bail!("give either --rate or --concurrency"),
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.duration == 0 {
            bail!("--duration must be at least 1 second");
        }
        if self.users == 0 {
            bail!("--users must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.page_share) {
            bail!("--page-share must be between 0 and 1");
        }
        if !self.zipf.is_finite() || self.zipf < 0.0 {
            bail!("--zipf must be a non-negative number");
        }
        if self.max_in_flight == 0 {
            bail!("--max-in-flight must be at least 1");
        }
        if self.timeout_ms == 0 {
            bail!("--timeout-ms must be positive");
        }
        Ok(())
    }
}

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Healthz,
    Api,
    Page,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Healthz => "healthz",
            Kind::Api => "api",
            Kind::Page => "page",
        }
    }
}

/// One request to send.
#[derive(Debug, Clone)]
struct Request {
    kind: Kind,
    query: String,
    /// The `Cookie` header (`uid=…`), or empty.
    cookie: String,
}

/// Where requests come from: the baseline's `/healthz`, or the searches.
enum Source {
    Healthz,
    Searches(Box<Workload>),
}

impl Source {
    fn next(&mut self) -> Request {
        match self {
            Source::Healthz => Request {
                kind: Kind::Healthz,
                query: String::new(),
                cookie: String::new(),
            },
            Source::Searches(workload) => workload.next(),
        }
    }
}

/// The search workload: visitors, words and their skew.
pub struct Workload {
    rng: ChaCha8Rng,
    words: Vec<String>,
    /// Cumulative weights of `words`.
    cumulative: Vec<f64>,
    /// The visitors' `Cookie` headers.
    users: Vec<String>,
    page_share: f64,
}

impl Workload {
    /// Searches from the visitors whose `Cookie` headers are `users` (at least one; an empty
    /// header is a visitor without a cookie).
    pub fn new(users: Vec<String>, page_share: f64, zipf: f64, seed: u64) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(seed);
        let users = if users.is_empty() {
            vec![String::new()]
        } else {
            users
        };
        let words = catalog_words();
        let mut total = 0.0;
        let cumulative = (1..=words.len())
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(zipf);
                total
            })
            .collect();
        Self {
            rng,
            words,
            cumulative,
            users,
            page_share,
        }
    }

    /// The words queries are drawn from, most likely first.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    fn next(&mut self) -> Request {
        let kind = if self.rng.random::<f64>() < self.page_share {
            Kind::Page
        } else {
            Kind::Api
        };
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let draw = self.rng.random::<f64>() * total;
        let index = self
            .cumulative
            .partition_point(|c| *c <= draw)
            .min(self.words.len().saturating_sub(1));
        let cookie = self.users[self.rng.random_range(0..self.users.len())].clone();
        Request {
            kind,
            query: self.words.get(index).cloned().unwrap_or_default(),
            cookie,
        }
    }
}

/// The words of the sample catalog's titles and authors (three letters or more, common English
/// words left out), the words in most books first.
pub fn catalog_words() -> Vec<String> {
    const SKIP: &[&str] = &[
        "the", "and", "for", "from", "into", "with", "its", "his", "her",
    ];
    let mut books_with: BTreeMap<String, u64> = BTreeMap::new();
    for book in bookstore_catalog::sample::books() {
        let mut words =
            bookstore_domain::search_terms(&format!("{} {}", book.title(), book.author()));
        words.retain(|w| w.chars().count() >= 3 && !SKIP.contains(&w.as_str()));
        for word in words {
            *books_with.entry(word).or_default() += 1;
        }
    }
    let mut words: Vec<(String, u64)> = books_with.into_iter().collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut words: Vec<String> = words.into_iter().map(|(w, _)| w).collect();
    if words.is_empty() {
        words.push("austen".to_owned());
    }
    words
}

/// Latencies and errors of one kind of request.
struct KindStats {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl KindStats {
    fn new() -> Self {
        Self {
            histogram: new_histogram(),
            errors: BTreeMap::new(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds, from 1 µs to an hour, three significant figures.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("the bounds are valid"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

type Stats = Arc<Mutex<BTreeMap<Kind, KindStats>>>;

fn record(stats: &Stats, kind: Kind, outcome: Result<Duration, String>) {
    let mut stats = stats.lock().unwrap_or_else(|e| e.into_inner());
    let entry = stats.entry(kind).or_insert_with(KindStats::new);
    match outcome {
        Ok(latency) => entry.histogram.saturating_record(micros(latency)),
        Err(error) => *entry.errors.entry(error).or_default() += 1,
    }
}

/// Sends one request and reads the whole answer; the error names the status or what failed.
async fn send(client: &reqwest::Client, web_url: &str, request: &Request) -> Result<(), String> {
    let builder = match request.kind {
        Kind::Healthz => client.get(format!("{web_url}/healthz")),
        Kind::Api => client
            .get(format!("{web_url}/api/books"))
            .query(&[("q", request.query.as_str())]),
        Kind::Page => client
            .get(format!("{web_url}/"))
            .query(&[("q", request.query.as_str())]),
    };
    let builder = if request.cookie.is_empty() {
        builder
    } else {
        builder.header(reqwest::header::COOKIE, request.cookie.as_str())
    };
    let response = builder.send().await.map_err(|e| classify(&e))?;
    let status = response.status();
    response.bytes().await.map_err(|e| classify(&e))?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}

fn classify(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "request"
    }
    .to_owned()
}

/// Drives requests from `source` for `duration`; returns what happened and how long it took until
/// the last answer.
async fn drive(
    client: &reqwest::Client,
    web_url: &str,
    load: Load,
    duration: Duration,
    max_in_flight: usize,
    source: Source,
) -> anyhow::Result<(BTreeMap<Kind, KindStats>, Duration)> {
    let stats: Stats = Arc::default();
    let source = Arc::new(Mutex::new(source));
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = JoinSet::new();
    match load {
        Load::Open { rate } => {
            let slots = Arc::new(Semaphore::new(max_in_flight));
            for k in 0u64.. {
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let slot = slots
                    .clone()
                    .acquire_owned()
                    .await
                    .context("the in-flight limit closed")?;
                let request = source.lock().unwrap_or_else(|e| e.into_inner()).next();
                let (client, web_url, stats) = (client.clone(), web_url.to_owned(), stats.clone());
                tasks.spawn(async move {
                    let outcome = send(&client, &web_url, &request).await;
                    // From when it was due, not from when it left.
                    record(&stats, request.kind, outcome.map(|()| due.elapsed()));
                    drop(slot);
                });
                while tasks.try_join_next().is_some() {}
            }
        }
        Load::Closed { concurrency } => {
            for _ in 0..concurrency {
                let (client, web_url, stats, source) = (
                    client.clone(),
                    web_url.to_owned(),
                    stats.clone(),
                    source.clone(),
                );
                tasks.spawn(async move {
                    while Instant::now() < end {
                        let request = source.lock().unwrap_or_else(|e| e.into_inner()).next();
                        let sent = Instant::now();
                        let outcome = send(&client, &web_url, &request).await;
                        record(&stats, request.kind, outcome.map(|()| sent.elapsed()));
                    }
                });
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a request task failed")?;
    }
    let elapsed = start.elapsed();
    let stats = std::mem::take(&mut *stats.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((stats, elapsed))
}

/// A trend as `GET /trends` gives it, the fields used here.
#[derive(Debug, Deserialize)]
struct TrendEntry {
    count: u64,
}

/// The marker's trend (`GET /trends?q=…&all=true`: an array of at most one).
async fn marker_trend(
    client: &reqwest::Client,
    trend_url: &str,
    marker: &str,
) -> Result<Vec<TrendEntry>, String> {
    let response = client
        .get(format!("{trend_url}/trends"))
        .query(&[("q", marker), ("all", "true")])
        .send()
        .await
        .map_err(|e| classify(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("status {}", status.as_u16()));
    }
    response.json().await.map_err(|e| classify(&e))
}

/// An API search for the marker from the visitor whose `Cookie` header is `cookie`.
async fn marker_search(
    client: &reqwest::Client,
    web_url: &str,
    marker: &str,
    cookie: String,
) -> bool {
    let request = Request {
        kind: Kind::Api,
        query: marker.to_owned(),
        cookie,
    };
    send(client, web_url, &request).await.is_ok()
}

/// The `Cookie` headers of `n` new visitors: each asks for the page once, as a browser would,
/// and keeps the signed `uid` cookie it is given.
async fn visitor_cookies(
    client: &reqwest::Client,
    web_url: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut cookies = Vec::with_capacity(n);
    let mut visits = JoinSet::new();
    let slots = Arc::new(Semaphore::new(16));
    for _ in 0..n {
        let (client, url) = (client.clone(), format!("{web_url}/"));
        let slot = slots.clone().acquire_owned().await?;
        visits.spawn(async move {
            let cookie = client.get(url).send().await.ok().and_then(|response| {
                let set = response.headers().get(reqwest::header::SET_COOKIE)?;
                let pair = set.to_str().ok()?.split(';').next()?.trim().to_owned();
                pair.starts_with("uid=").then_some(pair)
            });
            drop(slot);
            cookie
        });
    }
    while let Some(done) = visits.join_next().await {
        if let Ok(Some(cookie)) = done {
            cookies.push(cookie);
        }
    }
    if cookies.len() < n {
        bail!(
            "only {} of {n} visits to {web_url}/ got a uid cookie",
            cookies.len()
        );
    }
    // Joined in completion order: sorted, so that a seed draws the same visitors' requests.
    cookies.sort();
    Ok(cookies)
}

/// The trend delay measurements.
struct Markers {
    marker: String,
    delays: Histogram<u64>,
    sent: u64,
    missed: u64,
    search_errors: u64,
    polls: u64,
    poll_errors: u64,
}

async fn measure_trend_delay(
    client: reqwest::Client,
    web_url: String,
    trend_url: String,
    marker: String,
    visitors: Vec<String>,
    end: Instant,
    wait: Duration,
) -> Markers {
    let mut turn = 0usize;
    let mut next_visitor = move || {
        turn = turn.wrapping_add(1);
        visitors
            .get(turn % visitors.len().max(1))
            .cloned()
            .unwrap_or_default()
    };
    let mut m = Markers {
        marker,
        delays: new_histogram(),
        sent: 0,
        missed: 0,
        search_errors: 0,
        polls: 0,
        poll_errors: 0,
    };
    // Marker searches answered: the count the trend reaches once they are all applied.
    let mut answered: u64 = 0;
    let mut tick = Instant::now();
    while tick < end {
        tokio::time::sleep_until(tick.into()).await;
        let sent_at = Instant::now();
        m.sent += 1;
        if !marker_search(&client, &web_url, &m.marker, next_visitor()).await {
            m.search_errors += 1;
            tick = next_tick(tick);
            continue;
        }
        answered += 1;
        let deadline = sent_at + wait;
        loop {
            let polled_at = Instant::now();
            m.polls += 1;
            match marker_trend(&client, &trend_url, &m.marker).await {
                Ok(trends) => {
                    if trends.iter().any(|t| t.count >= answered) {
                        m.delays.saturating_record(micros(sent_at.elapsed()));
                        break;
                    }
                }
                Err(_) => m.poll_errors += 1,
            }
            if Instant::now() >= deadline {
                m.missed += 1;
                break;
            }
            tokio::time::sleep_until((polled_at + POLL_EVERY).into()).await;
        }
        tick = next_tick(tick);
    }
    m
}

fn next_tick(tick: Instant) -> Instant {
    (tick + MARKER_EVERY).max(Instant::now())
}

/// Latency and throughput of one kind of request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KindReport {
    /// Requests answered, successfully or not.
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    /// Error counts by `status N`, `timeout`, `connect`, `body` or `request`.
    pub errors_by: BTreeMap<String, u64>,
    /// Successful requests per second.
    pub throughput_per_s: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl KindReport {
    fn new(stats: &KindStats, elapsed: Duration) -> Self {
        let h = &stats.histogram;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let errors = stats.errors.values().sum();
        Self {
            requests: h.len() + errors,
            ok: h.len(),
            errors,
            errors_by: stats.errors.clone(),
            throughput_per_s: h.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            mean_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// A latency as a multiple of the baseline's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratios {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// The delay from a search to its appearance in `GET /trends`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrendDelay {
    /// This run's marker query.
    pub marker_query: String,
    /// Measured marker searches sent.
    pub markers: u64,
    /// Seen in `/trends` within `wait_ms`.
    pub appeared: u64,
    /// Never seen within `wait_ms`.
    pub missed: u64,
    /// Marker searches that failed (not measured).
    pub search_errors: u64,
    pub wait_ms: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// `GET /trends` requests, and how many failed.
    pub polls: u64,
    pub poll_errors: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub web_url: String,
    pub trend_url: String,
    /// `open` (`rate`) or `closed` (`concurrency`).
    pub mode: String,
    pub rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub duration_s: u64,
    /// From the first request to the last answer.
    pub elapsed_s: f64,
    pub users: usize,
    pub page_share: f64,
    /// `GET /healthz`, driven the same way before the run.
    pub baseline: KindReport,
    pub baseline_elapsed_s: f64,
    /// `api` and `page`.
    pub kinds: BTreeMap<String, KindReport>,
    /// All searches together.
    pub total: KindReport,
    /// Search latency over the baseline's, per kind and for all.
    pub ratios: BTreeMap<String, Ratios>,
    pub trend_delay: TrendDelay,
}

fn merge(stats: &BTreeMap<Kind, KindStats>) -> KindStats {
    let mut all = KindStats::new();
    for kind in stats.values() {
        let _ = all.histogram.add(&kind.histogram);
        for (error, n) in &kind.errors {
            *all.errors.entry(error.clone()).or_default() += n;
        }
    }
    all
}

fn ratios(of: &KindReport, to: &KindReport) -> Ratios {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ratios {
        p50: ratio(of.p50_ms, to.p50_ms),
        p90: ratio(of.p90_ms, to.p90_ms),
        p99: ratio(of.p99_ms, to.p99_ms),
    }
}

/// Checks that both services answer, measures the baseline, then runs the load with the trend
/// delay measured alongside.
pub async fn measure(args: &LoadgenArgs) -> anyhow::Result<Report> {
    args.check()?;
    let load = args.load()?;
    let web_url = args.web_url.trim_end_matches('/').to_owned();
    let trend_url = args.trend_url.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .pool_max_idle_per_host(args.max_in_flight)
        .build()
        .context("cannot build the HTTP client")?;
    for (name, url) in [("web", &web_url), ("trend", &trend_url)] {
        let response = client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .with_context(|| format!("the {name} service does not answer at {url}"))?;
        if !response.status().is_success() {
            bail!(
                "the {name} service at {url} answered GET /healthz with {}",
                response.status()
            );
        }
    }
    let pace = match load {
        Load::Open { rate } => format!("open loop at {rate} requests/s"),
        Load::Closed { concurrency } => format!("closed loop with {concurrency} clients"),
    };
    eprintln!(
        "loadgen: baseline GET /healthz, {pace}, for {} s",
        args.baseline_secs
    );
    let (baseline, baseline_elapsed) = drive(
        &client,
        &web_url,
        load,
        Duration::from_secs(args.baseline_secs),
        args.max_in_flight,
        Source::Healthz,
    )
    .await?;
    let baseline = KindReport::new(&merge(&baseline), baseline_elapsed);

    eprintln!(
        "loadgen: searches ({} users, page share {}), {pace}, for {} s",
        args.users, args.page_share, args.duration
    );
    let visitors = visitor_cookies(&client, &web_url, args.users).await?;
    let workload = Workload::new(visitors.clone(), args.page_share, args.zipf, args.seed);
    let duration = Duration::from_secs(args.duration);
    let marker = format!("loadgen{}", uuid::Uuid::new_v4().simple());
    let markers = tokio::spawn(measure_trend_delay(
        client.clone(),
        web_url.clone(),
        trend_url.clone(),
        marker,
        visitors,
        Instant::now() + duration,
        Duration::from_millis(args.trend_wait_ms),
    ));
    let (stats, elapsed) = drive(
        &client,
        &web_url,
        load,
        duration,
        args.max_in_flight,
        Source::Searches(Box::new(workload)),
    )
    .await?;
    let markers = markers.await.context("the trend delay task failed")?;

    let kinds: BTreeMap<String, KindReport> = [Kind::Api, Kind::Page]
        .into_iter()
        .filter_map(|k| {
            stats
                .get(&k)
                .map(|s| (k.name().to_owned(), KindReport::new(s, elapsed)))
        })
        .collect();
    let total = KindReport::new(&merge(&stats), elapsed);
    let mut all_ratios: BTreeMap<String, Ratios> = kinds
        .iter()
        .map(|(k, r)| (k.clone(), ratios(r, &baseline)))
        .collect();
    all_ratios.insert("all".to_owned(), ratios(&total, &baseline));
    let d = &markers.delays;
    let delay = |q: f64| (!d.is_empty()).then(|| d.value_at_quantile(q) as f64 / 1000.0);
    let trend_delay = TrendDelay {
        marker_query: markers.marker.clone(),
        markers: markers.sent,
        appeared: d.len(),
        missed: markers.missed,
        search_errors: markers.search_errors,
        wait_ms: args.trend_wait_ms,
        p50_ms: delay(0.5),
        p99_ms: delay(0.99),
        max_ms: (!d.is_empty()).then(|| d.max() as f64 / 1000.0),
        polls: markers.polls,
        poll_errors: markers.poll_errors,
    };
    let (mode, rate, concurrency) = match load {
        Load::Open { rate } => ("open", Some(rate), None),
        Load::Closed { concurrency } => ("closed", None, Some(concurrency)),
    };
    Ok(Report {
        web_url,
        trend_url,
        mode: mode.to_owned(),
        rate,
        concurrency,
        duration_s: args.duration,
        elapsed_s: elapsed.as_secs_f64(),
        users: args.users,
        page_share: args.page_share,
        baseline,
        baseline_elapsed_s: baseline_elapsed.as_secs_f64(),
        kinds,
        total,
        ratios: all_ratios,
        trend_delay,
    })
}

/// The report as a table.
pub fn table(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let pace = match (report.rate, report.concurrency) {
        (Some(rate), _) => format!("open loop at {rate} requests/s"),
        (_, Some(c)) => format!("closed loop, {c} clients"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "{} {pace}, {} s ({} users, page share {})",
        report.web_url, report.duration_s, report.users, report.page_share
    );
    let _ = writeln!(
        out,
        "{:<8} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8}  {:>20}",
        "kind",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "p50/p90/p99 ÷ healthz"
    );
    let mut row = |name: &str, r: &KindReport, ratio: Option<&Ratios>| {
        let ratio = ratio.map_or(String::new(), |x| {
            format!("{:.1} / {:.1} / {:.1}", x.p50, x.p90, x.p99)
        });
        let _ = writeln!(
            out,
            "{name:<8} {:>9} {:>7} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {ratio:>20}",
            r.requests, r.errors, r.throughput_per_s, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
        );
    };
    row("healthz", &report.baseline, None);
    for (kind, r) in &report.kinds {
        row(kind, r, report.ratios.get(kind));
    }
    row("all", &report.total, report.ratios.get("all"));
    let mut errors: Vec<String> = Vec::new();
    for (kind, r) in std::iter::once(("healthz", &report.baseline))
        .chain(report.kinds.iter().map(|(k, r)| (k.as_str(), r)))
    {
        for (error, n) in &r.errors_by {
            errors.push(format!("{kind} {error}: {n}"));
        }
    }
    if !errors.is_empty() {
        let _ = writeln!(out, "errors: {}", errors.join(", "));
    }
    let t = &report.trend_delay;
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} ms"));
    let _ = writeln!(
        out,
        "search to /trends: p50 {}, p99 {}, max {}; {} of {} markers appeared, {} never did within {} ms \
         ({} failed searches)",
        ms(t.p50_ms),
        ms(t.p99_ms),
        ms(t.max_ms),
        t.appeared,
        t.markers,
        t.missed,
        t.wait_ms,
        t.search_errors
    );
    out
}

/// `bookstore loadgen`: measures and prints the report.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let report = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_come_from_the_catalog_most_common_first() {
        let words = catalog_words();
        assert!(words.len() > 100, "{}", words.len());
        assert!(words.iter().any(|w| w == "austen"));
        assert!(!words.iter().any(|w| w == "the" || w.chars().count() < 3));
    }

    #[test]
    fn queries_are_skewed_and_every_visitor_searches() {
        let cookies: Vec<String> = (0..10).map(|i| format!("uid=visitor-{i}")).collect();
        let mut workload = Workload::new(cookies.clone(), 0.5, 1.0, 7);
        let first = workload.words()[0].clone();
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut pages = 0;
        for _ in 0..10_000 {
            let r = workload.next();
            assert!(cookies.contains(&r.cookie));
            pages += u64::from(r.kind == Kind::Page);
            *counts.entry(r.query).or_default() += 1;
        }
        let top = counts.values().max().copied().unwrap_or(0);
        assert_eq!(counts[&first], top, "the first word is the most drawn");
        assert!(counts.len() > 50, "the tail is drawn too");
        assert!((4_000..6_000).contains(&pages), "{pages}");
        let users: std::collections::BTreeSet<_> =
            (0..1000).map(|_| workload.next().cookie).collect();
        assert_eq!(users.len(), 10);
    }
}
