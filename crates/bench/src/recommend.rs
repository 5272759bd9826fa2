//! The recommendation part of `bookstore bench events`: how fast the recommendation handler
//! applies a synthetic history through the consumer framework, per store, and how fast
//! `GET /recommendations` answers once it is applied. Both are compared with baselines measured
//! in the same run on the same store technology: the tutorial's consumer (one upsert per result
//! book, each awaited, autocommit) and the tutorial's endpoint (`GET /interests`).
//!
//! The history is deterministic for [`SEED`]: books fall into topics of [`TOPIC_BOOKS`], each
//! known user has two or three favourite topics, and each search picks a topic (mostly a
//! favourite) and returns [`RESULTS`] of its books in a random order, so that books searched
//! together are books of one topic and related searches mean something. A known reader opens
//! (`book.viewed`, right after the search) each result of a favourite topic with the chance
//! [`VIEW_SHARE`] (0.15), as readers open what they were looking for, and each result outside
//! their favourite topics with the smaller chance [`OFF_TOPIC_VIEW_SHARE`] (0.05), as readers
//! also open what they are not interested in (curiosity, misclicks). The results of one search
//! are all of its topic, so the off-topic views are those of the known readers' searches outside
//! their favourite topics (about 1 - [`FAVOURITE_SHARE`] of their searches): views are noisy
//! evidence of the reader's topics, not a copy of them. Views use their own random stream, so
//! the searches are the same as in a history without them.
//!
//! It also scores what each store recommends, calling it directly (not over HTTP) for a sample
//! of [`QUALITY_USERS`] known readers: precision@10 (the share of the recommended books that are
//! from one of the reader's favourite topics) and catalog coverage (the distinct books
//! recommended to the sample over the catalog's), beside a popularity-only baseline (the most
//! searched books the reader has not been shown) scored the same way on the same readers. The
//! same scores are taken on a second store fed the same history without its views: what views
//! add to the recommendations (and the handler's rate on searches alone, comparable with figures
//! from before views).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bookstore_consumer::ConsumerStats;
use bookstore_domain::EventHandler;
use bookstore_domain::events::{
    BookEvent, BookViewedEvent, CatalogBook, Event, ResultBook, SearchEvent, ViewSource,
};
use bookstore_domain::recommend::{KIND_AUTHOR, KIND_SEARCHED, KIND_VIEWED, RecommendStats};
use bookstore_recommend::{RecommendReads, RecommendState};
use chrono::{DateTime, NaiveDate, Utc};
use hdrhistogram::Histogram;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::measure::{Throughput, publish_all, throughput_table, wait_applied};
use bookstore_app::bus::EventBus;
use bookstore_app::config::{Config, EventsBackend, Secret};
use bookstore_app::recommend::{RecommendBackend, open_recommend_store};

/// Seed of the synthetic history and of the users the requests ask for.
pub const SEED: u64 = 1;
/// Books per topic, results per search, share of anonymous searches, share of a known user's
/// searches that go to one of their favourite topics.
pub const TOPIC_BOOKS: u64 = 50;
pub const RESULTS: usize = 10;
pub const ANONYMOUS_SHARE: f64 = 0.1;
pub const FAVOURITE_SHARE: f64 = 0.85;
/// The chance that a known reader opens a result of their search that is in one of their
/// favourite topics (about 1.5 views per such search of 10 results).
pub const VIEW_SHARE: f64 = 0.15;
/// The chance that a known reader opens a result of their search that is in none of their
/// favourite topics (curiosity, misclicks; about 0.5 views per such search of 10 results).
pub const OFF_TOPIC_VIEW_SHARE: f64 = 0.05;
/// Books per author (consecutive books, so mostly of one topic).
pub const AUTHOR_BOOKS: u64 = 8;
/// Search events the one-upsert-per-result baseline handles (it is slow).
pub const BASELINE_EVENTS: usize = 20_000;
/// Requests per endpoint before measuring.
pub const WARM_UP_REQUESTS: u64 = 100;
/// The goals: `GET /recommendations` p99, and the handler's rate against the tutorial's.
pub const GOAL_P99_MS: f64 = 10.0;
pub const GOAL_RATIO: f64 = 20.0;
/// Known readers whose recommendations are scored, per store (sampled with `SEED + 2`), and the
/// books asked for each.
pub const QUALITY_USERS: usize = 1_000;
pub const QUALITY_N: usize = 10;
/// The recommenders scored: the store's own (`GET /recommendations`) fed the history with its
/// views, then fed the same history without them, and the baseline.
pub const DESIGN: &str = "this design";
pub const NO_VIEWS: &str = "this design, history without views";
pub const POPULARITY: &str = "popularity only (baseline)";

/// A recommendation store to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecommendStoreKind {
    /// SQLite in the data dir, the default.
    Embedded,
    /// A fresh MySQL/MariaDB database, dropped at the end.
    MySql,
}

impl RecommendStoreKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded (SQLite)",
            Self::MySql => "mysql (MariaDB)",
        }
    }
}

/// What to measure.
#[derive(Clone)]
pub struct RecommendBench {
    pub stores: Vec<RecommendStoreKind>,
    /// Server URL without a database (`mysql://user:password@host:port`).
    pub mysql_url: String,
    pub users: u64,
    pub books: u64,
    pub searches: u64,
    /// Measured requests per endpoint.
    pub requests: u64,
    /// Members of one group measured together on MySQL (1: not measured).
    pub members: usize,
}

impl std::fmt::Debug for RecommendBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL holds a password.
        f.debug_struct("RecommendBench")
            .field("stores", &self.stores)
            .field("users", &self.users)
            .field("books", &self.books)
            .field("searches", &self.searches)
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

/// Latency of one endpoint on one store.
#[derive(Debug, Clone)]
pub struct HttpLatency {
    pub store: &'static str,
    pub endpoint: &'static str,
    pub requests: u64,
    /// Answers other than 200.
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// For `/recommendations`: answers with `n` books, and the kinds of reason of every book
    /// returned (searched, viewed, author, popular).
    pub full: Option<u64>,
    pub reasons: Option<[u64; 4]>,
}

/// How good one recommender's books are for a sample of known readers, on one store.
#[derive(Debug, Clone)]
pub struct Quality {
    pub store: &'static str,
    /// [`DESIGN`] or [`POPULARITY`].
    pub recommender: &'static str,
    /// Readers scored.
    pub users: u64,
    /// Books recommended to them in all.
    pub recommended: u64,
    /// Readers who got [`QUALITY_N`] books (or more).
    pub full: u64,
    /// Of all the books recommended to the sample, the share from one of the reader's favourite
    /// topics (a micro average; 0 if none was recommended).
    pub precision_at_10: f64,
    /// Distinct books recommended to the sample over the catalog's books.
    pub coverage: f64,
}

