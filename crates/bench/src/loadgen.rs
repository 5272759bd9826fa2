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
//! - **Recommendation delay** (`--recommend-url`, empty: off): about every second, a fresh visitor
//!   (a `uid` cookie fetched from the page before the run, so a reader without history) asks
//!   `GET /recommendations?uid=<its id>&n=10` (the popular books), makes an API search for one of
//!   the most common words (one that finds books), and from the search's answer on, asks again
//!   every 20 ms until its list of ids differs both from the one before the search and from the
//!   list of a reader who never searches, asked at the same time (the popular books change under
//!   load by themselves), for at most `--rec-wait-ms`.
//! - **Consumer lag** (`--trend-ops-url`, `--recommend-ops-url`, empty: off): every second, the
//!   operations ports' `GET /metrics`; per consumer group (`service` and `group` labels),
//!   `bookstore_consumer_lag` summed over its partitions (events not yet applied) and
//!   `bookstore_consumer_oldest_unapplied_age_seconds` (an upper bound of the age of the oldest
//!   of them). The all-in-one `bookstore serve` shows every service on each of its `/metrics`:
//!   a group is taken once per sample, from the first port showing it.
//!
//! A recommendation service or operations port that does not answer before the run is left out
//! with a warning on standard error.
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

/// How often the trend service is asked while a marker is awaited, and the recommendation
/// service while a probe is.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// How often a marker search is sent, and a recommendation probe started.
const MARKER_EVERY: Duration = Duration::from_secs(1);
/// How often the consumer groups' lag is sampled.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// How many recommendations a probe asks for (`n`).
const PROBE_RECOMMENDATIONS: &str = "10";
/// The most common words of the workload that probes search, in turn.
const PROBE_WORDS: usize = 20;
/// Fresh visitors fetched before the run for the probes, at most (one a second of the run; later
/// probes fetch their visitor before they start).
const PROBE_VISITORS: usize = 120;
/// The per-partition lag gauge, and the gauge of the age of the oldest unapplied event
/// (`bookstore_app::ops::consumer_collector`).
const LAG_METRIC: &str = "bookstore_consumer_lag";
const UNAPPLIED_AGE_METRIC: &str = "bookstore_consumer_oldest_unapplied_age_seconds";

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
    /// The recommendation service, for the delay from a search to changed recommendations
    /// (empty: not measured).
    #[arg(long, default_value = "http://127.0.0.1:8002")]
    pub recommend_url: String,
    /// The trend service's operations port, whose `/metrics` gives its consumer groups' lag
    /// (empty: not sampled).
    #[arg(long, default_value = "http://127.0.0.1:9001")]
    pub trend_ops_url: String,
    /// The recommendation service's operations port, whose `/metrics` gives its consumer groups'
    /// lag (empty: not sampled).
    #[arg(long, default_value = "http://127.0.0.1:9002")]
    pub recommend_ops_url: String,
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
    /// How long a probe's recommendations may take to change after its search before it counts
    /// as never changed.
    #[arg(long, default_value_t = 5_000)]
    pub rec_wait_ms: u64,
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

/// A recommendation as `GET /recommendations` gives it, the field used here.
#[derive(Debug, Deserialize)]
struct RecommendationEntry {
    id: i64,
}

/// The ids of `uid`'s recommendations (`GET /recommendations?uid=…&n=10`), best first, when
/// the answer came, and how long it took.
async fn recommendation_ids(
    client: &reqwest::Client,
    recommend_url: &str,
    uid: &str,
) -> (Result<Vec<i64>, String>, Instant, Duration) {
    let sent = Instant::now();
    let ids = fetch_recommendation_ids(client, recommend_url, uid).await;
    let answered = Instant::now();
    (ids, answered, answered.duration_since(sent))
}

