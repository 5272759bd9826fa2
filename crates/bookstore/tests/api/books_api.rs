//! The REST API, on both backends.

use serde_json::json;

use crate::backend_tests;
use crate::helpers::{Database, Options, TOKEN, error_body, spawn_app, spawn_app_with};

backend_tests!(
    created_books_write_their_event_to_the_outbox,
    listing_pages_through_the_catalog_with_a_total,
    limit_defaults_to_the_page_size_and_is_capped,
    pride_finds_pride_and_prejudice_first,
    prefixes_case_and_accents_do_not_matter,
    title_matches_rank_above_other_matches,
    punctuation_and_operators_never_cause_an_error,
    one_book_by_id,
    creating_a_book_needs_the_token,
    created_books_are_searchable,
    books_are_replaced_and_deleted_with_their_events,
    isbns_are_checked_unique_and_found_by_search,
    dates_are_kept_as_precise_as_they_are_known,
    writes_are_forbidden_without_a_configured_token,
    bad_books_get_422_with_every_field_named,
    malformed_bodies_get_clear_4xx,
    bad_query_parameters_get_400,
    health_and_readiness,
    unknown_routes_and_methods_are_json_errors,
);

async fn listing_pages_through_the_catalog_with_a_total(backend: Database) {
    let app = spawn_app(backend).await;
    let (first, total) = app.list(&[]).await;
    assert!(total >= 200, "the sample catalog is loaded: {total}");
    let (second, total2) = app.list(&[("o", "5")]).await;
    assert_eq!(total, total2);
    assert_eq!(first.len(), 5);
    assert_eq!(second.len(), 5);
    assert_ne!(first[0]["id"], second[0]["id"]);
    let (past_end, _) = app.list(&[("o", &total.to_string())]).await;
    assert!(past_end.is_empty());
    for field in [
        "id",
        "title",
        "author",
        "published_at",
        "description",
        "created_at",
    ] {
        assert!(!first[0][field].is_null(), "{field} in {}", first[0]);
    }
}

