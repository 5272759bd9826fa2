//! Search through the search index, on both catalog databases: typos, highlighted matches
//! (escaped) in the API and the page, the page's script, suggestions, and counts beyond 10,000.
//! (Prefixes, accents and ISBNs: `books_api.rs`; a deleted index rebuilt, and SIGKILLs:
//! `tests/search_index.rs`.)

use serde_json::json;

use crate::backend_tests;
use crate::helpers::{Database, TOKEN, spawn_app};

backend_tests!(
    typos_are_forgiven_by_word_length,
    highlight_marks_the_matched_words_escaped,
    the_page_marks_matches_and_loads_its_script_from_itself,
    suggestions_complete_titles_and_authors,
    totals_beyond_ten_thousand_are_a_lower_bound,
);

async fn typos_are_forgiven_by_word_length(backend: Database) {
    let app = spawn_app(backend).await;
    // One letter wrong in 5 to 8 letters, two in 9 or more: found; exact matches rank first.
    assert_eq!(
        app.titles("frankenstien").await.first().map(String::as_str),
        Some("Frankenstein")
    );
    let (books, _) = app.list(&[("q", "dikens"), ("limit", "100")]).await;
    let by_dickens: Vec<bool> = books
        .iter()
        .map(|b| b["author"] == "Charles Dickens")
        .collect();
    assert!(
        by_dickens.iter().filter(|d| **d).count() >= 10,
        "dikens finds Dickens's books: {books:?}"
    );
    // Matched in the author, they rank above any other match.
    assert!(
        by_dickens.windows(2).all(|w| w[0] || !w[1]),
        "Dickens first: {by_dickens:?}"
    );
    // Under 5 letters, no typo: "emna" is not Emma.
    let (books, total) = app.list(&[("q", "emna ")]).await;
    assert_eq!(total, 0, "{books:?}");
    // An exact word ranks above a corrected one: "dracula" is Dracula first.
    assert_eq!(
        app.titles("dracula").await.first().map(String::as_str),
        Some("Dracula")
    );
}

async fn highlight_marks_the_matched_words_escaped(backend: Database) {
    let app = spawn_app(backend).await;
    let (books, _) = app.list(&[("q", "frankenstien"), ("highlight", "1")]).await;
    let first = &books[0];
    assert_eq!(first["title"], "Frankenstein");
    assert_eq!(
        first["highlight"]["title"], "<mark>Frankenstein</mark>",
        "a typo-corrected word is marked too: {first}"
    );
    // Without highlight=1 the books are as before.
    let (plain, _) = app.list(&[("q", "frankenstein")]).await;
    assert!(plain[0].get("highlight").is_none(), "{}", plain[0]);
    // What a book holds is escaped around and inside the marks.
    let created = app
        .post_book(
            Some(TOKEN),
            &json!({
                "title": "<script>alert(1)</script> Quorblex & \"Sons\"",
                "author": "Ada <b>Quorblex</b>",
                "published_at": "1999",
                "description": "Before. The <i>quorblex</i> affair, told at length. After."
            }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let (books, _) = app
        .wait_for(&[("q", "quorblex"), ("highlight", "1")], |books, _| {
            !books.is_empty()
        })
        .await;
    let h = &books[0]["highlight"];
    assert_eq!(
        h["title"],
        "&lt;script&gt;alert(1)&lt;/script&gt; <mark>Quorblex</mark> &amp; &quot;Sons&quot;"
    );
    assert_eq!(h["author"], "Ada &lt;b&gt;<mark>Quorblex</mark>&lt;/b&gt;");
    assert!(
        h["description"]
            .as_str()
            .unwrap()
            .contains("&lt;i&gt;<mark>quorblex</mark>&lt;/i&gt;"),
        "{h}"
    );
    let response = app.get("/api/books?q=x&highlight=yes").await;
    assert_eq!(response.status(), 400);
}

async fn the_page_marks_matches_and_loads_its_script_from_itself(backend: Database) {
    let app = spawn_app(backend).await;
    let response = app.get("/?q=frankenstien").await;
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = response.text().await.unwrap();
    assert!(html.contains("<mark>Frankenstein</mark>"), "{html}");
    assert!(
        html.contains(r#"<script src="/static/suggest.js" defer></script>"#),
        "the suggestions' script, from this service"
    );
    assert!(!html.contains("<script>"), "no inline script");
    let script = app.get("/static/suggest.js").await;
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let post = app
        .post_book(
            Some(TOKEN),
            &json!({"title": "Zarnik <em>Tales</em>", "author": "Q", "published_at": "2001"}),
        )
        .await;
    assert_eq!(post.status(), 201);
    app.wait_searchable("zarnik").await;
    let html = app.get("/?q=zarnik").await.text().await.unwrap();
    assert!(
        html.contains("<mark>Zarnik</mark> &lt;em&gt;Tales&lt;/em&gt;"),
        "escaped around the mark"
    );
}

async fn suggestions_complete_titles_and_authors(backend: Database) {
    let app = spawn_app(backend).await;
    let suggest = |q: &'static str| {
        let app = &app;
        async move {
            let response = app
                .client
                .get(app.url("/api/suggest"))
                .query(&[("q", q)])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{q}");
            response.json::<Vec<serde_json::Value>>().await.unwrap()
        }
    };
    let found = suggest("franken").await;
    assert_eq!(found[0], json!({"text": "Frankenstein", "kind": "title"}));
    let found = suggest("dicke").await;
    assert!(
        found
            .iter()
            .any(|s| s == &json!({"text": "Charles Dickens", "kind": "author"})),
        "{found:?}"
    );
    assert!(found.len() <= 8);
    assert!(suggest("").await.is_empty());
    assert!(suggest("\u{0}").await.is_empty());
    // Suggestions publish no search event: they are not searches.
    let long: &'static str = Box::leak("q".repeat(5000).into_boxed_str());
    assert!(suggest(long).await.len() <= 8);
}

async fn totals_beyond_ten_thousand_are_a_lower_bound(backend: Database) {
    let app = spawn_app(backend).await;
    // 10,050 books with a word of their own, stored as `bookstore import` stores them (through
    // the outbox, so the index gets them from the catalog topic).
    let catalog = app.catalog().await;
    let books: Vec<bookstore_domain::NewBook> = (0..10_050)
        .map(|i| {
            bookstore_domain::NewBook::parse(bookstore_domain::NewBookInput {
                isbn: None,
                title: Some(format!("Vorpalix {i}")),
                author: Some("Many".to_owned()),
                published_at: Some("2001".to_owned()),
                description: None,
            })
            .unwrap()
        })
        .collect();
    let outcomes = catalog.import_many(&books).await.unwrap();
    assert_eq!(outcomes.len(), books.len());
    let started = std::time::Instant::now();
    loop {
        let response = app.get("/api/books?q=vorpalix").await;
        let total: u64 = response.headers()["x-total-count"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let lower_bound = response.headers().get("x-total-count-lower-bound").cloned();
        if let (10_000, Some(lower_bound)) = (total, lower_bound) {
            assert_eq!(lower_bound, "true");
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the index does not count 10,000+ vorpalix books: {total}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let html = app.get("/?q=vorpalix").await.text().await.unwrap();
    assert!(
        html.contains("of 10,000+ books matching"),
        "the page says 10,000+"
    );
    // Below the bound the count is exact, and the header absent.
    let response = app.get("/api/books?q=frankenstein").await;
    assert_eq!(response.headers()["x-total-count"], "1");
    assert!(
        response
            .headers()
            .get("x-total-count-lower-bound")
            .is_none()
    );
}