async fn fetch_recommendation_ids(
    client: &reqwest::Client,
    recommend_url: &str,
    uid: &str,
) -> Result<Vec<i64>, String> {
    let response = client
        .get(format!("{recommend_url}/recommendations"))
        .query(&[("uid", uid), ("n", PROBE_RECOMMENDATIONS)])
        .send()
        .await
        .map_err(|e| classify(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("status {}", status.as_u16()));
    }
    let entries: Vec<RecommendationEntry> = response.json().await.map_err(|e| classify(&e))?;
    Ok(entries.into_iter().map(|e| e.id).collect())
}

/// An API search for `word` from the visitor whose `Cookie` header is `cookie`: how many books
/// it answered.
async fn counted_search(
    client: &reqwest::Client,
    web_url: &str,
    word: &str,
    cookie: &str,
) -> Result<usize, String> {
    let response = client
        .get(format!("{web_url}/api/books"))
        .query(&[("q", word)])
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .map_err(|e| classify(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("status {}", status.as_u16()));
    }
    let books: Vec<serde::de::IgnoredAny> = response.json().await.map_err(|e| classify(&e))?;
    Ok(books.len())
}

/// The user id a `uid` cookie names, as the web service puts it in search events and the
/// recommendation service knows it: the UUID before the signature (`uid=<uuid>.<mac>`),
/// hyphenated.
fn cookie_uid(cookie: &str) -> Option<String> {
    let value = cookie.trim().strip_prefix("uid=")?;
    let (uid, _signature) = value.split_once('.')?;
    let uid = uuid::Uuid::parse_str(uid).ok()?;
    Some(uid.hyphenated().to_string())
}

/// What the recommendation probes need.
struct RecProbe {
    client: reqwest::Client,
    web_url: String,
    recommend_url: String,
    /// The words searched, in turn; one that finds no book is dropped.
    words: Vec<String>,
    /// Fresh visitors' `Cookie` headers, fetched before the run.
    visitors: Vec<String>,
    wait: Duration,
}

impl RecProbe {
    /// A fresh visitor's `Cookie` header: one fetched before the run, else a new one now.
    async fn fresh_visitor(&mut self) -> Option<String> {
        if let Some(cookie) = self.visitors.pop() {
            return Some(cookie);
        }
        visitor_cookies(&self.client, &self.web_url, 1)
            .await
            .ok()?
            .pop()
    }
}

/// How one probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeOutcome {
    /// The recommendations changed this long after the search's answer.
    Changed(Duration),
    /// They did not change within the wait.
    Missed,
    /// No fresh visitor, or no recommendations before the search.
    NotStarted,
    SearchFailed,
    /// The search found no book.
    NoBooks,
}

/// The recommendation delay measurements.
struct RecProbes {
    delays: Histogram<u64>,
    /// Latency of every `GET /recommendations` the probes sent.
    latency: Histogram<u64>,
    probes: u64,
    missed: u64,
    not_started: u64,
    search_errors: u64,
    empty_searches: u64,
    polls: u64,
    poll_errors: u64,
}

async fn measure_rec_delay(mut probe: RecProbe, end: Instant) -> RecProbes {
    let mut m = RecProbes {
        delays: new_histogram(),
        latency: new_histogram(),
        probes: 0,
        missed: 0,
        not_started: 0,
        search_errors: 0,
        empty_searches: 0,
        polls: 0,
        poll_errors: 0,
    };
    // A reader who never searches: what a reader without history is recommended at each moment.
    let reference = uuid::Uuid::new_v4().hyphenated().to_string();
    let mut turn = 0usize;
    let mut tick = Instant::now();
    while tick < end {
        tokio::time::sleep_until(tick.into()).await;
        m.probes += 1;
        let index = turn % probe.words.len().max(1);
        turn = turn.wrapping_add(1);
        let word = probe.words.get(index).cloned().unwrap_or_default();
        match probe_once(&mut probe, &reference, &word, &mut m).await {
            ProbeOutcome::Changed(delay) => m.delays.saturating_record(micros(delay)),
            ProbeOutcome::Missed => m.missed += 1,
            ProbeOutcome::NotStarted => m.not_started += 1,
            ProbeOutcome::SearchFailed => m.search_errors += 1,
            ProbeOutcome::NoBooks => {
                m.empty_searches += 1;
                if probe.words.len() > 1 {
                    probe.words.remove(index);
                }
            }
        }
        tick = next_tick(tick);
    }
    m
}

