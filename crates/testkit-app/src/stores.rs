//! Comparing consumer stores: a trend or recommendation store against what it should hold (the
//! domain rules applied to every event once, or what another store holds, such as a fresh
//! group's replay), waiting until they agree; and a fresh group replaying topics into a store.

use std::collections::BTreeMap;
use std::sync::Arc;

use bookstore_app::config::{Config, Secret};
use bookstore_app::recommend::RecommendBackend;
use bookstore_app::trend::TrendBackend;
use bookstore_domain::EventHandler;
use bookstore_domain::recommend::Snapshot;
use bookstore_domain::trends::{Trend, TrendBoard, TrendRanking};
use bookstore_testkit::{Cleanup, FreshDatabase, wait_until_settled};
use chrono::{DateTime, Utc};

use crate::bus::{RunningConsumer, TestBus, made_stores};

/// Every trend `store` holds (up to 1,000), public or not, by count.
pub async fn all_trends(
    store: &dyn TrendBackend,
    now: DateTime<Utc>,
) -> Result<Vec<Trend>, bookstore_domain::RepositoryError> {
    store
        .top(
            1_000,
            TrendRanking::Count,
            bookstore_domain::trends::Audience::Everyone,
            now,
        )
        .await
}

/// What a trend store should hold.
#[derive(Clone, Copy)]
pub enum ExpectedTrends<'a> {
    /// The rules applied to every event once.
    Board(&'a TrendBoard),
    /// What another store holds (a fresh group's replay).
    Store(&'a dyn TrendBackend),
}

impl ExpectedTrends<'_> {
    async fn top(&self, now: DateTime<Utc>) -> Result<Vec<Trend>, String> {
        match self {
            Self::Board(board) => Ok(board.top(
                1_000,
                TrendRanking::Count,
                bookstore_domain::trends::Audience::Everyone,
                now,
            )),
            Self::Store(store) => all_trends(*store, now)
                .await
                .map_err(|e| format!("cannot read the expected trends: {e}")),
        }
    }
}

