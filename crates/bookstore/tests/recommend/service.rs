//! Books created through the web service reach the recommendation service's catalog; readers
//! searching through the web service get books they have not been shown, with reasons, in
//! `GET /recommendations` and on the page; readers viewing books (`book.viewed` on the bus) change
//! each other's "similar" books and recommendations, and never get a book they viewed.

use std::collections::BTreeSet;
use std::time::Duration;

use bookstore_app::{Remotes, serve_all};
use bookstore_testkit::{http::get_json, wait_until};
use bookstore_testkit_app::{Infra, start_recommend, start_trend, start_web, test_bus};
use serde_json::Value;

use crate::infra;

const READER_A: &str = "0b1c7a52-0c4e-4c1e-9d0e-9a1f0e2c3d4e";
const READER_B: &str = "5d0f3c2e-7a61-4b8e-8c3f-2e9b6a1d4c70";
const NEWCOMER: &str = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a";

fn ids(books: &Value) -> BTreeSet<i64> {
    books
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect()
}

/// Searches from the page as the visitor `uid`; returns the page.
async fn page_search(http: &reqwest::Client, web: &str, uid: &str, q: &str) -> String {
    let response = http
        .get(format!("{web}/?q={q}"))
        .header("cookie", bookstore_testkit_app::uid_cookie(uid))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The ids of the books a result page shows (linked as `/books/{id}?from=search&rank=R`).
fn shown_on(html: &str) -> BTreeSet<i64> {
    // The results' title links, not the recommendations' or the trends'.
    html.split("<h2 class=\"title\"><a href=\"/books/")
        .skip(1)
        .filter_map(|rest| rest.split(['?', '"']).next()?.parse().ok())
        .collect()
}

/// The page for `uid` (no search), polled until `ready` holds; panics after `limit`.
async fn page_until(
    http: &reqwest::Client,
    web: &str,
    uid: &str,
    limit: Duration,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let html = page_search(http, web, uid, "").await;
        if ready(&html) {
            return html;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the page for {uid} never got ready: {html}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

infra!(catalog_changes_reach_the_recommendation_catalog);
/// Created, replaced and deleted books reach the recommendation service's catalog copy through
/// the outbox and the catalog topic.
async fn catalog_changes_reach_the_recommendation_catalog(infra: Infra) {
    let bus = test_bus(infra).await;
    let (rec, _) = start_recommend(&bus.config).await;
    let remotes = Remotes {
        trend_url: None,
        recommend_url: Some(rec.url.clone()),
    };
    let (web, _) = start_web(&bus.config, remotes).await;
    let http = reqwest::Client::new();

    // The sample catalog went through the outbox too.
    let listed = http
        .get(format!("{}/api/books?limit=1", web.url))
        .send()
        .await
        .unwrap();
    let total: u64 = listed.headers()["x-total-count"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(total > 200, "the sample catalog is loaded");
    wait_until(
        Duration::from_secs(30),
        "the sample catalog copied",
        || async {
            get_json(&http, &rec.ops("/stats")).await["catalog_books"].as_u64() == Some(total)
        },
    )
    .await;

    let created: Value = http
        .post(format!("{}/api/books", web.url))
        .bearer_auth("test-token")
        .json(&serde_json::json!({
            "title": "The Outbox Pattern",
            "author": "Ada Relay",
            "published_at": "2026-11-27",
            "description": "Written and published in one transaction."
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_i64().expect("the created book's id");
    let book_url = format!("{}/books/{id}", rec.url);
    wait_until(Duration::from_secs(15), "the new book copied", || async {
        http.get(&book_url).send().await.unwrap().status() == 200
    })
    .await;
    let copy = get_json(&http, &book_url).await;
    assert_eq!(copy["title"], "The Outbox Pattern");
    assert_eq!(copy["author"], "Ada Relay");
    let missing = http
        .get(format!("{}/books/999999999", rec.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Replaced: the copy follows.
    let response = http
        .put(format!("{}/api/books/{id}", web.url))
        .bearer_auth("test-token")
        .json(&serde_json::json!({
            "title": "The Outbox Pattern, Second Edition",
            "author": "Ada Relay",
            "published_at": "2026-12-06"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    wait_until(Duration::from_secs(15), "the new title copied", || async {
        get_json(&http, &book_url).await["title"] == "The Outbox Pattern, Second Edition"
    })
    .await;
    // Deleted: gone from the copy, so never recommended again.
    let response = http
        .delete(format!("{}/api/books/{id}", web.url))
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    wait_until(Duration::from_secs(15), "the deleted book gone", || async {
        http.get(&book_url).send().await.unwrap().status() == 404
    })
    .await;
    assert_eq!(
        get_json(&http, &rec.ops("/stats")).await["catalog_books"].as_u64(),
        Some(total),
        "the copy holds the sample catalog again"
    );

    web.shutdown().await;
    rec.shutdown().await;
}

infra!(readers_discover_books_they_have_not_been_shown);
async fn readers_discover_books_they_have_not_been_shown(infra: Infra) {
    let bus = test_bus(infra).await;
    let (rec, _) = start_recommend(&bus.config).await;
    let (trend, _) = start_trend(&bus.config).await;
    let remotes = Remotes {
        trend_url: Some(trend.url.clone()),
        recommend_url: Some(rec.url.clone()),
    };
    let (web, _) = start_web(&bus.config, remotes).await;
    let http = reqwest::Client::new();
    wait_until(
        Duration::from_secs(30),
        "the sample catalog copied",
        || async {
            get_json(&http, &rec.ops("/stats")).await["catalog_books"].as_u64() > Some(200)
        },
    )
    .await;

    // A reads Austen; B reads Austen and the Brontës.
    page_search(&http, &web.url, READER_A, "austen").await;
    page_search(&http, &web.url, READER_B, "austen").await;
    page_search(&http, &web.url, READER_B, "bronte").await;

    let for_a = format!("{}/recommendations?uid={READER_A}", rec.url);
    wait_until(Duration::from_secs(30), "a Brontë book for A", || async {
        get_json(&http, &for_a)
            .await
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["author"].as_str().unwrap_or("").contains("Brontë"))
    })
    .await;
    let recommended = get_json(&http, &for_a).await;
    let interests = get_json(&http, &rec.ops(&format!("/interests?uid={READER_A}"))).await;
    let shown = ids(&interests["books"]);
    assert_eq!(
        shown.len(),
        5,
        "A was shown one page of Austen: {interests}"
    );
    assert!(
        ids(&recommended).is_disjoint(&shown),
        "nothing A has been shown: {recommended}"
    );
    let bronte = recommended
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["author"].as_str().unwrap_or("").contains("Brontë"))
        .unwrap();
    assert_eq!(bronte["reason"], "because you searched for austen");
    assert!(bronte["score"].as_f64().unwrap() > 0.0);
    assert!(bronte["title"].is_string());
    assert_eq!(interests["queries"][0]["name"], "austen");
    assert_eq!(interests["authors"][0]["name"], "Jane Austen");

    // B has been shown Austen and the Brontës: other books only.
    let for_b = get_json(
        &http,
        &format!("{}/recommendations?uid={READER_B}&n=50", rec.url),
    )
    .await;
    let shown_b =
        ids(&get_json(&http, &rec.ops(&format!("/interests?uid={READER_B}&n=100"))).await["books"]);
    assert_eq!(shown_b.len(), 10);
    assert!(ids(&for_b).is_disjoint(&shown_b), "{for_b}");

    // A newcomer gets the popular books: what A and B were shown.
    let fresh = get_json(
        &http,
        &format!("{}/recommendations?uid={NEWCOMER}&n=2", rec.url),
    )
    .await;
    let fresh = fresh.as_array().unwrap();
    assert_eq!(fresh.len(), 2, "{fresh:?}");
    assert!(fresh.iter().all(|b| b["reason"] == "popular with readers"));
    assert!(
        fresh.iter().all(|b| b["author"] == "Jane Austen"),
        "Austen was searched most: {fresh:?}"
    );

    // On the page, each reader sees the section with books not shown to them, with reasons.
    for (uid, shown) in [(READER_A, &shown), (READER_B, &shown_b)] {
        let html = page_until(&http, &web.url, uid, Duration::from_secs(10), |html| {
            html.contains("Recommended for you") && html.contains("data-book-id=")
        })
        .await;
        for id in shown {
            assert!(
                !html.contains(&format!("data-book-id=\"{id}\"")),
                "book {id} already shown to {uid} is recommended on the page"
            );
        }
        assert!(html.contains("because you searched for") || html.contains("more by"));
    }

    // Bad requests get a 400 with a JSON message.
    for (base, bad) in [
        (&rec.url, "/recommendations"),
        (&rec.url, "/recommendations?uid=a&n=0"),
        (&rec.url, "/recommendations?uid=a&n=51"),
        (rec.ops_url.as_ref().unwrap(), "/interests?uid="),
    ] {
        let response = http.get(format!("{base}{bad}")).send().await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{bad}");
    }
    for path in ["/healthz", "/readyz"] {
        let health = get_json(&http, &format!("{}{path}", rec.url)).await;
        assert!(health["status"].is_string(), "{path}: {health}");
    }

    web.shutdown().await;
    trend.shutdown().await;
    rec.shutdown().await;
}

/// The page without a recommendation service: no section, no error, no wait beyond the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_goes_without_recommendations_when_the_service_is_down() {
    let bus = test_bus(Infra::Embedded).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let (web, _) = start_web(
        &bus.config,
        Remotes {
            trend_url: None,
            recommend_url: Some(dead_url),
        },
    )
    .await;
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    let html = page_search(&http, &web.url, READER_A, "austen").await;
    assert!(started.elapsed() < Duration::from_millis(800));
    assert!(!html.contains("Recommended for you"));
    assert!(
        html.contains("Jane <mark>Austen</mark>"),
        "the search results are there"
    );
    web.shutdown().await;
}

/// The all-in-one `bookstore` on embedded defaults: two visitors (two `uid` cookies) each see
/// recommendations they had not been shown, with reasons.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_all_in_one_recommends_to_two_visitors() {
    let mut bus = test_bus(Infra::Embedded).await;
    let web_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web_addr = web_listener.local_addr().unwrap();
    drop(web_listener);
    bus.config.web.listen = web_addr;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = std::mem::take(&mut bus.config);
    let task = tokio::spawn(async move {
        serve_all(&config, async move {
            let _ = rx.await;
        })
        .await
    });
    let http = reqwest::Client::new();
    let url = format!("http://{web_addr}");
    // Ready: the search index holds the sample catalog.
    bookstore_testkit::http::wait_ready(&url).await;
    // What each visitor was shown: the books linked from their result pages.
    let mut shown_a = shown_on(&page_search(&http, &url, READER_A, "austen").await);
    let mut shown_b = shown_on(&page_search(&http, &url, READER_B, "austen").await);
    shown_b.extend(shown_on(
        &page_search(&http, &url, READER_B, "bronte").await,
    ));
    shown_a.extend(shown_on(
        &page_search(&http, &url, READER_A, "frankenstein").await,
    ));
    assert_eq!(
        (shown_a.len(), shown_b.len()),
        (6, 10),
        "{shown_a:?} {shown_b:?}"
    );
    for (uid, shown, reason) in [
        (READER_A, &shown_a, "because you searched for austen"),
        // A's Frankenstein search pairs it with Austen, which B searched too.
        (READER_B, &shown_b, "because you searched for austen"),
    ] {
        let html = page_until(&http, &url, uid, Duration::from_secs(30), |html| {
            html.contains("Recommended for you") && html.contains(reason)
        })
        .await;
        let section = html.split("Recommended for you").nth(1).unwrap();
        let recommended = section.matches("data-book-id=").count();
        assert!(recommended >= 3, "{uid} gets several books: {section}");
        for id in shown {
            assert!(
                !section.contains(&format!("data-book-id=\"{id}\"")),
                "book {id} was shown to {uid}"
            );
        }
    }
    let page_a = page_search(&http, &url, READER_A, "").await;
    assert!(
        page_a
            .split("Recommended for you")
            .nth(1)
            .unwrap()
            .contains("Brontë"),
        "A discovers the Brontës through B"
    );
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

infra!(a_forgotten_reader_is_forgotten_by_every_service);
/// A reader searches through the web service; the trend and recommendation services hold them.
/// The reader then uses "Forget my history" on the page: both services delete what they hold
/// about them (the recommendation service's profile; the trend service's per-reader counters),
/// while the searches' anonymous contributions (trend counts) stay. An operator's
/// `DELETE /api/readers/{uid}` does the same for another reader.
async fn a_forgotten_reader_is_forgotten_by_every_service(infra: Infra) {
    let bus = test_bus(infra).await;
    let (trend, _) = start_trend(&bus.config).await;
    let (rec, _) = start_recommend(&bus.config).await;
    let remotes = Remotes {
        trend_url: Some(trend.url.clone()),
        recommend_url: Some(rec.url.clone()),
    };
    let (web, _) = start_web(&bus.config, remotes).await;
    let trends = bookstore_app::trend::open_trend_store(&bus.config)
        .await
        .unwrap();
    let http = reqwest::Client::new();

    for uid in [READER_A, READER_B] {
        page_search(&http, &web.url, uid, "austen").await;
        page_search(&http, &web.url, uid, "bronte").await;
    }
    let interests = |uid: &'static str| {
        let (http, url) = (http.clone(), rec.ops(&format!("/interests?uid={uid}")));
        async move { get_json(&http, &url).await }
    };
    for uid in [READER_A, READER_B] {
        wait_until(Duration::from_secs(30), "the profile built", || async {
            interests(uid).await["queries"].as_array().map(Vec::len) == Some(2)
        })
        .await;
        assert!(
            trends.holds_reader(uid).await.unwrap(),
            "the trend service holds {uid}"
        );
    }
    let count_before = get_json(&http, &format!("{}/trends?q=austen&all=true", trend.url)).await[0]
        ["count"]
        .as_u64();
    assert_eq!(count_before, Some(2));

    // A: "Forget my history" on the page (the form's token comes from the page).
    let html = page_search(&http, &web.url, READER_A, "").await;
    let token = html
        .split("name=\"token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page has the forget form with its token");
    let answer = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/forget", web.url))
        .header("cookie", bookstore_testkit_app::uid_cookie(READER_A))
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303, "{:?}", answer.text().await);
    // B: an operator's request.
    let answer = http
        .delete(format!("{}/api/readers/{READER_B}", web.url))
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);

    for uid in [READER_A, READER_B] {
        wait_until(Duration::from_secs(30), "the profile deleted", || async {
            let profile = interests(uid).await;
            ["books", "authors", "queries"]
                .iter()
                .all(|list| profile[*list].as_array().is_some_and(Vec::is_empty))
        })
        .await;
        wait_until(
            Duration::from_secs(30),
            "the trend counters deleted",
            || {
                let trends = trends.clone();
                async move { !trends.holds_reader(uid).await.unwrap() }
            },
        )
        .await;
    }
    // What their searches added to the trends stays, anonymous.
    let count_after = get_json(&http, &format!("{}/trends?q=austen&all=true", trend.url)).await[0]
        ["count"]
        .as_u64();
    assert_eq!(count_after, count_before);
    // A searches again: a new history starts.
    page_search(&http, &web.url, READER_A, "tolkien").await;
    wait_until(Duration::from_secs(30), "a new profile", || async {
        let queries = interests(READER_A).await["queries"].clone();
        queries.as_array().map(Vec::len) == Some(1) && queries[0]["name"] == "tolkien"
    })
    .await;
    web.shutdown().await;
    rec.shutdown().await;
    trend.shutdown().await;
}

infra!(two_readers_viewing_the_same_books_change_each_others_recommendations);
/// `book.viewed` events published straight to the bus: A opens Herbert's books 9 and 10, then B
/// opens 9 and 11. Book 9's "readers who looked at this also looked at" lists 10 and 11; A is
/// recommended 11 and B 10, each "because you looked at" a book, and neither a book they opened.
async fn two_readers_viewing_the_same_books_change_each_others_recommendations(infra: Infra) {
    use bookstore_domain::events::{BookEvent, Event};
    use bookstore_testkit::conformance::recommend::{book, view};

    let bus = test_bus(infra).await;
    let (rec, _) = start_recommend(&bus.config).await;
    let http = reqwest::Client::new();
    let catalog_events = &bus.config.events;
    let catalog = bus
        .bus
        .publisher(catalog_events, catalog_events.catalog())
        .await
        .unwrap();
    let base = chrono::Utc::now() - chrono::Duration::hours(1);
    for i in 1..=16 {
        catalog.port.publish(&Event::BookCreated(BookEvent::new(
            uuid::Uuid::now_v7(),
            base,
            book(i),
        )));
    }
    assert_eq!(catalog.port.flush(Duration::from_secs(30)).await, 0);
    let views = bus.publisher().await;
    let publish = |events: Vec<Event>| {
        for event in &events {
            views.port.publish(event);
        }
    };
    let similar = |id: i64| {
        let (http, url) = (http.clone(), format!("{}/books/{id}/similar?n=10", rec.url));
        async move { get_json(&http, &url).await }
    };
    let recommended = |uid: &'static str| {
        let (http, url) = (
            http.clone(),
            format!("{}/recommendations?uid={uid}&n=50", rec.url),
        );
        async move { get_json(&http, &url).await }
    };
    let kind_of = |books: &Value, id: i64| -> Option<String> {
        books
            .as_array()?
            .iter()
            .find(|b| b["id"] == id)
            .and_then(|b| b["kind"].as_str().map(str::to_owned))
    };

    publish(vec![
        view(Some(READER_A), 9, base, 1),
        view(Some(READER_A), 10, base, 2),
    ]);
    assert_eq!(views.port.flush(Duration::from_secs(30)).await, 0);
    wait_until(Duration::from_secs(30), "A's views applied", || async {
        ids(&similar(9).await) == BTreeSet::from([10])
    })
    .await;
    let before_a = recommended(READER_A).await;
    let before_b = recommended(READER_B).await;
    assert_ne!(
        kind_of(&before_a, 11).as_deref(),
        Some("viewed"),
        "{before_a}"
    );

    publish(vec![
        view(Some(READER_B), 9, base, 3),
        view(Some(READER_B), 11, base, 4),
    ]);
    assert_eq!(views.port.flush(Duration::from_secs(30)).await, 0);
    wait_until(Duration::from_secs(30), "B's views applied", || async {
        ids(&similar(9).await) == BTreeSet::from([10, 11])
    })
    .await;
    let nine = similar(9).await;
    assert!(
        nine.as_array()
            .unwrap()
            .iter()
            .all(|b| b["kind"] == "similar"
                && b["reason"] == "readers who looked at this also looked at it"
                && b["title"].as_str().is_some_and(|t| t.starts_with("Book 1"))),
        "{nine}"
    );
    assert_eq!(ids(&similar(10).await), BTreeSet::from([9]));
    assert_eq!(ids(&similar(11).await), BTreeSet::from([9]));

    // Each is recommended what the other looked at, for that reason; never what they opened.
    let for_a = recommended(READER_A).await;
    let for_b = recommended(READER_B).await;
    assert_ne!(for_a, before_a);
    assert_ne!(for_b, before_b);
    assert_eq!(for_a[0]["id"], 11, "{for_a}");
    assert_eq!(for_a[0]["kind"], "viewed", "{for_a}");
    assert_eq!(
        for_a[0]["reason"],
        format!("because you looked at {}", book(9).title),
        "the book both opened"
    );
    assert_eq!(for_b[0]["id"], 10, "{for_b}");
    assert_eq!(for_b[0]["kind"], "viewed", "{for_b}");
    let a_ids = ids(&for_a);
    let b_ids = ids(&for_b);
    assert!(!a_ids.contains(&9) && !a_ids.contains(&10), "{for_a}");
    assert!(!b_ids.contains(&9) && !b_ids.contains(&11), "{for_b}");

    // A book nobody viewed, or unknown: an empty list; a bad count: a JSON 400.
    assert_eq!(similar(1).await, serde_json::json!([]));
    assert_eq!(similar(424_242).await, serde_json::json!([]));
    for bad in ["n=0", "n=51", "n=ten"] {
        let answer = http
            .get(format!("{}/books/9/similar?{bad}", rec.url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{bad}");
        let body: Value = answer.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
    let answer = http
        .get(format!("{}/books/nine/similar", rec.url))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    rec.shutdown().await;
}