/// One probe: a fresh visitor's recommendations, its search for `word`, and its recommendations
/// every [`POLL_EVERY`] until they differ from those before the search and from the `reference`
/// reader's.
async fn probe_once(
    probe: &mut RecProbe,
    reference: &str,
    word: &str,
    m: &mut RecProbes,
) -> ProbeOutcome {
    let Some(cookie) = probe.fresh_visitor().await else {
        return ProbeOutcome::NotStarted;
    };
    let Some(uid) = cookie_uid(&cookie) else {
        return ProbeOutcome::NotStarted;
    };
    let (client, url) = (&probe.client, probe.recommend_url.as_str());
    m.polls += 1;
    let (before, _, took) = recommendation_ids(client, url, &uid).await;
    let _ = m.latency.record(micros(took).max(1));
    let before = match before {
        Ok(ids) => ids,
        Err(_) => {
            m.poll_errors += 1;
            return ProbeOutcome::NotStarted;
        }
    };
    match counted_search(client, &probe.web_url, word, &cookie).await {
        Err(_) => return ProbeOutcome::SearchFailed,
        Ok(0) => return ProbeOutcome::NoBooks,
        Ok(_) => {}
    }
    let searched_at = Instant::now();
    let deadline = searched_at + probe.wait;
    loop {
        let polled_at = Instant::now();
        m.polls += 2;
        let ((now, answered_at, took), (others, _, other_took)) = tokio::join!(
            recommendation_ids(client, url, &uid),
            recommendation_ids(client, url, reference)
        );
        let _ = m.latency.record(micros(took).max(1));
        let _ = m.latency.record(micros(other_took).max(1));
        match (now, others) {
            (Ok(now), Ok(others)) => {
                if now != before && now != others {
                    return ProbeOutcome::Changed(answered_at.duration_since(searched_at));
                }
            }
            (now, others) => {
                m.poll_errors += u64::from(now.is_err()) + u64::from(others.is_err());
            }
        }
        if Instant::now() >= deadline {
            return ProbeOutcome::Missed;
        }
        tokio::time::sleep_until((polled_at + POLL_EVERY).into()).await;
    }
}

/// One sample line of the Prometheus text format: `name{label="value",…} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A sample line; `None` for comments, blank lines and lines that are not samples.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, rest) = line.split_at(name_end);
    if name.is_empty() {
        return None;
    }
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inside) => parse_labels(inside)?,
        None => (BTreeMap::new(), rest),
    };
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The labels after a `{`, up to and without the closing `}`, and what follows it. Values are
/// quoted, with `\\`, `\"` and `\n` escaped.
fn parse_labels(mut rest: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once('=')?;
        let key = key.trim();
        if key.is_empty() {
            return None;
        }
        let quoted = after.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let close = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = quoted.get(close + 1..)?;
    }
}

/// A consumer group, as its series name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    service: String,
    group: String,
}

/// A consumer group's figures in one `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct GroupReading {
    /// The group's lag summed over its partitions (`None`: no lag series).
    lag: Option<f64>,
    /// The age of its oldest unapplied event, in seconds (`None`: no series, or not known).
    oldest_unapplied_age: Option<f64>,
}

/// The consumer groups of `/metrics` texts, by their `service` and `group` labels. A group shown
/// by more than one text (each `/metrics` of the all-in-one process shows every service) is
/// taken from the first.
fn consumer_groups<'a>(
    texts: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<GroupKey, GroupReading> {
    let mut groups = BTreeMap::new();
    for text in texts {
        let mut these: BTreeMap<GroupKey, GroupReading> = BTreeMap::new();
        for sample in text.lines().filter_map(parse_sample) {
            let is_lag = sample.name == LAG_METRIC;
            if !is_lag && sample.name != UNAPPLIED_AGE_METRIC {
                continue;
            }
            let (Some(service), Some(group)) =
                (sample.labels.get("service"), sample.labels.get("group"))
            else {
                continue;
            };
            let key = GroupKey {
                service: service.clone(),
                group: group.clone(),
            };
            let reading = these.entry(key).or_default();
            // A value that is not a number (NaN: not known) is left out; the group still shows.
            if sample.value.is_finite() {
                if is_lag {
                    *reading.lag.get_or_insert(0.0) += sample.value;
                } else {
                    reading.oldest_unapplied_age = Some(sample.value);
                }
            }
        }
        for (key, reading) in these {
            groups.entry(key).or_insert(reading);
        }
    }
    groups
}

