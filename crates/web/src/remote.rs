//! The page's calls to the trend and recommendation services: a short timeout, a small cache, and
//! no section at all when a service fails, so a slow or dead service never holds the page up
//! beyond the timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bookstore_domain::BookId;
use bookstore_domain::recommend::Recommendation;
use bookstore_domain::trends::{Trend, ViewedBook};
use serde::de::DeserializeOwned;

/// How long a cache entry filled within [`CHANGE_SETTLES`] of one of this instance's events (a
/// search, a view, a forgotten reader) lives: that event may not have reached the services yet.
const FRESH_AFTER_CHANGE: Duration = Duration::from_millis(200);
const CHANGE_SETTLES: Duration = Duration::from_secs(1);
/// Answers cached at most (one per visitor for recommendations); past it, expired ones go.
const MAX_CACHED: usize = 10_000;

/// Trends shown on the page.
pub const PAGE_TRENDS: usize = 5;
/// Recommendations shown on the page.
pub const PAGE_RECOMMENDATIONS: usize = 5;
/// Most viewed books shown under Trends.
pub const PAGE_VIEWED_BOOKS: usize = 5;
/// Books a book's page shows under "Readers who looked at this also looked at".
pub const PAGE_SIMILAR: usize = 5;

struct Cached<T> {
    at: Instant,
    /// `None`: the last call failed; the section is left out until the entry expires.
    value: Option<Arc<T>>,
}

/// How long an idle connection to a service is kept for the next call.
const POOL_IDLE: Duration = Duration::from_secs(10);

/// A JSON `GET` client with a timeout and a cache per URL.
struct RemoteJson<T> {
    http: reqwest::Client,
    base: reqwest::Url,
    timeout: Duration,
    cache_ttl: Duration,
    cache: Mutex<HashMap<String, Cached<T>>>,
    last_change: Mutex<Option<Instant>>,
}

