//! The trend service killed hard (SIGKILL of a `bookstore trend` process) again and again while
//! searches flow through Kafka: afterwards every count equals the number of searches made. Then
//! a new consumer group replaying the topic from the beginning into a fresh store rebuilds the
//! same counts.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use bookstore::TrendApp;
use bookstore::config::{Config, TrendStoreKind};
use bookstore_domain::events::{Event, SearchEvent};
use chrono::Utc;
use rand::{Rng, SeedableRng};

use crate::helpers::{Backend, KillOnDrop, TestBus, wait_until};
use crate::{counts, store_env, use_store};

fn trend_service(bus: &TestBus) -> KillOnDrop {
    KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_bookstore"))
            .arg("trend")
            .envs(bus.env())
            .envs(store_env(&bus.config))
            // Static membership: a restarted instance takes its partitions back at once.
            .env("BOOKSTORE_EVENTS__PROPERTIES__GROUP_INSTANCE_ID", "trend-1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn killed_trend_services_count_every_search_once(store: TrendStoreKind) {
    const SEARCHES: u32 = 3_000;
    let mut bus = TestBus::new(Backend::Kafka).await;
    use_store(&mut bus.config, store);
    let publisher = bus.publisher().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);

    let producer = {
        let publisher = publisher.publisher.clone();
        tokio::spawn(async move {
            let mut expected: BTreeMap<String, u64> = BTreeMap::new();
            for i in 0..SEARCHES {
                let query = format!("Topic {}", i % 17);
                *expected.entry(query.to_lowercase()).or_default() += 1;
                let event = SearchEvent::new(
                    uuid::Uuid::now_v7(),
                    Utc::now(),
                    (i % 3 != 0).then(|| format!("user-{}", i % 40)),
                    &query,
                    0,
                    vec![],
                );
                publisher.publish(&Event::BookSearched(event));
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(120)).await;
                }
            }
            expected
        })
    };

    for round in 0..6 {
        let mut child = trend_service(&bus);
        let lifetime = Duration::from_millis(rng.random_range(600..1_800));
        tokio::time::sleep(lifetime).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!("killed trend service {round} after {lifetime:?}");
    }
    let expected = producer.await.unwrap();
    assert_eq!(publisher.publisher.flush(Duration::from_secs(30)).await, 0);
    let before_recovery: u64 = counts(&bus.config).await.values().sum();
    assert!(
        before_recovery > 0,
        "the killed services applied searches before dying"
    );

    let mut child = trend_service(&bus);
    wait_until(Duration::from_secs(120), "every search counted", || async {
        counts(&bus.config).await.values().sum::<u64>() >= u64::from(SEARCHES)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        counts(&bus.config).await,
        expected,
        "no search lost, none counted twice"
    );

    // Rebuild: a new group from the beginning of the topic into a fresh store.
    let mut rebuilt: Config = std::mem::take(&mut bus.config);
    use_store(&mut rebuilt, store);
    let other_dir = tempfile::tempdir().unwrap();
    rebuilt.data_dir = other_dir.path().to_owned();
    let app = TrendApp::build(&rebuilt).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    wait_until(Duration::from_secs(60), "the rebuild", || async {
        counts(&rebuilt).await.values().sum::<u64>() >= u64::from(SEARCHES)
    })
    .await;
    assert_eq!(
        counts(&rebuilt).await,
        expected,
        "the replay gives the same counts"
    );
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_trend_services_on_redis_count_every_search_once() {
    killed_trend_services_count_every_search_once(TrendStoreKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_trend_services_on_sqlite_count_every_search_once() {
    killed_trend_services_count_every_search_once(TrendStoreKind::Embedded).await;
}
