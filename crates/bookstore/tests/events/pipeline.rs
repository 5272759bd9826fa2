use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bookstore_app::bus::EventBus;
use bookstore_domain::events::{Event, SearchEvent, normalize_query};
use bookstore_testkit::{Backend, Recorder, both, wait_until};
use bookstore_testkit_app::{TestBus, counts_store, total};
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use serde_json::Value;

const USER_1: &str = "0b1c7a52-0c4e-4c1e-9d0e-9a1f0e2c3d4e";
const USER_2: &str = "5d7e1f3a-2b4c-4d6e-8f0a-1b2c3d4e5f60";

/// A message as read back: key, value, headers.
type Read = (Option<Vec<u8>>, Vec<u8>, BTreeMap<String, String>);

/// Reads every message of `topic` with plain rdkafka: (key, value, headers).
fn read_all(bus: &TestBus, topic: &str, expected: usize) -> Vec<Read> {
    let EventBus::Kafka(settings) = &bus.bus else {
        panic!("Kafka only")
    };
    let consumer: BaseConsumer = settings
        .client_config_with(&[
            ("group.id", format!("reader-{}", uuid::Uuid::new_v4())),
            ("auto.offset.reset", "earliest".to_owned()),
            ("enable.auto.commit", "false".to_owned()),
        ])
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < expected && std::time::Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                message.key().map(<[u8]>::to_vec),
                message.payload().unwrap_or_default().to_vec(),
                headers,
            ));
        }
    }
    out
}