async fn limit_defaults_to_the_page_size_and_is_capped(backend: Database) {
    let app = spawn_app_with(
        backend,
        Options {
            page_size: 7,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(app.list(&[]).await.0.len(), 7);
    assert_eq!(app.list(&[("limit", "3")]).await.0.len(), 3);
    assert_eq!(app.list(&[("limit", "1000")]).await.0.len(), 100);
}

async fn pride_finds_pride_and_prejudice_first(backend: Database) {
    let app = spawn_app(backend).await;
    let (books, total) = app.list(&[("q", "pride")]).await;
    assert!(total >= 1);
    assert_eq!(books[0]["title"], "Pride and Prejudice");
    assert_eq!(books[0]["author"], "Jane Austen");
    assert_eq!(books[0]["published_at"], "1813-01-28");
}

async fn prefixes_case_and_accents_do_not_matter(backend: Database) {
    let app = spawn_app(backend).await;
    assert_eq!(
        app.titles("franken").await.first().map(String::as_str),
        Some("Frankenstein")
    );
    assert_eq!(
        app.titles("FRANKENSTEIN").await.first().map(String::as_str),
        Some("Frankenstein")
    );
    assert_eq!(
        app.titles("moby").await.first().map(String::as_str),
        Some("Moby-Dick")
    );
    assert_eq!(
        app.titles("drac").await.first().map(String::as_str),
        Some("Dracula")
    );
    for q in ["brontë", "bronte", "BRONTE", "Brontë jane"] {
        let (books, _) = app.list(&[("q", q), ("limit", "100")]).await;
        let titles: Vec<&str> = books.iter().filter_map(|b| b["title"].as_str()).collect();
        assert!(titles.contains(&"Jane Eyre"), "{q}: {titles:?}");
    }
}

async fn title_matches_rank_above_other_matches(backend: Database) {
    let app = spawn_app(backend).await;
    assert_eq!(
        app.titles("jane eyre").await.first().map(String::as_str),
        Some("Jane Eyre")
    );
    assert_eq!(
        app.titles("dracula").await.first().map(String::as_str),
        Some("Dracula")
    );
}

async fn punctuation_and_operators_never_cause_an_error(backend: Database) {
    let app = spawn_app(backend).await;
    for q in [
        "\"",
        "\"pride",
        "pride\"",
        "*",
        "pride*",
        "-",
        "-pride",
        ":",
        "title:pride",
        "(",
        ")",
        "(pride",
        "NEAR(pride",
        "pride AND",
        "OR",
        "NOT",
        "^pride",
        "'",
        "o'neil",
        "%",
        "_",
        "\\",
        "+",
        "+pride -prejudice",
        "@",
        "~",
        "<>",
        ";",
        "pride; DROP TABLE books",
        "🙂",
        "  ",
        "a",
        "ab",
    ] {
        let response = app
            .client
            .get(app.url("/api/books"))
            .query(&[("q", q)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "q={q:?}");
        let books: Vec<serde_json::Value> = response.json().await.unwrap();
        assert!(books.len() <= 5, "q={q:?}");
    }
    let titles = app.titles("\"pride\" (prejudice)* -:").await;
    assert_eq!(
        titles.first().map(String::as_str),
        Some("Pride and Prejudice")
    );
}

async fn one_book_by_id(backend: Database) {
    let app = spawn_app(backend).await;
    let (books, _) = app.list(&[("q", "dracula")]).await;
    let id = books[0]["id"].as_i64().unwrap();
    let response = app.get(&format!("/api/books/{id}")).await;
    assert_eq!(response.status(), 200);
    let book: serde_json::Value = response.json().await.unwrap();
    assert_eq!(book, books[0]);
    error_body(app.get("/api/books/99999999").await, 404).await;
    error_body(app.get("/api/books/abc").await, 400).await;
    error_body(app.get("/api/books/-1").await, 400).await;
    error_body(app.get("/api/books/99999999999999999999999").await, 400).await;
    error_body(app.get("/api/books/%FF%FE").await, 400).await;
    assert_eq!(app.get("/api/books?q=%FF%FE").await.status(), 200);
}

fn emma() -> serde_json::Value {
    json!({
        "title": "Emma",
        "author": "Jane Austen",
        "published_at": "1815-12-23",
        "description": "A young matchmaker learns to see her own heart."
    })
}

async fn creating_a_book_needs_the_token(backend: Database) {
    let app = spawn_app(backend).await;
    let response = app.post_book(None, &emma()).await;
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer")
    );
    error_body(response, 401).await;
    error_body(app.post_book(Some("wrong"), &emma()).await, 401).await;
    error_body(
        app.post_book(Some(&format!("{TOKEN}x")), &emma()).await,
        401,
    )
    .await;
    let response = app
        .client
        .post(app.url("/api/books"))
        .header("authorization", format!("Basic {TOKEN}"))
        .json(&emma())
        .send()
        .await
        .unwrap();
    error_body(response, 401).await;

    let response = app.post_book(Some(TOKEN), &emma()).await;
    assert_eq!(response.status(), 201);
    // The scheme's case does not matter (finding 10 of the hardening issue).
    for scheme in ["bearer", "BEARER"] {
        let response = app
            .client
            .post(app.url("/api/books"))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .json(&emma())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{scheme}");
    }
    let created: serde_json::Value = response.json().await.unwrap();
    assert!(created["id"].as_i64().unwrap() > 0);
    assert_eq!(created["title"], "Emma");
    assert_eq!(created["published_at"], "1815-12-23");
    let created_at = created["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.contains('T'),
        "{created_at}"
    );
}

async fn created_books_are_searchable(backend: Database) {
    let app = spawn_app(backend).await;
    let book = json!({
        "title": "Zxqvian Nights",
        "author": "Ödön Quixley",
        "published_at": "1901-02-03"
    });
    let response = app.post_book(Some(TOKEN), &book).await;
    assert_eq!(response.status(), 201);
    let created: serde_json::Value = response.json().await.unwrap();
    let fetched: serde_json::Value = app
        .get(&format!("/api/books/{}", created["id"]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, created);
    assert_eq!(fetched["description"], "");
    // Search follows the catalog through its events, a moment after the write.
    app.wait_searchable("zxqv").await;
    assert_eq!(app.titles("zxqv").await, vec!["Zxqvian Nights"]);
    assert_eq!(app.titles("odon quix").await, vec!["Zxqvian Nights"]);
}

async fn writes_are_forbidden_without_a_configured_token(backend: Database) {
    let app = spawn_app_with(
        backend,
        Options {
            admin_token: None,
            ..Options::default()
        },
    )
    .await;
    let body = error_body(app.post_book(Some(TOKEN), &emma()).await, 403).await;
    assert!(
        body["error"].as_str().unwrap().contains("bookstore import"),
        "{body}"
    );
    error_body(app.post_book(None, &emma()).await, 403).await;
    error_body(app.put_book(Some(TOKEN), "1", &emma()).await, 403).await;
    error_body(app.delete_book(Some(TOKEN), "1").await, 403).await;
    assert_eq!(
        app.get("/api/books/1").await.status(),
        200,
        "nothing was deleted"
    );
}

async fn isbns_are_checked_unique_and_found_by_search(backend: Database) {
    let app = spawn_app(backend).await;
    let with_isbn = |title: &str, isbn: &str| json!({"title": title, "author": "Jane Austen", "published_at": "1813-01-28", "isbn": isbn});
    // An ISBN-10 is kept as the ISBN-13 of the same book.
    let response = app
        .post_book(
            Some(TOKEN),
            &with_isbn("Pride and Prejudice", "0-14-143951-3"),
        )
        .await;
    assert_eq!(response.status(), 201);
    let pride: serde_json::Value = response.json().await.unwrap();
    assert_eq!(pride["isbn"], "9780141439518");
    let id = pride["id"].to_string();
    assert_eq!(
        app.get(&format!("/api/books/{id}"))
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap(),
        pride
    );
    // A wrong check digit is a 422 naming the field; the same ISBN again, however written, a 409.
    let body = error_body(
        app.post_book(Some(TOKEN), &with_isbn("Copy", "0-14-143951-4"))
            .await,
        422,
    )
    .await;
    assert!(body["fields"]["isbn"].is_string(), "{body}");
    let body = error_body(
        app.post_book(Some(TOKEN), &with_isbn("Copy", "978 0 14 143951 8"))
            .await,
        409,
    )
    .await;
    assert!(body["error"].as_str().unwrap().contains("ISBN"), "{body}");
    let other: serde_json::Value = app
        .post_book(Some(TOKEN), &with_isbn("Persuasion", "9780141439686"))
        .await
        .json()
        .await
        .unwrap();
    error_body(
        app.put_book(
            Some(TOKEN),
            &other["id"].to_string(),
            &with_isbn("Persuasion", "0141439513"),
        )
        .await,
        409,
    )
    .await;
    // Search finds a book by its ISBN, written either way.
    app.wait_for(&[("q", "9780141439518")], |_, total| total == 1)
        .await;
    for q in ["978-0-14-143951-8", "0141439513", "9780141439518"] {
        let (books, total) = app.list(&[("q", q)]).await;
        assert_eq!(total, 1, "{q}");
        assert_eq!(books[0]["id"], pride["id"], "{q}");
    }
    // A book without an ISBN has no `isbn` in its JSON.
    let plain: serde_json::Value = app
        .post_book(Some(TOKEN), &emma())
        .await
        .json()
        .await
        .unwrap();
    assert!(plain.get("isbn").is_none(), "{plain}");
}

async fn dates_are_kept_as_precise_as_they_are_known(backend: Database) {
    let app = spawn_app(backend).await;
    let dated = |title: &str, date: &str| json!({"title": title, "author": "Zora Qimbly", "published_at": date});
    let mut ids = Vec::new();
    for (title, date) in [
        ("Qimbly Year", "1910"),
        ("Qimbly Month", "1910-03"),
        ("Qimbly Day", "1910-03-05"),
    ] {
        let response = app.post_book(Some(TOKEN), &dated(title, date)).await;
        assert_eq!(response.status(), 201, "{date}");
        let book: serde_json::Value = response.json().await.unwrap();
        assert_eq!(book["published_at"], date, "stored as sent");
        let fetched: serde_json::Value = app
            .get(&format!("/api/books/{}", book["id"]))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(fetched["published_at"], date, "read back as sent");
        ids.push(book["id"].to_string());
    }
    for bad in ["1910-13", "1910-3", "March 1910", "191"] {
        let body = error_body(app.post_book(Some(TOKEN), &dated("Bad", bad)).await, 422).await;
        assert!(body["fields"]["published_at"].is_string(), "{bad}: {body}");
    }
    // The page shows each as precise as it is known: never 1 January for a year.
    app.wait_for(&[("q", "qimbly")], |_, total| total == 3)
        .await;
    let html = app.get("/?q=qimbly").await.text().await.unwrap();
    for shown in [
        r#"<time datetime="1910">1910</time>"#,
        r#"<time datetime="1910-03">March 1910</time>"#,
        r#"<time datetime="1910-03-05">5 March 1910</time>"#,
    ] {
        assert!(html.contains(shown), "{shown} in the page");
    }
    assert!(!html.contains("1 January 1910"));
    // Replaced with a more precise date, or a less precise one.
    let response = app
        .put_book(Some(TOKEN), &ids[0], &dated("Qimbly Year", "1910-07-14"))
        .await;
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["published_at"],
        "1910-07-14"
    );
    let response = app
        .put_book(Some(TOKEN), &ids[2], &dated("Qimbly Day", "1911"))
        .await;
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["published_at"],
        "1911"
    );
}

/// `PUT` and `DELETE /api/books/{id}`: the token, the id, the body's rules, 404s; the change is
/// what the API and search show, and its event is in the outbox.
async fn books_are_replaced_and_deleted_with_their_events(backend: Database) {
    let app = spawn_app(backend).await;
    let created: serde_json::Value = app
        .post_book(Some(TOKEN), &emma())
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].to_string();
    let revised = json!({
        "title": "Emmaline Qwertyx",
        "author": "Jane Austen",
        "published_at": "1816-01-01",
        "description": "Revised."
    });

    // The token, as for POST.
    error_body(app.put_book(None, &id, &revised).await, 401).await;
    error_body(app.put_book(Some("wrong"), &id, &revised).await, 401).await;
    error_body(app.delete_book(None, &id).await, 401).await;
    error_body(app.delete_book(Some("wrong"), &id).await, 401).await;
    // Ids, unknown books, bodies.
    for bad in ["abc", "0", "-3", "1.5"] {
        error_body(app.put_book(Some(TOKEN), bad, &revised).await, 400).await;
        error_body(app.delete_book(Some(TOKEN), bad).await, 400).await;
    }
    error_body(app.put_book(Some(TOKEN), "999999", &revised).await, 404).await;
    error_body(app.delete_book(Some(TOKEN), "999999").await, 404).await;
    let body = error_body(
        app.put_book(Some(TOKEN), &id, &json!({"title": "", "author": "A"}))
            .await,
        422,
    )
    .await;
    assert!(body["fields"]["title"].is_string(), "{body}");
    let response = app
        .client
        .put(app.url(&format!("/api/books/{id}")))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(revised.to_string())
        .send()
        .await
        .unwrap();
    error_body(response, 415).await;
    let (rows_before, _, _) = outbox(&app, backend).await;
    assert_eq!(
        app.get(&format!("/api/books/{id}"))
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap(),
        created,
        "refused changes change nothing"
    );

    // Replaced: new fields, the same id and creation time; search follows.
    let response = app.put_book(Some(TOKEN), &id, &revised).await;
    assert_eq!(response.status(), 200);
    let replaced: serde_json::Value = response.json().await.unwrap();
    assert_eq!(replaced["id"], created["id"]);
    assert_eq!(replaced["created_at"], created["created_at"]);
    assert_eq!(replaced["title"], "Emmaline Qwertyx");
    assert_eq!(replaced["published_at"], "1816-01-01");
    let fetched: serde_json::Value = app
        .get(&format!("/api/books/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, replaced);
    app.wait_searchable("qwertyx").await;
    assert_eq!(app.titles("qwertyx").await, vec!["Emmaline Qwertyx"]);
    let (rows, key, payload) = outbox(&app, backend).await;
    assert_eq!(rows, rows_before + 1, "one event per change");
    assert_eq!(key, id);
    let event: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(event["type"], "book.updated");
    assert_eq!(event["book"]["title"], "Emmaline Qwertyx");
    assert_eq!(event["book"]["created_at"], created["created_at"]);

    // Deleted: gone from the API and from search; a second delete, or a replace, is a 404.
    let response = app.delete_book(Some(TOKEN), &id).await;
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());
    error_body(app.get(&format!("/api/books/{id}")).await, 404).await;
    app.wait_for(&[("q", "qwertyx")], |books, total| {
        books.is_empty() && total == 0
    })
    .await;
    let (rows, key, payload) = outbox(&app, backend).await;
    assert_eq!(rows, rows_before + 2);
    assert_eq!(key, id);
    let event: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(event["type"], "book.deleted");
    assert_eq!(event["book_id"], created["id"]);
    error_body(app.delete_book(Some(TOKEN), &id).await, 404).await;
    error_body(app.put_book(Some(TOKEN), &id, &revised).await, 404).await;
    assert_eq!(
        outbox(&app, backend).await.0,
        rows_before + 2,
        "a 404 writes no event"
    );
}

async fn bad_books_get_422_with_every_field_named(backend: Database) {
    let app = spawn_app(backend).await;
    let cases: Vec<(serde_json::Value, &[&str])> = vec![
        (
            json!({"author": "A", "published_at": "1900-01-01"}),
            &["title"],
        ),
        (
            json!({"title": "", "author": "A", "published_at": "1900-01-01"}),
            &["title"],
        ),
        (
            json!({"title": "   ", "author": "A", "published_at": "1900-01-01"}),
            &["title"],
        ),
        (
            json!({"title": "t".repeat(256), "author": "A", "published_at": "1900-01-01"}),
            &["title"],
        ),
        (
            json!({"title": "T", "author": "a".repeat(256), "published_at": "1900-01-01"}),
            &["author"],
        ),
        (
            json!({"title": "T", "published_at": "1900-01-01"}),
            &["author"],
        ),
        (
            json!({"title": "T", "author": "A", "published_at": "2023-02-29"}),
            &["published_at"],
        ),
        (
            json!({"title": "T", "author": "A", "published_at": "1900-1-1"}),
            &["published_at"],
        ),
        (
            json!({"title": "T", "author": "A", "published_at": "yesterday"}),
            &["published_at"],
        ),
        (json!({"title": "T", "author": "A"}), &["published_at"]),
        (
            json!({"title": "T", "author": "A", "published_at": "1900-01-01", "description": "d".repeat(10_001)}),
            &["description"],
        ),
        (
            json!({"title": "T", "author": "A", "published_at": "1900-01-01", "isbn": "123"}),
            &["isbn"],
        ),
        (
            json!({"title": 5, "author": ["A"], "published_at": "1900-01-01"}),
            &["title", "author"],
        ),
        (json!({}), &["title", "author", "published_at"]),
        // Control characters anywhere (a description keeps newlines and tabs), bidi overrides in
        // names (finding 9 of the hardening issue).
        (
            json!({"title": "T", "author": "A", "published_at": "1900-01-01", "description": "a\u{0}b"}),
            &["description"],
        ),
        (
            json!({"title": "T", "author": "A", "published_at": "1900-01-01", "description": "\u{1b}[31mred"}),
            &["description"],
        ),
        (
            json!({"title": "Evil\u{202e}txt.exe", "author": "A\u{2066}B", "published_at": "1900-01-01"}),
            &["title", "author"],
        ),
    ];
    for (body, fields) in cases {
        let response = app.post_book(Some(TOKEN), &body).await;
        let error = error_body(response, 422).await;
        for field in fields {
            assert!(
                error["fields"][field].is_string(),
                "{field} not named for {body}: {error}"
            );
        }
    }
    // Newlines and tabs in a description are welcome.
    let lines = json!({
        "title": "Lines", "author": "A", "published_at": "1900-01-01",
        "description": "One\r\ntwo\n\tthree"
    });
    let response = app.post_book(Some(TOKEN), &lines).await;
    assert_eq!(response.status(), 201);
    let created: serde_json::Value = response.json().await.unwrap();
    assert_eq!(created["description"], "One\ntwo\n\tthree");
    // The limits themselves are accepted.
    let edge = json!({
        "title": "t".repeat(255), "author": "é".repeat(255), "published_at": "2024-02-29",
        "description": "d".repeat(10_000)
    });
    assert_eq!(app.post_book(Some(TOKEN), &edge).await.status(), 201);
}

async fn malformed_bodies_get_clear_4xx(backend: Database) {
    let app = spawn_app(backend).await;
    let post = |body: Vec<u8>, content_type: &'static str| {
        app.client
            .post(app.url("/api/books"))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for body in [
        "{",
        "not json",
        "[1]",
        "\"title\"",
        "",
        "{\"title\": \"A\",}",
    ] {
        let response = post(body.as_bytes().to_vec(), "application/json")
            .await
            .unwrap();
        error_body(response, 400).await;
    }
    let response = post(b"title=A".to_vec(), "application/x-www-form-urlencoded")
        .await
        .unwrap();
    error_body(response, 415).await;
    let mut huge =
        br#"{"title": "A", "author": "B", "published_at": "1900-01-01", "description": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 70 * 1024));
    huge.extend(br#""}"#);
    let response = post(huge, "application/json").await.unwrap();
    error_body(response, 413).await;
}

async fn bad_query_parameters_get_400(backend: Database) {
    let app = spawn_app(backend).await;
    for query in [
        "o=-1",
        "o=abc",
        "o=1.5",
        "limit=0",
        "limit=-5",
        "limit=many",
        "q=x&o=%20-3",
    ] {
        let body = error_body(app.get(&format!("/api/books?{query}")).await, 400).await;
        assert!(
            body["error"].as_str().unwrap().contains("must be"),
            "{query}: {body}"
        );
    }
    // Broken percent-encoding is read leniently, never an error.
    assert_eq!(app.get("/api/books?q=%ZZ%").await.status(), 200);
}

async fn health_and_readiness(backend: Database) {
    let app = spawn_app(backend).await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");
}

async fn unknown_routes_and_methods_are_json_errors(backend: Database) {
    let app = spawn_app(backend).await;
    error_body(app.get("/nope").await, 404).await;
    let response = app
        .client
        .delete(app.url("/api/books"))
        .send()
        .await
        .unwrap();
    error_body(response, 405).await;
    error_body(app.get("/static/../Cargo.toml").await, 404).await;
}

/// The pool replaces connections that the server dropped (as a restart does) by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_connections_dropped_by_the_server_are_replaced() {
    use sqlx::Connection;
    let app = spawn_app(Database::MySql).await;
    assert_eq!(app.titles("pride").await[0], "Pride and Prejudice");
    let database = app.db_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::MySqlConnection::connect(&bookstore_testkit::servers::mysql_server_url())
        .await
        .unwrap();
    let ids: Vec<u64> = sqlx::query_scalar(
        "SELECT CAST(id AS UNSIGNED) FROM information_schema.processlist WHERE db = ?",
    )
    .bind(&database)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!ids.is_empty(), "the service holds connections");
    for id in ids {
        // The connection may already be gone.
        let _ = sqlx::query("KILL CONNECTION ?")
            .bind(id)
            .execute(&mut admin)
            .await;
    }
    for _ in 0..5 {
        assert_eq!(app.titles("pride").await[0], "Pride and Prejudice");
    }
}

