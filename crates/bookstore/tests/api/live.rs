//! Book pages with the other services, on the embedded log and on Kafka (from `dev/services`; an
//! unreachable Kafka fails the test): a view reaches the search topic with its source, rank and
//! reader; the click-through counts of `/stats` add up after a page with recommendations; and the
//! live Trends panel (`GET /live/trends`) shows another visitor's search within seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bookstore_app::Remotes;
use bookstore_app::config::Config;
use bookstore_domain::events::ViewSource;
use bookstore_testkit::{Backend, Recorder, wait_until};
use bookstore_testkit_app::{TestBus, uid_cookie};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::book_page::{check_totals, row};

const READER_A: &str = "5b0f7c2e-1d3a-4e6f-8a9b-0c1d2e3f4a51";
const READER_B: &str = "9c8d7e6f-5a4b-4c3d-8e2f-1a0b9c8d7e62";
const READER_C: &str = "0a1b2c3d-4e5f-4a6b-9c7d-8e9f0a1b2c73";

/// Runs a test body on both logs: `logs!(name)` makes `name::{embedded, kafka}`.
macro_rules! logs {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                super::$name(bookstore_testkit::Backend::Embedded).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn kafka() {
                super::$name(bookstore_testkit::Backend::Kafka).await;
            }
        })*
    };
}

logs!(
    a_view_reaches_the_topic_with_its_source_rank_and_reader,
    click_through_adds_up_after_a_page_with_recommendations,
    a_book_page_links_to_what_its_readers_also_looked_at,
    the_live_panel_shows_another_visitors_search_within_seconds,
);

/// A test bus on `backend` whose trend and recommendation consumers are in fresh groups.
async fn test_bus(backend: Backend) -> TestBus {
    let mut bus = TestBus::new(backend).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    bus.config.trend.group_id = format!("trend-live-{run}");
    bus.config.recommend.group_id = format!("rec-live-{run}");
    bus
}

/// A service of this process, until the test ends.
struct Service {
    url: String,
    ops: String,
    _stop: oneshot::Sender<()>,
}