both!(searches_arrive_with_every_field);
async fn searches_arrive_with_every_field(backend: Backend) {
    let bus = TestBus::new(backend).await;
    let web = bus.web().await;
    let recorder = Arc::new(Recorder::default());
    let consumer = bus.consumer("round-trip", recorder.clone()).await;
    let http = reqwest::Client::new();
    let before = Utc::now();

    // The page, as user 1; the API anonymously; the API with user 2's cookie, page 2.
    let page = http
        .get(web.url("/?q=%20%20Pride%20%20and%20PREJUDICE"))
        .header("cookie", bookstore_testkit_app::uid_cookie(USER_1))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let austen: Value = http
        .get(web.url("/api/books?q=austen"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let frank: Value = http
        .get(web.url("/api/books?q=Frankenstein&o=0"))
        .header("cookie", bookstore_testkit_app::uid_cookie(USER_2))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page2: Value = http
        .get(web.url("/api/books?q=the&o=5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // No query, or only spaces: no event.
    assert_eq!(
        http.get(web.url("/api/books"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(web.url("/?q=%20%20"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    wait_until(Duration::from_secs(60), "4 search events", || async {
        recorder.len() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut events = recorder.searches();
    let queued = web.stats.queued.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(queued, 4, "one event per search with a query");
    assert_eq!(
        web.stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(events.len(), 4, "{events:#?}");
    events.sort_by_key(|e| e.id); // UUID v7: in time order
    let [pride, austen_event, frank_event, the]: [SearchEvent; 4] = events.try_into().unwrap();

    assert_eq!(pride.user_id.as_deref(), Some(USER_1));
    assert_eq!(
        pride.query, "Pride  and PREJUDICE",
        "the search's own cleaned text"
    );
    assert_eq!(pride.query_normalized, "pride and prejudice");
    assert_eq!(pride.results[0].title, "Pride and Prejudice");

    assert_eq!(
        austen_event.user_id, None,
        "an API call without a cookie is anonymous"
    );
    let client = austen_event.client_id.as_deref().unwrap_or_default();
    assert!(
        client.starts_with("c-") && !client.contains("127.0.0.1"),
        "an anonymous search names its client by a pseudonym: {client:?}"
    );
    assert_eq!(austen_event.key(), client);
    assert_eq!(
        pride.client_id.as_deref(),
        Some(client),
        "every search names its client; the key is the reader's"
    );
    assert_eq!(pride.key(), USER_1);
    assert_eq!(austen_event.query, "austen");
    assert_eq!(frank_event.user_id.as_deref(), Some(USER_2));
    assert_eq!(the.offset, 5);

    for (event, response) in [
        (&austen_event, &austen),
        (&frank_event, &frank),
        (&the, &page2),
    ] {
        let books = response.as_array().unwrap();
        assert!(!books.is_empty());
        assert_eq!(event.results.len(), books.len());
        for (r, b) in event.results.iter().zip(books) {
            assert_eq!(r.id, b["id"].as_i64().unwrap());
            assert_eq!(r.title, b["title"].as_str().unwrap());
            assert_eq!(r.author, b["author"].as_str().unwrap());
            assert_eq!(
                r.published_at.unwrap().to_string(),
                b["published_at"].as_str().unwrap()
            );
        }
    }
    for e in [&pride, &austen_event, &frank_event, &the] {
        assert_eq!(e.version, 1);
        assert_eq!(e.id.get_version_num(), 7);
        assert!(
            e.occurred_at >= before - chrono::Duration::seconds(1) && e.occurred_at <= Utc::now()
        );
        assert_eq!(e.query_normalized, normalize_query(&e.query));
    }

    if backend == Backend::Kafka {
        // On the wire: key = user id, else the client id; type and version in headers.
        let mut messages = read_all(&bus, bus.topic(), 4);
        assert_eq!(messages.len(), 4);
        messages.sort_by(|a, b| a.1.cmp(&b.1));
        for (key, value, headers) in &messages {
            let json: Value = serde_json::from_slice(value).unwrap();
            let expected_key = json["user_id"]
                .as_str()
                .or(json["client_id"].as_str())
                .unwrap();
            assert_eq!(key.as_deref(), Some(expected_key.as_bytes()));
            assert_eq!(
                headers.get("type").map(String::as_str),
                Some("book.searched")
            );
            assert_eq!(headers.get("version").map(String::as_str), Some("1"));
            assert_eq!(json["type"], "book.searched");
        }
    }
    consumer.shutdown().await;
    web.shutdown().await;
}

both!(poison_goes_to_the_dead_letters_and_consumption_goes_on);
async fn poison_goes_to_the_dead_letters_and_consumption_goes_on(backend: Backend) {
    let bus = TestBus::new(backend).await;
    let recorder = Arc::new(Recorder::default());
    let event = |q: &str| {
        SearchEvent::new(
            uuid::Uuid::now_v7(),
            Utc::now(),
            Some("u1".into()),
            q,
            0,
            vec![],
        )
    };
    // One key, so one partition, in this order.
    bus.produce_raw(Some(b"u1"), &event("before").to_json())
        .await;
    bus.produce_raw(Some(b"u1"), b"{this is not json").await;
    bus.produce_raw(Some(b"u1"), br#"{"type":"book.searched","version":99}"#)
        .await;
    bus.produce_raw(Some(b"u1"), &event("after").to_json())
        .await;
    let consumer = bus.consumer("poison", recorder.clone()).await;
    wait_until(Duration::from_secs(60), "the good events", || async {
        recorder.len() >= 2
    })
    .await;
    let queries: Vec<String> = recorder.searches().into_iter().map(|e| e.query).collect();
    assert_eq!(queries, ["before", "after"]);

    let letters: Vec<(Option<Vec<u8>>, Vec<u8>, String)> = match &bus.bus {
        EventBus::Embedded { log, .. } => {
            wait_until(Duration::from_secs(10), "dead letters", || async {
                log.dead_letters("poison").await.unwrap().len() >= 2
            })
            .await;
            let letters = log.dead_letters("poison").await.unwrap();
            let first = &letters[0].letter.message;
            assert_eq!(first.offset, 1);
            assert_eq!(first.topic, bus.topic());
            letters
                .into_iter()
                .map(|l| (l.letter.message.key, l.letter.message.value, l.letter.error))
                .collect()
        }
        EventBus::Kafka(_) => {
            let dlq = format!("{}.dlq", bus.topic());
            let messages = read_all(&bus, &dlq, 2);
            assert_eq!(
                messages[0].2.get("dlq.offset").map(String::as_str),
                Some("1")
            );
            assert_eq!(
                messages[0].2.get("dlq.topic").map(String::as_str),
                Some(bus.topic())
            );
            assert_eq!(
                messages[0].2.get("dlq.group").map(String::as_str),
                Some("poison")
            );
            messages
                .into_iter()
                .map(|(k, v, h)| (k, v, h.get("dlq.error").cloned().unwrap_or_default()))
                .collect()
        }
    };
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].0.as_deref(), Some(&b"u1"[..]));
    assert_eq!(letters[0].1, b"{this is not json");
    assert!(letters[0].2.contains("not JSON"), "{}", letters[0].2);
    assert!(letters[1].2.contains("version 99"), "{}", letters[1].2);
    consumer.shutdown().await;
}

both!(tutorial_format_events_are_applied);
async fn tutorial_format_events_are_applied(backend: Backend) {
    let bus = TestBus::new(backend).await;
    let books =
        br#"[{"id": 1, "title": "The C++ Programming Language", "author": "Bjarne Stroustrup",
        "published_at": "1985-10-01", "description": "", "created_at": "2024-05-01 10:00:00"}]"#;
    bus.produce_raw(Some(b"c++: the language:ab12x"), books)
        .await;
    bus.produce_raw(Some(b"Rust:"), b"[]").await;
    bus.produce_raw(Some(b"dune"), b"[]").await;
    let counts = Arc::new(counts_store(&bus.path("counts.db")).await);
    let recorder = Arc::new(Recorder::default());
    let a = bus.consumer("tutorial-counts", counts.clone()).await;
    let b = bus.consumer("tutorial-recorder", recorder.clone()).await;
    wait_until(Duration::from_secs(60), "three applied events", || async {
        total(&counts).await == 3 && recorder.len() == 3
    })
    .await;
    let counted = counts.counts().await.unwrap();
    assert_eq!(
        counted,
        BTreeMap::from([
            ("c++: the language".to_owned(), 1),
            ("dune".to_owned(), 1),
            ("rust".to_owned(), 1)
        ])
    );
    let events = recorder.searches();
    let cpp = events
        .iter()
        .find(|e| e.query == "c++: the language")
        .unwrap();
    assert_eq!(cpp.user_id.as_deref(), Some("ab12x"));
    assert_eq!(cpp.version, 0);
    assert_eq!(cpp.results[0].author, "Bjarne Stroustrup");
    assert!(
        events
            .iter()
            .filter(|e| e.query != "c++: the language")
            .all(|e| e.user_id.is_none())
    );
    a.shutdown().await;
    b.shutdown().await;
}

both!(two_consumers_split_the_partitions_and_take_over);
async fn two_consumers_split_the_partitions_and_take_over(backend: Backend) {
    let bus = TestBus::new(backend).await;
    let partitions = u64::from(bus.config.events.partitions);
    // Two instances of one service share one store.
    let store = bus.path("shared.db");
    let first = bus
        .consumer("split", Arc::new(counts_store(&store).await))
        .await;
    let second = bus
        .consumer("split", Arc::new(counts_store(&store).await))
        .await;
    wait_until(
        Duration::from_secs(60),
        "both members to own partitions",
        || async {
            first.owned() > 0 && second.owned() > 0 && first.owned() + second.owned() == partitions
        },
    )
    .await;

    let publisher = bus.publisher().await;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut publish = |range: std::ops::Range<u32>| {
        for i in range {
            let query = format!("query {}", i % 17);
            *expected.entry(query.clone()).or_default() += 1;
            let event = SearchEvent::new(
                uuid::Uuid::now_v7(),
                Utc::now(),
                Some(format!("user-{}", i % 40)),
                &query,
                0,
                vec![],
            );
            publisher.port.publish(&Event::BookSearched(event));
        }
    };
    publish(0..600);
    let counts = counts_store(&store).await;
    wait_until(Duration::from_secs(60), "600 applied", || async {
        total(&counts).await == 600
    })
    .await;
    assert!(
        first.applied() > 0 && second.applied() > 0,
        "both members applied events: {} and {}",
        first.applied(),
        second.applied()
    );
    assert_eq!(first.applied() + second.applied(), 600);

    // The first leaves; the second takes over its partitions.
    first.shutdown().await;
    wait_until(
        Duration::from_secs(60),
        "the second member to own every partition",
        || async { second.owned() == partitions },
    )
    .await;
    let before = second.applied();
    publish(600..1200);
    wait_until(Duration::from_secs(60), "1200 applied", || async {
        total(&counts).await == 1200
    })
    .await;
    assert_eq!(second.applied() - before, 600);
    assert_eq!(counts.counts().await.unwrap(), expected);
    second.shutdown().await;
}

both!(created_books_reach_the_catalog_topic_through_the_outbox);
async fn created_books_reach_the_catalog_topic_through_the_outbox(backend: Backend) {
    use bookstore_domain::events::Event;
    let bus = TestBus::new(backend).await;
    let web = bus.web().await;
    let recorder = Arc::new(Recorder::default());
    let stop = tokio_util::sync::CancellationToken::new();
    // A failed assertion still stops the consumer: its thread would keep the test alive.
    let _stop_on_drop = stop.clone().drop_guard();
    let consumer = bus
        .bus
        .consumer(
            &bus.config.events,
            "catalog",
            vec![bus.config.events.catalog_topic.clone()],
            recorder.clone(),
            stop.clone(),
        )
        .await
        .unwrap();
    let task = tokio::spawn(consumer.run());
    let response = reqwest::Client::new()
        .post(web.url("/api/books"))
        .bearer_auth("test-token")
        .json(&serde_json::json!({"title": "Outboxia", "author": "Ada Relay", "published_at": "1901-02-03"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let created_books = || {
        recorder
            .records()
            .into_iter()
            .filter_map(|r| match r.event {
                Event::BookCreated(e) => Some(e.book),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // Outboxia is the last book created: every partition has been read once all ids up to its
    // are there.
    let outboxia_id = created["id"].as_i64().unwrap();
    wait_until(
        Duration::from_secs(60),
        "the whole catalog on the catalog topic",
        || async {
            let ids: std::collections::BTreeSet<i64> =
                created_books().iter().map(|b| b.id).collect();
            ids.len() as i64 == outboxia_id
        },
    )
    .await;
    let books = created_books();
    let outboxia = books.iter().find(|b| b.title == "Outboxia").unwrap();
    assert_eq!(outboxia.id, created["id"].as_i64().unwrap());
    assert_eq!(outboxia.author, "Ada Relay");
    // The sample catalog went the same way, each book once (in order within each partition).
    let mut ids: Vec<i64> = books.iter().map(|b| b.id).collect();
    ids.sort_unstable();
    assert!(ids.len() > 200, "{}", ids.len());
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    stop.cancel();
    task.await.unwrap().unwrap();
    web.shutdown().await;
}

/// Every message of `topic`, read raw from either backend: (key, value).
async fn raw_messages(bus: &TestBus, topic: &str, expected: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    match &bus.bus {
        EventBus::Kafka(_) => read_all(bus, topic, expected)
            .into_iter()
            .map(|(key, value, _)| (key.unwrap_or_default(), value))
            .collect(),
        EventBus::Embedded { log, partitions } => {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let mut out = Vec::new();
                for partition in 0..*partitions {
                    let tp = bookstore_domain::TopicPartition {
                        topic: topic.to_owned(),
                        partition: i32::try_from(partition).unwrap(),
                    };
                    for m in log.read(&tp, 0, 10_000).await.unwrap() {
                        out.push((m.key.unwrap_or_default(), m.value));
                    }
                }
                if out.len() >= expected || std::time::Instant::now() > deadline {
                    return out;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

both!(a_huge_query_makes_a_bounded_event);
/// Finding 3 of the hardening issue: the query in the event is the bounded, cleaned text the
/// search used, so a 60,000-character query makes neither a 120 KB event nor a 60 KB key.
async fn a_huge_query_makes_a_bounded_event(backend: Backend) {
    use bookstore_domain::events::{MAX_KEY_BYTES, MAX_QUERY_CHARS, decode};
    let bus = TestBus::new(backend).await;
    let web = bus.web().await;
    let http = reqwest::Client::new();
    let huge = format!("\u{1b}[2J{}", "x".repeat(60_000));
    for path in ["/api/books", "/"] {
        let response = http
            .get(web.url(path))
            .query(&[("q", huge.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let messages = raw_messages(&bus, bus.topic(), 2).await;
    assert_eq!(messages.len(), 2);
    for (key, value) in &messages {
        assert!(key.len() <= MAX_KEY_BYTES, "key of {} bytes", key.len());
        assert!(value.len() < 2_000, "event of {} bytes", value.len());
        let event = decode(Some(key), value, None).unwrap();
        let search = event.as_search().unwrap();
        assert_eq!(search.query.chars().count(), MAX_QUERY_CHARS);
        assert!(
            search.query.starts_with("[2Jxxx"),
            "{:?}",
            &search.query[..10]
        );
        assert!(!search.query.contains('\u{1b}'));
    }
}