/// What a store holds after the history, and how long `stats()` took to count it.
#[derive(Debug, Clone)]
pub struct Held {
    pub store: &'static str,
    pub stats: RecommendStats,
    pub stats_ms: f64,
}

/// The shape of the history.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub users: u64,
    pub known_users: u64,
    pub books: u64,
    pub authors: u64,
    pub topics: u64,
    pub searches: u64,
    pub anonymous: u64,
    pub views: u64,
    /// Of `views`, those of a book in none of the reader's favourite topics.
    pub off_topic_views: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub shape: Shape,
    pub throughput: Vec<Throughput>,
    /// Statements the baseline ran, per store.
    pub baseline_statements: Vec<(&'static str, u64)>,
    pub latency: Vec<HttpLatency>,
    pub held: Vec<Held>,
    /// Per store, [`DESIGN`], [`POPULARITY`] then [`NO_VIEWS`].
    pub quality: Vec<Quality>,
}

/// The synthetic history.
pub struct History {
    pub catalog: Vec<Event>,
    /// The searches alone: the history without views.
    pub searches: Vec<Event>,
    /// The searches and, after each, the views of its reader.
    pub events: Vec<Event>,
    /// Users with at least one search, the ones requests ask about.
    pub users: Vec<String>,
    /// Indexed like `users`: their favourite topics.
    pub favourites: Vec<Vec<u64>>,
    /// Indexed like `users`: the ids of every book their searches returned, sorted, without
    /// duplicates.
    pub shown: Vec<Vec<i64>>,
    /// Indexed by book id - 1: how many searches (anonymous ones too) returned the book.
    pub popularity: Vec<u64>,
    pub shape: Shape,
}

impl History {
    /// The topic of book `id`, `None` for an id outside the catalog.
    pub fn topic_of(&self, id: i64) -> Option<u64> {
        topic_of_book(id, self.shape.books, self.shape.topics)
    }

    /// Scores `lists`, each the books one recommender gave the reader `users[i]`.
    fn quality(
        &self,
        store: &'static str,
        recommender: &'static str,
        lists: &[(usize, Vec<i64>)],
    ) -> Quality {
        score(
            store,
            recommender,
            lists.iter().map(|(i, ids)| {
                let favourites = self.favourites.get(*i).map_or(&[][..], Vec::as_slice);
                (favourites, ids.as_slice())
            }),
            |id| self.topic_of(id),
            self.shape.books,
        )
    }
}

/// The topic of book `id` in a history of `books` books in `topics` topics: book `i + 1` is in
/// topic `min(i / TOPIC_BOOKS, topics - 1)`; `None` for an id outside `1..=books`.
pub fn topic_of_book(id: i64, books: u64, topics: u64) -> Option<u64> {
    let i = u64::try_from(id).ok()?.checked_sub(1)?;
    (i < books).then(|| (i / TOPIC_BOOKS).min(topics.saturating_sub(1)))
}

/// Book ids from the most popular (`popularity` is indexed by id - 1), ties lower id first.
fn popularity_ranking(popularity: &[u64]) -> Vec<i64> {
    let mut order: Vec<usize> = (0..popularity.len()).collect();
    // Stable: equally popular books stay in id order.
    order.sort_by_key(|&i| std::cmp::Reverse(popularity[i]));
    order
        .into_iter()
        .map(|i| i64::try_from(i + 1).unwrap_or(i64::MAX))
        .collect()
}

/// The popularity-only baseline: the first `n` books of `ranking` not in `shown` (sorted).
fn popular_unseen(ranking: &[i64], shown: &[i64], n: usize) -> Vec<i64> {
    ranking
        .iter()
        .copied()
        .filter(|id| shown.binary_search(id).is_err())
        .take(n)
        .collect()
}

/// `part / whole`, 0 when `whole` is 0.
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Precision and coverage of `lists`, each a reader's favourite topics and the book ids
/// recommended to them, in a catalog of `catalog_books` books.
fn score<'a>(
    store: &'static str,
    recommender: &'static str,
    lists: impl IntoIterator<Item = (&'a [u64], &'a [i64])>,
    topic_of: impl Fn(i64) -> Option<u64>,
    catalog_books: u64,
) -> Quality {
    let (mut users, mut recommended, mut on_topic, mut full) = (0u64, 0u64, 0u64, 0u64);
    let mut distinct = HashSet::new();
    for (favourites, ids) in lists {
        users += 1;
        if ids.len() >= QUALITY_N {
            full += 1;
        }
        for &id in ids {
            recommended += 1;
            distinct.insert(id);
            if topic_of(id).is_some_and(|t| favourites.contains(&t)) {
                on_topic += 1;
            }
        }
    }
    Quality {
        store,
        recommender,
        users,
        recommended,
        full,
        precision_at_10: share(on_topic, recommended),
        coverage: share(distinct.len() as u64, catalog_books),
    }
}

/// The indices into `History::users` (of `users` readers) whose recommendations are scored: up
/// to [`QUALITY_USERS`], without replacement, the same for every store.
fn quality_sample(users: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED + 2);
    let mut order: Vec<usize> = (0..users).collect();
    let (chosen, _) = order.partial_shuffle(&mut rng, QUALITY_USERS);
    chosen.to_vec()
}

