//! A book's page, on both catalog databases: its fields and links, the 404 page, the
//! `book.viewed` event it publishes with the link's source and rank, the links to it from the
//! search results, the click-through counts of `/stats`, and the bound on live streams. (With
//! the recommendation and trend services, on the embedded log and on Kafka: `live.rs`.)

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Database, Options, TOKEN, TestApp, error_body, spawn_app, spawn_app_with};

backend_tests!(
    a_book_page_shows_the_book_and_links_to_its_author,
    unknown_and_invalid_ids_get_a_404_page,
    search_results_link_to_book_pages_with_their_rank,
    opening_a_book_publishes_a_view_with_its_source_and_rank,
    stats_count_books_shown_and_opened,
    live_streams_are_bounded,
);

/// A new book with an ISBN, stored through the API, once the search index has it: its id.
async fn new_book(app: &TestApp) -> i64 {
    let response = app
        .post_book(
            Some(TOKEN),
            &json!({
                "title": "Persuasion <Second Edition>",
                "author": "Jane Austen",
                "published_at": "1817-12",
                "description": "Anne Elliot & Captain Wentworth, eight years on.",
                "isbn": "0-14-143968-8",
            }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let book: Value = response.json().await.unwrap();
    app.wait_searchable("persuasion second edition").await;
    book["id"].as_i64().unwrap()
}

async fn page(app: &TestApp, path: &str) -> (u16, String) {
    let response = app.get(path).await;
    let status = response.status().as_u16();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{path} is HTML"
    );
    (status, response.text().await.unwrap())
}

async fn a_book_page_shows_the_book_and_links_to_its_author(backend: Database) {
    let app = spawn_app(backend).await;
    let id = new_book(&app).await;
    let (status, html) = page(&app, &format!("/books/{id}")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!(
            r#"<main id="book" class="book-page" data-book-id="{id}">"#
        )),
        "{html}"
    );
    assert!(
        html.contains(
            r#"<h1 class="book-title" id="book-title">Persuasion &#60;Second Edition&#62;</h1>"#
        ) || html.contains(
            r#"<h1 class="book-title" id="book-title">Persuasion &lt;Second Edition&gt;</h1>"#
        ),
        "the title, escaped: {html}"
    );
    assert!(html.contains(r#"<a class="author" href="/?q=Jane%20Austen">Jane Austen</a>"#));
    assert!(
        html.contains(r#"<time datetime="1817-12">December 1817</time>"#),
        "the date as precise as known"
    );
    assert!(html.contains("9780141439686"), "the ISBN");
    assert!(
        html.contains("Anne Elliot &#38; Captain Wentworth")
            || html.contains("Anne Elliot &amp; Captain Wentworth")
    );
    assert!(html.contains("<html lang=\"en\">"));
    // More by the author, from the search index: other books, never this one.
    let by_author = section(&html, "by-author");
    assert!(by_author.contains("More by Jane Austen"));
    let others = by_author
        .matches("<a class=\"title\" href=\"/books/")
        .count();
    assert!((1..=5).contains(&others), "{by_author}");
    assert!(!by_author.contains(&format!("/books/{id}\"")));
    // No recommendation service here: no "similar" section.
    assert!(!html.contains(r#"id="similar""#));
    // Without an ISBN, no ISBN line.
    let pride = pride_id(&app).await;
    let (_, html) = page(&app, &format!("/books/{pride}")).await;
    assert!(
        !html.contains("ISBN"),
        "no ISBN is shown when the catalog has none"
    );
    assert!(html.contains(r#"<time datetime="1813-01-28">28 January 1813</time>"#));
}

/// The section `id` of a page.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id}: {html}"));
    let rest = &html[start..];
    &rest[..rest.find("</section>").unwrap()]
}

async fn pride_id(app: &TestApp) -> i64 {
    let (books, _) = app.list(&[("q", "pride and prejudice")]).await;
    books[0]["id"].as_i64().unwrap()
}

async fn unknown_and_invalid_ids_get_a_404_page(backend: Database) {
    let app = spawn_app(backend).await;
    for path in [
        "/books/999999",
        "/books/0",
        "/books/-3",
        "/books/abc",
        "/books/99999999999999999999999",
        "/books/%ff",
    ] {
        let (status, html) = page(&app, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(html.contains("<h1>Book not found</h1>"), "{path}: {html}");
        assert!(html.contains(r#"href="/""#), "a way back");
    }
    // Nothing was viewed.
    assert!(app.events_of_type("book.viewed").await.is_empty());
}

async fn search_results_link_to_book_pages_with_their_rank(backend: Database) {
    let app = spawn_app(backend).await;
    let html = app.get("/?q=austen&o=5").await.text().await.unwrap();
    let (books, _) = app
        .list(&[("q", "austen"), ("o", "5"), ("limit", "5")])
        .await;
    assert!(!books.is_empty());
    for (i, book) in books.iter().enumerate() {
        let href = format!(
            "<h2 class=\"title\"><a href=\"/books/{}?from=search&amp;rank={}\">",
            book["id"],
            5 + i
        );
        assert!(html.contains(&href), "{href} in {html}");
    }
    assert!(
        !html.contains("/api/books/"),
        "titles lead to pages, not JSON"
    );
}

async fn opening_a_book_publishes_a_view_with_its_source_and_rank(backend: Database) {
    let app = spawn_app(backend).await;
    let id = pride_id(&app).await;
    for path in [
        format!("/books/{id}?from=search&rank=3"),
        format!("/books/{id}?from=recommendation&rank=1&reason=author"),
        format!("/books/{id}?from=nowhere&rank=2&reason=author"),
        format!("/books/{id}?rank=x&from=similar"),
        format!("/books/{id}?from=%ff"),
    ] {
        let (status, _) = page(&app, &path).await;
        assert_eq!(status, 200, "a bad hint is never an error: {path}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let views = loop {
        let views = app.events_of_type("book.viewed").await;
        if views.len() >= 5 {
            break views;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "5 views published: {views:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut seen: Vec<(String, Value, Value)> = views
        .iter()
        .map(|v| {
            assert_eq!(v.value["book"]["id"], id);
            assert_eq!(v.value["book"]["title"], "Pride and Prejudice");
            assert_eq!(v.value["version"], 1);
            (
                v.value["source"].as_str().unwrap().to_owned(),
                v.value["rank"].clone(),
                v.value["reason"].clone(),
            )
        })
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.to_string().cmp(&b.1.to_string())));
    assert_eq!(
        seen,
        [
            ("direct".to_owned(), Value::Null, Value::Null),
            ("direct".to_owned(), Value::Null, Value::Null),
            ("recommendation".to_owned(), json!(1), json!("author")),
            ("search".to_owned(), json!(3), Value::Null),
            ("similar".to_owned(), Value::Null, Value::Null),
        ]
    );
}

/// `GET /stats` on the operations port.
async fn stats(app: &TestApp) -> Value {
    let response = app.client.get(app.ops_url("/stats")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The row of `stats` for `source` and `reason`: `(shown, opened)`.
pub fn row(stats: &Value, source: &str, reason: &str) -> (u64, u64) {
    stats["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == source && r["reason"] == reason)
        .map_or((0, 0), |r| {
            (r["shown"].as_u64().unwrap(), r["opened"].as_u64().unwrap())
        })
}

/// The rows of `stats` add up to its totals, and each rate is opened / shown.
pub fn check_totals(stats: &Value) {
    let rows = stats["rows"].as_array().unwrap();
    let sum = |field: &str| rows.iter().map(|r| r[field].as_u64().unwrap()).sum::<u64>();
    assert_eq!(stats["total"]["shown"].as_u64().unwrap(), sum("shown"));
    assert_eq!(stats["total"]["opened"].as_u64().unwrap(), sum("opened"));
    for r in rows.iter().chain([&stats["total"]]) {
        let (shown, opened) = (r["shown"].as_u64().unwrap(), r["opened"].as_u64().unwrap());
        if shown == 0 {
            assert!(r["rate"].is_null(), "{r}");
        } else {
            #[allow(clippy::cast_precision_loss)]
            let rate = opened as f64 / shown as f64;
            assert!((r["rate"].as_f64().unwrap() - rate).abs() < 1e-9, "{r}");
        }
    }
}

async fn stats_count_books_shown_and_opened(backend: Database) {
    let app = spawn_app(backend).await;
    // Not on the public port.
    error_body(app.get("/stats").await, 404).await;
    let before = stats(&app).await;
    assert_eq!(row(&before, "search", "none"), (0, 0));
    let html = app.get("/?q=austen").await.text().await.unwrap();
    let shown = html.matches("?from=search&amp;rank=").count() as u64;
    assert_eq!(shown, 5, "a page of results");
    let id = pride_id(&app).await;
    app.get(&format!("/books/{id}?from=search&rank=0")).await;
    app.get(&format!("/books/{id}?from=recommendation&reason=made-up"))
        .await;
    app.get(&format!("/books/{id}")).await;
    let after = stats(&app).await;
    assert_eq!(row(&after, "search", "none"), (5, 1));
    // An unknown reason is dropped from the view, as from its event.
    assert_eq!(row(&after, "recommendation", "none"), (0, 1));
    assert_eq!(row(&after, "direct", "none"), (0, 1));
    let search = after["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "search")
        .unwrap();
    assert_eq!(search["rate"], 0.2);
    check_totals(&after);
    // And in Prometheus, with the same labels (counted by every test of this process).
    let metrics = app
        .client
        .get(app.ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (name, at_least) in [
        (
            r#"bookstore_web_books_shown_total{source="search",reason="none"}"#,
            5,
        ),
        (
            r#"bookstore_web_books_opened_total{source="search",reason="none"}"#,
            1,
        ),
        (
            r#"bookstore_web_books_opened_total{source="direct",reason="none"}"#,
            1,
        ),
    ] {
        let value = metrics
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"));
        assert!(value >= at_least, "{name} {value}");
    }
}

async fn live_streams_are_bounded(backend: Database) {
    // Nothing answers on this trend service: the streams only ever send their retry hint.
    let app = spawn_app_with(
        backend,
        Options {
            trend_url: "http://127.0.0.1:9".to_owned(),
            live_streams: 2,
            ..Options::default()
        },
    )
    .await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let response = app.get("/live/trends").await;
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        open.push(response);
    }
    let body = error_body(app.get("/live/trends").await, 503).await;
    assert!(
        body["error"].as_str().unwrap().contains("too many"),
        "{body}"
    );
    // A stream that closes gives its place back.
    drop(open.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let response = app.get("/live/trends").await;
        if response.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a closed stream's place is given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The script is served, and the page does not load it without a Trends panel.
    let script = app.get("/static/live.js").await;
    assert_eq!(script.status(), 200);
    let script = script.text().await.unwrap();
    assert!(script.contains("EventSource(\"/live/trends\")"));
    assert!(
        !script.contains("innerHTML"),
        "data never goes in as markup"
    );
}