/// A consumer group's samples.
#[derive(Debug, Default)]
struct GroupSeries {
    samples: u64,
    lag: Vec<f64>,
    oldest_unapplied_age: Vec<f64>,
}

/// The consumer groups' lag as sampled.
#[derive(Debug, Default)]
struct LagSamples {
    scrapes: u64,
    scrape_errors: u64,
    groups: BTreeMap<GroupKey, GroupSeries>,
}

/// `GET {url}/metrics`.
async fn scrape(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let response = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .map_err(|e| classify(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("status {}", status.as_u16()));
    }
    response.text().await.map_err(|e| classify(&e))
}

/// Samples the consumer groups of the `/metrics` of `sources` every [`LAG_EVERY`] until `end`.
async fn sample_lag(client: reqwest::Client, sources: Vec<String>, end: Instant) -> LagSamples {
    let mut s = LagSamples::default();
    if sources.is_empty() {
        return s;
    }
    let mut tick = Instant::now();
    while tick < end {
        tokio::time::sleep_until(tick.into()).await;
        let mut texts = Vec::with_capacity(sources.len());
        for source in &sources {
            s.scrapes += 1;
            match scrape(&client, source).await {
                Ok(text) => texts.push(text),
                Err(_) => s.scrape_errors += 1,
            }
        }
        for (key, reading) in consumer_groups(texts.iter().map(String::as_str)) {
            let series = s.groups.entry(key).or_default();
            series.samples += 1;
            series.lag.extend(reading.lag);
            series
                .oldest_unapplied_age
                .extend(reading.oldest_unapplied_age);
        }
        tick = (tick + LAG_EVERY).max(Instant::now());
    }
    s
}

/// The `q` quantile of `values` (nearest rank), `None` when there are none.
fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
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

/// The `q` quantile of a histogram of microseconds, in milliseconds (`None` when it is empty).
fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

/// The largest value of a histogram of microseconds, in milliseconds (`None` when it is empty).
fn max_ms(h: &Histogram<u64>) -> Option<f64> {
    (!h.is_empty()).then(|| h.max() as f64 / 1000.0)
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

/// The delay from a search to a change in the searcher's `GET /recommendations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecommendDelay {
    /// Probes started, one a second, each from a fresh visitor.
    pub probes: u64,
    /// Recommendations changed within `wait_ms` of the search's answer.
    pub changed: u64,
    /// Never changed within `wait_ms`.
    pub missed: u64,
    /// Probes that could not start: no fresh visitor, or no recommendations before the search.
    pub not_started: u64,
    /// Searches that failed, and searches that found no book (their word is not searched
    /// again); neither is measured.
    pub search_errors: u64,
    pub empty_searches: u64,
    pub wait_ms: u64,
    /// From the search's answer to the first changed recommendations.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// `GET /recommendations` requests (the probes' and the reference reader's), and how many
    /// failed.
    pub polls: u64,
    pub poll_errors: u64,
    /// Their latency, measured by the load generator.
    pub request_p50_ms: Option<f64>,
    pub request_p99_ms: Option<f64>,
    pub request_max_ms: Option<f64>,
}

