//! The real stores from `dev/services` stopped for a few seconds under load, then started again:
//! Redis under the trend service, MariaDB under the web and recommendation services. Nothing
//! answers 500, nothing waits beyond a bound, the services recover by themselves, and every
//! event is applied exactly once.
//!
//! Its own test binary because it stops servers the other tests use (cargo runs test binaries
//! one after the other); each server is started again even when the test fails. Run it
//! sparingly while others use the same servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bookstore_app::Remotes;
use bookstore_app::config::Secret;
use bookstore_app::recommend::open_recommend_store;
use bookstore_domain::Published;
use bookstore_domain::events::{Event, ResultBook, SearchEvent};
use bookstore_testkit::conformance::recommend as conformance;
use bookstore_testkit::{Backend, Recorder, process::RestartOnDrop, process::services, wait_until};
use bookstore_testkit_app::{
    RunningConsumer, TestBus, start_recommend, start_trend, start_web, use_redis_trends,
};
use chrono::Utc;
use serde_json::Value;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// Three readers (`uid` cookies) take turns.
const READERS: [&str; 3] = [
    "5b0f3c1e-8a2d-4e6f-9b7c-1d2e3f4a5b6c",
    "6c1a4d2f-9b3e-4f70-8c8d-2e3f4a5b6c7d",
    "7d2b5e30-ac4f-4081-9d9e-3f4a5b6c7d8e",
];
const QUERIES: [&str; 5] = ["austen", "dickens", "twain", "shelley", "tolstoy"];

// ------------------------------------------------------------------ stopping and starting

// ------------------------------------------------------------------ load

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Search,
    Write,
    Healthz,
    Readyz,
}

/// One HTTP call of the load and what it got.
#[derive(Debug, Clone)]
struct Call {
    kind: Kind,
    /// The query of a search.
    label: String,
    started: Instant,
    elapsed: Duration,
    /// 0: no answer (connection refused, or the client's 20 s timeout).
    status: u16,
    body: String,
}

impl Call {
    fn finished(&self) -> Instant {
        self.started + self.elapsed
    }
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} {} -> {} in {:?}: {}",
            self.kind,
            self.label,
            self.status,
            self.elapsed,
            self.body.chars().take(200).collect::<String>()
        )
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Sends `make(i)` every `every`, without waiting for earlier answers (an open-loop load, as
/// readers arriving on their own), until `stop`; then waits for every answer.
fn stream<F>(every: Duration, stop: CancellationToken, make: F) -> JoinHandle<Vec<Call>>
where
    F: Fn(usize) -> (Kind, String, reqwest::RequestBuilder) + Send + 'static,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut calls = JoinSet::new();
        for i in 0.. {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let (kind, label, request) = make(i);
            calls.spawn(async move {
                let started = Instant::now();
                let (status, body) = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        (status, response.text().await.unwrap_or_default())
                    }
                    Err(error) => (0, format!("no answer: {error}")),
                };
                Call {
                    kind,
                    label,
                    started,
                    elapsed: started.elapsed(),
                    status,
                    body,
                }
            });
        }
        let mut all = Vec::new();
        while let Some(call) = calls.join_next().await {
            all.push(call.unwrap());
        }
        all.sort_by_key(|c| c.started);
        all
    })
}

/// 20 searches a second through `GET /api/books?q=`, the readers and queries taking turns.
fn searches(web: &str, stop: CancellationToken) -> JoinHandle<Vec<Call>> {
    let http = client();
    let web = web.to_owned();
    stream(Duration::from_millis(50), stop, move |i| {
        let q = QUERIES[i % QUERIES.len()];
        let request = http.get(format!("{web}/api/books?q={q}")).header(
            "cookie",
            bookstore_testkit_app::uid_cookie(READERS[i % READERS.len()]),
        );
        (Kind::Search, q.to_owned(), request)
    })
}

fn describe(calls: &[Call], kind: Kind) -> String {
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    for call in calls.iter().filter(|c| c.kind == kind) {
        *by_status.entry(call.status).or_default() += 1;
        slowest = slowest.max(call.elapsed);
    }
    format!("{kind:?}: {by_status:?} by status, slowest {slowest:?}")
}

fn failures<'a>(calls: &'a [Call], bad: impl Fn(&Call) -> bool + 'a) -> Vec<String> {
    calls
        .iter()
        .filter(|c| bad(c))
        .map(ToString::to_string)
        .collect()
}

// ------------------------------------------------------------------ Redis

/// All-time counts per normalized query, from `GET /trends?by=count` (`None` while it fails).
async fn trend_counts(http: &reqwest::Client, trend: &str) -> Option<BTreeMap<String, u64>> {
    let response = http
        .get(format!("{trend}/trends?by=count&ps=100&all=true"))
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let trends: Vec<Value> = response.json().await.ok()?;
    Some(
        trends
            .iter()
            .map(|t| {
                (
                    t["query_normalized"].as_str().unwrap().to_owned(),
                    t["count"].as_u64().unwrap(),
                )
            })
            .collect(),
    )
}