/// Books, then searches from `users` users over the last 30 days, and the views of known readers
/// after them; deterministic for `seed` (except event ids and the times, which are relative to
/// now).
pub fn history(users: u64, books: u64, searches: u64, seed: u64) -> History {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Views draw from a stream of their own: the searches are those of a history without views.
    let mut view_rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(3));
    let books = books.max(1);
    let topics = (books / TOPIC_BOOKS).max(1);
    let authors = books.div_ceil(AUTHOR_BOOKS).max(1);
    let topic_of = |i: u64| (i / TOPIC_BOOKS).min(topics - 1);
    let now = Utc::now();
    let start = now - chrono::Duration::days(30);
    let created = start - chrono::Duration::days(1);
    let epoch = NaiveDate::from_ymd_opt(1950, 1, 1).unwrap_or_default();
    let mut catalog = Vec::with_capacity(usize::try_from(books).unwrap_or(0));
    let mut entries = Vec::with_capacity(catalog.capacity());
    for i in 0..books {
        let id = i64::try_from(i + 1).unwrap_or(i64::MAX);
        let book = CatalogBook {
            isbn: None,
            id,
            title: format!("Book {id}, on topic {}", topic_of(i)),
            author: format!("Author {}", i / AUTHOR_BOOKS),
            published_at: (epoch + chrono::Days::new(i % 25_000)).into(),
            description: String::new(),
            created_at: created,
        };
        entries.push(ResultBook {
            id,
            title: book.title.clone(),
            author: book.author.clone(),
            published_at: Some(book.published_at),
        });
        catalog.push(Event::BookCreated(BookEvent::new(
            Uuid::now_v7(),
            created,
            book,
        )));
    }
    // Topic t holds books [t * TOPIC_BOOKS, next topic's first), the last one the remainder.
    let topic_books = |t: u64| -> std::ops::Range<usize> {
        let first = usize::try_from(t * TOPIC_BOOKS).unwrap_or(usize::MAX);
        let end = if t + 1 == topics {
            entries.len()
        } else {
            usize::try_from((t + 1) * TOPIC_BOOKS).unwrap_or(usize::MAX)
        };
        first.min(entries.len())..end.min(entries.len())
    };

    let ids: Vec<String> = (0..users)
        .map(|_| Uuid::from_u128(rng.random::<u128>()).to_string())
        .collect();
    let favourites: Vec<Vec<u64>> = (0..users)
        .map(|_| {
            let k = rng.random_range(2..=3u64).min(topics);
            let mut picked = Vec::new();
            while (picked.len() as u64) < k {
                let t = rng.random_range(0..topics);
                if !picked.contains(&t) {
                    picked.push(t);
                }
            }
            picked
        })
        .collect();
    let mut seen = vec![false; ids.len()];
    let mut shown: Vec<Vec<i64>> = vec![Vec::new(); ids.len()];
    let mut popularity = vec![0u64; entries.len()];
    let span = (now - start).num_milliseconds().max(1);
    let mut events = Vec::with_capacity(usize::try_from(searches).unwrap_or(0));
    let mut with_views = Vec::with_capacity(events.capacity());
    let mut anonymous = 0;
    let mut off_topic_views = 0;
    let mut shuffled: Vec<usize> = Vec::with_capacity(usize::try_from(TOPIC_BOOKS).unwrap_or(0));
    for j in 0..searches {
        let user = if users == 0 || rng.random_bool(ANONYMOUS_SHARE) {
            None
        } else {
            Some(usize::try_from(rng.random_range(0..users)).unwrap_or(0))
        };
        let topic = match user {
            Some(u) if rng.random_bool(FAVOURITE_SHARE) => {
                let fav = &favourites[u];
                fav[rng.random_range(0..fav.len())]
            }
            _ => rng.random_range(0..topics),
        };
        shuffled.clear();
        shuffled.extend(topic_books(topic));
        let (chosen, _) = shuffled.partial_shuffle(&mut rng, RESULTS);
        for &i in chosen.iter() {
            popularity[i] += 1;
        }
        if let Some(u) = user {
            shown[u].extend(chosen.iter().map(|&i| entries[i].id));
        }
        let results: Vec<ResultBook> = chosen.iter().map(|&i| entries[i].clone()).collect();
        let offset_ms = i64::try_from(j).unwrap_or(i64::MAX).saturating_mul(span)
            / i64::try_from(searches).unwrap_or(i64::MAX).max(1);
        let at: DateTime<Utc> = start + chrono::Duration::milliseconds(offset_ms);
        let user_id = match user {
            Some(u) => {
                seen[u] = true;
                Some(ids[u].clone())
            }
            None => {
                anonymous += 1;
                None
            }
        };
        let search = Event::BookSearched(SearchEvent::new(
            Uuid::now_v7(),
            at,
            user_id.clone(),
            &format!("topic {topic}"),
            0,
            results.clone(),
        ));
        events.push(search.clone());
        with_views.push(search);
        if let Some(u) = user {
            for (rank, book) in results.iter().enumerate() {
                // All the results are of `topic`; one draw per result either way.
                let on_topic = favourites[u].contains(&topic);
                let chance = if on_topic {
                    VIEW_SHARE
                } else {
                    OFF_TOPIC_VIEW_SHARE
                };
                if view_rng.random_bool(chance) {
                    if !on_topic {
                        off_topic_views += 1;
                    }
                    let mut view = BookViewedEvent::now(
                        user_id.clone(),
                        None,
                        book.clone(),
                        ViewSource::Search,
                        u32::try_from(rank).ok(),
                        None,
                    );
                    view.occurred_at = at + chrono::Duration::seconds(1 + rank as i64);
                    with_views.push(Event::BookViewed(view));
                }
            }
        }
    }
    let (mut known, mut known_favourites, mut known_shown) = (Vec::new(), Vec::new(), Vec::new());
    for (((id, seen), favourite), mut books) in ids.into_iter().zip(seen).zip(favourites).zip(shown)
    {
        if seen {
            books.sort_unstable();
            books.dedup();
            known.push(id);
            known_favourites.push(favourite);
            known_shown.push(books);
        }
    }
    History {
        shape: Shape {
            users,
            known_users: known.len() as u64,
            books,
            authors,
            topics,
            searches,
            anonymous,
            views: (with_views.len() - events.len()) as u64,
            off_topic_views,
        },
        catalog,
        searches: events,
        events: with_views,
        users: known,
        favourites: known_favourites,
        shown: known_shown,
        popularity,
    }
}

/// Runs every measurement on every requested store, with its files in `scratch`.
pub async fn run(spec: &RecommendBench, scratch: &std::path::Path) -> anyhow::Result<Report> {
    if spec.books == 0 || spec.searches == 0 || spec.users == 0 {
        bail!("--rec-users, --rec-books and --rec-searches must be at least 1");
    }
    eprintln!(
        "recommend: generating {} books and {} searches of {} users",
        spec.books, spec.searches, spec.users
    );
    let history = history(spec.users, spec.books, spec.searches, SEED);
    let run_id = Uuid::new_v4().simple().to_string();
    let mut config = Config {
        data_dir: scratch.join(format!("recommend-{run_id}")),
        ..Config::default()
    };
    config.events.backend = EventsBackend::Embedded;
    config.events.topic = format!("bench-rec-searches-{run_id}");
    config.events.catalog_topic = format!("bench-rec-catalog-{run_id}");
    // Batches as the recommendation service takes them (`recommend.batch_size`), not the
    // pipeline benchmark's `--batch-size`.
    config.events.batch_size = config.recommend.batch_size;
    config.events.queue_capacity = history
        .catalog
        .len()
        .max(history.events.len())
        .saturating_add(1);
    config.events.queue_max_bytes = crate::measure::BENCH_QUEUE_BYTES;
    let result = run_stores(spec, &history, &mut config, &run_id).await;
    let _ = std::fs::remove_dir_all(&config.data_dir);
    let mut report = result?;
    report.shape = history.shape;
    Ok(report)
}