impl<T: DeserializeOwned> RemoteJson<T> {
    fn new(base_url: &str, timeout: Duration, cache_ttl: Duration) -> Result<Self, RemoteError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Idle connections are dropped well before the services close them
            // (`http.idle_timeout_ms`, 30 s by default), so that a call never goes out on a
            // connection the other side is closing.
            .pool_idle_timeout(POOL_IDLE)
            .build()?;
        let base = reqwest::Url::parse(base_url.trim_end_matches('/'))
            .map_err(|e| RemoteError::Url(base_url.to_owned(), e.to_string()))?;
        Ok(Self {
            http,
            base,
            timeout,
            cache_ttl,
            cache: Mutex::new(HashMap::new()),
            last_change: Mutex::new(None),
        })
    }

    fn expect_new_answers(&self) {
        if let Ok(mut last) = self.last_change.lock() {
            *last = Some(Instant::now());
        }
    }

    fn ttl(&self, at: Instant) -> Duration {
        let last_change = self.last_change.lock().ok().and_then(|l| *l);
        match last_change {
            Some(changed) if at < changed + CHANGE_SETTLES => {
                FRESH_AFTER_CHANGE.min(self.cache_ttl)
            }
            _ => self.cache_ttl,
        }
    }

    fn cached(&self, key: &str) -> Option<Option<Arc<T>>> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.get(key)?;
        (entry.at.elapsed() < self.ttl(entry.at)).then(|| entry.value.clone())
    }

    /// `<base><path>?<query>`.
    fn url(&self, path: &str, query: &[(&str, &str)]) -> reqwest::Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        url.query_pairs_mut().clear().extend_pairs(query);
        url
    }

    /// `GET <base><path>?<query>`, or `None` when the service did not answer well within the
    /// timeout.
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Option<Arc<T>> {
        let url = self.url(path, query);
        if let Some(cached) = self.cached(url.as_str()) {
            return cached;
        }
        self.fetch(url).await
    }

    /// `GET url` from the service itself, never the cache (the answer is cached for the next
    /// pages), or `None` when it did not answer well within the timeout.
    async fn fetch(&self, url: reqwest::Url) -> Option<Arc<T>> {
        let key = url.to_string();
        let started = Instant::now();
        // A client span, whose context the call carries in `traceparent`, when tracing is on and
        // the call is made for a request. A background call (the live panel's refresh) asks the
        // service not to record it.
        let in_request = bookstore_telemetry::enabled() && !tracing::Span::current().is_disabled();
        let span = if in_request {
            tracing::info_span!(
                "call",
                otel.name = %format_args!("GET {}", url.path()),
                otel.kind = "client",
                server.address = url.host_str().unwrap_or(""),
                url.path = url.path(),
                http.response.status_code = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let call = async {
            let mut headers = reqwest::header::HeaderMap::new();
            bookstore_telemetry::inject_http(&mut headers);
            let response = self.http.get(url).headers(headers).send().await?;
            tracing::Span::current()
                .record("http.response.status_code", response.status().as_u16());
            response.error_for_status()?.json::<T>().await
        };
        let fetched =
            tokio::time::timeout(self.timeout, tracing::Instrument::instrument(call, span)).await;
        let value = match fetched {
            Ok(Ok(value)) => Some(Arc::new(value)),
            Ok(Err(error)) => {
                tracing::debug!(%error, %key, "a service failed; the page goes without its section");
                None
            }
            Err(_) => {
                tracing::debug!(elapsed = ?started.elapsed(), %key, "a service timed out");
                None
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                let ttl = self.cache_ttl;
                cache.retain(|_, entry| entry.at.elapsed() < ttl);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(
                key,
                Cached {
                    at: Instant::now(),
                    value: value.clone(),
                },
            );
        }
        value
    }
}

/// Why a client could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot create the HTTP client")]
    Client(#[from] reqwest::Error),
    #[error("invalid service URL {0:?}: {1}")]
    Url(String, String),
}

/// A client of the trend service's `GET /trends` and `GET /trends/books`, and the address of its
/// `GET /trends/stream`.
pub struct RemoteTrends {
    trends: RemoteJson<Vec<Trend>>,
    books: RemoteJson<Vec<ViewedBook>>,
}

impl RemoteTrends {
    /// `base_url`: the trend service, e.g. `http://127.0.0.1:8001`.
    pub fn new(
        base_url: &str,
        timeout: Duration,
        cache_ttl: Duration,
    ) -> Result<Self, RemoteError> {
        Ok(Self {
            trends: RemoteJson::new(base_url, timeout, cache_ttl)?,
            books: RemoteJson::new(base_url, timeout, cache_ttl)?,
        })
    }

    /// This instance published an event that changes the answers: the next pages should see it
    /// soon.
    pub fn expect_new_answers(&self) {
        self.trends.expect_new_answers();
        self.books.expect_new_answers();
    }

    /// The top trends, or `None` when the service did not answer well within the timeout.
    pub async fn get(&self) -> Option<Arc<Vec<Trend>>> {
        self.trends
            .get("/trends", &[("ps", &PAGE_TRENDS.to_string())])
            .await
    }

    /// The most viewed books now, or `None` when the service did not answer well within the
    /// timeout.
    pub async fn viewed_books(&self) -> Option<Arc<Vec<ViewedBook>>> {
        self.books
            .get("/trends/books", &[("ps", &PAGE_VIEWED_BOOKS.to_string())])
            .await
    }

    /// Both lists of the Trends panel from the service itself, past the cache: what changed
    /// just now. Each is `None` when it did not answer well within the timeout.
    pub async fn fresh(&self) -> (Option<Arc<Vec<Trend>>>, Option<Arc<Vec<ViewedBook>>>) {
        let trends = self
            .trends
            .url("/trends", &[("ps", &PAGE_TRENDS.to_string())]);
        let books = self
            .books
            .url("/trends/books", &[("ps", &PAGE_VIEWED_BOOKS.to_string())]);
        tokio::join!(self.trends.fetch(trends), self.books.fetch(books))
    }

    /// The service's `GET /trends/stream`.
    pub fn stream_url(&self) -> reqwest::Url {
        self.trends.url("/trends/stream", &[])
    }
}

/// A client of the recommendation service's `GET /recommendations` and
/// `GET /books/{id}/similar`.
pub struct RemoteRecommendations(RemoteJson<Vec<Recommendation>>);

impl RemoteRecommendations {
    /// `base_url`: the recommendation service, e.g. `http://127.0.0.1:8002`.
    pub fn new(
        base_url: &str,
        timeout: Duration,
        cache_ttl: Duration,
    ) -> Result<Self, RemoteError> {
        RemoteJson::new(base_url, timeout, cache_ttl).map(Self)
    }

    /// This instance published an event that changes the answers: the next pages should see it
    /// soon.
    pub fn expect_new_answers(&self) {
        self.0.expect_new_answers();
    }

    /// Books for the visitor `uid`, or `None` when the service did not answer well within the
    /// timeout.
    pub async fn get(&self, uid: &str) -> Option<Arc<Vec<Recommendation>>> {
        self.0
            .get(
                "/recommendations",
                &[("uid", uid), ("n", &PAGE_RECOMMENDATIONS.to_string())],
            )
            .await
    }

    /// "Readers who looked at this also looked at": books viewed with `book`, strongest first,
    /// or `None` when the service did not answer well within the timeout.
    pub async fn similar(&self, book: BookId) -> Option<Arc<Vec<Recommendation>>> {
        self.0
            .get(
                &format!("/books/{book}/similar"),
                &[("n", &PAGE_SIMILAR.to_string())],
            )
            .await
    }
}
