use std::net::SocketAddr;

use bookstore_app::WebApp;
use bookstore_app::config::Config;
use bookstore_testkit::FreshDatabase;
use reqwest::{Client, Response};
use tempfile::TempDir;

pub const TOKEN: &str = "test-admin-token";

/// Where the catalog is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    Sqlite,
    MySql,
}

/// Runs each listed test function once per backend, as `sqlite::name` and `mysql::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::helpers::Database::Sqlite).await; })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::helpers::Database::MySql).await; })*
        }
    };
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The operations port (`/metrics`, `/stats`, `/readyz`).
    pub ops: SocketAddr,
    pub client: Client,
    pub db_url: String,
    _dir: TempDir,
    /// A test's MariaDB database goes with its app, whether the test passed or not.
    _db: Option<FreshDatabase>,
}

pub struct Options {
    pub admin_token: Option<&'static str>,
    pub page_size: u32,
    /// `web.trend_url`: none by default (the page leaves its Trends section out).
    pub trend_url: String,
    /// `web.live_streams`.
    pub live_streams: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            admin_token: Some(TOKEN),
            page_size: 5,
            trend_url: String::new(),
            live_streams: 1_000,
        }
    }
}

pub async fn spawn_app(backend: Database) -> TestApp {
    spawn_app_with(backend, Options::default()).await
}

/// Starts the real web service on a random port against a fresh database of `backend`.
pub async fn spawn_app_with(backend: Database, options: Options) -> TestApp {
    // Warnings and errors of the service in the output of a failing test.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn")
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let db = match backend {
        Database::Sqlite => None,
        Database::MySql => Some(FreshDatabase::create().await),
    };
    let db_url = match &db {
        Some(db) => db.url(),
        None => format!("sqlite://{}", dir.path().join("books.db").display()),
    };
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    config.web.listen = "127.0.0.1:0".parse().unwrap();
    config.web.ops_listen = bookstore_app::config::OpsListen::Addr("127.0.0.1:0".parse().unwrap());
    config.web.page_size = options.page_size;
    config.web.admin_token = options.admin_token.map(Into::into);
    // No trend service here unless the test names one: the page leaves its Trends section out at
    // once.
    config.web.trend_url = Some(options.trend_url);
    config.web.live_streams = options.live_streams;
    config.web.recommend_url = Some(String::new());
    config.db.url = Some(db_url.clone().into());
    let app = WebApp::build(&config)
        .await
        .expect("the web service starts");
    let addr = app.local_addr().unwrap();
    let ops = app.ops_addr().unwrap().expect("a separate operations port");
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let app = TestApp {
        addr,
        ops,
        client: Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        db_url,
        _dir: dir,
        _db: db,
    };
    // Searches are answered by the search index, which the catalog topic feeds: the service is
    // ready once the index has the sample catalog.
    wait_ready(&app.client, ops).await;
    app
}