/// The trend service on Kafka and Redis, the web service publishing 20 searches a second; Redis
/// stops for 3 s. Searches never need Redis, so all answer 200; the trend consumer retries its
/// batch until Redis is back, and in the end every search is counted once.
///
/// `dev/services` runs Redis without persistence, so its restart also empties it: the stored
/// positions are gone, the consumer's next batch is refused as stale, and the consumer reads its
/// partitions again from the beginning, rebuilding every count. The counts checked here are
/// those of the rebuilt store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn searches_are_counted_once_across_a_redis_restart() {
    let began = Instant::now();
    let mut bus = TestBus::new(Backend::Kafka).await;
    bus.config.trend.group_id = format!("trend-restart-{}", uuid::Uuid::new_v4().simple());
    use_redis_trends(&mut bus.config).await;
    let (trend, consumer) = start_trend(&bus.config).await;
    let (web, publisher) = start_web(&bus.config, Remotes::default()).await;
    let partitions = u64::from(bus.config.events.partitions);
    wait_until(
        Duration::from_secs(60),
        "the trend consumer to own its partitions",
        || async { consumer.owned_partitions.load(Ordering::Relaxed) == partitions },
    )
    .await;

    let stop = CancellationToken::new();
    let load = searches(&web.url, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let retries_before = consumer.retries.load(Ordering::Relaxed);
    let mut guard = RestartOnDrop::new("redis");
    let stopping = services("stop", "redis").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let starting = services("start", "redis").await;
    guard.armed = false;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let calls = load.await.unwrap();
    let retries = consumer.retries.load(Ordering::Relaxed);
    eprintln!(
        "Redis: stopping took {stopping:?}, starting {starting:?}; {}; the trend consumer \
         retried {retries} times ({retries_before} before the outage), {} stale batches",
        describe(&calls, Kind::Search),
        consumer.stale.load(Ordering::Relaxed),
    );

    assert!(calls.len() >= 100, "{} searches only", calls.len());
    let failed = failures(&calls, |c| c.status != 200);
    assert!(failed.is_empty(), "searches failed: {failed:#?}");
    assert!(
        retries > retries_before,
        "the trend consumer never retried a batch while Redis was down"
    );

    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for call in &calls {
        *expected.entry(call.label.clone()).or_default() += 1;
    }
    let http = client();
    let mut last = None;
    let counted = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            last = trend_counts(&http, &trend.url).await;
            if last.as_ref() == Some(&expected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        counted.is_ok(),
        "the trend counts never matched the searches made: expected {expected:?}, last {last:?}"
    );
    // Nothing arrives late and counts twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        trend_counts(&http, &trend.url).await,
        Some(expected),
        "a search was counted twice"
    );
    assert_eq!(publisher.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(publisher.failed.load(Ordering::Relaxed), 0);
    web.shutdown().await;
    trend.shutdown().await;
    eprintln!("the Redis restart test took {:?}", began.elapsed());
}

// ------------------------------------------------------------------ MariaDB

/// A synthetic search by one of seven readers: events the recommendation consumer has to apply
/// while MariaDB is down, whatever the web service does.
fn direct_search(i: usize) -> Event {
    let results = (0..3)
        .map(|k| {
            let id = ((i * 7 + k * 11) % 30 + 1) as i64;
            ResultBook {
                id,
                title: format!("Direct book {id}"),
                author: format!("Author {}", id % 5),
                published_at: None,
            }
        })
        .collect();
    Event::BookSearched(SearchEvent::new(
        uuid::Uuid::now_v7(),
        Utc::now(),
        Some(format!("direct-reader-{}", i % 7)),
        &format!("direct {}", i % 5),
        0,
        results,
    ))
}

fn is_json_error(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|e| !e.is_empty())
}