async fn run_stores(
    spec: &RecommendBench,
    history: &History,
    config: &mut Config,
    run_id: &str,
) -> anyhow::Result<Report> {
    let bus = EventBus::open(config).await?;
    bus.ensure_topics(
        &config.events,
        &[
            config.events.catalog_topic.clone(),
            config.events.topic.clone(),
        ],
    )
    .await?;
    bus.ensure_topics(&config.events, &[no_views_topic(config)])
        .await?;
    eprintln!(
        "recommend: writing {} catalog, {} search and {} view events to an embedded log",
        history.catalog.len(),
        history.searches.len(),
        history.events.len() - history.searches.len()
    );
    let events = &config.events;
    publish_all(
        &bus.publisher(events, events.catalog()).await?,
        &history.catalog,
    )
    .await?;
    publish_all(
        &bus.publisher(events, events.searches()).await?,
        &history.events,
    )
    .await?;
    let searches_only = events.destination(&no_views_topic(config));
    publish_all(
        &bus.publisher(events, searches_only).await?,
        &history.searches,
    )
    .await?;

    let mut report = Report::default();
    for (i, kind) in spec.stores.iter().enumerate() {
        let group = format!("bench-rec-{run_id}-{i}");
        match kind {
            RecommendStoreKind::Embedded => {
                config.recommend.db_url = None;
                measure_store(spec, history, &bus, config, *kind, &group, &mut report).await?;
            }
            RecommendStoreKind::MySql => {
                let name = format!("bookstore_bench_{}", Uuid::new_v4().simple());
                let url = database_url(&spec.mysql_url, &name)?;
                config.recommend.db_url = Some(Secret(url.clone().into()));
                eprintln!("recommend: MySQL database {name}");
                let result =
                    measure_store(spec, history, &bus, config, *kind, &group, &mut report).await;
                drop_database(&url, &name).await;
                config.recommend.db_url = None;
                result?;
                if spec.members > 1 {
                    let name = format!("bookstore_bench_{}", Uuid::new_v4().simple());
                    let url = database_url(&spec.mysql_url, &name)?;
                    config.recommend.db_url = Some(Secret(url.clone().into()));
                    let group = format!("{group}-members");
                    let result =
                        measure_members(spec, history, &bus, config, &group, &mut report).await;
                    drop_database(&url, &name).await;
                    config.recommend.db_url = None;
                    result?;
                }
            }
        }
    }
    Ok(report)
}

/// The topic of the history without views.
fn no_views_topic(config: &Config) -> String {
    format!("{}-without-views", config.events.topic)
}

async fn drop_database(url: &str, name: &str) {
    use sqlx::migrate::MigrateDatabase;
    if let Err(err) = sqlx::MySql::drop_database(url).await {
        eprintln!("warning: cannot drop the MySQL database {name}: {err}");
    }
}

