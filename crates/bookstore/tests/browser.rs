//! The whole system in a real browser: the web, trend and recommendation services as three
//! `bookstore` processes on Kafka, MariaDB and Redis (as `recommend/processes.rs` runs them), and
//! headless Chromium driven over WebDriver (chromedriver) with fantoccini. A visitor types a
//! search into the page's form and sees the results, then sees the query under Trends; a second
//! visitor (another browser profile, so another `uid` cookie) searches related books, and the
//! first visitor's "Recommended for you" section changes to books found through the second one.
//! The first visitor opens a recommended book by its title and sees its page; the view teaches
//! the services (the book is no longer recommended to that visitor, it shows under "Most viewed
//! now", and once the second visitor has looked at it and at another book, that other book shows
//! under "Readers who looked at this also looked at"). With the second visitor's home page left
//! open, a search by the first appears in its Trends panel without a reload (Server-Sent Events,
//! `/static/live.js`). The pages are saved as `target/artifacts/browser-e2e.png` and
//! `target/artifacts/book-page.png` (the README's `docs/book-page.png` is a copy of the latter).
//!
//! axe-core checks the home page, a search results page, a book page, the page of an unknown
//! book and the home page after a live update against WCAG 2.0/2.1 A and AA; a serious or critical
//! violation fails the test, which lists them all. WebDriver hands axe-core to the page: the site
//! never serves it and its CSP stays `script-src 'self'`.
//!
//! Needs `chromium` and `chromedriver` on PATH and axe-core in the cache (`dev/browser` installs
//! them), and the servers of `dev/services`; fails, naming the fix, without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bookstore_testkit::{free_port, http::get_json, wait_until};
use bookstore_testkit_app::{Infra, Processes, TestBus, test_bus};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// The whole test, services and browsers included, ends within this.
const TEST_LIMIT: Duration = Duration::from_secs(300);
/// How long a reloading visitor waits for the page to show what the services learnt.
const PAGE_LIMIT: Duration = Duration::from_secs(30);
const RELOAD_EVERY: Duration = Duration::from_millis(250);

/// The axe-core `dev/browser` installs (its `axe_version`): the accessibility checker the test
/// hands to the pages it opens. The site never serves it.
const AXE_VERSION: &str = "4.14.1";
/// What the pages must pass: axe-core's rules for WCAG 2.0 and 2.1, levels A and AA.
const AXE_TAGS: [&str; 4] = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];
/// The impacts of a violation that fail the test; "moderate" and "minor" ones are printed only.
const AXE_FAILING: [&str; 2] = ["serious", "critical"];

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

/// The source of axe-core's `axe.min.js`: at `$BOOKSTORE_AXE_JS` when set, else where
/// `dev/browser` puts it, `${XDG_CACHE_HOME:-$HOME/.cache}/bookstore/axe-core-<version>/`. The
/// test fails, naming `dev/browser`, without it.
fn axe_source() -> String {
    let path = match std::env::var_os("BOOKSTORE_AXE_JS").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
                .unwrap_or_else(|| {
                    panic!(
                        "neither XDG_CACHE_HOME nor HOME is set, so axe-core cannot be found: \
                         run `dev/browser` with HOME set, or set BOOKSTORE_AXE_JS to axe.min.js"
                    )
                });
            cache.join(format!(
                "bookstore/axe-core-{AXE_VERSION}/node_modules/axe-core/axe.min.js"
            ))
        }
    };
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core {AXE_VERSION} is not at {} ({e}): install it with `dev/browser`, then run \
             this test again",
            path.display()
        )
    })
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
            processes: Processes::start(env!("CARGO_BIN_EXE_bookstore"), &bus).await,
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
            // Scripts: axe-core takes a few seconds on a busy machine.
            json!({ "pageLoad": 20_000, "script": 30_000, "implicit": 0 }),
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

/// What a book's page (`main#book`) shows.
#[derive(Debug, Clone)]
struct BookPage {
    id: i64,
    title: String,
    author: String,
    author_href: String,
    /// The books under "Readers who looked at this also looked at"; `None` without the section.
    similar: Option<Vec<i64>>,
    /// The books under "More by <author>"; `None` without the section.
    by_author: Option<Vec<i64>>,
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
            ids.push(book_id(&href).unwrap_or_else(|| panic!("a result links to {href:?}")));
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