/// The web service (catalog on MariaDB) and the recommendation service (store on MariaDB), on
/// Kafka, under 20 searches a second through the web service, a write every 300 ms, health
/// probes, and 50 search events a second published directly; MariaDB stops for about 6 s.
///
/// While it is down: writes answer 503 with a JSON error, `/healthz` 200, `/readyz` 503 naming
/// the database; searches may answer 503 (the catalog is in the database), never 500; nothing
/// waits beyond a bound (the pool's 5 s acquire timeout). After it is back the web service
/// answers writes and searches again by itself, and the recommendation store holds exactly what
/// the rules give for every event in the topics applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn web_and_recommendations_ride_out_a_mariadb_restart() {
    // The services' warnings and errors in the output of a failing run: a 500 names its cause.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn,librdkafka=off,rdkafka=off")
        .try_init();
    let began = Instant::now();
    let mut bus = TestBus::new(Backend::Kafka).await;
    let catalog_url = bus.fresh_mysql_url("restart_catalog").await;
    bookstore_mysql::create_database_if_missing(&catalog_url)
        .await
        .unwrap();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let rec_url = bus.fresh_mysql_url("restart_rec").await;
    let config = &mut bus.config;
    config.db.url = Some(Secret(catalog_url.clone().into()));
    config.recommend.db_url = Some(Secret(rec_url.into()));
    config.recommend.group_id = format!("rec-restart-{run}");
    bookstore_testkit_app::unbounded_query_records(config);
    let config = &bus.config;
    let (web, publisher) = start_web(config, Remotes::default()).await;
    let (rec, consumer) = start_recommend(config).await;
    // Running: the sample catalog went through the outbox into the recommendation store.
    let http = client();
    wait_until(
        Duration::from_secs(60),
        "the sample catalog in the recommendation store",
        || async {
            let stats = match http.get(rec.ops("/stats")).send().await {
                Ok(response) if response.status() == 200 => response.json::<Value>().await.ok(),
                _ => None,
            };
            stats.is_some_and(|s| s["catalog_books"].as_u64() > Some(200))
        },
    )
    .await;

    let stop = CancellationToken::new();
    let direct = bus.publisher().await;
    let producer = tokio::spawn({
        let stop = stop.clone();
        let publisher = direct.port.clone();
        async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(20));
            let mut published = 0;
            while !stop.is_cancelled() {
                ticks.tick().await;
                assert_eq!(
                    publisher.publish(&direct_search(published)),
                    Published::Queued
                );
                published += 1;
            }
            published
        }
    });
    let search_load = searches(&web.url, stop.clone());
    let writes = stream(Duration::from_millis(300), stop.clone(), {
        let http = client();
        let url = web.url("/api/books");
        move |i| {
            let book = serde_json::json!({
                "title": format!("Restart book {i}"),
                "author": "Fault Tester",
                "published_at": "2001-02-03",
                "description": "written while MariaDB restarts",
            });
            let request = http
                .post(&url)
                .header("authorization", "Bearer test-token")
                .json(&book);
            (Kind::Write, format!("book {i}"), request)
        }
    });
    let probes = [("/healthz", Kind::Healthz), ("/readyz", Kind::Readyz)].map(|(path, kind)| {
        let http = client();
        let url = web.url(path);
        stream(Duration::from_millis(200), stop.clone(), move |_| {
            (kind, String::new(), http.get(&url))
        })
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    let retries_before = consumer.retries.load(Ordering::Relaxed);
    let mut guard = RestartOnDrop::new("mariadb");
    let stopping = services("stop", "mariadb").await;
    let down_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let up_from = Instant::now();
    let starting = services("start", "mariadb").await;
    let back = Instant::now();
    guard.armed = false;
    tokio::time::sleep(Duration::from_secs(9)).await;
    stop.cancel();
    let mut calls = search_load.await.unwrap();
    calls.extend(writes.await.unwrap());
    for probe in probes {
        calls.extend(probe.await.unwrap());
    }
    let published_directly = producer.await.unwrap();
    let retries = consumer.retries.load(Ordering::Relaxed);
    let searches_503 = calls
        .iter()
        .filter(|c| c.kind == Kind::Search && c.status == 503)
        .count();
    eprintln!(
        "MariaDB: stopping took {stopping:?}, down for {:?} before `start`, starting took \
         {starting:?}\n  {}\n  {}\n  {}\n  {}\n  {searches_503} searches answered 503; the \
         recommendation consumer retried {retries} times ({retries_before} before the outage)",
        up_from - down_from,
        describe(&calls, Kind::Search),
        describe(&calls, Kind::Write),
        describe(&calls, Kind::Healthz),
        describe(&calls, Kind::Readyz),
    );

    // Never a 500, never a request left without an answer, never a wait beyond a bound.
    let broken = failures(&calls, |c| {
        c.status == 0 || (c.status >= 500 && c.status != 503)
    });
    assert!(broken.is_empty(), "answers other than 503: {broken:#?}");
    let slow = failures(&calls, |c| c.elapsed > Duration::from_secs(8));
    assert!(slow.is_empty(), "answers slower than 8 s: {slow:#?}");
    let not_json = failures(&calls, |c| {
        c.status == 503 && c.kind != Kind::Readyz && !is_json_error(&c.body)
    });
    assert!(
        not_json.is_empty(),
        "503s without a JSON error: {not_json:#?}"
    );

    // While the database was surely down: from the end of `stop` to the start of `start`.
    let while_down = |c: &&Call| c.started >= down_from && c.finished() <= up_from;
    let down_writes: Vec<&Call> = calls
        .iter()
        .filter(|c| c.kind == Kind::Write)
        .filter(while_down)
        .collect();
    assert!(
        !down_writes.is_empty(),
        "no write was made while MariaDB was down"
    );
    for call in &down_writes {
        assert_eq!(call.status, 503, "a write while MariaDB was down: {call}");
    }
    let healthz: Vec<&Call> = calls.iter().filter(|c| c.kind == Kind::Healthz).collect();
    for call in &healthz {
        assert_eq!(call.status, 200, "{call}");
        assert!(call.elapsed < Duration::from_secs(3), "{call}");
    }
    assert!(
        healthz.iter().any(while_down),
        "no /healthz probe while MariaDB was down"
    );
    let down_ready: Vec<&Call> = calls
        .iter()
        .filter(|c| c.kind == Kind::Readyz)
        .filter(while_down)
        .collect();
    assert!(
        !down_ready.is_empty(),
        "no /readyz probe while MariaDB was down"
    );
    for call in &down_ready {
        assert_eq!(call.status, 503, "{call}");
        let body: Value = serde_json::from_str(&call.body).unwrap();
        let names_the_database = body["checks"].as_object().is_some_and(|checks| {
            checks.iter().any(|(role, state)| {
                ["database", "db", "catalog"]
                    .iter()
                    .any(|name| role.contains(name))
                    && state.as_str() != Some("ok")
            })
        });
        assert!(
            names_the_database,
            "/readyz while MariaDB was down names the database: {call}"
        );
    }

    // Recovered by itself: everything started 5 s after `start` returned succeeds.
    let settled = back + Duration::from_secs(5);
    let after: Vec<&Call> = calls.iter().filter(|c| c.started >= settled).collect();
    assert!(
        after.iter().filter(|c| c.kind == Kind::Write).count() >= 5,
        "too few writes after the restart"
    );
    for call in &after {
        let ok = match call.kind {
            Kind::Write => 201,
            _ => 200,
        };
        assert_eq!(call.status, ok, "after the restart: {call}");
    }

    // Every event, read back from the topics by a fresh group, and what the rules make of it.
    let searches_ok = calls
        .iter()
        .filter(|c| c.kind == Kind::Search && c.status == 200)
        .count();
    assert_eq!(
        direct.port.flush(Duration::from_secs(30)).await,
        0,
        "direct events undelivered"
    );
    let recorder = Arc::new(Recorder::default());
    let reader = read_topics(&bus, recorder.clone()).await;
    let pool = sqlx::MySqlPool::connect(&catalog_url).await.unwrap();
    let books: BTreeSet<i64> = sqlx::query_scalar::<_, i64>("SELECT id FROM books")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    pool.close().await;
    let searches_expected = searches_ok + published_directly;
    let catalog_in_log = |records: &[bookstore_domain::Record]| -> BTreeSet<i64> {
        records
            .iter()
            .filter_map(|r| match &r.event {
                Event::BookCreated(created) => Some(created.book.id),
                _ => None,
            })
            .collect()
    };
    wait_until(
        Duration::from_secs(60),
        "every search and catalog event in the topics",
        || async {
            recorder.searches().len() >= searches_expected
                && catalog_in_log(&recorder.records()).is_superset(&books)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.shutdown().await;
    let records = recorder.records();
    assert_eq!(
        recorder.searches().len(),
        searches_expected,
        "one search event per search answered 200, plus the direct ones"
    );
    assert_eq!(
        catalog_in_log(&records),
        books,
        "the catalog topic holds every book of the catalog, and no other"
    );
    let expected = conformance::reference(&config.recommend.settings(), &records);

    let store = open_recommend_store(config).await.unwrap();
    let mut last = None;
    let reached = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let held = store.snapshot().await.unwrap();
            last = held.difference(&expected);
            if last.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "the recommendation store never held every event applied once; last difference: {last:?}"
    );
    assert!(
        retries > retries_before,
        "the recommendation consumer never retried while MariaDB was down"
    );
    assert_eq!(publisher.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(publisher.failed.load(Ordering::Relaxed), 0);
    rec.shutdown().await;
    web.shutdown().await;
    eprintln!("the MariaDB restart test took {:?}", began.elapsed());
}

/// A fresh group reading the catalog and search topics into `recorder`.
async fn read_topics(bus: &TestBus, recorder: Arc<Recorder>) -> RunningConsumer {
    bus.consumer_of(
        &format!("restart-reader-{}", uuid::Uuid::new_v4().simple()),
        vec![
            bus.config.events.catalog_topic.clone(),
            bus.config.events.topic.clone(),
        ],
        recorder,
    )
    .await
}