/// The searches applied by `spec.members` members of one group into one fresh MySQL database,
/// each with its own connection pool (as separate processes would be), the catalog first by one
/// of them: seconds from the start to the last event applied by any.
async fn measure_members(
    spec: &RecommendBench,
    history: &History,
    bus: &EventBus,
    config: &Config,
    group: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let name = RecommendStoreKind::MySql.name();
    let first = open_recommend_store(config).await?;
    eprintln!(
        "recommend: {name}: the catalog, for {} members",
        spec.members
    );
    consume(
        bus,
        config,
        group,
        vec![config.events.catalog_topic.clone()],
        first.clone(),
        history.catalog.len() as u64 + 1,
        name,
    )
    .await?;
    eprintln!(
        "recommend: {name}: the searches, {} members of one group",
        spec.members
    );
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut stats = Vec::new();
    for member in 0..spec.members {
        let store = if member == 0 {
            first.clone()
        } else {
            open_recommend_store(config).await?
        };
        let handler: Arc<dyn EventHandler> = store;
        let consumer = bus
            .consumer(
                &config.events,
                group,
                vec![
                    config.events.catalog_topic.clone(),
                    config.events.topic.clone(),
                ],
                handler,
                stop.clone(),
            )
            .await?;
        stats.push(consumer.stats());
        tasks.push(tokio::spawn(consumer.run()));
    }
    let expected = history.events.len() as u64;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3_600);
    let applied = |stats: &[Arc<ConsumerStats>]| -> u64 {
        stats
            .iter()
            .map(|s| s.applied.load(Ordering::Relaxed))
            .sum()
    };
    while applied(&stats) < expected {
        if Instant::now() > deadline {
            stop.cancel();
            bail!(
                "{} members did not apply the history within an hour",
                spec.members
            );
        }
        if let Some(ended) = tasks.iter().position(|t| t.is_finished()) {
            stop.cancel();
            let task = tasks.swap_remove(ended);
            task.await.context("member task")??;
            bail!("a member stopped before the searches were applied");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    for task in tasks {
        task.await.context("member task")??;
    }
    let shares: Vec<String> = stats
        .iter()
        .map(|s| s.applied.load(Ordering::Relaxed).to_string())
        .collect();
    eprintln!(
        "recommend: {name}: the members applied {} events",
        shares.join(" + ")
    );
    report.throughput.push(Throughput {
        backend: name,
        path: MEMBERS_PATH,
        events: expected,
        seconds,
    });
    Ok(())
}

/// The path of the figure of several members of one group.
pub const MEMBERS_PATH: &str = "handler: book.searched and book.viewed, --rec-members members of one group (framework, batches, exactly once)";
/// The paths of the handler's figures with and without views.
pub const VIEWS_PATH: &str =
    "handler: book.searched and book.viewed (framework, batches, exactly once)";
pub const SEARCHES_PATH: &str =
    "handler: book.searched (the history without views; framework, batches, exactly once)";

/// `server` with the database `name`: `mysql://u:p@host:port` → `mysql://u:p@host:port/name`,
/// keeping any `?options`.
fn database_url(server: &str, name: &str) -> anyhow::Result<String> {
    let (base, options) = match server.split_once('?') {
        Some((base, options)) => (base, Some(options)),
        None => (server, None),
    };
    let Some(rest) = base.strip_prefix("mysql://") else {
        bail!("--mysql-url must start with mysql://");
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    if host.trim_end_matches('/').contains('/') {
        bail!("--mysql-url must name the server only, without a database");
    }
    let base = base.trim_end_matches('/');
    Ok(match options {
        Some(options) => format!("{base}/{name}?{options}"),
        None => format!("{base}/{name}"),
    })
}

async fn measure_store(
    spec: &RecommendBench,
    history: &History,
    bus: &EventBus,
    config: &Config,
    kind: RecommendStoreKind,
    group: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let name = kind.name();
    let store = open_recommend_store(config).await?;

    // The catalog first, alone, then the searches with both topics subscribed as the service
    // does (the catalog topic is then at its end): a figure for each kind of event.
    eprintln!("recommend: {name}: applying the catalog through the framework");
    let seconds = consume(
        bus,
        config,
        group,
        vec![config.events.catalog_topic.clone()],
        store.clone(),
        history.catalog.len() as u64 + 1,
        name,
    )
    .await?;
    report.throughput.push(Throughput {
        backend: name,
        path: "handler: book.created (framework, batches, exactly once)",
        events: history.catalog.len() as u64,
        seconds,
    });
    eprintln!("recommend: {name}: applying the searches and views through the framework");
    let seconds = consume(
        bus,
        config,
        group,
        vec![
            config.events.catalog_topic.clone(),
            config.events.topic.clone(),
        ],
        store.clone(),
        history.events.len() as u64 + 1,
        name,
    )
    .await?;
    report.throughput.push(Throughput {
        backend: name,
        path: VIEWS_PATH,
        events: history.events.len() as u64,
        seconds,
    });

    eprintln!("recommend: {name}: the tutorial's one upsert per result book");
    let sample = &history.searches[..history.searches.len().min(BASELINE_EVENTS)];
    let (statements, seconds) = baseline(kind, config, sample).await?;
    report.throughput.push(Throughput {
        backend: name,
        path: "baseline: one upsert per result book, autocommit (the tutorial)",
        events: sample.len() as u64,
        seconds,
    });
    report.baseline_statements.push((name, statements));

    let started = Instant::now();
    let stats = store
        .stats()
        .await
        .context("cannot count what the store holds")?;
    report.held.push(Held {
        store: name,
        stats,
        stats_ms: started.elapsed().as_secs_f64() * 1e3,
    });

    // Quality: what the store recommends to a sample of readers, beside the most popular books
    // they were not shown, both scored against their favourite topics.
    let readers = quality_sample(history.users.len());
    eprintln!(
        "recommend: {name}: scoring the recommendations of {} readers",
        readers.len()
    );
    let lists = recommended(store.as_ref(), history, &readers).await?;
    report.quality.push(history.quality(name, DESIGN, &lists));
    let ranking = popularity_ranking(&history.popularity);
    let popular: Vec<(usize, Vec<i64>)> = readers
        .iter()
        .map(|&i| {
            let shown = history.shown.get(i).map_or(&[][..], Vec::as_slice);
            (i, popular_unseen(&ranking, shown, QUALITY_N))
        })
        .collect();
    report
        .quality
        .push(history.quality(name, POPULARITY, &popular));

    eprintln!("recommend: {name}: {} requests per endpoint", spec.requests);
    let answers: Arc<dyn RecommendReads> = store;
    report
        .latency
        .extend(latency(answers, &history.users, spec.requests, name).await?);

    // The same history without its views, into a store of its own: the handler's rate on
    // searches alone, and what the recommendations are without views.
    let mut bare = Config {
        data_dir: config.data_dir.clone(),
        events: config.events.clone(),
        recommend: config.recommend.clone(),
        ..Config::default()
    };
    bare.events.topic = no_views_topic(config);
    let database = match kind {
        RecommendStoreKind::Embedded => {
            bare.data_dir = config.data_dir.join("without-views");
            None
        }
        RecommendStoreKind::MySql => {
            let name = format!("bookstore_bench_{}", Uuid::new_v4().simple());
            let url = database_url(&spec.mysql_url, &name)?;
            bare.recommend.db_url = Some(Secret(url.clone().into()));
            Some((url, name))
        }
    };
    let result =
        measure_without_views(history, bus, &bare, name, &format!("{group}-bare"), report).await;
    if let Some((url, name)) = database {
        drop_database(&url, &name).await;
    }
    result
}

/// What `store` recommends to each of `readers` (indices into `history.users`).
async fn recommended(
    store: &dyn RecommendBackend,
    history: &History,
    readers: &[usize],
) -> anyhow::Result<Vec<(usize, Vec<i64>)>> {
    let mut lists = Vec::with_capacity(readers.len());
    for &i in readers {
        let uid = &history.users[i];
        let books = store
            .recommend(uid, QUALITY_N)
            .await
            .with_context(|| format!("cannot recommend books to reader {uid}"))?;
        lists.push((i, books.into_iter().map(|b| b.id).collect::<Vec<i64>>()));
    }
    Ok(lists)
}

/// The catalog and the searches alone (`config.events.topic` is the history without views) into
/// the store `config` names: the handler's rate, and the quality of its recommendations to the
/// same readers as the store with views.
async fn measure_without_views(
    history: &History,
    bus: &EventBus,
    config: &Config,
    name: &'static str,
    group: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let store = open_recommend_store(config).await?;
    eprintln!("recommend: {name}: the same history without views, into another store");
    consume(
        bus,
        config,
        group,
        vec![config.events.catalog_topic.clone()],
        store.clone(),
        history.catalog.len() as u64 + 1,
        name,
    )
    .await?;
    let seconds = consume(
        bus,
        config,
        group,
        vec![
            config.events.catalog_topic.clone(),
            config.events.topic.clone(),
        ],
        store.clone(),
        history.searches.len() as u64 + 1,
        name,
    )
    .await?;
    report.throughput.push(Throughput {
        backend: name,
        path: SEARCHES_PATH,
        events: history.searches.len() as u64,
        seconds,
    });
    let readers = quality_sample(history.users.len());
    let lists = recommended(store.as_ref(), history, &readers).await?;
    report.quality.push(history.quality(name, NO_VIEWS, &lists));
    Ok(())
}

/// Applies `topics` to `store` as group `group` until `expected` events are applied: seconds from
/// the first event consumed to the last one applied.
async fn consume(
    bus: &EventBus,
    config: &Config,
    group: &str,
    topics: Vec<String>,
    store: Arc<dyn RecommendBackend>,
    expected: u64,
    name: &str,
) -> anyhow::Result<f64> {
    let handler: Arc<dyn EventHandler> = store;
    let stop = CancellationToken::new();
    let consumer = bus
        .consumer(&config.events, group, topics, handler, stop.clone())
        .await?;
    let stats = consumer.stats();
    let mut task = tokio::spawn(consumer.run());
    let progress = tokio::spawn(progress(stats.clone(), expected, name.to_owned()));
    let waited = tokio::select! {
        seconds = wait_applied(&stats, expected, Duration::from_secs(3_600)) => seconds,
        ended = &mut task => {
            progress.abort();
            match ended {
                Ok(Ok(())) => bail!("the consumer stopped before applying every event"),
                Ok(Err(err)) => return Err(err),
                Err(err) => return Err(err).context("consumer task"),
            }
        }
    };
    progress.abort();
    stop.cancel();
    task.await.context("consumer task")??;
    let seconds = waited?;
    let batches = stats.batches.load(Ordering::Relaxed).max(1);
    eprintln!(
        "recommend: {name}: {batches} batches, {} retries, {} stale, {} dead-lettered",
        stats.retries.load(Ordering::Relaxed),
        stats.stale.load(Ordering::Relaxed),
        stats.dead_lettered.load(Ordering::Relaxed),
    );
    Ok(seconds)
}

/// Prints how far a long run is, every 30 seconds.
async fn progress(stats: Arc<ConsumerStats>, expected: u64, name: String) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let applied = stats.applied.load(Ordering::Relaxed);
        eprintln!(
            "recommend: {name}: {applied} of {expected} events applied after {:.0} s ({:.0}/s)",
            started.elapsed().as_secs_f64(),
            applied as f64 / started.elapsed().as_secs_f64().max(1e-9)
        );
    }
}

