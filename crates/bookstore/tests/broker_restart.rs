//! The Kafka broker from `dev/services` is stopped for a few seconds while searches go on: every
//! search still answers 200 quickly, nothing is dropped, and once the broker is back every queued
//! event reaches the consumer group exactly once.
//!
//! Its own test binary, because it stops the broker that the other Kafka tests use (cargo runs
//! test binaries one after the other).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "events/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use helpers::{Backend, TestBus, counts_store, total, wait_until};

/// `dev/services`, which started the broker the tests use.
fn services_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dev/services")
}

async fn services(action: &str) {
    let owned = action.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(services_script())
            .args([owned.as_str(), "kafka"])
            .stdout(std::process::Stdio::null())
            .status()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run dev/services {action} kafka: {e}"));
    assert!(
        status.success(),
        "`dev/services {action} kafka` failed ({status}); this test needs the broker that \
         dev/services started"
    );
}

/// Starts the broker again if the test panics while it is down, so later tests find it.
struct RestartOnDrop {
    armed: bool,
}

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::process::Command::new(services_script())
                .args(["start", "kafka"])
                .stdout(std::process::Stdio::null())
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn searches_go_on_while_the_broker_is_down_and_their_events_arrive_after() {
    let bus = TestBus::new(Backend::Kafka).await;
    let web = bus.web().await;
    let counts = Arc::new(counts_store(&bus.path("counts.db")).await);
    let consumer = bus.consumer("broker-restart", counts.clone()).await;
    let stats = web.stats.clone();

    // A reader searching 20 times a second until told to stop; each search's status and time.
    let stop = Arc::new(AtomicBool::new(false));
    let searcher = tokio::spawn({
        let stop = stop.clone();
        let url = web.url("/api/books?q=");
        async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut timings = Vec::new();
            let queries = ["austen", "dickens", "twain", "shelley", "tolstoy"];
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let response = http
                    .get(format!("{url}{}", queries[i % queries.len()]))
                    .send()
                    .await;
                let status = response.map(|r| r.status().as_u16()).unwrap_or(0);
                timings.push((status, started.elapsed()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            timings
        }
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut guard = RestartOnDrop { armed: true };
    services("stop").await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the last acknowledgements in flight
    let down_from = stats.delivered.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(2800)).await;
    let delivered_while_down = stats.delivered.load(Ordering::Relaxed) - down_from;
    let queued_while_down = stats.in_flight();
    services("start").await;
    guard.armed = false;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let timings = searcher.await.unwrap();

    assert!(timings.len() >= 60, "{} searches only", timings.len());
    assert!(
        timings.iter().all(|(status, _)| *status == 200),
        "{timings:?}"
    );
    let slowest = timings.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        slowest < Duration::from_millis(500),
        "a search took {slowest:?} while the broker was away"
    );
    assert_eq!(
        delivered_while_down, 0,
        "nothing can be delivered while the broker is down"
    );
    assert!(
        queued_while_down > 0,
        "the searches made while the broker was down wait in the queue"
    );

    let searches = timings.len() as u64;
    wait_until(
        Duration::from_secs(120),
        "every search event counted",
        || async { total(&counts).await >= searches },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        total(&counts).await,
        searches,
        "no event lost, none counted twice"
    );
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
    assert_eq!(stats.delivered.load(Ordering::Relaxed), searches);
    consumer.shutdown().await;
    web.shutdown().await;
}
