//! Both consumer services killed hard, again and again, while catalog and search events flow:
//! `bookstore trend` and `bookstore recommend` run as child processes and each is SIGKILLed at
//! random moments (delays from a seeded RNG; the seed is printed, and a failing run is repeated
//! with `BOOKSTORE_TEST_SEED=<seed>`) and started again. Afterwards each store holds exactly
//! what the domain rules give for every event applied once, and so does a fresh consumer group
//! replaying the topics into fresh stores.
//!
//! On the embedded defaults (embedded log, SQLite stores) and on the real servers from
//! `dev/services` (Kafka, Redis for trends, MariaDB for recommendations).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bookstore_app::config::Secret;
use bookstore_app::recommend::open_recommend_store;
use bookstore_app::trend::open_trend_store;
use bookstore_domain::Record;
use bookstore_domain::events::{BookEvent, CatalogBook, Event, ResultBook, SearchEvent};
use bookstore_domain::trends::TrendBoard;
use bookstore_testkit::conformance::recommend as conformance;
use bookstore_testkit::process::bookstore_child;
use bookstore_testkit_app::stores::{
    ExpectedRecommendations, ExpectedTrends, Replay, all_trends, wait_for_recommendations,
    wait_for_trends,
};
use bookstore_testkit_app::{
    Infra, TestBus, bus_with_fresh_groups, consumer_env, unbounded_query_records, use_redis_trends,
};
use chrono::Utc;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const BOOKS: i64 = 60;
const SEARCHES: usize = 2_000;
const KILLS: usize = 6;
/// Each backend's whole run, replays included.
const LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_log_and_sqlite() {
    killed_consumers_end_as_a_clean_replay(Infra::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_redis_mariadb() {
    killed_consumers_end_as_a_clean_replay(Infra::Real).await;
}

/// Prints the seed when the test fails, so the run can be repeated.
struct SeedOnFailure {
    infra: Infra,
    seed: u64,
}

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "consumer_crashes {:?} failed with seed {}: repeat it with BOOKSTORE_TEST_SEED={}",
                self.infra, self.seed, self.seed
            );
        }
    }
}

fn seed() -> u64 {
    match std::env::var("BOOKSTORE_TEST_SEED") {
        Ok(seed) => seed
            .parse()
            .unwrap_or_else(|_| panic!("BOOKSTORE_TEST_SEED={seed:?} is not a number")),
        Err(_) => rand::rng().random(),
    }
}

async fn killed_consumers_end_as_a_clean_replay(infra: Infra) {
    let seed = seed();
    let _report = SeedOnFailure { infra, seed };
    eprintln!("consumer_crashes {infra:?}: seed {seed}");
    let began = Instant::now();
    tokio::time::timeout(LIMIT, run(infra, seed))
        .await
        .unwrap_or_else(|_| panic!("{infra:?} took more than {LIMIT:?} (seed {seed})"));
    eprintln!("consumer_crashes {infra:?} took {:?}", began.elapsed());
}

/// A bus on `infra` with fresh groups and stores for both services.
async fn bus_on(infra: Infra) -> TestBus {
    let mut bus = bus_with_fresh_groups(infra, "crash").await;
    let config = &mut bus.config;
    // The expected records are the rules applied to every event in one partition; the topic
    // has several, each bounding its own lists: bounds that never bite here.
    unbounded_query_records(config);
    if infra == Infra::Real {
        use_redis_trends(config).await;
        let rec = bus.fresh_mysql_url("crash_rec").await;
        bus.config.recommend.db_url = Some(Secret(rec.into()));
    }
    bus
}

fn catalog_book(id: i64) -> CatalogBook {
    CatalogBook {
        isbn: None,
        id,
        title: format!("Book {id}"),
        author: format!("Author {}", id % 9),
        published_at: chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap().into(),
        description: String::new(),
        created_at: Utc::now(),
    }
}

/// The events in publication order: half the catalog first, the rest spread among the
/// searches. Each search happens 5 ms after the one before (so that no two searches of a query
/// tie on their time, which decides the books a trend shows), and each query has one spelling.
fn events(rng: &mut impl Rng) -> Vec<Event> {
    let created = |id: i64| {
        Event::BookCreated(BookEvent::new(
            uuid::Uuid::now_v7(),
            Utc::now(),
            catalog_book(id),
        ))
    };
    let mut events: Vec<Event> = (1..=BOOKS / 2).map(created).collect();
    let mut next_book = BOOKS / 2 + 1;
    let pool: Vec<i64> = (1..=BOOKS).collect();
    let base = Utc::now() - chrono::Duration::seconds(30);
    for i in 0..SEARCHES {
        if i % 60 == 30 && next_book <= BOOKS {
            events.push(created(next_book));
            next_book += 1;
        }
        let mut results = pool.clone();
        results.shuffle(rng);
        let user = (i % 4 != 0).then(|| format!("reader-{}", rng.random_range(0..40)));
        events.push(Event::BookSearched(SearchEvent::new(
            uuid::Uuid::now_v7(),
            base + chrono::Duration::milliseconds(5 * i as i64),
            user,
            &format!("Topic {}", rng.random_range(0..25)),
            0,
            results[..rng.random_range(0..8)]
                .iter()
                .map(|id| {
                    let b = catalog_book(*id);
                    ResultBook {
                        id: b.id,
                        title: b.title,
                        author: b.author,
                        published_at: Some(b.published_at),
                    }
                })
                .collect(),
        )));
    }
    events.extend((next_book..=BOOKS).map(created));
    events
}