const SQLITE_BASELINE_TABLE: &str = concat!(
    "CREATE TABLE IF NOT EXISTS baseline_interests (user_id TEXT NOT NULL, ",
    "book_id INTEGER NOT NULL, title TEXT NOT NULL, author TEXT NOT NULL, ",
    "score INTEGER NOT NULL, PRIMARY KEY (user_id, book_id))"
);
const SQLITE_BASELINE_UPSERT: &str = concat!(
    "INSERT INTO baseline_interests (user_id, book_id, title, author, score) ",
    "VALUES (?, ?, ?, ?, 1) ON CONFLICT (user_id, book_id) DO UPDATE SET score = score + 1"
);
const MYSQL_BASELINE_TABLE: &str = concat!(
    "CREATE TABLE IF NOT EXISTS baseline_interests (user_id VARCHAR(191) NOT NULL, ",
    "book_id BIGINT NOT NULL, title TEXT NOT NULL, author VARCHAR(255) NOT NULL, ",
    "score BIGINT NOT NULL, PRIMARY KEY (user_id, book_id)) ",
    "ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
);
const MYSQL_BASELINE_UPSERT: &str = concat!(
    "INSERT INTO baseline_interests (user_id, book_id, title, author, score) ",
    "VALUES (?, ?, ?, ?, 1) ON DUPLICATE KEY UPDATE score = score + 1"
);

