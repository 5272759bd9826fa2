//! Forgetting a reader, on both backends: `DELETE /api/readers/{uid}` (the admin's way) and the
//! page's "Forget my history" form (`POST /forget`, the visitor's own), each publishing
//! `reader.forgotten` on the search topic, keyed by the reader; and every way a request that is
//! not the visitor's own (no token, another visitor's, another site's) is refused and publishes
//! nothing.

use reqwest::Response;

use crate::backend_tests;
use crate::helpers::{Database, Options, TOKEN, TestApp, error_body, spawn_app, spawn_app_with};

backend_tests!(
    forgetting_a_reader_needs_the_admin_token,
    an_admin_forgets_a_reader_after_their_searches,
    bad_reader_ids_get_400,
    the_page_form_forgets_the_visitor,
    forget_requests_that_are_not_the_visitors_own_are_refused,
    an_event_log_that_does_not_take_the_event_is_a_503,
);

const FORGOTTEN: &str = "reader.forgotten";
const NOTICE: &str = "Your search history is being forgotten: recommendations and your profile are deleted within seconds.";

async fn forget_reader(app: &TestApp, token: Option<&str>, uid: &str) -> Response {
    let mut request = app.client.delete(app.url(&format!("/api/readers/{uid}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// A new visitor's signed cookie, `uid=<uuid>.<mac>`, and its id.
async fn new_visitor(app: &TestApp) -> (String, String) {
    let response = app.get("/").await;
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let uid = cookie
        .strip_prefix("uid=")
        .and_then(|v| v.split_once('.'))
        .unwrap()
        .0
        .to_owned();
    (cookie, uid)
}

/// The page as the visitor with `cookie` sees it at `path`.
async fn page(app: &TestApp, path: &str, cookie: &str) -> String {
    let response = app
        .client
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    assert!(
        response.headers().get("set-cookie").is_none(),
        "a known visitor keeps their cookie"
    );
    response.text().await.unwrap()
}

/// The token of the page's "Forget my history" form, checking the form's shape on the way.
fn form_token(html: &str) -> String {
    let form_at = html
        .find(r#"<form class="forget" action="/forget" method="post">"#)
        .expect("the page has the forget form, posting to /forget");
    let form = &html[form_at..];
    let form = &form[..form.find("</form>").unwrap()];
    assert!(form.contains("Forget my history"), "{form}");
    let value_at = form
        .find(r#"name="token" value=""#)
        .expect("the form carries its token")
        + r#"name="token" value=""#.len();
    let token = &form[value_at..];
    token[..token.find('"').unwrap()].to_owned()
}

/// `POST /forget` with these headers and form fields.
async fn post_forget(app: &TestApp, headers: &[(&str, &str)], form: &[(&str, &str)]) -> Response {
    let mut request = app.client.post(app.url("/forget")).form(form);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn forgetting_a_reader_needs_the_admin_token(backend: Database) {
    let app = spawn_app(backend).await;
    let response = forget_reader(&app, None, "reader-1").await;
    assert!(response.headers().contains_key("www-authenticate"));
    error_body(response, 401).await;
    error_body(
        forget_reader(&app, Some("wrong-token"), "reader-1").await,
        401,
    )
    .await;
    error_body(
        forget_reader(&app, Some(&format!("{TOKEN}x")), "reader-1").await,
        401,
    )
    .await;
    assert!(app.events_of_type(FORGOTTEN).await.is_empty());

    // Both routes are documented.
    let spec: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    let paths = &spec["paths"];
    assert!(paths["/api/readers/{uid}"]["delete"].is_object(), "{paths}");
    assert!(paths["/forget"]["post"].is_object(), "{paths}");

    // Without a configured token the admin routes are disabled: 403, as for writes.
    let disabled = spawn_app_with(
        backend,
        Options {
            admin_token: None,
            ..Options::default()
        },
    )
    .await;
    let body = error_body(forget_reader(&disabled, Some(TOKEN), "reader-1").await, 403).await;
    assert!(body["error"].as_str().unwrap().contains("admin_token"));
    assert!(disabled.events_of_type(FORGOTTEN).await.is_empty());
}

async fn an_admin_forgets_a_reader_after_their_searches(backend: Database) {
    let app = spawn_app(backend).await;
    // The reader searches; their search events are keyed by their id.
    let (cookie, uid) = new_visitor(&app).await;
    for q in ["austen", "dickens"] {
        let response = app
            .client
            .get(app.url("/api/books"))
            .query(&[("q", q)])
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let response = forget_reader(&app, Some(TOKEN), &uid).await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"uid": uid, "status": "forgetting"})
    );

    // 202 means the log has it: no waiting.
    let forgotten = app.events_of_type(FORGOTTEN).await;
    assert_eq!(forgotten.len(), 1, "{forgotten:?}");
    let event = &forgotten[0];
    assert_eq!(event.value["type"], FORGOTTEN);
    assert_eq!(event.value["version"], 1);
    assert_eq!(event.value["user_id"], uid.as_str());
    assert_eq!(
        event.key.as_deref(),
        Some(uid.as_str()),
        "keyed by the reader"
    );
    let id = uuid::Uuid::parse_str(event.value["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert!(
        chrono::DateTime::parse_from_rfc3339(event.value["occurred_at"].as_str().unwrap()).is_ok()
    );
    let mut fields: Vec<&String> = event.value.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        ["id", "occurred_at", "type", "user_id", "version"],
        "exactly the documented fields"
    );
    // On the partition of the reader's searches, after them.
    let searches: Vec<_> = app
        .events_of_type("book.searched")
        .await
        .into_iter()
        .filter(|e| e.value["user_id"] == uid.as_str())
        .collect();
    assert_eq!(searches.len(), 2, "{searches:?}");
    for search in &searches {
        assert_eq!(search.partition, event.partition);
        assert!(search.offset < event.offset);
    }

    // Any id search events may carry can be forgotten, not only visitor ids; again is fine.
    for uid in ["legacy-reader:7", "ünïcode reader", &"u".repeat(64), &uid] {
        let response = forget_reader(&app, Some(TOKEN), &urlencode(uid)).await;
        assert_eq!(response.status(), 202, "{uid}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["uid"], uid);
    }
    let forgotten = app.events_of_type(FORGOTTEN).await;
    assert_eq!(forgotten.len(), 5);
    assert!(
        forgotten
            .iter()
            .any(|e| e.value["user_id"] == "ünïcode reader")
    );
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn bad_reader_ids_get_400(backend: Database) {
    let app = spawn_app(backend).await;
    for (uid, says) in [
        ("", "empty"),
        (&"u".repeat(65) as &str, "64"),
        ("a%0Ab", "control"),
        ("%00", "control"),
        ("x%7F", "control"),
        ("x%C2%85", "control"),
        ("%FF", "UTF-8"),
    ] {
        let body = error_body(forget_reader(&app, Some(TOKEN), uid).await, 400).await;
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(says), "{uid:?}: {error}");
    }
    // The token is checked first, as for the other admin routes.
    error_body(forget_reader(&app, None, "").await, 401).await;
    error_body(forget_reader(&app, None, "%00").await, 401).await;
    assert!(app.events_of_type(FORGOTTEN).await.is_empty());
}

async fn the_page_form_forgets_the_visitor(backend: Database) {
    let app = spawn_app(backend).await;
    // A new visitor has no history: no form, and no notice.
    let first = app.get("/").await.text().await.unwrap();
    assert!(!first.contains("action=\"/forget\""));
    assert!(!first.contains(NOTICE));

    let (cookie, uid) = new_visitor(&app).await;
    let html = page(&app, "/", &cookie).await;
    assert!(!html.contains(NOTICE));
    let token = form_token(&html);
    assert!(
        token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{token}"
    );
    assert!(!html.contains("<script>"), "no inline script");

    // As a browser posts the form: its own origin.
    let origin = format!("http://{}", app.addr);
    let response = post_forget(
        &app,
        &[
            ("cookie", &cookie),
            ("origin", &origin),
            ("sec-fetch-site", "same-origin"),
        ],
        &[("token", &token)],
    )
    .await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/?forgotten=1");
    assert!(
        response.headers().get("set-cookie").is_none(),
        "the uid cookie stays as it is"
    );
    let forgotten = app.events_of_type(FORGOTTEN).await;
    assert_eq!(forgotten.len(), 1);
    assert_eq!(forgotten[0].value["user_id"], uid.as_str());
    assert_eq!(forgotten[0].key.as_deref(), Some(uid.as_str()));

    // The page it leads to says so; the visitor keeps their id (and the form).
    let after = page(&app, "/?forgotten=1", &cookie).await;
    assert!(after.contains(NOTICE), "the notice is shown");
    assert_eq!(form_token(&after), token);

    // A browser under the page's `Referrer-Policy: no-referrer` sends `Origin: null` with a
    // form; `Sec-Fetch-Site` vouches for it. A client that sends neither (curl) needs the token
    // and cookie alone.
    for headers in [
        &[
            ("cookie", cookie.as_str()),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin"),
        ][..],
        &[("cookie", cookie.as_str())],
    ] {
        let response = post_forget(&app, headers, &[("token", &token)]).await;
        assert_eq!(response.status(), 303, "{headers:?}");
    }
    assert_eq!(app.events_of_type(FORGOTTEN).await.len(), 3);
}

async fn forget_requests_that_are_not_the_visitors_own_are_refused(backend: Database) {
    let app = spawn_app(backend).await;
    let (cookie, uid) = new_visitor(&app).await;
    let token = form_token(&page(&app, "/", &cookie).await);
    let (other_cookie, _) = new_visitor(&app).await;
    let other_token = form_token(&page(&app, "/", &other_cookie).await);
    assert_ne!(token, other_token);
    let origin = format!("http://{}", app.addr);
    let forged_cookie = format!(
        "uid={}.{}",
        uuid::Uuid::new_v4(),
        cookie.split_once('.').unwrap().1
    );
    let (cookie, token, other_token, origin, forged_cookie) = (
        cookie.as_str(),
        token.as_str(),
        other_token.as_str(),
        origin.as_str(),
        forged_cookie.as_str(),
    );

    // Each case, its headers and form, and what the refusal says.
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<(&'a str, &'a str)>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "no cookie",
            vec![("origin", origin)],
            vec![("token", token)],
            "uid cookie",
        ),
        (
            "a cookie the service did not sign",
            vec![("cookie", forged_cookie), ("origin", origin)],
            vec![("token", token)],
            "uid cookie",
        ),
        (
            "no token",
            vec![("cookie", cookie), ("origin", origin)],
            vec![],
            "missing",
        ),
        (
            "an empty token",
            vec![("cookie", cookie), ("origin", origin)],
            vec![("token", "")],
            "does not belong",
        ),
        (
            "another visitor's token",
            vec![("cookie", cookie), ("origin", origin)],
            vec![("token", other_token)],
            "does not belong",
        ),
        (
            "a foreign Origin",
            vec![("cookie", cookie), ("origin", "https://evil.example")],
            vec![("token", token)],
            "another site",
        ),
        (
            "a foreign Origin on this host's name with another port",
            vec![("cookie", cookie), ("origin", "http://127.0.0.1:1")],
            vec![("token", token)],
            "another site",
        ),
        (
            "Sec-Fetch-Site: cross-site without Origin",
            vec![("cookie", cookie), ("sec-fetch-site", "cross-site")],
            vec![("token", token)],
            "another site",
        ),
        (
            "Origin: null and Sec-Fetch-Site: cross-site",
            vec![
                ("cookie", cookie),
                ("origin", "null"),
                ("sec-fetch-site", "cross-site"),
            ],
            vec![("token", token)],
            "another site",
        ),
        (
            "Sec-Fetch-Site: same-site",
            vec![
                ("cookie", cookie),
                ("origin", origin),
                ("sec-fetch-site", "same-site"),
            ],
            vec![("token", token)],
            "another site",
        ),
    ];
    for (case, headers, form, says) in &cases {
        let response = post_forget(&app, headers, form).await;
        let body = error_body(response, 403).await;
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(says), "{case}: {error}");
    }
    assert!(
        app.events_of_type(FORGOTTEN).await.is_empty(),
        "nothing was published"
    );
    // The form itself still works for its visitor.
    let response = post_forget(
        &app,
        &[("cookie", cookie), ("origin", origin)],
        &[("token", token)],
    )
    .await;
    assert_eq!(response.status(), 303);
    let forgotten = app.events_of_type(FORGOTTEN).await;
    assert_eq!(forgotten.len(), 1);
    assert_eq!(forgotten[0].value["user_id"], uid.as_str());
}

async fn an_event_log_that_does_not_take_the_event_is_a_503(backend: Database) {
    use sqlx::Connection;

    let app = spawn_app(backend).await;
    let (cookie, uid) = new_visitor(&app).await;
    let token = form_token(&page(&app, "/", &cookie).await);
    // Another process holds the embedded log's write lock: nothing can be appended.
    let mut holder =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", app.event_log_path().display()))
            .await
            .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let body = error_body(forget_reader(&app, Some(TOKEN), &uid).await, 503).await;
    assert!(
        body["error"].as_str().unwrap().contains("event log"),
        "{body}"
    );
    let origin = format!("http://{}", app.addr);
    let response = post_forget(
        &app,
        &[("cookie", &cookie), ("origin", &origin)],
        &[("token", &token)],
    )
    .await;
    error_body(response, 503).await;
    eprintln!("two 503s after {:?}", started.elapsed());

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    drop(holder);
    // Once the log takes events again, so does forgetting.
    let response = forget_reader(&app, Some(TOKEN), &uid).await;
    assert_eq!(response.status(), 202);
}
