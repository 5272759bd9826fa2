//! The page's calls to the trend service: a short timeout, a small cache, and no section at all
//! when the service fails, so a slow or dead service never holds the page up beyond the timeout.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bookstore_domain::trends::Trend;

/// How long a cache entry filled just after one of this instance's searches lives: that search
/// may not have reached the trend service yet.
const FRESH_AFTER_SEARCH: Duration = Duration::from_millis(200);
const SEARCH_SETTLES: Duration = Duration::from_secs(1);

/// Trends shown on the page.
pub const PAGE_TRENDS: usize = 5;

struct Cached {
    at: Instant,
    /// `None`: the last call failed; the section is left out until the entry expires.
    trends: Option<Arc<Vec<Trend>>>,
}

/// A client of the trend service's `GET /trends`.
pub struct RemoteTrends {
    http: reqwest::Client,
    url: String,
    timeout: Duration,
    cache_ttl: Duration,
    cache: Mutex<Option<Cached>>,
    last_search: Mutex<Option<Instant>>,
}

impl RemoteTrends {
    /// `base_url`: the trend service, e.g. `http://127.0.0.1:8001`.
    pub fn new(
        base_url: &str,
        timeout: Duration,
        cache_ttl: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Self {
            http,
            url: format!("{}/trends?ps={PAGE_TRENDS}", base_url.trim_end_matches('/')),
            timeout,
            cache_ttl,
            cache: Mutex::new(None),
            last_search: Mutex::new(None),
        })
    }

    /// This instance published a search: the next pages should see it soon.
    pub fn searched(&self) {
        if let Ok(mut last) = self.last_search.lock() {
            *last = Some(Instant::now());
        }
    }

    fn cached(&self) -> Option<Option<Arc<Vec<Trend>>>> {
        let cache = self.cache.lock().ok()?;
        let entry = cache.as_ref()?;
        let last_search = self.last_search.lock().ok().and_then(|l| *l);
        let ttl = match last_search {
            Some(searched) if entry.at < searched + SEARCH_SETTLES => {
                FRESH_AFTER_SEARCH.min(self.cache_ttl)
            }
            _ => self.cache_ttl,
        };
        (entry.at.elapsed() < ttl).then(|| entry.trends.clone())
    }

    /// The top trends, or `None` when the service did not answer well within the timeout.
    pub async fn get(&self) -> Option<Arc<Vec<Trend>>> {
        if let Some(cached) = self.cached() {
            return cached;
        }
        let started = Instant::now();
        let fetched = tokio::time::timeout(self.timeout, async {
            let response = self.http.get(&self.url).send().await?.error_for_status()?;
            response.json::<Vec<Trend>>().await
        })
        .await;
        let trends = match fetched {
            Ok(Ok(trends)) => Some(Arc::new(trends)),
            Ok(Err(error)) => {
                tracing::debug!(%error, "the trend service failed; the page goes without trends");
                None
            }
            Err(_) => {
                tracing::debug!(elapsed = ?started.elapsed(), "the trend service timed out");
                None
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some(Cached {
                at: Instant::now(),
                trends: trends.clone(),
            });
        }
        trends
    }
}