impl RecommendDelay {
    fn new(probes: &RecProbes, wait_ms: u64) -> Self {
        let (d, l) = (&probes.delays, &probes.latency);
        let delay = |q: f64| quantile_ms(d, q);
        let request = |q: f64| quantile_ms(l, q);
        Self {
            probes: probes.probes,
            changed: d.len(),
            missed: probes.missed,
            not_started: probes.not_started,
            search_errors: probes.search_errors,
            empty_searches: probes.empty_searches,
            wait_ms,
            p50_ms: delay(0.5),
            p99_ms: delay(0.99),
            max_ms: max_ms(d),
            polls: probes.polls,
            poll_errors: probes.poll_errors,
            request_p50_ms: request(0.5),
            request_p99_ms: request(0.99),
            request_max_ms: max_ms(l),
        }
    }
}

/// A consumer group's lag, sampled every second during the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupLag {
    pub service: String,
    pub group: String,
    /// Samples in which the group showed.
    pub samples: u64,
    /// Events not yet applied: `bookstore_consumer_lag` summed over the group's partitions.
    pub lag_p50: Option<f64>,
    pub lag_p99: Option<f64>,
    pub lag_max: Option<f64>,
    /// Samples in which the age of the oldest unapplied event was known.
    pub age_samples: u64,
    /// `bookstore_consumer_oldest_unapplied_age_seconds`: an upper bound of the age of the
    /// oldest event not yet applied, in seconds (0 when the group is caught up).
    pub oldest_unapplied_age_p50_s: Option<f64>,
    pub oldest_unapplied_age_p99_s: Option<f64>,
    pub oldest_unapplied_age_max_s: Option<f64>,
}

/// The consumer groups' lag during the run, from the operations ports' `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConsumerLag {
    /// The operations ports sampled: those given that answered before the run.
    pub sources: Vec<String>,
    /// `GET /metrics` requests, and how many failed.
    pub scrapes: u64,
    pub scrape_errors: u64,
    /// By service and group.
    pub groups: Vec<GroupLag>,
}

