//! The whole system in a real browser: the web, trend and recommendation services as three
//! `bookstore` processes on Kafka, MariaDB and Redis (as `recommend/processes.rs` runs them), and
//! headless Chromium driven over WebDriver (chromedriver) with fantoccini. A visitor types a
//! search into the page's form and sees the results, then sees the query under Trends; a second
//! visitor (another browser profile, so another `uid` cookie) searches related books, and the
//! first visitor's "Recommended for you" section changes to books found through the second one.
//! The final page is saved as `target/artifacts/browser-e2e.png`.
//!
//! Needs `chromium` and `chromedriver` on PATH (`dev/browser` installs them) and the servers of
//! `dev/services`; fails, naming the fix, without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "events/helpers.rs"]
#[allow(dead_code)]
mod helpers;

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use helpers::{TestBus, wait_until};
use support::{Infra, Processes, free_port, get_json, test_bus};

/// The whole test, services and browsers included, ends within this.
const TEST_LIMIT: Duration = Duration::from_secs(300);
/// How long a reloading visitor waits for the page to show what the services learnt.
const PAGE_LIMIT: Duration = Duration::from_secs(30);
const RELOAD_EVERY: Duration = Duration::from_millis(250);

/// `name` on PATH, as a user's shell would find it.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Chromium and chromedriver; the test fails, naming the fix, when either is missing.
fn browser_binaries() -> (PathBuf, PathBuf) {
    let find = |name: &str, package: &str| {
        on_path(name).unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH: install headless Chromium and its WebDriver server \
                 with `dev/browser` (Debian's `{package}` package), then run this test again"
            )
        })
    };
    (
        find("chromium", "chromium"),
        find("chromedriver", "chromium-driver"),
    )
}

// ------------------------------------------------------------------ the three services

/// `bookstore web`, `trend` and `recommend` as child processes on a fresh Kafka topic, fresh
/// MariaDB databases and a fresh Redis prefix, each on a free loopback port.
struct System {
    processes: Processes,
    _bus: TestBus,
}

impl System {
    async fn start() -> Self {
        let bus = test_bus(Infra::Real).await;
        Self {
            processes: Processes::start(&bus).await,
            _bus: bus,
        }
    }
}

// ------------------------------------------------------------------ the browser

/// chromedriver on a free loopback port (without `--allowed-ips` it accepts local clients only
/// and listens on loopback), in its own process group: on drop the group is SIGKILLed, so the
/// Chromium processes it started go with it even when the test panics.
struct ChromeDriver {
    child: std::process::Child,
    url: String,
    _logs: tempfile::TempDir,
}

impl ChromeDriver {
    async fn start(binary: &Path) -> Self {
        let logs = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                logs.path().join("chromedriver.log").display()
            ))
            .arg("--log-level=WARNING")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; install it with `dev/browser`",
                    binary.display()
                )
            });
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _logs: logs,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let status = format!("{}/status", driver.url);
        wait_until(
            Duration::from_secs(20),
            "chromedriver to be ready",
            || async {
                match http.get(&status).send().await {
                    Ok(response) => response
                        .json::<serde_json::Value>()
                        .await
                        .is_ok_and(|s| s["value"]["ready"] == json!(true)),
                    Err(_) => false,
                }
            },
        )
        .await;
        driver
    }

    /// A browser with a profile of its own (a fresh `--user-data-dir`), so its own cookies.
    async fn browser(&self, chromium: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        capabilities.insert(
            "timeouts".to_owned(),
            json!({ "pageLoad": 20_000, "script": 10_000, "implicit": 0 }),
        );
        let client = ClientBuilder::rustls()
            .unwrap()
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start Chromium ({e}); reinstall them with \
                     `dev/browser`"
                )
            });
        Browser {
            client,
            _profile: profile,
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid (`process_group(0)`); Chromium inherits it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One visitor: a WebDriver session with its own browser profile.
struct Browser {
    client: Client,
    _profile: tempfile::TempDir,
}

/// One book of the "Recommended for you" section.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recommended {
    id: i64,
    text: String,
    reason: String,
}

impl Browser {
    async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    async fn reload(&self) {
        self.client.refresh().await.expect("reload the page");
    }