/// Starts `bookstore <service>`, kills it (SIGKILL) after a random lifetime, `KILLS` times.
async fn kill_again_and_again(
    infra: Infra,
    service: &'static str,
    env: Vec<(String, String)>,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..KILLS {
        let mut child = bookstore_child(env!("CARGO_BIN_EXE_bookstore"), service, &env);
        let lifetime = Duration::from_millis(rng.random_range(500..2_000));
        tokio::time::sleep(lifetime).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!("{infra:?}: killed bookstore {service} {round} after {lifetime:?}");
    }
}

async fn run(infra: Infra, seed: u64) {
    let bus = bus_on(infra).await;
    let config = &bus.config;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let all = events(&mut rng);
    let records: Vec<Record> = all
        .iter()
        .enumerate()
        .map(|(i, event)| Record {
            topic: String::new(),
            partition: 0,
            offset: i as i64,
            event: event.clone(),
        })
        .collect();
    // What the rules give for every event applied once.
    let mut board = TrendBoard::new(config.trend.settings());
    for record in &records {
        if let Some(search) = record.event.as_search() {
            board.apply(search);
        }
    }
    let expected = conformance::reference(&config.recommend.settings(), &records);
    assert!(expected.queries.iter().any(|(_, r)| !r.related.is_empty()));

    let searches = bus.publisher().await;
    let catalog_events = &config.events;
    let catalog = bus
        .bus
        .publisher(catalog_events, catalog_events.catalog())
        .await
        .unwrap();
    let producer = {
        let searches = searches.port.clone();
        let catalog = catalog.port.clone();
        tokio::spawn(async move {
            for (i, event) in all.iter().enumerate() {
                if event.as_search().is_some() {
                    searches.publish(event)
                } else {
                    catalog.publish(event)
                };
                // About 13 s of events: longer than the kills, so that every service is
                // killed while events arrive, and the last ones leave work behind.
                if i % 16 == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    };

    let mut env = bus.env();
    env.extend(consumer_env(config));
    // Static membership on Kafka: a restarted instance takes its partitions back at once.
    let env_for = |instance: &str| {
        let mut env = env.clone();
        env.push((
            "BOOKSTORE_EVENTS__PROPERTIES__GROUP_INSTANCE_ID".into(),
            instance.into(),
        ));
        env
    };
    let trend_env = env_for("trend-1");
    let rec_env = env_for("rec-1");
    let killers = [
        tokio::spawn(kill_again_and_again(
            infra,
            "trend",
            trend_env.clone(),
            seed ^ 1,
        )),
        tokio::spawn(kill_again_and_again(
            infra,
            "recommend",
            rec_env.clone(),
            seed ^ 2,
        )),
    ];
    for killer in killers {
        killer.await.unwrap();
    }
    producer.await.unwrap();
    assert_eq!(searches.port.flush(Duration::from_secs(30)).await, 0);
    assert_eq!(catalog.port.flush(Duration::from_secs(30)).await, 0);

    // The services after their crashes, run to the end of the topics.
    let trends = open_trend_store(config).await.unwrap();
    let recommendations = open_recommend_store(config).await.unwrap();
    let before: u64 = all_trends(trends.as_ref(), Utc::now())
        .await
        .unwrap()
        .iter()
        .map(|t| t.count)
        .sum();
    eprintln!("{infra:?}: {before} of {SEARCHES} searches counted by the killed trend services");
    // The kills landed while events were being applied, not all before the first batch (which
    // would make this a plain replay).
    assert!(
        before > 0,
        "{infra:?}: the killed trend services applied nothing; the kills test nothing (seed {seed})"
    );
    let rec_stats = recommendations.stats().await.unwrap();
    assert!(
        rec_stats.users > 0,
        "{infra:?}: the killed recommendation services applied nothing (seed {seed})"
    );
    let mut trend_child = bookstore_child(env!("CARGO_BIN_EXE_bookstore"), "trend", &trend_env);
    let mut rec_child = bookstore_child(env!("CARGO_BIN_EXE_bookstore"), "recommend", &rec_env);
    wait_for_trends(
        trends.as_ref(),
        ExpectedTrends::Board(&board),
        "after the crashes",
    )
    .await;
    wait_for_recommendations(
        recommendations.as_ref(),
        ExpectedRecommendations::Snapshot(&expected),
        "after the crashes",
    )
    .await;
    for child in [&mut trend_child, &mut rec_child] {
        child.kill().unwrap();
        child.wait().unwrap();
    }

    // A clean replay: fresh groups from the beginning of the topics into fresh stores.
    let replayed = Replay::start(&bus, config).await;
    let (replayed_trends, replayed_recommendations) = (&replayed.trends, &replayed.recommendations);
    wait_for_trends(
        replayed_trends.as_ref(),
        ExpectedTrends::Board(&board),
        "the replay",
    )
    .await;
    wait_for_recommendations(
        replayed_recommendations.as_ref(),
        ExpectedRecommendations::Snapshot(&expected),
        "the replay",
    )
    .await;
    replayed.shutdown().await;
}
