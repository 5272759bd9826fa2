//! `GET /healthz` and `GET /readyz`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// How long a backend gets to answer a readiness check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a backend did not answer.
#[derive(Debug, Clone)]
pub struct ProbeError(pub String);

/// A backend `/readyz` checks.
#[async_trait]
pub trait Probe: Send + Sync {
    async fn check(&self) -> Result<(), ProbeError>;
}

struct Check {
    /// The role: `database`, `store`, `broker`.
    role: &'static str,
    /// What it is: `mysql`, `sqlite`, `redis`, `kafka`, `embedded log`.
    backend: String,
    probe: Arc<dyn Probe>,
    /// Whether its error is shown in `/readyz` (`details`): only for probes whose messages are the
    /// service's own words (a database's error may name hosts and users).
    public: bool,
}

/// How long one round of checks answers `/readyz` (so that a flood of `/readyz` calls cannot
/// become a flood of checks).
const REUSE_FOR: Duration = Duration::from_secs(1);

type Outcome = Vec<Option<Result<(), ProbeError>>>;

/// The backends a service needs, checked in parallel by `/readyz`.
#[derive(Default)]
pub struct Readiness {
    checks: Vec<Check>,
    /// The last round and when it ended; callers arriving during a round wait for it.
    last: tokio::sync::Mutex<Option<(Instant, Outcome)>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// The outcome of every check: the last round's if it is fresh, else a new round (one at a
    /// time).
    async fn outcome(&self) -> Outcome {
        let mut last = self.last.lock().await;
        if let Some((at, outcome)) = last.as_ref() {
            if at.elapsed() < REUSE_FOR {
                return outcome.clone();
            }
        }
        let outcome = futures_join(&self.checks).await;
        *last = Some((Instant::now(), outcome.clone()));
        outcome
    }

    /// Adds a backend in `role` (the key under `checks`), made of `backend`.
    pub fn with(
        self,
        role: &'static str,
        backend: impl Into<String>,
        probe: Arc<dyn Probe>,
    ) -> Self {
        self.check(role, backend.into(), probe, false)
    }

    /// [`Readiness::with`] for a probe whose error message may be shown: it goes to `/readyz`'s
    /// `details` and `error` (such as "search index: catching up, 120 of 262 events").
    pub fn with_details(
        self,
        role: &'static str,
        backend: impl Into<String>,
        probe: Arc<dyn Probe>,
    ) -> Self {
        self.check(role, backend.into(), probe, true)
    }

    fn check(
        mut self,
        role: &'static str,
        backend: String,
        probe: Arc<dyn Probe>,
        public: bool,
    ) -> Self {
        self.checks.push(Check {
            role,
            backend,
            probe,
            public,
        });
        self
    }
}

/// The process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves: {\"status\": \"ok\"}")))]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Whether every backend answers: `{"status", "checks": {role: "ok"|"unavailable"|"timeout"},
/// "backends": {role: name}, "error", "details": {role: message}}`; 503 names the backends that
/// are down, and says why for those whose messages may be shown (the search index's progress).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Every backend answers"),
        (status = 503, description = "A backend is down; `error` names it"),
    ))]
pub(crate) async fn readyz(State(readiness): State<Arc<Readiness>>) -> Response {
    let results = readiness.outcome().await;
    let mut checks = Map::new();
    let mut backends = Map::new();
    let mut details = Map::new();
    let mut down = Vec::new();
    for (check, result) in readiness.checks.iter().zip(results) {
        let state = match &result {
            Some(Ok(())) => "ok",
            Some(Err(ProbeError(error))) => {
                tracing::warn!(role = check.role, backend = %check.backend, %error, "readiness: backend down");
                "unavailable"
            }
            None => "timeout",
        };
        if state != "ok" {
            match &result {
                Some(Err(ProbeError(error))) if check.public => {
                    details.insert(check.role.to_owned(), Value::from(error.clone()));
                    down.push(format!("{} ({}): {error}", check.role, check.backend));
                }
                _ => down.push(format!("{} ({})", check.role, check.backend)),
            }
        }
        checks.insert(check.role.to_owned(), Value::from(state));
        backends.insert(check.role.to_owned(), Value::from(check.backend.clone()));
    }
    let mut body = json!({
        "status": if down.is_empty() { "ready" } else { "unavailable" },
        "checks": checks,
        "backends": backends,
    });
    if down.is_empty() {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        body["error"] = Value::from(format!("not ready: {} down", down.join(", ")));
        if !details.is_empty() {
            body["details"] = Value::Object(details);
        }
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// Runs every probe at once, each within [`PROBE_TIMEOUT`] (`None`: it timed out).
async fn futures_join(checks: &[Check]) -> Outcome {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, check) in checks.iter().enumerate() {
        let probe = check.probe.clone();
        tasks.spawn(async move {
            (
                i,
                tokio::time::timeout(PROBE_TIMEOUT, probe.check())
                    .await
                    .ok(),
            )
        });
    }
    let mut results = vec![None; checks.len()];
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, result)) = done {
            results[i] = result;
        }
    }
    results
}
