//! Searches through the web service show up in `GET /trends` and on the page.

use std::time::{Duration, Instant};

use bookstore_app::config::TrendStoreKind;
use bookstore_app::{Remotes, serve_all};
use bookstore_testkit::{Backend, free_port, process::bookstore_child, wait_until};
use bookstore_testkit_app::{Running, TestBus, consumer_env, start_trend};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::{stores, use_store};

const USER_A: &str = "0b1c7a52-0c4e-4c1e-9d0e-9a1f0e2c3d4e";

/// The web service of `bus`, its page showing the trends of the service at `trend_url`.
async fn start_web(bus: &TestBus, trend_url: &str) -> Running {
    let remotes = Remotes {
        trend_url: Some(trend_url.to_owned()),
        recommend_url: None,
    };
    bookstore_testkit_app::start_web(&bus.config, remotes)
        .await
        .0
}

async fn trends(http: &reqwest::Client, trend: &Running, query: &str) -> Vec<Value> {
    let response = http
        .get(format!("{}/trends?{query}", trend.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn count_of(trends: &[Value], normalized: &str) -> u64 {
    trends
        .iter()
        .find(|t| t["query_normalized"] == normalized)
        .and_then(|t| t["count"].as_u64())
        .unwrap_or(0)
}

stores!(searches_show_up_in_trends_with_exact_counts);
async fn searches_show_up_in_trends_with_exact_counts(backend: Backend, store: TrendStoreKind) {
    let mut bus = TestBus::new(backend).await;
    use_store(&mut bus.config, store);
    let (trend, _) = start_trend(&bus.config).await;
    let web = start_web(&bus, &trend.url).await;
    let http = reqwest::Client::new();

    // `rust` three ways (one trend, shown as its most common spelling), from the API
    // anonymously, with a cookie, and from the page; `frankenstein` twice.
    for q in ["rust", "rust", "rust", "Rust", "%20RUST%20%20"] {
        let status = http
            .get(format!("{}/api/books?q={q}", web.url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    let page = http
        .get(format!("{}/?q=Rust", web.url))
        .header("cookie", bookstore_testkit_app::uid_cookie(USER_A))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    for _ in 0..2 {
        http.get(format!("{}/api/books?q=Frankenstein", web.url))
            .send()
            .await
            .unwrap();
    }

    wait_until(
        Duration::from_secs(30),
        "the searches in /trends",
        || async {
            let all = trends(&http, &trend, "ps=100&by=count").await;
            count_of(&all, "rust") >= 6 && count_of(&all, "frankenstein") >= 2
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let by_count = trends(&http, &trend, "ps=100&by=count").await;
    assert_eq!(by_count.len(), 2, "{by_count:#?}");
    assert_eq!(count_of(&by_count, "rust"), 6, "exactly once");
    assert_eq!(count_of(&by_count, "frankenstein"), 2);
    let rust = &by_count[0];
    assert_eq!(rust["query"], "rust", "the most common spelling");
    let frankenstein = &by_count[1];
    assert_eq!(frankenstein["query"], "Frankenstein");
    assert_eq!(frankenstein["books"][0]["title"], "Frankenstein");
    assert_eq!(frankenstein["books"][0]["author"], "Mary Shelley");
    assert!(frankenstein["books"][0]["id"].as_i64().is_some());
    assert!(frankenstein["last_searched_at"].as_str().is_some());
    // Fresh searches score about one each, but the five anonymous ones come from one client,
    // whose first three count (trend.user_cap): 3 + 1 for the reader's. Two score about two.
    let score = |t: &Value| t["score"].as_f64().unwrap();
    assert!((3.9..=4.0).contains(&score(rust)), "{rust}");
    assert!((1.9..=2.0).contains(&score(frankenstein)), "{frankenstein}");
    let by_score = trends(&http, &trend, "ps=1").await;
    assert_eq!(by_score.len(), 1);
    assert_eq!(by_score[0]["query_normalized"], "rust");

    // Bad parameters: 400 with a JSON message.
    for bad in ["ps=0", "ps=101", "ps=ten", "by=popularity"] {
        let response = http
            .get(format!("{}/trends?{bad}", trend.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}: {body}"
        );
    }
    assert_eq!(
        http.get(format!("{}/readyz", trend.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The page shows them, each query a link that runs its search.
    wait_until(Duration::from_secs(5), "the trends on the page", || async {
        let html = bookstore_testkit::http::get_text(&http, &format!("{}/", web.url)).await;
        html.contains(r#"id="trends""#)
            && html.contains(r#"href="/?q=rust""#)
            && html.contains(r#"href="/?q=Frankenstein""#)
    })
    .await;

    web.shutdown().await;
    trend.shutdown().await;
}

stores!(one_person_cannot_steer_the_public_trends);
/// Findings 4 and 8 of the hardening issue: made-up visitor ids do not make readers, anonymous
/// searches are capped per client, and a query reaches the page only once `trend.min_readers`
/// distinct readers searched it, so one person can neither push a query onto everyone's page
/// nor have their own searches (a name, a medical question) shown to others.
async fn one_person_cannot_steer_the_public_trends(backend: Backend, store: TrendStoreKind) {
    let mut bus = TestBus::new(backend).await;
    use_store(&mut bus.config, store);
    bus.config.trend.min_readers = 3;
    // The test speaks for several networks through a proxy it trusts (X-Forwarded-For).
    bus.config.web.trusted_proxies = vec!["127.0.0.1".to_owned()];
    let (trend, _) = start_trend(&bus.config).await;
    let web = start_web(&bus, &trend.url).await;
    let http = reqwest::Client::new();
    let search_from = |path: &str, q: &str, cookie: Option<String>, from: Option<&str>| {
        let mut request = http.get(format!("{}{path}", web.url)).query(&[("q", q)]);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(from) = from {
            request = request.header("x-forwarded-for", from);
        }
        async move { assert_eq!(request.send().await.unwrap().status(), 200) }
    };
    let search = |path: &str, q: &str, cookie: Option<String>| search_from(path, q, cookie, None);
    // One person: forty searches with forty made-up ids, on the API and on the page.
    for i in 0..40 {
        let made_up = format!("uid={}", uuid::Uuid::new_v4());
        let path = if i % 2 == 0 { "/api/books" } else { "/" };
        search(path, "FREE BOOKS at evil.example", Some(made_up)).await;
    }
    // A reader, again and again, for something private.
    let reader = bookstore_testkit_app::uid_cookie(USER_A);
    for _ in 0..10 {
        search("/", "my own diagnosis", Some(reader.clone())).await;
    }
    // And visitor ids fetched from the page, as many as wanted: they are readers of one
    // network, one origin, which adds at most trend.client_cap (10) to the score.
    for _ in 0..5 {
        let issued = http.get(format!("{}/", web.url)).send().await.unwrap();
        let cookie = issued.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        for _ in 0..3 {
            search("/api/books", "minted readers", Some(cookie.clone())).await;
        }
    }
    wait_until(
        Duration::from_secs(30),
        "the searches in /trends",
        || async {
            let all = trends(&http, &trend, "ps=100&all=true").await;
            count_of(&all, "free books at evil.example") == 40
                && count_of(&all, "my own diagnosis") == 10
                && count_of(&all, "minted readers") == 15
        },
    )
    .await;
    let all = trends(&http, &trend, "ps=100&all=true").await;
    let evil = all
        .iter()
        .find(|t| t["query_normalized"] == "free books at evil.example")
        .unwrap();
    assert!(
        evil["score"].as_f64().unwrap() < 3.01,
        "one client scores at most trend.user_cap: {evil}"
    );
    assert_eq!(evil["public"], false);
    let minted = all
        .iter()
        .find(|t| t["query_normalized"] == "minted readers")
        .unwrap();
    assert!(
        minted["score"].as_f64().unwrap() < 10.01,
        "one network scores at most trend.client_cap: {minted}"
    );
    assert!(
        trends(&http, &trend, "ps=100").await.is_empty(),
        "nothing is public"
    );
    let page = http.get(format!("{}/", web.url)).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("evil.example") && !html.contains("diagnosis") && !html.contains("minted")
    );
    assert!(
        html.contains("A search shows here once people on 3 different networks have made it."),
        "the page says why Trends is empty"
    );

    // Three readers on three networks make a query public.
    const READERS: [(&str, &str); 3] = [
        (USER_A, "203.0.113.1"),
        (
            "5d7e1f3a-2b4c-4d6e-8f0a-1b2c3d4e5f60",
            "198.51.100.2, 203.0.113.2",
        ),
        ("9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a", "2001:db8:3::1"),
    ];
    for (uid, from) in READERS {
        let cookie = Some(bookstore_testkit_app::uid_cookie(uid));
        search_from("/", "dune", cookie, Some(from)).await;
    }
    wait_until(Duration::from_secs(30), "dune on the page", || async {
        let html = bookstore_testkit::http::get_text(&http, &format!("{}/", web.url)).await;
        html.contains(r#"href="/?q=dune""#)
    })
    .await;
    let public = trends(&http, &trend, "ps=100").await;
    assert_eq!(public.len(), 1, "{public:#?}");
    assert_eq!(public[0]["query_normalized"], "dune");
    assert_eq!(public[0]["public"], true);

    // Finding 3: a 60,000-character query, even one readers agree on, is a trend of the
    // bounded text the search used; the page stays small.
    let huge = format!("{}{}", "long ".repeat(20), "y".repeat(60_000));
    for (uid, from) in READERS {
        let cookie = Some(bookstore_testkit_app::uid_cookie(uid));
        search_from("/", &huge, cookie, Some(from)).await;
    }
    wait_until(
        Duration::from_secs(30),
        "the long query in /trends",
        || async { trends(&http, &trend, "ps=100").await.len() == 2 },
    )
    .await;
    for t in trends(&http, &trend, "ps=100&all=true").await {
        let query = t["query"].as_str().unwrap();
        assert!(query.chars().count() <= 200, "{} characters", query.len());
    }
    let page =
        || async { bookstore_testkit::http::get_text(&http, &format!("{}/", web.url)).await };
    wait_until(
        Duration::from_secs(10),
        "the long query on the page",
        || async { page().await.contains("long long") },
    )
    .await;
    let html = page().await;
    assert!(html.len() < 20_000, "the page is {} bytes", html.len());

    web.shutdown().await;
    trend.shutdown().await;
}

stores!(a_forgotten_reader_is_deleted_and_the_counts_stay);
/// `reader.forgotten` on the search topic, after the reader's searches (keyed by them, on their
/// partition): the trend service deletes what it holds about them (their cap counters, their
/// place among the origins of a trend not public yet), and the counts stay; a later search of
/// theirs is theirs again.
async fn a_forgotten_reader_is_deleted_and_the_counts_stay(
    backend: Backend,
    store: TrendStoreKind,
) {
    use bookstore_domain::events::{Event, ReaderForgottenEvent, SearchEvent};
    let mut bus = TestBus::new(backend).await;
    use_store(&mut bus.config, store);
    let (trend, _) = start_trend(&bus.config).await;
    let held = bookstore_app::trend::open_trend_store(&bus.config)
        .await
        .unwrap();
    let searches = bus.publisher().await;
    let http = reqwest::Client::new();
    let searched = |query: &str| {
        Event::BookSearched(SearchEvent::new(
            uuid::Uuid::now_v7(),
            chrono::Utc::now(),
            Some(USER_A.to_owned()),
            query,
            0,
            vec![],
        ))
    };
    for query in ["my own name", "my own name", "dune"] {
        searches.port.publish(&searched(query));
    }
    searches
        .port
        .publish(&Event::ReaderForgotten(ReaderForgottenEvent::now(USER_A)));
    wait_until(
        Duration::from_secs(30),
        "the searches counted and their reader forgotten",
        || async {
            let all = trends(&http, &trend, "ps=100&all=true").await;
            count_of(&all, "my own name") == 2
                && count_of(&all, "dune") == 1
                && !held.holds_reader(USER_A).await.unwrap()
        },
    )
    .await;
    searches.port.publish(&searched("dune"));
    wait_until(Duration::from_secs(30), "a later search", || async {
        count_of(&trends(&http, &trend, "ps=100&all=true").await, "dune") == 2
    })
    .await;
    assert!(held.holds_reader(USER_A).await.unwrap());
    let all = trends(&http, &trend, "ps=100&all=true").await;
    assert_eq!(count_of(&all, "my own name"), 2, "the counts stay");
    trend.shutdown().await;
}

/// Three searches on the page of the web service at `url` (as one reader): each is under Trends
/// on a page loaded within a second of it.
async fn searches_show_under_trends_within_a_second(http: &reqwest::Client, url: &str) {
    for query in ["Wuthering Heights", "moby dick", "Middlemarch"] {
        let searched = Instant::now();
        let page = http
            .get(format!("{url}/?q={query}"))
            .header("cookie", bookstore_testkit_app::uid_cookie(USER_A))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let link = format!(r#"href="/?q={}""#, query.replace(' ', "%20"));
        loop {
            let html = bookstore_testkit::http::get_text(http, &format!("{url}/")).await;
            if html.contains(&link) {
                break;
            }
            assert!(
                searched.elapsed() < Duration::from_secs(1),
                "{query} not under Trends after a second"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("{query}: under Trends after {:?}", searched.elapsed());
    }
}

/// The all-in-one `bookstore` on embedded defaults (batches waiting up to the default 100 ms):
/// a search on the page is under Trends on the next page within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_search_on_the_page_is_under_trends_within_a_second() {
    let mut bus = TestBus::new(Backend::Embedded).await;
    use_store(&mut bus.config, TrendStoreKind::Embedded);
    bus.config.events.batch_wait_ms = 100;
    bus.config.trend.listen = "127.0.0.1:0".parse().unwrap();
    let http = reqwest::Client::new();
    // The web port is chosen here, as serve_all binds the trend service before the web
    // service; another test may take it between the choice and the bind, so a start that fails
    // is tried again on another port.
    let mut attempts = 0;
    let mut config = std::mem::take(&mut bus.config);
    let (url, tx, task) = loop {
        attempts += 1;
        let web_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let web_addr = web_listener.local_addr().unwrap();
        drop(web_listener);
        config.web.listen = web_addr;
        let (tx, rx) = oneshot::channel::<()>();
        // The task gives the configuration back, for another attempt.
        let task = tokio::spawn(async move {
            let served = serve_all(&config, async move {
                let _ = rx.await;
            })
            .await;
            (config, served)
        });
        let url = format!("http://{web_addr}");
        // Ready: the search index holds the sample catalog.
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = loop {
            if task.is_finished() {
                break false;
            }
            if let Ok(response) = http.get(format!("{url}/readyz")).send().await {
                if response.status() == 200 {
                    break true;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{url}/readyz not ready after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if ready {
            break (url, tx, task);
        }
        let (returned, failed) = task.await.unwrap();
        config = returned;
        assert!(
            attempts < 3,
            "serve_all failed {attempts} times: {failed:?}"
        );
        eprintln!("serve_all failed to start ({failed:?}); trying another port");
    };

    searches_show_under_trends_within_a_second(&http, &url).await;
    tx.send(()).unwrap();
    let (_, served) = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    served.unwrap();
}

/// A trend service that never answers, or is not there: the page still answers within the
/// timeout, without the Trends section.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_does_not_wait_for_a_dead_or_hung_trend_service() {
    let bus = TestBus::new(Backend::Embedded).await;
    // Hung: accepts connections, never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());
    let _holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    // Dead: nothing listens.
    let dead_url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let http = reqwest::Client::new();
    for trend_url in [hung_url, dead_url] {
        let web = start_web(&bus, &trend_url).await;
        for round in 0..3 {
            let started = Instant::now();
            let response = http
                .get(format!("{}/?q=austen", web.url))
                .send()
                .await
                .unwrap();
            let elapsed = started.elapsed();
            assert_eq!(response.status(), 200);
            let html = response.text().await.unwrap();
            assert!(
                html.contains("Jane <mark>Austen</mark>"),
                "the search itself works"
            );
            assert!(
                !html.contains(r#"id="trends""#),
                "no Trends section when the service fails"
            );
            assert!(
                elapsed < Duration::from_millis(800),
                "{trend_url} round {round}: the page took {elapsed:?} (timeout 300 ms)"
            );
        }
        web.shutdown().await;
    }
}

/// The web service and the trend service as separate `bookstore` processes on Kafka and Redis:
/// a search on the page is under Trends on the next page within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn separate_processes_on_kafka_and_redis_show_a_search_within_a_second() {
    let mut bus = TestBus::new(Backend::Kafka).await;
    use_store(&mut bus.config, TrendStoreKind::Redis);
    let (web_port, trend_port) = (free_port(), free_port());
    let mut env = bus.env();
    env.extend(consumer_env(&bus.config));
    env.extend([
        (
            "BOOKSTORE_EVENTS__BATCH_WAIT_MS".to_owned(),
            "100".to_owned(),
        ),
        (
            "BOOKSTORE_TREND__LISTEN".into(),
            format!("127.0.0.1:{trend_port}"),
        ),
        (
            "BOOKSTORE_WEB__LISTEN".into(),
            format!("127.0.0.1:{web_port}"),
        ),
        (
            "BOOKSTORE_WEB__TREND_URL".into(),
            format!("http://127.0.0.1:{trend_port}"),
        ),
    ]);
    let mut trend = bookstore_child(env!("CARGO_BIN_EXE_bookstore"), "trend", &env);
    let mut web = bookstore_child(env!("CARGO_BIN_EXE_bookstore"), "web", &env);
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{web_port}");
    let trend_url = format!("http://127.0.0.1:{trend_port}");
    wait_until(
        Duration::from_secs(60),
        "both services to start",
        || async {
            http.get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
                && http
                    .get(format!("{trend_url}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    // The trend service has joined its group once a first search shows up.
    http.get(format!("{url}/?q=warm%20up"))
        .send()
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the trend service to join",
        || async {
            let html = bookstore_testkit::http::get_text(&http, &format!("{url}/")).await;
            html.contains(r#"href="/?q=warm%20up""#)
        },
    )
    .await;

    searches_show_under_trends_within_a_second(&http, &url).await;
    for child in [&mut web, &mut trend] {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(status.success(), "exits 0 on SIGTERM: {status}");
    }
}