/// What a recommendation store should hold.
#[derive(Clone, Copy)]
pub enum ExpectedRecommendations<'a> {
    /// The rules applied to every event once.
    Snapshot(&'a Snapshot),
    /// What another store holds (a fresh group's replay).
    Store(&'a dyn RecommendBackend),
}

/// Where the trends `store` holds differ from `expected` (`None`: nowhere). Scores may differ by
/// rounding (events of different partitions are added in another order).
pub async fn trend_difference(
    store: &dyn TrendBackend,
    expected: ExpectedTrends<'_>,
) -> Option<String> {
    let now = Utc::now();
    let held = match all_trends(store, now).await {
        Ok(held) => held,
        Err(error) => return Some(format!("cannot read the trends: {error}")),
    };
    let want = match expected.top(now).await {
        Ok(want) => want,
        Err(error) => return Some(error),
    };
    let by_query = |trends: Vec<Trend>| -> BTreeMap<String, Trend> {
        trends
            .into_iter()
            .map(|t| (t.query_normalized.clone(), t))
            .collect()
    };
    let (held, want) = (by_query(held), by_query(want));
    let counts = |m: &BTreeMap<String, Trend>| -> Vec<(String, u64)> {
        m.values()
            .map(|t| (t.query_normalized.clone(), t.count))
            .collect()
    };
    if counts(&held) != counts(&want) {
        return Some(format!(
            "counts differ: held {:?}, expected {:?}",
            counts(&held),
            counts(&want)
        ));
    }
    for (query, want) in &want {
        let held = &held[query];
        let close = (held.score - want.score).abs()
            <= 1e-9 * held.score.abs().max(want.score.abs()).max(1.0);
        if held.query != want.query
            || held.books != want.books
            || held.last_searched_at != want.last_searched_at
            || !close
        {
            return Some(format!("{query}: held {held:?}, expected {want:?}"));
        }
    }
    None
}

/// Where the recommendation `store` differs from `expected` (`None`: nowhere).
pub async fn recommendation_difference(
    store: &dyn RecommendBackend,
    expected: ExpectedRecommendations<'_>,
) -> Option<String> {
    let held = match store.snapshot().await {
        Ok(held) => held,
        Err(error) => return Some(format!("cannot read the store: {error}")),
    };
    match expected {
        ExpectedRecommendations::Snapshot(expected) => held.difference(expected),
        ExpectedRecommendations::Store(other) => match other.snapshot().await {
            Ok(expected) => held.difference(&expected),
            Err(error) => Some(format!("cannot read the expected store: {error}")),
        },
    }
}

/// Waits until the trend `store` holds `expected` (see [`wait_until_settled`]).
pub async fn wait_for_trends(store: &dyn TrendBackend, expected: ExpectedTrends<'_>, what: &str) {
    wait_until_settled(what, "trend store", || trend_difference(store, expected)).await;
}

/// Waits until the recommendation `store` holds `expected` (see [`wait_until_settled`]).
pub async fn wait_for_recommendations(
    store: &dyn RecommendBackend,
    expected: ExpectedRecommendations<'_>,
    what: &str,
) {
    wait_until_settled(what, "recommendation store", || {
        recommendation_difference(store, expected)
    })
    .await;
}

/// A fresh consumer group in this process reading `topics` from the beginning into `store`.
pub async fn replay(
    bus: &TestBus,
    topics: Vec<String>,
    store: Arc<dyn EventHandler>,
) -> RunningConsumer {
    bus.consumer_of(
        &format!("replay-{}", uuid::Uuid::new_v4().simple()),
        topics,
        store,
    )
    .await
}

/// The searches a trend store has counted (every trend's all-time count); 0 while it fails.
pub async fn trend_total(store: &dyn TrendBackend) -> u64 {
    all_trends(store, Utc::now())
        .await
        .map(|trends| trends.iter().map(|t| t.count).sum())
        .unwrap_or(0)
}

/// Fresh groups replaying the log from its beginning into fresh stores of the kinds `config`
/// uses (the search topic into the trends; both topics into the recommendations): files in a
/// directory of its own, or a fresh Redis prefix and a fresh MariaDB database, which go from the
/// shared servers when it is dropped.
pub struct Replay {
    pub trends: Arc<dyn TrendBackend>,
    pub recommendations: Arc<dyn RecommendBackend>,
    pub trend_group: RunningConsumer,
    pub rec_group: RunningConsumer,
    _made: Cleanup,
    _database: Option<FreshDatabase>,
    _dir: tempfile::TempDir,
}

impl Replay {
    pub async fn start(bus: &TestBus, config: &Config) -> Self {
        let dir = tempfile::tempdir().expect("cannot make a temporary directory");
        let on_mariadb = config
            .recommend
            .db_url
            .as_ref()
            .is_some_and(|url| url.expose().starts_with("mysql:"));
        let database = if on_mariadb {
            Some(FreshDatabase::reserve("replay_rec").await)
        } else {
            None
        };
        let rec_url = match &database {
            Some(database) => database.url(),
            None => format!("sqlite://{}", dir.path().join("rec.db").display()),
        };
        let mut fresh = Config {
            data_dir: dir.path().to_owned(), // the embedded trend store's file
            events: config.events.clone(),
            trend: config.trend.clone(),
            recommend: config.recommend.clone(),
            ..Config::default()
        };
        fresh.trend.redis_prefix = bookstore_testkit::redis::fresh_prefix();
        fresh.recommend.db_url = Some(Secret(rec_url.into()));
        let made = made_stores(&fresh);
        let trends = bookstore_app::trend::open_trend_store(&fresh)
            .await
            .unwrap_or_else(|e| panic!("cannot open the replay's trend store: {e:#}"));
        let recommendations = bookstore_app::recommend::open_recommend_store(&fresh)
            .await
            .unwrap_or_else(|e| panic!("cannot open the replay's recommendation store: {e:#}"));
        let events = &bus.config.events;
        let trend_group = replay(bus, vec![events.topic.clone()], {
            let store: Arc<dyn EventHandler> = trends.clone();
            store
        })
        .await;
        let rec_group = replay(
            bus,
            vec![events.catalog_topic.clone(), events.topic.clone()],
            {
                let store: Arc<dyn EventHandler> = recommendations.clone();
                store
            },
        )
        .await;
        Self {
            trends,
            recommendations,
            trend_group,
            rec_group,
            _made: made,
            _database: database,
            _dir: dir,
        }
    }

    pub async fn shutdown(self) {
        self.trend_group.shutdown().await;
        self.rec_group.shutdown().await;
    }
}