    /// The book page the browser shows; `Err` saying what it shows instead.
    async fn book_page(&self) -> Result<BookPage, String> {
        let Ok(main) = self.client.find(Locator::Css("main#book")).await else {
            let url = self.client.current_url().await.unwrap();
            return Err(format!("no book page (main#book) at {url}"));
        };
        let id = main.attr("data-book-id").await.unwrap().unwrap_or_default();
        let text = |css: &'static str| async move {
            match self.client.find(Locator::Css(css)).await {
                Ok(element) => Ok(element.text().await.unwrap()),
                Err(_) => Err(format!("the book page has no {css}")),
            }
        };
        let author = self
            .client
            .find(Locator::Css("main#book a.author"))
            .await
            .map_err(|_| "the book page has no a.author".to_owned())?;
        Ok(BookPage {
            id: id.parse().map_err(|_| format!("data-book-id={id:?}"))?,
            title: text("main#book h1.book-title").await?,
            author: author.text().await.unwrap(),
            author_href: author.attr("href").await.unwrap().unwrap_or_default(),
            similar: self.section_books("section#similar").await,
            by_author: self.section_books("section#by-author").await,
        })
    }

    /// The books the `a.title` links of `section` lead to; `None` when the page has no `section`.
    async fn section_books(&self, section: &str) -> Option<Vec<i64>> {
        if self
            .client
            .find_all(Locator::Css(section))
            .await
            .unwrap()
            .is_empty()
        {
            return None;
        }
        let mut ids = Vec::new();
        for link in self
            .client
            .find_all(Locator::Css(&format!("{section} a.title")))
            .await
            .unwrap()
        {
            let href = link.attr("href").await.unwrap().unwrap_or_default();
            ids.push(book_id(&href).unwrap_or_else(|| panic!("{section} links to {href:?}")));
        }
        Some(ids)
    }

    /// The books under "Most viewed now" in the Trends panel.
    async fn most_viewed(&self) -> Vec<i64> {
        self.section_books("#trends ol.viewed-books")
            .await
            .unwrap_or_default()
    }

    /// Saves what the browser shows as `target/artifacts/{name}`, and returns its path.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot is not a PNG"
        );
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, &png).unwrap();
        let written = std::fs::metadata(&path).unwrap().len();
        assert!(written > 0, "{} is empty", path.display());
        path
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

    /// Runs axe-core on the page as it is now (`page` names it) and returns its serious and
    /// critical violations of [`AXE_TAGS`], one line per element; prints the others.
    ///
    /// WebDriver runs the script as the browser's, through the DevTools protocol, not as one of
    /// the page's: the page's CSP (`script-src 'self'`) does not apply to it and stays as users
    /// get it, and the site never serves axe-core.
    async fn axe(&self, axe: &str, page: &str) -> Vec<String> {
        let version = self
            .client
            .execute(
                &format!("{axe}\n;return typeof axe === 'object' ? axe.version : null;"),
                vec![],
            )
            .await
            .unwrap_or_else(|e| panic!("cannot inject axe-core into the {page}: {e}"));
        assert_eq!(
            version,
            json!(AXE_VERSION),
            "axe-core did not load into the {page}"
        );
        let outcome = self
            .client
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                axe.run(document, {
                    runOnly: { type: 'tag', values: arguments[0] },
                    resultTypes: ['violations'],
                }).then(
                    (results) => done({ passes: results.passes.length, violations: results.violations.map((v) => ({
                        id: v.id,
                        impact: v.impact,
                        help: v.help,
                        nodes: v.nodes.map((n) => ({
                            target: n.target.join(' '),
                            summary: n.failureSummary,
                        })),
                    })) }),
                    (error) => done({ error: String(error) }),
                );"#,
                vec![json!(AXE_TAGS)],
            )
            .await
            .unwrap_or_else(|e| panic!("axe-core did not finish on the {page}: {e}"));
        assert!(
            outcome["error"].is_null(),
            "axe-core failed on the {page}: {}",
            outcome["error"]
        );
        // A page no rule applied to would pass whatever it showed: a wrong tag, say.
        assert!(
            outcome["passes"].as_u64() > Some(0),
            "no axe-core rule passed on the {page}: {outcome}"
        );
        let mut failing = Vec::new();
        for violation in outcome["violations"].as_array().unwrap() {
            let impact = violation["impact"].as_str().unwrap_or("unknown");
            for node in violation["nodes"].as_array().unwrap() {
                let line = format!(
                    "{page}: {} ({impact}, {}) at `{}`: {}",
                    violation["id"].as_str().unwrap_or_default(),
                    violation["help"].as_str().unwrap_or_default(),
                    node["target"].as_str().unwrap_or_default(),
                    node["summary"]
                        .as_str()
                        .unwrap_or_default()
                        .replace('\n', " "),
                );
                eprintln!("axe-core: {line}");
                if AXE_FAILING.contains(&impact) {
                    failing.push(line);
                }
            }
        }
        failing
    }

    async fn close(self) {
        self.client.close().await.expect("close the browser");
    }
}

