//! `book.viewed` events make `GET /trends/books` ("most viewed books now"), and
//! `GET /trends/stream` tells its subscribers when a batch changed the trends.

use std::time::{Duration, Instant};

use bookstore_app::config::TrendStoreKind;
use bookstore_domain::events::{BookViewedEvent, Event, ResultBook, SearchEvent, ViewSource};
use bookstore_testkit::{Backend, wait_until};
use bookstore_testkit_app::{TestBus, start_trend};
use serde_json::Value;

use crate::{stores, use_store};

/// A view of book `id` by `user` now.
fn viewed(id: i64, user: &str) -> Event {
    Event::BookViewed(BookViewedEvent::now(
        Some(user.to_owned()),
        None,
        ResultBook {
            id,
            title: format!("Book {id}"),
            author: format!("Author {id}"),
            published_at: None,
        },
        ViewSource::Search,
        Some(0),
        None,
    ))
}

fn searched(query: &str) -> Event {
    Event::BookSearched(SearchEvent::new(
        uuid::Uuid::now_v7(),
        chrono::Utc::now(),
        Some("searcher".to_owned()),
        query,
        0,
        vec![],
    ))
}

async fn viewed_books(http: &reqwest::Client, url: &str, query: &str) -> Vec<Value> {
    let response = http
        .get(format!("{url}/trends/books?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

stores!(viewed_books_show_up_in_trends_books);
async fn viewed_books_show_up_in_trends_books(backend: Backend, store: TrendStoreKind) {
    let mut bus = TestBus::new(backend).await;
    use_store(&mut bus.config, store);
    bus.config.trend.user_cap = 3;
    let (trend, _) = start_trend(&bus.config).await;
    let events = bus.publisher().await;
    let http = reqwest::Client::new();
    // Book 10: four readers (score 4); book 30: one reader ten times (3 count: trend.user_cap);
    // book 20: two readers.
    let mut views = Vec::new();
    for reader in ["a", "b", "c", "d"] {
        views.push(viewed(10, reader));
    }
    for _ in 0..10 {
        views.push(viewed(30, "flooder"));
    }
    views.push(viewed(20, "a"));
    views.push(viewed(20, "b"));
    views.push(searched("not a view"));
    for event in &views {
        events.port.publish(event);
    }
    wait_until(
        Duration::from_secs(30),
        "the views in /trends/books",
        || async {
            let books = viewed_books(&http, &trend.url, "ps=100").await;
            books
                .iter()
                .filter_map(|b| b["views"].as_u64())
                .sum::<u64>()
                == 16
        },
    )
    .await;
    let books = viewed_books(&http, &trend.url, "").await;
    let ids: Vec<i64> = books.iter().filter_map(|b| b["id"].as_i64()).collect();
    assert_eq!(ids, [10, 30, 20], "{books:#?}");
    let score = |b: &Value| b["score"].as_f64().unwrap();
    assert!((3.9..=4.0).contains(&score(&books[0])), "{}", books[0]);
    assert!(
        (2.9..=3.0).contains(&score(&books[1])),
        "capped: {}",
        books[1]
    );
    assert_eq!(books[1]["views"], 10, "every view counts");
    assert_eq!(books[0]["title"], "Book 10");
    assert_eq!(books[0]["author"], "Author 10");
    assert!(books[0]["last_viewed_at"].as_str().is_some());
    assert_eq!(viewed_books(&http, &trend.url, "ps=2").await.len(), 2);
    for bad in ["ps=0", "ps=101", "ps=ten"] {
        let response = http
            .get(format!("{}/trends/books?{bad}", trend.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // Views make no trend.
    let trends: Vec<Value> = http
        .get(format!("{}/trends?all=true", trend.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(trends.len(), 1, "{trends:#?}");
    trend.shutdown().await;
}

/// An open `GET /trends/stream`.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(http: &reqwest::Client, url: &str) -> reqwest::Response {
        http.get(format!("{url}/trends/stream"))
            .send()
            .await
            .unwrap()
    }

    fn of(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// Waits at most `limit` for an `event: changed` message; its data.
    async fn changed(&mut self, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let message: String = self.buffer.drain(..end + 2).collect();
                if message.contains("event: changed") {
                    let data = message
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .unwrap();
                    return serde_json::from_str(data).unwrap();
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no change announced within {limit:?}"))
                .unwrap()
                .expect("the stream ended");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

stores!(the_stream_tells_when_a_batch_changed_the_trends);
async fn the_stream_tells_when_a_batch_changed_the_trends(backend: Backend, store: TrendStoreKind) {
    let mut bus = TestBus::new(backend).await;
    use_store(&mut bus.config, store);
    bus.config.trend.max_streams = 2;
    let (trend, _) = start_trend(&bus.config).await;
    let events = bus.publisher().await;
    let http = reqwest::Client::new();
    // The consumer is running once a first search is applied.
    events.port.publish(&searched("warm up"));
    wait_until(Duration::from_secs(60), "the first search", || async {
        let response = http
            .get(format!("{}/trends?all=true", trend.url))
            .send()
            .await
            .unwrap();
        response.json::<Vec<Value>>().await.unwrap().len() == 1
    })
    .await;

    let mut first = Stream::of(Stream::open(&http, &trend.url).await);
    let second = Stream::of(Stream::open(&http, &trend.url).await);
    // Beyond trend.max_streams: 503, JSON.
    let refused = Stream::open(&http, &trend.url).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("streams"))
    );

    let published = Instant::now();
    events.port.publish(&searched("live"));
    let data = first.changed(Duration::from_secs(10)).await;
    eprintln!("a search announced after {:?}", published.elapsed());
    assert!(
        data["at"]
            .as_str()
            .is_some_and(|at| chrono::DateTime::parse_from_rfc3339(at).is_ok()),
        "{data}"
    );
    // What changed is there to read.
    let trends: Vec<Value> = http
        .get(format!("{}/trends?all=true", trend.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(trends.iter().any(|t| t["query_normalized"] == "live"));
    // A view is announced too; many at once are one or a few messages, not one per event.
    for i in 0..50 {
        events.port.publish(&viewed(7, &format!("r{i}")));
    }
    first.changed(Duration::from_secs(10)).await;
    let books = viewed_books(&http, &trend.url, "").await;
    assert!(!books.is_empty());

    // A stream whose client left frees its place (at the latest on the next message it fails
    // to send).
    drop(second);
    wait_until(Duration::from_secs(30), "a free place", || async {
        events.port.publish(&searched("again"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        Stream::open(&http, &trend.url).await.status() == 200
    })
    .await;
    drop(first);
    trend.shutdown().await;
}

/// A stream ends by itself after the request timeout, before the server would cut it (twice
/// that), and a new one hears the changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_ends_after_the_request_timeout_and_a_new_one_follows() {
    let mut bus = TestBus::new(Backend::Embedded).await;
    use_store(&mut bus.config, TrendStoreKind::Embedded);
    bus.config.http.request_timeout_ms = 500;
    let (trend, _) = start_trend(&bus.config).await;
    let events = bus.publisher().await;
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    let mut response = Stream::open(&http, &trend.url).await;
    assert_eq!(response.status(), 200);
    // The answer ends cleanly (no error) within the timeout and well before twice it.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), response.chunk()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => break,
            Ok(Err(e)) => panic!("the stream failed instead of ending: {e}"),
            Err(_) => panic!("the stream did not end after the request timeout"),
        }
    }
    let lasted = started.elapsed();
    assert!(
        lasted < Duration::from_millis(1000),
        "ended after {lasted:?}"
    );
    // The subscriber subscribes again; a change while it is subscribed reaches it (each stream
    // lasts 500 ms here, so a few may come and go before the consumer applies the search).
    let mut heard = false;
    let limit = std::time::Instant::now() + Duration::from_secs(10);
    let mut round = 0;
    while !heard && std::time::Instant::now() < limit {
        let mut response = Stream::open(&http, &trend.url).await;
        assert_eq!(response.status(), 200);
        events.port.publish(&searched(&format!("late {round}")));
        round += 1;
        let mut text = String::new();
        while let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(5), response.chunk()).await
        {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
            if text.contains("event: changed") {
                heard = true;
                break;
            }
        }
    }
    assert!(heard, "no new stream heard of a change within 10 s");
    trend.shutdown().await;
}