/// The outbox: (rows, the newest row's key and payload), read straight from the database.
async fn outbox(app: &crate::helpers::TestApp, backend: Database) -> (i64, String, Vec<u8>) {
    use sqlx::Connection;
    const COUNT: &str = "SELECT COUNT(*) FROM outbox";
    const NEWEST: &str = "SELECT event_key, payload FROM outbox ORDER BY id DESC LIMIT 1";
    match backend {
        Database::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&app.db_url).await.unwrap();
            let n: i64 = sqlx::query_scalar(COUNT)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            let (key, payload) = sqlx::query_as(NEWEST).fetch_one(&mut conn).await.unwrap();
            (n, key, payload)
        }
        Database::MySql => {
            let mut conn = sqlx::MySqlConnection::connect(&app.db_url).await.unwrap();
            let n: i64 = sqlx::query_scalar(COUNT)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            let (key, payload) = sqlx::query_as(NEWEST).fetch_one(&mut conn).await.unwrap();
            (n, key, payload)
        }
    }
}

async fn created_books_write_their_event_to_the_outbox(backend: Database) {
    let app = spawn_app(backend).await;
    let (sample, _, _) = outbox(&app, backend).await;
    assert!(
        sample > 200,
        "the sample catalog went through the outbox too: {sample}"
    );
    let book = json!({"title": "Outboxia", "author": "Ada Relay", "published_at": "1901-02-03"});
    let response = app.post_book(Some(TOKEN), &book).await;
    assert_eq!(response.status(), 201);
    let created: serde_json::Value = response.json().await.unwrap();
    let (n, key, payload) = outbox(&app, backend).await;
    assert_eq!(n, sample + 1);
    assert_eq!(key, created["id"].to_string());
    let event: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(event["type"], "book.created");
    assert_eq!(event["version"], 1);
    assert_eq!(event["book"]["id"], created["id"]);
    assert_eq!(event["book"]["title"], "Outboxia");
    assert_eq!(event["book"]["published_at"], "1901-02-03");
    // A refused book writes no event.
    let response = app
        .post_book(Some(TOKEN), &json!({"title": "", "author": "x"}))
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(outbox(&app, backend).await.0, sample + 1);
}