/// The book a link leads to: `/books/{id}`, with or without a query (`?from=search&rank=0`)
/// and the site's origin.
fn book_id(href: &str) -> Option<i64> {
    let path = href.split(['?', '#']).next()?;
    let (_, id) = path.split_once("/books/")?;
    id.parse().ok()
}

/// Polls, without reloading anything, until `done` holds (at most `limit`); `what` names it.
async fn poll_until<T, F, Fut>(what: &str, limit: Duration, mut done: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match done().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "after {limit:?} the page never showed {what}; it showed {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    let axe = axe_source();
    // Serious and critical accessibility violations, of every page checked; asserted at the end
    // so that one run lists them all.
    let mut inaccessible = Vec::new();
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
    inaccessible.extend(a.axe(&axe, "search results page").await);

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
    inaccessible.extend(a.axe(&axe, "home page").await);
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
    a.screenshot("browser-e2e.png").await;

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

    // A opens the first book "Recommended for you" by its title, and sees its page.
    let web = &system.processes.web;
    let chosen = after[0].clone();
    let link = a
        .client
        .find(Locator::Css("#recommendations li.recommendation a.title"))
        .await
        .expect("a recommendation links to its book by the title");
    let href = link.attr("href").await.unwrap().unwrap_or_default();
    assert_eq!(
        book_id(&href),
        Some(chosen.id),
        "the first recommendation, {chosen:?}, links to {href:?}"
    );
    assert!(
        href.contains("from=recommendation&rank=0&reason="),
        "the link says which list it was in: {href:?}"
    );
    let link_title = link.text().await.unwrap();
    link.click().await.unwrap();
    let page = poll_until("the book A clicked", Duration::from_secs(15), || async {
        match a.book_page().await {
            Ok(page) if page.id == chosen.id => Ok(page),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let book = get_json(&http, &format!("{web}/api/books/{}", chosen.id)).await;
    let (title, author) = (
        book["title"].as_str().unwrap(),
        book["author"].as_str().unwrap(),
    );
    assert_eq!(link_title, title, "the recommendation's link is its title");
    assert_eq!(page.title, title, "h1.book-title is the book's title");
    assert_eq!(
        a.client.title().await.unwrap(),
        format!("{title} · Bookstore")
    );
    assert_eq!(page.author, author);
    assert!(
        page.author_href.starts_with("/?q="),
        "the author links to a search: {:?}",
        page.author_href
    );
    assert_eq!(
        page.similar,
        Some(vec![]),
        "nobody else has looked at the book yet: \"Readers who looked at this also looked at\" \
         is there and empty"
    );
    let by_author = page
        .by_author
        .clone()
        .expect("the book page has \"More by\" its author");
    for other in &by_author {
        assert_ne!(*other, chosen.id, "\"More by\" lists the book itself");
        let other = get_json(&http, &format!("{web}/api/books/{other}")).await;
        assert_eq!(
            other["author"].as_str(),
            Some(author),
            "\"More by {author}\" lists {other}"
        );
    }

    // The view teaches the services: the recommendation service stops recommending the book to
    // A, and the trend service lists it under "Most viewed now".
    let recommended_to_a = || async {
        get_json(
            &http,
            &format!("{}/recommendations?uid={uid_a}&n=10", system.processes.rec),
        )
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect::<Vec<i64>>()
    };
    wait_until(
        Duration::from_secs(30),
        "the recommendation service to stop recommending a book A viewed",
        || async { !recommended_to_a().await.contains(&chosen.id) },
    )
    .await;
    a.open(&format!("{web}/")).await;
    a.reload_until(
        "the viewed book most viewed and no longer recommended",
        || async {
            let recommended = a.recommendations().await.unwrap_or_default();
            let viewed = a.most_viewed().await;
            if viewed.contains(&chosen.id) && recommended.iter().all(|b| b.id != chosen.id) {
                Ok(())
            } else {
                Err(format!(
                    "most viewed {viewed:?}, recommended {recommended:?} (viewed: {})",
                    chosen.id
                ))
            }
        },
    )
    .await;

    // B looks at the same book and then at another: A sees that other book under "Readers who
    // looked at this also looked at".
    let other = shown_to_a[0];
    assert_ne!(other, chosen.id);
    for id in [chosen.id, other] {
        b.open(&format!("{web}/books/{id}")).await;
        let page = b.book_page().await.unwrap();
        assert_eq!(page.id, id);
    }
    a.open(&format!("{web}{href}")).await;
    let page = a
        .reload_until("B's other book under similar", || async {
            match a.book_page().await {
                Ok(page) if page.similar.as_ref().is_some_and(|s| s.contains(&other)) => Ok(page),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    let similar: Vec<i64> = get_json(
        &http,
        &format!("{}/books/{}/similar?n=50", system.processes.rec, chosen.id),
    )
    .await
    .as_array()
    .unwrap()
    .iter()
    .map(|b| b["id"].as_i64().unwrap())
    .collect();
    let shown = page.similar.clone().unwrap();
    assert!(
        shown.iter().all(|id| similar.contains(id)),
        "the page's similar books {shown:?} are the service's {similar:?}"
    );
    inaccessible.extend(a.axe(&axe, "book page").await);
    a.screenshot("book-page.png").await;

    // An unknown book: a page saying so.
    a.open(&format!("{web}/books/999999999")).await;
    let heading = a
        .client
        .find(Locator::Css("h1"))
        .await
        .expect("the page for an unknown book has a heading");
    assert_eq!(heading.text().await.unwrap(), "Book not found");
    inaccessible.extend(a.axe(&axe, "page of an unknown book").await);

    // B keeps the home page open; A searches, and the query appears in B's Trends panel without
    // B reloading (the test config's trend.min_readers is 1: one reader makes a trend public).
    b.open(&format!("{web}/")).await;
    b.client
        .find(Locator::Css("#trends"))
        .await
        .expect("the home page has its Trends panel");
    b.client
        .execute("window.__notReloaded = 1;", vec![])
        .await
        .unwrap();
    assert!(
        !b.trends().await.unwrap().iter().any(|q| q == "melville"),
        "melville is under Trends before anyone searched it"
    );
    a.search("melville").await;
    let searched = Instant::now();
    poll_until(
        "A's search under B's Trends, live",
        Duration::from_secs(10),
        || async {
            match b.trends().await {
                Some(queries) if queries.iter().any(|q| q == "melville") => Ok(()),
                other => Err(format!("the trends {other:?}")),
            }
        },
    )
    .await;
    eprintln!(
        "A's search showed in B's open Trends panel {:?} after its results page",
        searched.elapsed()
    );
    assert_eq!(
        b.client
            .execute("return window.__notReloaded === 1;", vec![])
            .await
            .unwrap(),
        json!(true),
        "B's page reloaded instead of updating in place"
    );
    inaccessible.extend(b.axe(&axe, "home page after a live update").await);

    b.close().await;
    a.close().await;
    drop(driver);

    assert!(
        inaccessible.is_empty(),
        "axe-core found {} serious or critical accessibility violations (WCAG 2 A/AA):\n{}",
        inaccessible.len(),
        inaccessible.join("\n")
    );
}