/// The tutorial's recommendation consumer, in the store's own database: per search event of a
/// known user, per result book, one upsert adding 1 to the user's score of the book, each
/// awaited, in autocommit. Returns the statements run and the seconds they took.
async fn baseline(
    kind: RecommendStoreKind,
    config: &Config,
    events: &[Event],
) -> anyhow::Result<(u64, f64)> {
    let url = config.recommend_db_url();
    let url = url.expose_secret();
    let rows = events
        .iter()
        .filter_map(Event::as_search)
        .filter_map(|e| e.user_id.as_ref().map(|u| (u, &e.results)));
    let mut statements = 0u64;
    match kind {
        RecommendStoreKind::Embedded => {
            let pool = bookstore_sqlite::connect(url, 1).await?;
            sqlx::query(SQLITE_BASELINE_TABLE).execute(&pool).await?;
            let started = Instant::now();
            for (user, results) in rows {
                for book in results {
                    sqlx::query(SQLITE_BASELINE_UPSERT)
                        .bind(user)
                        .bind(book.id)
                        .bind(&book.title)
                        .bind(&book.author)
                        .execute(&pool)
                        .await?;
                    statements += 1;
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            pool.close().await;
            Ok((statements, seconds))
        }
        RecommendStoreKind::MySql => {
            let pool = bookstore_mysql::connect(url, 1).await?;
            sqlx::query(MYSQL_BASELINE_TABLE).execute(&pool).await?;
            let started = Instant::now();
            for (user, results) in rows {
                for book in results {
                    sqlx::query(MYSQL_BASELINE_UPSERT)
                        .bind(user)
                        .bind(book.id)
                        .bind(&book.title)
                        .bind(&book.author)
                        .execute(&pool)
                        .await?;
                    statements += 1;
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            pool.close().await;
            Ok((statements, seconds))
        }
    }
}

#[derive(Deserialize)]
struct Answer {
    kind: String,
}

/// Serves the recommendation API on a free port and times `requests` sequential requests to
/// each endpoint, alternating, for random known users (the same users for every store).
async fn latency(
    store: Arc<dyn RecommendReads>,
    users: &[String],
    requests: u64,
    name: &'static str,
) -> anyhow::Result<Vec<HttpLatency>> {
    if users.is_empty() {
        bail!("the history has no known user to ask about");
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let routers = bookstore_recommend::router(
        RecommendState { store },
        bookstore_http::Surface {
            service: "recommend",
            continue_traces: true,
            title: "bench",
            description: "bench",
            readiness: bookstore_http::Readiness::new(),
            collectors: Vec::new(),
            request_timeout: bookstore_http::Limits::default().request_timeout,
            // `/interests` beside `/recommendations`, on one port.
            ops: bookstore_http::OpsRoutes::OnPublicPort,
        },
    );
    let stop = CancellationToken::new();
    let server = tokio::spawn(bookstore_http::serve(
        listener,
        routers.public,
        bookstore_http::Limits::default(),
        "recommend",
        stop.clone().cancelled_owned(),
        Duration::from_secs(4),
    ));
    let result = measure_requests(&base, users, requests, name).await;
    stop.cancel();
    server.await.context("server task")??;
    result
}

async fn measure_requests(
    base: &str,
    users: &[String],
    requests: u64,
    name: &'static str,
) -> anyhow::Result<Vec<HttpLatency>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut rng = ChaCha8Rng::seed_from_u64(SEED + 1);
    let mut pick = || users[rng.random_range(0..users.len())].as_str();
    let new_histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
    let (mut rec, mut int) = (new_histogram()?, new_histogram()?);
    let (mut rec_errors, mut int_errors) = (0u64, 0u64);
    let mut full = 0u64;
    let mut reasons = [0u64; 4];
    for i in 0..WARM_UP_REQUESTS + requests {
        let measured = i >= WARM_UP_REQUESTS;
        let (a, b) = (pick(), pick());
        // Alternate which endpoint goes first.
        for which in [i % 2, 1 - i % 2] {
            let (url, user) = if which == 0 {
                (format!("{base}/recommendations"), a)
            } else {
                (format!("{base}/interests"), b)
            };
            let started = Instant::now();
            let response = client
                .get(&url)
                .query(&[("uid", user), ("n", "10")])
                .send()
                .await?;
            let status = response.status();
            let body = response.bytes().await?;
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            if !measured {
                continue;
            }
            let (histogram, errors) = if which == 0 {
                (&mut rec, &mut rec_errors)
            } else {
                (&mut int, &mut int_errors)
            };
            let _ = histogram.record(micros.max(1));
            if !status.is_success() {
                *errors += 1;
                continue;
            }
            if which == 0 {
                let answers: Vec<Answer> = serde_json::from_slice(&body)
                    .context("GET /recommendations answered something else than a list")?;
                if answers.len() == RESULTS {
                    full += 1;
                }
                for answer in &answers {
                    let kind = match answer.kind.as_str() {
                        KIND_SEARCHED => 0,
                        KIND_VIEWED => 1,
                        KIND_AUTHOR => 2,
                        _ => 3,
                    };
                    reasons[kind] += 1;
                }
            }
        }
    }
    let row = |endpoint, h: &Histogram<u64>, errors, full, reasons| {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        HttpLatency {
            store: name,
            endpoint,
            requests: h.len(),
            errors,
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
            full,
            reasons,
        }
    };
    Ok(vec![
        row(
            "GET /recommendations?n=10",
            &rec,
            rec_errors,
            Some(full),
            Some(reasons),
        ),
        row(
            "GET /interests (the tutorial's, baseline)",
            &int,
            int_errors,
            None,
            None,
        ),
    ])
}

/// The report as Markdown tables.
pub fn table(report: &Report) -> String {
    let s = &report.shape;
    let mut out = format!(
        "\nrecommendation history: {} books by {} authors in {} topics of {TOPIC_BOOKS}, {} searches ({} anonymous) of {RESULTS} results by {} users ({} of them searched), {} views by known readers ({} of them off-topic: each result of a favourite topic opened with chance {VIEW_SHARE}, each result of another topic with chance {OFF_TOPIC_VIEW_SHARE}, as readers also open what they are not interested in)\n",
        s.books,
        s.authors,
        s.topics,
        s.searches,
        s.anonymous,
        s.users,
        s.known_users,
        s.views,
        s.off_topic_views
    );
    out.push('\n');
    out.push_str(&throughput_table(
        "recommendation store",
        &report.throughput,
    ));
    out.push('\n');
    for (store, statements) in &report.baseline_statements {
        let find = |prefix: &str| {
            report
                .throughput
                .iter()
                .find(|t| t.backend == *store && t.path.starts_with(prefix))
        };
        if let (Some(ours), Some(baseline)) = (find(SEARCHES_PATH), find("baseline")) {
            let ratio = ours.per_second() / baseline.per_second().max(1e-9);
            out.push_str(&format!(
                "{store}: the recommendation handler applies search events at {ratio:.2}x the rate of the tutorial's consumer ({statements} upserts for {} events); goal at least {GOAL_RATIO}x: {}\n",
                baseline.events,
                if ratio >= GOAL_RATIO { "met" } else { "missed" }
            ));
            if let Some(views) = find(VIEWS_PATH) {
                out.push_str(&format!(
                    "{store}: with views, the handler applies {:.0} events/s ({:.2}x its rate on the searches alone)\n",
                    views.per_second(),
                    views.per_second() / ours.per_second().max(1e-9)
                ));
                if let Some(members) = find(MEMBERS_PATH) {
                    out.push_str(&format!(
                        "{store}: the members of one group together apply {:.2}x the rate of one\n",
                        members.per_second() / views.per_second().max(1e-9)
                    ));
                }
            }
        }
    }
    out.push_str(
        "\n| recommendation store | endpoint | requests | errors | p50 ms | p95 ms | p99 ms | max ms | answers with 10 books |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for l in &report.latency {
        let full = l.full.map_or_else(
            || "".to_owned(),
            |f| format!("{:.1}%", 100.0 * f as f64 / l.requests.max(1) as f64),
        );
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {full} |\n",
            l.store, l.endpoint, l.requests, l.errors, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
        ));
    }
    out.push('\n');
    for rec in report.latency.iter().filter(|l| l.full.is_some()) {
        let baseline = report
            .latency
            .iter()
            .find(|l| l.store == rec.store && l.full.is_none());
        if let Some(baseline) = baseline {
            out.push_str(&format!(
                "{}: /recommendations p99 is {:.1}x the p99 of /interests; goal p99 < {GOAL_P99_MS} ms: {}\n",
                rec.store,
                rec.p99_ms / baseline.p99_ms.max(1e-9),
                if rec.p99_ms < GOAL_P99_MS { "met" } else { "missed" }
            ));
        }
        if let Some([searched, viewed, author, popular]) = rec.reasons {
            let total = (searched + viewed + author + popular).max(1) as f64;
            out.push_str(&format!(
                "{}: reasons of the books recommended: {:.0}% searches, {:.0}% views, {:.0}% author, {:.0}% popular\n",
                rec.store,
                100.0 * searched as f64 / total,
                100.0 * viewed as f64 / total,
                100.0 * author as f64 / total,
                100.0 * popular as f64 / total
            ));
        }
    }
    for held in &report.held {
        out.push_str(&format!(
            "{}: holds {} catalog books, {} reader profiles, {} query records (counted in {:.0} ms)\n",
            held.store,
            held.stats.catalog_books,
            held.stats.users,
            held.stats.query_records,
            held.stats_ms
        ));
    }
    if !report.quality.is_empty() {
        out.push_str(&quality_table(&report.quality));
    }
    out
}

/// The quality scores as a Markdown table, and what they mean.
fn quality_table(quality: &[Quality]) -> String {
    let mut out = String::from(
        "\n| recommendation store | recommender | readers scored | precision@10 | catalog coverage | precision vs popularity |\n|---|---|---:|---:|---:|---:|\n",
    );
    for q in quality {
        let versus = if q.recommender == POPULARITY {
            "1.0x".to_owned()
        } else {
            quality
                .iter()
                .find(|p| p.store == q.store && p.recommender == POPULARITY)
                .filter(|p| p.precision_at_10 > 0.0)
                .map_or_else(
                    || "n/a".to_owned(),
                    |p| format!("{:.1}x", q.precision_at_10 / p.precision_at_10),
                )
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.1}% | {:.2}% | {versus} |\n",
            q.store,
            q.recommender,
            q.users,
            100.0 * q.precision_at_10,
            100.0 * q.coverage
        ));
    }
    out.push_str(&format!(
        "\nprecision@{QUALITY_N} = share of the recommended books that are from one of the reader's favourite topics (over all the books recommended to the readers scored); catalog coverage = distinct books recommended to them / books in the catalog; popularity only = the {QUALITY_N} books most often in search results that the reader was not shown\n"
    ));
    for q in quality.iter().filter(|q| q.full < q.users) {
        out.push_str(&format!(
            "{}: {}: {} of {} readers scored got fewer than {QUALITY_N} books\n",
            q.store,
            q.recommender,
            q.users - q.full,
            q.users
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_is_deterministic_and_topical() {
        let a = history(100, 1_000, 500, 7);
        let b = history(100, 1_000, 500, 7);
        assert_eq!(a.catalog.len(), 1_000);
        assert_eq!(a.searches.len(), 500);
        assert_eq!(a.users, b.users);
        assert!(a.shape.views > 0 && a.events.len() == 500 + a.shape.views as usize);
        // The views of a known reader follow their search, of its results; most in a favourite
        // topic, some (fewer per result shown) not.
        let mut last: Option<&SearchEvent> = None;
        let (mut on_topic, mut off_topic) = (0u64, 0u64);
        for e in &a.events {
            match (e.as_search(), e.as_view()) {
                (Some(search), _) => last = Some(search),
                (_, Some(view)) => {
                    let search = last.expect("a view follows a search");
                    assert_eq!(view.user_id, search.user_id);
                    assert!(view.user_id.is_some());
                    assert!(search.results.iter().any(|r| r.id == view.book.id));
                    let i = a
                        .users
                        .iter()
                        .position(|u| Some(u) == view.user_id.as_ref());
                    let topic = a.topic_of(view.book.id).unwrap();
                    if a.favourites[i.unwrap()].contains(&topic) {
                        on_topic += 1;
                    } else {
                        off_topic += 1;
                    }
                }
                _ => unreachable!("the history holds searches and views"),
            }
        }
        assert_eq!(on_topic + off_topic, a.shape.views);
        assert_eq!(off_topic, a.shape.off_topic_views);
        assert!(off_topic > 0 && off_topic < on_topic);
        let views = |h: &History| -> Vec<(Option<String>, i64)> {
            h.events
                .iter()
                .filter_map(Event::as_view)
                .map(|v| (v.user_id.clone(), v.book.id))
                .collect()
        };
        assert_eq!(views(&a), views(&b));
        let books = |h: &History| -> Vec<(Option<String>, Vec<i64>)> {
            h.searches
                .iter()
                .filter_map(Event::as_search)
                .map(|e| (e.user_id.clone(), e.results.iter().map(|r| r.id).collect()))
                .collect()
        };
        assert_eq!(books(&a), books(&b));
        for e in a.searches.iter().filter_map(Event::as_search) {
            assert_eq!(e.results.len(), RESULTS);
            let topic = (e.results[0].id - 1) / TOPIC_BOOKS as i64;
            assert!(
                e.results
                    .iter()
                    .all(|r| (r.id - 1) / TOPIC_BOOKS as i64 == topic)
            );
            let mut ids: Vec<i64> = e.results.iter().map(|r| r.id).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), RESULTS);
        }
        assert!(a.shape.anonymous > 20 && a.shape.anonymous < 90);
    }

    #[test]
    fn the_history_knows_what_each_reader_was_shown() {
        let h = history(50, 500, 300, 3);
        assert_eq!(h.favourites.len(), h.users.len());
        assert_eq!(h.shown.len(), h.users.len());
        assert_eq!(h.popularity.len(), 500);
        assert_eq!(h.popularity.iter().sum::<u64>(), 300 * RESULTS as u64);
        let mut shown: Vec<Vec<i64>> = vec![Vec::new(); h.users.len()];
        for e in h.searches.iter().filter_map(Event::as_search) {
            if let Some(user) = &e.user_id {
                let i = h.users.iter().position(|u| u == user).unwrap();
                shown[i].extend(e.results.iter().map(|r| r.id));
            }
        }
        for books in &mut shown {
            books.sort_unstable();
            books.dedup();
        }
        assert_eq!(h.shown, shown);
        for (favourites, books) in h.favourites.iter().zip(&h.shown) {
            assert!((2..=3).contains(&favourites.len()));
            assert!(favourites.iter().all(|&t| t < h.shape.topics));
            assert!(!books.is_empty());
        }
        assert_eq!(h.topic_of(1), Some(0));
        assert_eq!(h.topic_of(500), Some(9));
    }

    #[test]
    fn the_baseline_skips_shown_books_and_precision_counts_favourite_topics() {
        // Books 1 to 5, in search results 3, 5, 5, 1 and 0 times.
        let ranking = popularity_ranking(&[3, 5, 5, 1, 0]);
        assert_eq!(ranking, [2, 3, 1, 4, 5]);
        assert_eq!(popular_unseen(&ranking, &[], 2), [2, 3]);
        assert_eq!(popular_unseen(&ranking, &[2, 4], 3), [3, 1, 5]);
        assert_eq!(
            popular_unseen(&ranking, &[1, 2, 3, 4, 5], 3),
            Vec::<i64>::new()
        );

        // 120 books in 2 topics: 1 to 50 in topic 0, 51 to 120 in topic 1 (the remainder).
        let topic = |id| topic_of_book(id, 120, 2);
        assert_eq!(
            [topic(1), topic(50), topic(51), topic(120)],
            [Some(0), Some(0), Some(1), Some(1)]
        );
        assert_eq!([topic(0), topic(-3), topic(121)], [None, None, None]);

        // A likes topic 0 and got 1, 60, 2 (2 on topic); B likes both and got 100 (on topic);
        // C got nothing. 3 of 4 books on topic, 4 distinct books of 120.
        let lists: [(&[u64], &[i64]); 3] = [(&[0], &[1, 60, 2]), (&[0, 1], &[100]), (&[1], &[])];
        let q = score("s", DESIGN, lists, topic, 120);
        assert_eq!((q.users, q.recommended, q.full), (3, 4, 0));
        assert!((q.precision_at_10 - 0.75).abs() < 1e-12);
        assert!((q.coverage - 4.0 / 120.0).abs() < 1e-12);

        // Duplicates count once for coverage, every time for precision; a full list counts.
        let ten: Vec<i64> = vec![51; QUALITY_N];
        let q = score("s", POPULARITY, [(&[0u64][..], ten.as_slice())], topic, 120);
        assert_eq!((q.users, q.recommended, q.full), (1, QUALITY_N as u64, 1));
        assert!(q.precision_at_10.abs() < 1e-12);
        assert!((q.coverage - 1.0 / 120.0).abs() < 1e-12);
        let empty = score("s", DESIGN, Vec::<(&[u64], &[i64])>::new(), topic, 0);
        assert_eq!((empty.precision_at_10, empty.coverage), (0.0, 0.0));

        let table = quality_table(&[
            Quality {
                store: "s",
                recommender: DESIGN,
                users: 3,
                recommended: 30,
                full: 3,
                precision_at_10: 0.84,
                coverage: 0.0123,
            },
            Quality {
                store: "s",
                recommender: POPULARITY,
                users: 3,
                recommended: 30,
                full: 3,
                precision_at_10: 0.2,
                coverage: 0.0001,
            },
        ]);
        assert!(table.contains("| s | this design | 3 | 84.0% | 1.23% | 4.2x |"));
        assert!(table.contains("| s | popularity only (baseline) | 3 | 20.0% | 0.01% | 1.0x |"));
    }

    #[test]
    fn the_database_goes_after_the_server() {
        assert_eq!(
            database_url("mysql://u:p@h:3306", "db").unwrap(),
            "mysql://u:p@h:3306/db"
        );
        assert_eq!(
            database_url("mysql://u:p@h:3306/?ssl-mode=disabled", "db").unwrap(),
            "mysql://u:p@h:3306/db?ssl-mode=disabled"
        );
        assert!(database_url("mysql://u:p@h:3306/other", "db").is_err());
        assert!(database_url("postgres://h", "db").is_err());
    }
}