    /// Types `query` into the page's search form and presses its button, as a visitor does; then
    /// waits for the results page and returns the ids of the books listed.
    async fn search(&self, query: &str) -> Vec<i64> {
        let field = self
            .client
            .find(Locator::Css(r#"form.search input[name="q"]"#))
            .await
            .expect("the page has the search field");
        field.clear().await.unwrap();
        field.send_keys(query).await.unwrap();
        self.client
            .find(Locator::Css(r#"form.search button[type="submit"]"#))
            .await
            .expect("the search form has its button")
            .click()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let url = self.client.current_url().await.unwrap();
            let searched = url
                .query_pairs()
                .any(|(key, value)| key == "q" && value == query);
            if searched {
                // The results page names the query: "1–5 of 7 books matching “austen”".
                if let Ok(summary) = self.client.find(Locator::Css("p.summary")).await {
                    let text = summary.text().await.unwrap_or_default();
                    if text.contains(&format!("matching “{query}”")) {
                        break;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "the results page for {query:?} never showed (at {url})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut ids = Vec::new();
        for link in self
            .client
            .find_all(Locator::Css("ol.books li.book h2.title a"))
            .await
            .unwrap()
        {
            let href = link.attr("href").await.unwrap().unwrap_or_default();
            let id = href.rsplit('/').next().and_then(|id| id.parse().ok());
            ids.push(id.unwrap_or_else(|| panic!("a result links to {href:?}")));
        }
        assert!(!ids.is_empty(), "{query:?} found no book on the page");
        ids
    }

    /// The visitor's `uid` cookie.
    /// The visitor id of this browser: its signed `uid` cookie without the MAC.
    async fn uid(&self) -> String {
        let cookie = self
            .client
            .get_named_cookie("uid")
            .await
            .expect("the page set the uid cookie");
        let (uid, _mac) = cookie
            .value()
            .split_once('.')
            .expect("a signed uid cookie: <uuid>.<mac>");
        uid.to_owned()
    }

    /// The queries under Trends; `None` when the page has no Trends section.
    async fn trends(&self) -> Option<Vec<String>> {
        if self
            .client
            .find_all(Locator::Css("#trends"))
            .await
            .unwrap()
            .is_empty()
        {
            return None;
        }
        let mut queries = Vec::new();
        for trend in self
            .client
            .find_all(Locator::Css("#trends a.trend"))
            .await
            .unwrap()
        {
            queries.push(trend.text().await.unwrap());
        }
        Some(queries)
    }

    /// The "Recommended for you" section; `None` when the page has none.
    async fn recommendations(&self) -> Option<Vec<Recommended>> {
        if self
            .client
            .find_all(Locator::Css("#recommendations"))
            .await
            .unwrap()
            .is_empty()
        {
            return None;
        }
        let mut books = Vec::new();
        for item in self
            .client
            .find_all(Locator::Css("#recommendations li.recommendation"))
            .await
            .unwrap()
        {
            let id = item.attr("data-book-id").await.unwrap().unwrap_or_default();
            books.push(Recommended {
                id: id.parse().unwrap_or_else(|_| panic!("data-book-id={id:?}")),
                text: item.text().await.unwrap(),
                reason: item
                    .find(Locator::Css(".reason"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap(),
            });
        }
        Some(books)
    }

    /// Reloads the page until `done` holds for it (at most [`PAGE_LIMIT`]); `what` names it.
    async fn reload_until<T, F, Fut>(&self, what: &str, mut done: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let deadline = Instant::now() + PAGE_LIMIT;
        loop {
            match done().await {
                Ok(value) => return value,
                Err(seen) => assert!(
                    Instant::now() < deadline,
                    "after reloading for {PAGE_LIMIT:?} the page never showed {what}; it showed \
                     {seen}"
                ),
            }
            tokio::time::sleep(RELOAD_EVERY).await;
            self.reload().await;
        }
    }

    async fn close(self) {
        self.client.close().await.expect("close the browser");
    }
}

/// `target/artifacts` of the workspace.
fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts")
}

// ------------------------------------------------------------------ the test

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_visitors_in_chromium_see_results_trends_and_recommendations_change() {
    let (chromium, chromedriver) = browser_binaries();
    tokio::time::timeout(TEST_LIMIT, two_visitors(&chromium, &chromedriver))
        .await
        .unwrap_or_else(|_| panic!("the browser test did not finish within {TEST_LIMIT:?}"));
}

async fn two_visitors(chromium: &Path, chromedriver: &Path) {
    let system = System::start().await;
    let http = reqwest::Client::new();
    let driver = ChromeDriver::start(chromedriver).await;

    // Visitor A searches with the form and sees the results.
    let a = driver.browser(chromium).await;
    a.open(&format!("{}/", system.processes.web)).await;
    assert_eq!(a.client.title().await.unwrap(), "Bookstore");
    let shown_to_a = a.search("austen").await;
    assert_eq!(a.client.title().await.unwrap(), "austen · Bookstore");
    let authors: Vec<String> = {
        let mut authors = Vec::new();
        for author in a
            .client
            .find_all(Locator::Css("ol.books li.book .author"))
            .await
            .unwrap()
        {
            authors.push(author.text().await.unwrap());
        }
        authors
    };
    assert!(
        authors.iter().any(|a| a.contains("Austen")),
        "the results for austen are by {authors:?}"
    );
    let uid_a = a.uid().await;

    // The search shows under Trends.
    a.open(&format!("{}/", system.processes.web)).await;
    a.reload_until("austen under Trends", || async {
        match a.trends().await {
            Some(queries) if queries.iter().any(|q| q == "austen") => Ok(()),
            other => Err(format!("the trends {other:?}")),
        }
    })
    .await;

    // Once the recommendation service has A's search, the page shows what it recommends to A:
    // nothing found through another reader yet.
    wait_until(
        Duration::from_secs(30),
        "A's search in the recommendation service",
        || async {
            let interests = get_json(
                &http,
                &format!("{}/interests?uid={uid_a}", system.processes.rec_ops),
            )
            .await;
            interests["books"]
                .as_array()
                .is_some_and(|books| !books.is_empty())
        },
    )
    .await;
    let before = a
        .reload_until("the recommendation service's answer for A", || async {
            let expected: Vec<i64> = get_json(
                &http,
                &format!("{}/recommendations?uid={uid_a}&n=5", system.processes.rec),
            )
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_i64().unwrap())
            .collect();
            match a.recommendations().await {
                Some(books) if books.iter().map(|b| b.id).eq(expected.iter().copied()) => Ok(books),
                other => Err(format!(
                    "the recommendations {other:?} (the service says {expected:?})"
                )),
            }
        })
        .await;
    assert!(
        before
            .iter()
            .all(|b| b.reason != "because you searched for austen"),
        "A is recommended through another reader before any other reader searched: {before:?}"
    );

    // Visitor B, in another profile, searches for austen and then for bronte.
    let b = driver.browser(chromium).await;
    b.open(&format!("{}/", system.processes.web)).await;
    b.search("austen").await;
    b.search("bronte").await;
    let uid_b = b.uid().await;
    assert_ne!(uid_a, uid_b, "each profile is its own visitor");

    // A's recommendations change: books found through B's searches, never one A was shown.
    let after = a
        .reload_until("A's recommendations changed by B's searches", || async {
            match a.recommendations().await {
                Some(books)
                    if books != before
                        && books
                            .iter()
                            .any(|b| b.reason == "because you searched for austen") =>
                {
                    Ok(books)
                }
                other => Err(format!(
                    "the recommendations {other:?} (before: {before:?})"
                )),
            }
        })
        .await;
    for book in &after {
        assert!(
            !shown_to_a.contains(&book.id),
            "A is recommended {book:?}, which A was shown"
        );
    }
    assert!(
        after.iter().any(|b| b.text.contains("Brontë")),
        "B's Brontë search shows in A's recommendations: {after:?}"
    );

    // The final page, as A sees it.
    let png = a.client.screenshot().await.expect("a screenshot");
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("browser-e2e.png");
    std::fs::write(&path, &png).unwrap();
    let written = std::fs::metadata(&path).unwrap().len();
    assert!(written > 0, "{} is empty", path.display());
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is not a PNG"
    );

    // B types in the search box, takes the first suggestion with the arrow key and Enter, and
    // lands on its results (the script is served by the web service itself: CSP script-src
    // 'self').
    let field = b
        .client
        .find(Locator::Css(r#"form.search input[name="q"]"#))
        .await
        .expect("the page has the search field");
    field.clear().await.unwrap();
    field.send_keys("franken").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        let items = b
            .client
            .find_all(Locator::Css("#q-suggestions li[role=option]"))
            .await
            .unwrap();
        if let Some(item) = items.first() {
            break item.attr("data-text").await.unwrap().unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "no suggestion showed for \"franken\""
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        first, "Frankenstein",
        "the first suggestion completes the title"
    );
    field
        .send_keys(&char::from(Key::Down).to_string())
        .await
        .unwrap();
    let selected = b
        .client
        .find(Locator::Css("#q-suggestions li[aria-selected=true]"))
        .await
        .expect("the arrow key selects a suggestion");
    assert_eq!(
        selected.attr("data-text").await.unwrap().as_deref(),
        Some("Frankenstein")
    );
    field
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let url = b.client.current_url().await.unwrap();
        if url
            .query_pairs()
            .any(|(key, value)| key == "q" && value == "Frankenstein")
        {
            if let Ok(summary) = b.client.find(Locator::Css("p.summary")).await {
                if summary
                    .text()
                    .await
                    .unwrap_or_default()
                    .contains("matching “Frankenstein”")
                {
                    break;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "Enter on the suggestion did not search it (at {url})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let marked = b
        .client
        .find(Locator::Css("ol.books li.book h2.title mark"))
        .await
        .expect("the matched word is marked in the first title");
    assert_eq!(marked.text().await.unwrap(), "Frankenstein");

    b.close().await;
    a.close().await;
    drop(driver);
}
