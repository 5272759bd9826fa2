//! The web service writing the tutorial's messages (`events.format: tutorial`) on the real Kafka
//! from `dev/services`, for the tutorial's consumers during a migration: an independent reader
//! (`dev/tutorial-reader.py`: the Kafka distribution's console consumer and the tutorial
//! consumers' rules, no code of ours) reads back exactly the searches the web answered, and our
//! own trend consumer makes trends of them.

use std::path::Path;
use std::time::Duration;

use bookstore_app::Remotes;
use bookstore_app::bus::EventBus;
use bookstore_app::config::TrendStoreKind;
use bookstore_domain::events::WireFormat;
use bookstore_testkit::{Backend, wait_until};
use bookstore_testkit_app::{TestBus, start_trend, uid_cookie};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value, json};

use crate::use_store;

const USER: &str = "5f0c2a8e-3b1d-4c7e-9a2f-6d8e1b4c0a97";

/// A search as the web answered it: the query, the user, and the result books in the tutorial's
/// shape (its `created_at` printed `YYYY-MM-DD HH:MM:SS`).
type Answered = (String, Option<String>, Value);

fn tutorial_book(book: &Value) -> Value {
    let created_at = chrono::DateTime::parse_from_rfc3339(book["created_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    json!({
        "id": book["id"],
        "title": book["title"],
        "author": book["author"],
        "published_at": book["published_at"],
        "description": book["description"],
        "created_at": created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
    })
}

/// The messages of `topic` (all its partitions' end offsets summed), as Kafka counts them.
fn messages_on(bus: &TestBus) -> i64 {
    let EventBus::Kafka(settings) = &bus.bus else {
        panic!("a Kafka bus");
    };
    let consumer: BaseConsumer = settings.client_config().create().unwrap();
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(bus.topic()), timeout).unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(bus.topic(), p.id(), timeout)
                .unwrap();
            high - low
        })
        .sum()
}

/// `dev/tutorial-reader.py` on the first `messages` messages of the bus's topic: one JSON object
/// per message. Panics, naming the fix, when Python or the Kafka jars are missing.
async fn tutorial_reader(bus: &TestBus, messages: usize) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dev/tutorial-reader.py");
    let args = [
        script.display().to_string(),
        "--brokers".to_owned(),
        bus.config.events.brokers.clone(),
        "--topic".to_owned(),
        bus.topic().to_owned(),
        "--messages".to_owned(),
        messages.to_string(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").args(&args).output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run python3 (Python 3 is needed): {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dev/tutorial-reader.py failed ({}; the Kafka jars come with `dev/services start`):\n{stderr}",
        output.status
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tutorials_readers_read_what_the_web_answered_and_ours_make_trends_of_it() {
    let mut bus = TestBus::new(Backend::Kafka).await;
    bus.config.events.format = WireFormat::Tutorial;
    use_store(&mut bus.config, TrendStoreKind::Embedded);
    let (trend, _) = start_trend(&bus.config).await;
    let remotes = Remotes {
        trend_url: None,
        recommend_url: None,
    };
    let (web, stats) = bookstore_testkit_app::start_web(&bus.config, remotes).await;
    let http = reqwest::Client::new();

    // Anonymous (the API without a cookie) and with a user (a signed cookie); one query holds a
    // `:`, one finds nothing.
    let searches: [(Option<&str>, &str); 5] = [
        (None, "austen"),
        (Some(USER), "pride"),
        (Some(USER), "frankenstein"),
        (Some(USER), "shelley: the last"),
        (None, "zzyzx"),
    ];
    let mut answered: Vec<Answered> = Vec::new();
    let mut first_book = None;
    for (user, query) in searches {
        let mut request = http.get(web.url("/api/books")).query(&[("q", query)]);
        if let Some(user) = user {
            request = request.header("cookie", uid_cookie(user));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{query}");
        let books: Vec<Value> = response.json().await.unwrap();
        first_book = first_book.or_else(|| books.first().map(|b| b["id"].clone()));
        answered.push((
            query.to_owned(),
            user.map(str::to_owned),
            Value::Array(books.iter().map(tutorial_book).collect()),
        ));
    }
    assert!(
        answered.iter().filter(|a| a.2 != json!([])).count() >= 3,
        "the sample catalog answers: {answered:?}"
    );
    // A book page publishes a view, which the tutorial's format has no message for.
    let page = http
        .get(web.url(&format!(
            "/books/{}?from=search&rank=0",
            first_book.unwrap()
        )))
        .header("cookie", uid_cookie(USER))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    wait_until(
        Duration::from_secs(30),
        "the searches delivered, the view left out",
        || async { load(&stats.delivered) == 5 && load(&stats.omitted) == 1 },
    )
    .await;
    assert_eq!(
        (load(&stats.failed), load(&stats.dropped)),
        (0, 0),
        "every search delivered"
    );
    let metrics = http
        .get(web.ops("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("bookstore_events_omitted_total{publisher=\"searches\"} 1")),
        "{metrics}"
    );
    // The topic holds the five searches and nothing else.
    assert_eq!(messages_on(&bus), 5);

    // The independent reader, by the tutorial's rules.
    let read = tutorial_reader(&bus, 5).await;
    for message in &read {
        let headers = message["headers"].as_object().unwrap();
        assert!(
            !headers.contains_key("type") && !headers.contains_key("version"),
            "no type or version header: {message}"
        );
        let key = message["key"].as_str().unwrap();
        assert!(key.contains(':'), "`<query>:<uid>` or `<query>:`: {key}");
    }
    let mut decoded: Vec<Answered> = read
        .iter()
        .map(|m| {
            (
                m["query"].as_str().unwrap().to_owned(),
                m["uid"].as_str().map(str::to_owned),
                m["books"].clone(),
            )
        })
        .collect();
    decoded.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    answered.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(decoded, answered);
    // The tutorial's consumers split the key at its first `:` (their defect 2, as with their own
    // producer): a query holding one is misread by them, and by them alone.
    for message in &read {
        let query = message["query"].as_str().unwrap();
        if query.contains(':') {
            assert_eq!(message["trend_query"], "shelley");
            assert_eq!(message["rec_uid"], format!(" the last:{USER}"));
        } else {
            assert_eq!(message["trend_query"], message["query"]);
            assert_eq!(message["rec_uid"], message["uid"]);
        }
    }

    // Our trend consumer reads the same messages: every query counted once, with its books.
    let trends_url = format!("{}/trends?ps=100&by=count&all=true", trend.url);
    wait_until(
        Duration::from_secs(30),
        "the five searches in /trends",
        || async {
            let all: Vec<Value> = http
                .get(&trends_url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            all.len() == 5
        },
    )
    .await;
    let all: Vec<Value> = http
        .get(&trends_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (query, user, books) in &answered {
        let trend = all
            .iter()
            .find(|t| t["query_normalized"] == query.as_str())
            .unwrap_or_else(|| panic!("no trend {query:?}: {all:?}"));
        assert_eq!(trend["count"], 1, "{trend}");
        let ids: Vec<&Value> = books.as_array().unwrap().iter().map(|b| &b["id"]).collect();
        let trend_ids: Vec<&Value> = trend["books"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| &b["id"])
            .collect();
        assert_eq!(trend_ids, ids[..trend_ids.len()], "{query}");
        // A search names an origin only through its user (the tutorial's format has no client):
        // one reader is enough here (`trend.min_readers` is 1), and anonymous searches never
        // make a trend public.
        assert_eq!(trend["public"], user.is_some(), "{trend}");
    }
    web.shutdown().await;
    trend.shutdown().await;
}