impl ConsumerLag {
    fn new(sources: Vec<String>, samples: &LagSamples) -> Self {
        let groups = samples
            .groups
            .iter()
            .map(|(key, series)| {
                let (lag, age) = (&series.lag, &series.oldest_unapplied_age);
                GroupLag {
                    service: key.service.clone(),
                    group: key.group.clone(),
                    samples: series.samples,
                    lag_p50: quantile(lag, 0.5),
                    lag_p99: quantile(lag, 0.99),
                    lag_max: quantile(lag, 1.0),
                    age_samples: age.len() as u64,
                    oldest_unapplied_age_p50_s: quantile(age, 0.5),
                    oldest_unapplied_age_p99_s: quantile(age, 0.99),
                    oldest_unapplied_age_max_s: quantile(age, 1.0),
                }
            })
            .collect();
        Self {
            sources,
            scrapes: samples.scrapes,
            scrape_errors: samples.scrape_errors,
            groups,
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub web_url: String,
    pub trend_url: String,
    /// The recommendation service (empty: not measured).
    #[serde(default)]
    pub recommend_url: String,
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
    /// `None`: not measured (`--recommend-url` empty, or the service did not answer).
    #[serde(default)]
    pub recommend_delay: Option<RecommendDelay>,
    #[serde(default)]
    pub consumer_lag: ConsumerLag,
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

/// Whether `GET {url}{path}` answers with success; if not, says so on standard error, with what
/// is left out.
async fn answers(
    client: &reqwest::Client,
    what: &str,
    url: &str,
    path: &str,
    left_out: &str,
) -> bool {
    let why = match client.get(format!("{url}{path}")).send().await {
        Ok(response) if response.status().is_success() => return true,
        Ok(response) => format!("status {}", response.status().as_u16()),
        Err(error) => classify(&error),
    };
    eprintln!("loadgen: {what} at {url} does not answer GET {path} ({why}): {left_out}");
    false
}

/// A URL as given, without a trailing `/` (empty: left out).
fn base_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// Checks that the web and trend services answer (and which of the recommendation service and
/// operations ports do), measures the baseline, then runs the load with the trend and
/// recommendation delays and the consumer groups' lag measured alongside.
pub async fn measure(args: &LoadgenArgs) -> anyhow::Result<Report> {
    args.check()?;
    let load = args.load()?;
    let web_url = args.web_url.trim_end_matches('/').to_owned();
    let trend_url = args.trend_url.trim_end_matches('/').to_owned();
    let mut recommend_url = base_url(&args.recommend_url);
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
    if !recommend_url.is_empty()
        && !answers(
            &client,
            "the recommendation service",
            &recommend_url,
            "/healthz",
            "the search to recommendations delay is not measured (--recommend-url '' not to try)",
        )
        .await
    {
        recommend_url.clear();
    }
    let mut lag_sources: Vec<String> = Vec::new();
    for (what, url) in [
        ("the trend service's operations port", &args.trend_ops_url),
        (
            "the recommendation service's operations port",
            &args.recommend_ops_url,
        ),
    ] {
        let url = base_url(url);
        if url.is_empty() || lag_sources.contains(&url) {
            continue;
        }
        if answers(
            &client,
            what,
            &url,
            "/metrics",
            "its consumer groups' lag is not sampled",
        )
        .await
        {
            lag_sources.push(url);
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
    let probe_words: Vec<String> = workload.words().iter().take(PROBE_WORDS).cloned().collect();
    let probe_visitors = if recommend_url.is_empty() {
        Vec::new()
    } else {
        // One a second of the run, fetched now so that the probes do not wait for them.
        let n = usize::try_from(args.duration)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .min(PROBE_VISITORS);
        visitor_cookies(&client, &web_url, n).await?
    };
    let duration = Duration::from_secs(args.duration);
    let end = Instant::now() + duration;
    let marker = format!("loadgen{}", uuid::Uuid::new_v4().simple());
    let markers = tokio::spawn(measure_trend_delay(
        client.clone(),
        web_url.clone(),
        trend_url.clone(),
        marker,
        visitors,
        end,
        Duration::from_millis(args.trend_wait_ms),
    ));
    let rec_probes = (!recommend_url.is_empty()).then(|| {
        tokio::spawn(measure_rec_delay(
            RecProbe {
                client: client.clone(),
                web_url: web_url.clone(),
                recommend_url: recommend_url.clone(),
                words: probe_words,
                visitors: probe_visitors,
                wait: Duration::from_millis(args.rec_wait_ms),
            },
            end,
        ))
    });
    let lag_samples = tokio::spawn(sample_lag(client.clone(), lag_sources.clone(), end));
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
    let recommend_delay = match rec_probes {
        Some(task) => Some(RecommendDelay::new(
            &task.await.context("the recommendation delay task failed")?,
            args.rec_wait_ms,
        )),
        None => None,
    };
    let lag_samples = lag_samples
        .await
        .context("the consumer lag sampling task failed")?;
    let consumer_lag = ConsumerLag::new(lag_sources, &lag_samples);

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
    let delay = |q: f64| quantile_ms(d, q);
    let trend_delay = TrendDelay {
        marker_query: markers.marker.clone(),
        markers: markers.sent,
        appeared: d.len(),
        missed: markers.missed,
        search_errors: markers.search_errors,
        wait_ms: args.trend_wait_ms,
        p50_ms: delay(0.5),
        p99_ms: delay(0.99),
        max_ms: max_ms(d),
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
        recommend_url,
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
        recommend_delay,
        consumer_lag,
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
    match &report.recommend_delay {
        Some(r) => {
            let _ = writeln!(
                out,
                "search to changed /recommendations: p50 {}, p99 {}, max {}; {} of {} probes \
                 changed, {} never did within {} ms ({} failed searches, {} without books, {} not \
                 started)",
                ms(r.p50_ms),
                ms(r.p99_ms),
                ms(r.max_ms),
                r.changed,
                r.probes,
                r.missed,
                r.wait_ms,
                r.search_errors,
                r.empty_searches,
                r.not_started
            );
            let _ = writeln!(
                out,
                "GET /recommendations during the run ({} requests of the probes, {} failed): p50 {}, p99 {}, max {}",
                r.polls,
                r.poll_errors,
                ms(r.request_p50_ms),
                ms(r.request_p99_ms),
                ms(r.request_max_ms)
            );
        }
        None => {
            let _ = writeln!(out, "search to changed /recommendations: not measured");
        }
    }
    out.push_str(&lag_table(&report.consumer_lag));
    out
}

/// The consumer groups' lag as a table.
fn lag_table(lag: &ConsumerLag) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if lag.sources.is_empty() {
        let _ = writeln!(out, "consumer lag: not sampled");
        return out;
    }
    let sources = lag.sources.join(", ");
    if lag.groups.is_empty() {
        let _ = writeln!(
            out,
            "consumer lag: no consumer group in the /metrics of {sources} ({} of {} requests \
             failed)",
            lag.scrape_errors, lag.scrapes
        );
        return out;
    }
    let _ = writeln!(
        out,
        "consumer lag, sampled every second from {sources} ({} of {} requests failed); events \
         not yet applied, and an upper bound of the oldest one's age:",
        lag.scrape_errors, lag.scrapes
    );
    let names: Vec<String> = lag
        .groups
        .iter()
        .map(|g| format!("{}/{}", g.service, g.group))
        .collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(14);
    let _ = writeln!(
        out,
        "{:<width$} {:>7} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}",
        "group", "samples", "lag p50", "lag p99", "lag max", "age p50 s", "age p99 s", "age max s"
    );
    let events = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    let secs = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    for (name, g) in names.iter().zip(&lag.groups) {
        let _ = writeln!(
            out,
            "{name:<width$} {:>7} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}",
            g.samples,
            events(g.lag_p50),
            events(g.lag_p99),
            events(g.lag_max),
            secs(g.oldest_unapplied_age_p50_s),
            secs(g.oldest_unapplied_age_p99_s),
            secs(g.oldest_unapplied_age_max_s)
        );
    }
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

    #[test]
    fn the_uid_is_the_uuid_of_the_signed_cookie() {
        let uid = "0b6f2a4e-3c1d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(
            cookie_uid(&format!("uid={uid}.00112233445566778899aabbccddeeff")).as_deref(),
            Some(uid)
        );
        assert_eq!(
            cookie_uid("uid=0B6F2A4E-3C1D-4E5F-8A9B-0C1D2E3F4A5B.00ff").as_deref(),
            Some(uid),
            "as the web service writes it in events: lower case, hyphenated"
        );
        let (unsigned, other) = (format!("uid={uid}"), format!("sid={uid}.00"));
        for bad in [
            "",
            "uid=",
            "uid=not-a-uuid.00",
            unsigned.as_str(),
            other.as_str(),
        ] {
            assert_eq!(cookie_uid(bad), None, "{bad}");
        }
    }

    #[test]
    fn sample_lines_are_parsed_and_comments_skipped() {
        assert_eq!(parse_sample("# TYPE bookstore_consumer_lag gauge"), None);
        assert_eq!(parse_sample("   "), None);
        let plain = parse_sample("bookstore_eventlog_file_bytes 4096").unwrap();
        assert_eq!(
            (plain.name, plain.value),
            ("bookstore_eventlog_file_bytes", 4096.0)
        );
        assert!(plain.labels.is_empty());
        let labelled =
            parse_sample(r#"x_total{service="trend",path="a \"b\" \\ c\nd",} 1.5e3 1700000000000"#)
                .unwrap();
        assert_eq!(labelled.name, "x_total");
        assert_eq!(labelled.value, 1500.0);
        assert_eq!(labelled.labels["service"], "trend");
        assert_eq!(labelled.labels["path"], "a \"b\" \\ c\nd");
        assert!(
            parse_sample(r#"y{service="trend"} NaN"#)
                .unwrap()
                .value
                .is_nan()
        );
        assert_eq!(
            parse_sample(r#"y{service="trend"} +Inf"#).unwrap().value,
            f64::INFINITY
        );
        for bad in [
            r#"y{service="trend" 1"#,
            r#"y{service=trend} 1"#,
            "y{} x",
            "y",
            "{a=\"b\"} 1",
        ] {
            assert_eq!(parse_sample(bad), None, "{bad}");
        }
    }

    /// A `/metrics` of the trend service, hand-made: two partitions of its group, and other
    /// series around them.
    const TREND_METRICS: &str = r#"# HELP bookstore_consumer_lag lag
# TYPE bookstore_consumer_lag gauge
bookstore_consumer_lag{service="trend",group="trends",topic="searches",partition="0"} 3
bookstore_consumer_lag{service="trend",group="trends",topic="searches",partition="1"} 4
bookstore_consumer_lag_age_seconds{service="trend",group="trends"} 1.5
bookstore_consumer_oldest_unapplied_age_seconds{service="trend",group="trends"} 0.25
bookstore_events_applied_total{service="trend",group="trends"} 120
http_requests_total{service="trend",route="/trends",method="GET",status="200"} 7
"#;

    #[test]
    fn lag_is_summed_per_consumer_group() {
        let recommend = r#"bookstore_consumer_lag{service="recommend",group="recs",topic="catalog",partition="0"} 0
bookstore_consumer_lag{service="recommend",group="recs",topic="searches",partition="0"} 10
bookstore_consumer_oldest_unapplied_age_seconds{service="recommend",group="recs"} NaN
bookstore_consumer_oldest_unapplied_age_seconds{service="web",group="index"} 0
"#;
        let groups = consumer_groups([TREND_METRICS, recommend]);
        let key = |service: &str, group: &str| GroupKey {
            service: service.to_owned(),
            group: group.to_owned(),
        };
        assert_eq!(groups.len(), 3, "{groups:?}");
        assert_eq!(
            groups[&key("trend", "trends")],
            GroupReading {
                lag: Some(7.0),
                oldest_unapplied_age: Some(0.25)
            }
        );
        assert_eq!(
            groups[&key("recommend", "recs")],
            GroupReading {
                lag: Some(10.0),
                oldest_unapplied_age: None
            },
            "an age that is not known is left out"
        );
        assert_eq!(
            groups[&key("web", "index")],
            GroupReading {
                lag: None,
                oldest_unapplied_age: Some(0.0)
            }
        );
        // The all-in-one process shows every service on each port: a group counts once.
        assert_eq!(
            consumer_groups([TREND_METRICS, TREND_METRICS]),
            consumer_groups([TREND_METRICS])
        );
        assert!(consumer_groups(["", "# nothing"]).is_empty());
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), Some(50.0));
        assert_eq!(quantile(&values, 0.99), Some(99.0));
        assert_eq!(quantile(&values, 1.0), Some(100.0));
        assert_eq!(quantile(&values, 0.0), Some(1.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn the_lag_table_has_a_row_per_group() {
        let mut samples = LagSamples {
            scrapes: 4,
            scrape_errors: 1,
            ..LagSamples::default()
        };
        for text in [TREND_METRICS, TREND_METRICS, ""] {
            for (key, reading) in consumer_groups([text]) {
                let series = samples.groups.entry(key).or_default();
                series.samples += 1;
                series.lag.extend(reading.lag);
                series
                    .oldest_unapplied_age
                    .extend(reading.oldest_unapplied_age);
            }
        }
        let lag = ConsumerLag::new(vec!["http://127.0.0.1:9001".to_owned()], &samples);
        assert_eq!(lag.groups.len(), 1);
        let g = &lag.groups[0];
        assert_eq!(
            (g.service.as_str(), g.group.as_str(), g.samples),
            ("trend", "trends", 2)
        );
        assert_eq!((g.lag_p50, g.lag_max), (Some(7.0), Some(7.0)));
        assert_eq!(
            (g.age_samples, g.oldest_unapplied_age_p99_s),
            (2, Some(0.25))
        );
        let table = lag_table(&lag);
        assert!(table.contains("1 of 4 requests failed"), "{table}");
        let row = table
            .lines()
            .find(|l| l.starts_with("trend/trends"))
            .unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["trend/trends", "2", "7", "7", "7", "0.25", "0.25", "0.25"]
        );
        assert_eq!(
            lag_table(&ConsumerLag::default()),
            "consumer lag: not sampled\n"
        );
    }
}