macro_rules! serve {
    ($app:expr) => {{
        let app = $app;
        let url = format!("http://{}", app.local_addr().unwrap());
        let ops = format!(
            "http://{}",
            app.ops_addr().unwrap().expect("a separate operations port")
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Service {
            url,
            ops,
            _stop: stop,
        }
    }};
}

async fn trend_service(config: &Config) -> Service {
    serve!(bookstore_app::trend::build(config).await.unwrap())
}

async fn recommend_service(config: &Config) -> Service {
    serve!(bookstore_app::recommend::build(config).await.unwrap())
}

/// The web service calling `remotes`, once its search index has the catalog.
async fn web_service(config: &Config, remotes: Remotes) -> Service {
    let web = serve!(
        bookstore_app::WebApp::build_with(config, remotes)
            .await
            .unwrap()
    );
    let http = reqwest::Client::new();
    wait_until(
        Duration::from_secs(60),
        "the web service to be ready",
        || {
            let readyz = format!("{}/readyz", web.ops);
            let http = http.clone();
            async move {
                http.get(readyz)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        },
    )
    .await;
    web
}

/// `GET url` as the visitor `uid`.
async fn get_as(http: &reqwest::Client, uid: &str, url: &str) -> reqwest::Response {
    let response = http
        .get(url)
        .header("cookie", uid_cookie(uid))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response
}

async fn a_view_reaches_the_topic_with_its_source_rank_and_reader(backend: Backend) {
    let mut bus = test_bus(backend).await;
    let config = &mut bus.config;
    config.web.trend_url = Some(String::new());
    config.web.recommend_url = Some(String::new());
    let web = web_service(config, Remotes::default()).await;
    let recorder = Arc::new(Recorder::default());
    let group = format!("views-{}", uuid::Uuid::new_v4().simple());
    let _consumer = bus.consumer(&group, recorder.clone()).await;
    let http = reqwest::Client::new();
    let books: Vec<Value> = get_as(&http, READER_A, &format!("{}/api/books?q=emma", web.url))
        .await
        .json()
        .await
        .unwrap();
    let id = books[0]["id"].as_i64().unwrap();
    get_as(
        &http,
        READER_A,
        &format!("{}/books/{id}?from=trends&rank=2", web.url),
    )
    .await;
    get_as(
        &http,
        READER_A,
        &format!(
            "{}/books/{id}?from=recommendation&rank=0&reason=popular",
            web.url
        ),
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "two views on the topic",
        || async {
            recorder
                .records()
                .iter()
                .filter(|r| r.event.as_view().is_some())
                .count()
                == 2
        },
    )
    .await;
    let mut views: Vec<_> = recorder
        .records()
        .into_iter()
        .filter_map(|r| r.event.as_view().cloned())
        .collect();
    views.sort_by_key(|v| v.source);
    let seen: Vec<_> = views
        .iter()
        .map(|v| {
            assert_eq!(v.book.id, id);
            assert_eq!(v.user_id.as_deref(), Some(READER_A), "the reader");
            (v.source, v.rank, v.reason.as_deref())
        })
        .collect();
    assert_eq!(
        seen,
        [
            (ViewSource::Trends, Some(2), None),
            (ViewSource::Recommendation, Some(0), Some("popular")),
        ]
    );
}

/// The `href`s of the links `a.title` in the page's "Recommended for you".
fn recommendation_links(html: &str) -> Vec<String> {
    let Some(start) = html.find("id=\"recommendations\"") else {
        return Vec::new();
    };
    let section = &html[start..];
    let section = &section[..section.find("</section>").unwrap()];
    section
        .split("<a class=\"title\" href=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].replace("&amp;", "&"))
        .collect()
}

/// `reason=` of a link, or `none`.
fn reason_of(href: &str) -> String {
    href.split(['?', '&'])
        .find_map(|p| p.strip_prefix("reason="))
        .unwrap_or("none")
        .to_owned()
}

async fn click_through_adds_up_after_a_page_with_recommendations(backend: Backend) {
    let mut bus = test_bus(backend).await;
    let config = &mut bus.config;
    config.web.trend_url = Some(String::new());
    let rec = recommend_service(config).await;
    let web = web_service(
        config,
        Remotes {
            trend_url: None,
            recommend_url: Some(rec.url.clone()),
        },
    )
    .await;
    let http = reqwest::Client::new();
    get_as(&http, READER_A, &format!("{}/?q=austen", web.url)).await;
    get_as(&http, READER_B, &format!("{}/?q=austen", web.url)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let html = get_as(&http, READER_A, &format!("{}/", web.url))
            .await
            .text()
            .await
            .unwrap();
        if !recommendation_links(&html).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recommendations for A after 30 s: {html}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = |http: reqwest::Client| {
        let url = format!("{}/stats", web.ops);
        async move {
            let stats: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            check_totals(&stats);
            stats
        }
    };
    let before = stats(http.clone()).await;
    let html = get_as(&http, READER_A, &format!("{}/", web.url))
        .await
        .text()
        .await
        .unwrap();
    let links = recommendation_links(&html);
    assert!(!links.is_empty(), "{html}");
    let after_page = stats(http.clone()).await;
    let mut reasons: Vec<String> = links.iter().map(|l| reason_of(l)).collect();
    reasons.sort();
    reasons.dedup();
    for reason in &reasons {
        let on_page = links.iter().filter(|l| reason_of(l) == *reason).count() as u64;
        let (shown_before, _) = row(&before, "recommendation", reason);
        let (shown_after, _) = row(&after_page, "recommendation", reason);
        assert_eq!(
            shown_after - shown_before,
            on_page,
            "impressions of reason {reason}: {links:?}"
        );
    }
    // The reader opens the first recommendation.
    let first = &links[0];
    assert!(first.starts_with("/books/") && first.contains("from=recommendation&rank=0"));
    get_as(&http, READER_A, &format!("{}{first}", web.url)).await;
    let after_open = stats(http.clone()).await;
    let reason = reason_of(first);
    let (_, opened_before) = row(&after_page, "recommendation", &reason);
    let (_, opened_after) = row(&after_open, "recommendation", &reason);
    assert_eq!(opened_after, opened_before + 1, "{after_open}");
    assert_eq!(
        after_open["total"]["opened"].as_u64().unwrap(),
        after_page["total"]["opened"].as_u64().unwrap() + 1
    );
}

/// The id of the first book a search for `q` finds.
async fn first_id(http: &reqwest::Client, web: &Service, q: &str) -> i64 {
    let books: Vec<Value> = get_as(http, READER_C, &format!("{}/api/books?q={q}", web.url))
        .await
        .json()
        .await
        .unwrap();
    books[0]["id"].as_i64().unwrap()
}

async fn a_book_page_links_to_what_its_readers_also_looked_at(backend: Backend) {
    let mut bus = test_bus(backend).await;
    let config = &mut bus.config;
    config.web.trend_url = Some(String::new());
    let rec = recommend_service(config).await;
    let web = web_service(
        config,
        Remotes {
            trend_url: None,
            recommend_url: Some(rec.url.clone()),
        },
    )
    .await;
    let http = reqwest::Client::new();
    let emma = first_id(&http, &web, "emma").await;
    let dracula = first_id(&http, &web, "dracula").await;
    // Nobody has looked at Emma yet: the section is there, and says so.
    let html = get_as(&http, READER_C, &format!("{}/books/{emma}", web.url))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("Readers who looked at this also looked at"),
        "{html}"
    );
    // A and B each look at Emma, then Dracula.
    for reader in [READER_A, READER_B] {
        for id in [emma, dracula] {
            get_as(
                &http,
                reader,
                &format!("{}/books/{id}?from=search&rank=0", web.url),
            )
            .await;
        }
    }
    let link = format!("<a class=\"title\" href=\"/books/{dracula}?from=similar&amp;rank=0\">");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let html = get_as(&http, READER_C, &format!("{}/books/{emma}", web.url))
            .await
            .text()
            .await
            .unwrap();
        let similar = html
            .find("<section class=\"panel\" id=\"similar\"")
            .map(|at| &html[at..])
            .map(|s| &s[..s.find("</section>").unwrap()]);
        if similar.is_some_and(|s| s.contains(&link)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Dracula is not under Emma's similar books after 30 s: {similar:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats: Value = http
        .get(format!("{}/stats", web.ops))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    check_totals(&stats);
    assert!(row(&stats, "similar", "none").0 >= 1, "{stats}");
    assert_eq!(row(&stats, "search", "none").1, 4, "{stats}");
}

/// Reads the event stream `response` until an `event: trends` whose data `done` accepts; panics
/// after `limit`.
async fn wait_for_trends(
    response: &mut reqwest::Response,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    let mut text = String::new();
    loop {
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.lines().any(|l| l == "event: trends") {
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                let data: Value = serde_json::from_str(&data).unwrap();
                assert!(
                    data["trends"].is_array() && data["books"].is_array(),
                    "{data}"
                );
                if done(&data) {
                    return data;
                }
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no such trends event within {limit:?}"))
            .unwrap()
            .expect("the stream stays open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

async fn the_live_panel_shows_another_visitors_search_within_seconds(backend: Backend) {
    let mut bus = test_bus(backend).await;
    let config = &mut bus.config;
    config.web.recommend_url = Some(String::new());
    // Only the trend service's stream can bring the change this soon.
    config.web.live_refresh_ms = 60_000;
    let trend = trend_service(config).await;
    let web = web_service(
        config,
        Remotes {
            trend_url: Some(trend.url.clone()),
            recommend_url: None,
        },
    )
    .await;
    let http = reqwest::Client::new();
    // A's page has the panel and loads the script.
    let html = get_as(&http, READER_A, &format!("{}/", web.url))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<section class=\"panel\" id=\"trends\""),
        "{html}"
    );
    assert!(html.contains("<script src=\"/static/live.js\" defer></script>"));
    let mut stream = get_as(&http, READER_A, &format!("{}/live/trends", web.url)).await;
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // The current lists come first.
    wait_for_trends(&mut stream, Duration::from_secs(10), |_| true).await;
    // A first search shows the trend consumer has joined its group and caught up (on Kafka a
    // fresh group takes a while); only then is the delay of B's search measured.
    get_as(&http, READER_A, &format!("{}/?q=dracula", web.url)).await;
    wait_for_trends(&mut stream, Duration::from_secs(20), |data| {
        data["trends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["query"] == "dracula")
    })
    .await;
    let searched = Instant::now();
    get_as(&http, READER_B, &format!("{}/?q=frankenstein", web.url)).await;
    let data = wait_for_trends(&mut stream, Duration::from_secs(5), |data| {
        data["trends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["query"] == "frankenstein")
    })
    .await;
    eprintln!(
        "B's search reached A's live panel after {:?}",
        searched.elapsed()
    );
    let trend = data["trends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["query"] == "frankenstein")
        .unwrap();
    assert!(
        trend["books"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["title"] == "Frankenstein"),
        "{trend}"
    );
}
