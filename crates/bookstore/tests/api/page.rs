//! The page, on both backends.

use crate::backend_tests;
use crate::helpers::{Database, spawn_app};

backend_tests!(
    the_page_has_a_search_box_and_the_catalog,
    searching_on_the_page_shows_the_best_match_first,
    the_page_pages_with_previous_and_next_links,
    everything_typed_is_escaped,
    a_new_visitor_gets_a_random_uid_cookie_for_a_year,
    a_known_visitor_keeps_their_uid,
    styles_are_served_locally,
    a_bad_offset_on_the_page_is_a_400_page,
);

async fn the_page_has_a_search_box_and_the_catalog(backend: Database) {
    let app = spawn_app(backend).await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(
        html.contains("<form") && html.contains("name=\"q\""),
        "search box"
    );
    // No trend or recommendation service answers in this test: the page goes without those
    // sections (the trend and recommendation tests show them).
    assert!(!html.contains("id=\"trends\""));
    assert!(!html.contains("id=\"recommendations\""));
    assert!(html.contains("name=\"viewport\""), "readable on a phone");
    assert_eq!(
        html.matches("class=\"book\"").count(),
        5,
        "one page of books"
    );
}

async fn searching_on_the_page_shows_the_best_match_first(backend: Database) {
    let app = spawn_app(backend).await;
    let html = app.get("/?q=pride").await.text().await.unwrap();
    let first = html.find("class=\"book\"").expect("a result");
    let rest = &html[first..];
    let title_at = rest
        .find("<mark>Pride</mark> and Prejudice")
        .expect("Pride and Prejudice is shown, the matched word marked");
    assert!(
        rest[..title_at].matches("class=\"book\"").count() == 1,
        "Pride and Prejudice is the first result"
    );
    assert!(rest.contains("Jane Austen"));
    assert!(rest.contains("28 January 1813"), "the date is shown");
    assert!(
        html.contains("value=\"pride\""),
        "the query stays in the box"
    );
}

async fn the_page_pages_with_previous_and_next_links(backend: Database) {
    let app = spawn_app(backend).await;
    let first = app.get("/").await.text().await.unwrap();
    assert!(
        first.contains("rel=\"next\" href=\"/?q=&amp;o=5\""),
        "next link"
    );
    assert!(!first.contains("rel=\"prev\""));
    let second = app.get("/?o=5").await.text().await.unwrap();
    assert!(
        second.contains("rel=\"prev\" href=\"/?q=&amp;o=0\""),
        "previous link"
    );
    assert!(second.contains("rel=\"next\" href=\"/?q=&amp;o=10\""));
    let query = app.get("/?q=the%20a&o=5").await.text().await.unwrap();
    assert!(
        query.contains("href=\"/?q=the%20a&amp;o=0\""),
        "the query is kept, encoded"
    );
}

async fn everything_typed_is_escaped(backend: Database) {
    let app = spawn_app(backend).await;
    let attack = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>";
    let response = app
        .client
        .get(app.url("/"))
        .query(&[("q", attack)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(!html.contains("<script>"), "no script injected");
    assert!(!html.contains("<img src=x"), "no element injected");
    assert!(
        html.contains("&lt;script&gt;") || html.contains("&#60;script&#62;"),
        "the text is shown escaped"
    );
}

async fn a_new_visitor_gets_a_random_uid_cookie_for_a_year(backend: Database) {
    let app = spawn_app(backend).await;
    let mut uids = Vec::new();
    for _ in 0..2 {
        let response = app.get("/").await;
        let cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        let parts: Vec<&str> = cookie.split(';').map(str::trim).collect();
        let value = parts[0].strip_prefix("uid=").expect("a uid cookie");
        let (uid, mac) = value.split_once('.').expect("an id and its MAC");
        let uuid = uuid::Uuid::parse_str(uid).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 4, "122 random bits");
        assert!(
            mac.len() == 32 && mac.bytes().all(|b| b.is_ascii_hexdigit()),
            "a 128-bit MAC: {mac}"
        );
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=31536000"] {
            assert!(parts.contains(&attribute), "{attribute} in {cookie}");
        }
        uids.push(uuid);
    }
    assert_ne!(uids[0], uids[1]);
}

async fn a_known_visitor_keeps_their_uid(backend: Database) {
    let app = spawn_app(backend).await;
    let issued = app.get("/").await.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let send = |cookie: String| {
        let request = app.client.get(app.url("/")).header("cookie", cookie);
        async move { request.send().await.unwrap() }
    };
    assert!(
        send(issued.clone())
            .await
            .headers()
            .get("set-cookie")
            .is_none()
    );
    // Ids the service did not issue are replaced: no one can pick their id (and so read or
    // write another reader's profile) or make up readers.
    let value = issued.strip_prefix("uid=").unwrap();
    let (uid, mac) = value.split_once('.').unwrap();
    let other = uuid::Uuid::new_v4();
    for made_up in [
        "uid=guessable".to_owned(),
        format!("uid={uid}"),
        format!("uid={other}"),
        format!("uid={other}.{mac}"),
        format!("uid=urn:uuid:{uid}"),
        format!("uid={}", uuid::Uuid::parse_str(uid).unwrap().simple()),
        format!("uid={{{uid}}}"),
        format!("uid={uid}.{}", "0".repeat(32)),
    ] {
        let response = send(made_up.clone()).await;
        let set = response
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            set.as_deref().is_some_and(|s| !s.contains(uid)),
            "{made_up} is replaced by a new id: {set:?}"
        );
    }
}

async fn styles_are_served_locally(backend: Database) {
    let app = spawn_app(backend).await;
    let html = app.get("/").await.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resource"
    );
    let css = app.get("/static/style.css").await;
    assert_eq!(css.status(), 200);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(
        css.text().await.unwrap().contains("@media"),
        "responsive rules"
    );
    assert_eq!(app.get("/static/favicon.svg").await.status(), 200);
}

async fn a_bad_offset_on_the_page_is_a_400_page(backend: Database) {
    let app = spawn_app(backend).await;
    let response = app.get("/?o=-3").await;
    assert_eq!(response.status(), 400);
    let html = response.text().await.unwrap();
    assert!(html.contains("must be a non-negative integer"));
}
