//! Consumers killed hard (SIGKILL of a `bookstore events count` process) at random moments while
//! events flow: afterwards every count equals the number of events produced.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bookstore_domain::events::{Event, SearchEvent};
use bookstore_testkit::{Backend, KillOnDrop, both, wait_until};
use bookstore_testkit_app::{TestBus, counts_store, total};
use chrono::Utc;
use rand::{Rng, SeedableRng};

fn counter(bus: &TestBus, instance: &str) -> KillOnDrop {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bookstore"));
    command
        .args(["events", "count", "--group", "crash-test", "--db"])
        .arg(bus.path("counts.db"))
        .envs(bus.env())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if bus.backend == Backend::Kafka {
        // Static membership: a restarted instance takes its partitions back at once instead of
        // waiting for the killed one's session to time out.
        command.env("BOOKSTORE_EVENTS__PROPERTIES__GROUP_INSTANCE_ID", instance);
    }
    KillOnDrop(command.spawn().unwrap())
}

fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the counter exits 0 on SIGTERM: {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the counter did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

both!(killed_consumers_lose_nothing_and_count_nothing_twice);
async fn killed_consumers_lose_nothing_and_count_nothing_twice(backend: Backend) {
    const EVENTS: u32 = 4_000;
    let bus = TestBus::new(backend).await;
    let publisher = bus.publisher().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    // Events flow for about eight seconds while the consumer is killed again and again.
    let producer = {
        let publisher = publisher.port.clone();
        tokio::spawn(async move {
            let mut expected: BTreeMap<String, u64> = BTreeMap::new();
            for i in 0..EVENTS {
                let query = format!("Query {}", i % 23);
                *expected.entry(query.to_lowercase()).or_default() += 1;
                let event = SearchEvent::new(
                    uuid::Uuid::now_v7(),
                    Utc::now(),
                    Some(format!("user-{}", i % 50)),
                    &query,
                    0,
                    vec![],
                );
                publisher.publish(&Event::BookSearched(event));
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            expected
        })
    };

    let kills = 8;
    for round in 0..kills {
        let mut child = counter(&bus, "counter-1");
        let lifetime = Duration::from_millis(rng.random_range(400..1_500));
        tokio::time::sleep(lifetime).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        eprintln!("killed consumer {round} after {lifetime:?}");
    }
    let expected = producer.await.unwrap();
    assert_eq!(publisher.port.flush(Duration::from_secs(30)).await, 0);

    let counts = counts_store(&bus.path("counts.db")).await;
    let applied_before_recovery = total(&counts).await;
    let mut child = counter(&bus, "counter-1");
    wait_until(Duration::from_secs(120), "every event counted", || async {
        total(&counts).await >= u64::from(EVENTS)
    })
    .await;
    // Give a duplicate, if there were one, the time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    terminate(&mut child);
    assert!(
        applied_before_recovery > 0,
        "the killed consumers applied events before dying"
    );
    assert_eq!(
        counts.counts().await.unwrap(),
        expected,
        "no event lost, none counted twice"
    );
}

/// An idle consumer in another process sees an event within milliseconds, not the safety poll's
/// second: it is woken by the log file's change notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_consumers_in_other_processes_wake_at_once() {
    let bus = TestBus::new(Backend::Embedded).await;
    let publisher = bus.publisher().await;
    let mut child = counter(&bus, "counter-1");
    let counts = counts_store(&bus.path("counts.db")).await;
    let publish = |query: String| {
        let event = SearchEvent::new(uuid::Uuid::now_v7(), Utc::now(), None, &query, 0, vec![]);
        publisher.port.publish(&Event::BookSearched(event));
    };
    // Until the consumer has joined and applied something.
    wait_until(Duration::from_secs(30), "the consumer to start", || async {
        publish("warm up".into());
        tokio::time::sleep(Duration::from_millis(100)).await;
        total(&counts).await > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut delays = Vec::new();
    for i in 0..10 {
        let query = format!("wake {i}");
        let started = Instant::now();
        publish(query.clone());
        loop {
            if counts.counts().await.unwrap().contains_key(&query) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "event {i} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        delays.push(started.elapsed());
        // Idle again.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    terminate(&mut child);
    delays.sort();
    let median = delays[delays.len() / 2];
    eprintln!("cross-process delivery delays: {delays:?}");
    assert!(
        median < Duration::from_millis(400),
        "median {median:?}: consumers are not woken by appends"
    );
}