/// Waits (at most 30 s) until `/readyz` on `ops` answers 200: the search index caught up.
pub async fn wait_ready(client: &Client, ops: SocketAddr) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let response = client
            .get(format!("http://{ops}/readyz"))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            return;
        }
        let body = response.text().await.unwrap_or_default();
        assert!(
            std::time::Instant::now() < deadline,
            "the web service is not ready after 30 s: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

impl TestApp {
    /// The catalog database of this app, as the service opens it.
    pub async fn catalog(&self) -> std::sync::Arc<dyn bookstore_domain::BookRepository> {
        let config = Config {
            data_dir: self._dir.path().to_owned(),
            db: bookstore_app::config::DbConfig {
                url: Some(self.db_url.clone().into()),
                ..bookstore_app::config::DbConfig::default()
            },
            ..Config::default()
        };
        bookstore_app::open_catalog(&config)
            .await
            .unwrap()
            .repository()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `path` on the operations port.
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{}", self.ops, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// `GET /api/books` with these query parameters: the books' JSON and `X-Total-Count`.
    pub async fn list(&self, params: &[(&str, &str)]) -> (Vec<serde_json::Value>, u64) {
        let response = self
            .client
            .get(self.url("/api/books"))
            .query(params)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET /api/books {params:?}");
        let total = response
            .headers()
            .get("x-total-count")
            .expect("X-Total-Count is set")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (response.json().await.unwrap(), total)
    }

    /// Waits (at most 5 s) until `GET /api/books` with `params` gives books and a total that
    /// `done` accepts: the search index follows the catalog through its events, a moment after
    /// each write.
    pub async fn wait_for(
        &self,
        params: &[(&str, &str)],
        done: impl Fn(&[serde_json::Value], u64) -> bool,
    ) -> (Vec<serde_json::Value>, u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let (books, total) = self.list(params).await;
            if done(&books, total) {
                return (books, total);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the search {params:?} is still {books:?} (total {total}) after 5 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Waits (at most 5 s) until a search for `q` finds something.
    pub async fn wait_searchable(&self, q: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let started = std::time::Instant::now();
        let mut waited = false;
        while self.titles(q).await.is_empty() {
            waited = true;
            assert!(
                std::time::Instant::now() < deadline,
                "{q:?} is not searchable after 5 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if waited {
            eprintln!("{q:?} became searchable after {:?}", started.elapsed());
        }
    }

    /// Titles of the first page of results for `q`.
    pub async fn titles(&self, q: &str) -> Vec<String> {
        let (books, _) = self.list(&[("q", q)]).await;
        books
            .iter()
            .map(|b| b["title"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn post_book(&self, token: Option<&str>, body: &serde_json::Value) -> Response {
        let request = self.client.post(self.url("/api/books")).json(body);
        send_with(request, token).await
    }

    /// `PUT /api/books/{id}` (`id` as the path has it, so that bad ids can be sent too).
    pub async fn put_book(
        &self,
        token: Option<&str>,
        id: &str,
        body: &serde_json::Value,
    ) -> Response {
        let request = self
            .client
            .put(self.url(&format!("/api/books/{id}")))
            .json(body);
        send_with(request, token).await
    }

    pub async fn delete_book(&self, token: Option<&str>, id: &str) -> Response {
        let request = self.client.delete(self.url(&format!("/api/books/{id}")));
        send_with(request, token).await
    }

    /// The file of this app's embedded event log.
    pub fn event_log_path(&self) -> std::path::PathBuf {
        self._dir.path().join("events.db")
    }

    /// Every message of the search topic (`events.topic`) in this app's embedded log, partition by
    /// partition, in offset order: what the trend and recommendation services would read.
    pub async fn search_topic(&self) -> Vec<LoggedEvent> {
        let log = bookstore_eventlog::EventLog::open(&self.event_log_path())
            .await
            .unwrap();
        let topic = Config::default().events.topic;
        let mut events = Vec::new();
        for partition in 0..log.partitions(&topic).await.unwrap() {
            let tp = bookstore_domain::TopicPartition {
                topic: topic.clone(),
                partition: i32::try_from(partition).unwrap(),
            };
            for message in log.read(&tp, 0, 100_000).await.unwrap() {
                events.push(LoggedEvent {
                    partition: message.partition,
                    offset: message.offset,
                    key: message
                        .key
                        .map(|k| String::from_utf8(k).expect("a UTF-8 key")),
                    value: serde_json::from_slice(&message.value).expect("a JSON event"),
                });
            }
        }
        events
    }

    /// The search topic's events of one `type`.
    pub async fn events_of_type(&self, kind: &str) -> Vec<LoggedEvent> {
        let mut events = self.search_topic().await;
        events.retain(|e| e.value["type"] == kind);
        events
    }
}

/// A message of the event log.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: serde_json::Value,
}

async fn send_with(mut request: reqwest::RequestBuilder, token: Option<&str>) -> Response {
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// The JSON error body of a 4xx response, checked for shape.
pub async fn error_body(response: Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status(), status, "unexpected status");
    assert!(
        response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json")),
        "error bodies are JSON"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "error body has a message: {body}"
    );
    body
}
