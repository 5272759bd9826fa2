//! `GET /metrics`, and the request metrics every route records.
//!
//! The process has one Prometheus recorder (from the `metrics-exporter-prometheus` crate); every
//! series carries a `service` label, so the all-in-one process's three `/metrics` routes all show
//! every service.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets of `http_request_duration_seconds`, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Sets gauges or counters from a service's own counters just before `/metrics` answers.
pub type Collector = Arc<dyn Fn() + Send + Sync>;

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. `None` if another recorder was
/// installed first (then `/metrics` says so).
fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http_request_duration_seconds".to_owned()),
                    LATENCY_BUCKETS,
                )
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "cannot install the Prometheus recorder");
                    None
                }
            }
        })
        .as_ref()
}

/// The collectors of every service alive in this process: each `/metrics` runs them all, so
/// that in the all-in-one process every port shows every service's current counters. Weak, so
/// that a service's collectors go with its router.
static COLLECTORS: Mutex<Vec<Weak<dyn Fn() + Send + Sync>>> = Mutex::new(Vec::new());

/// The Prometheus text of everything recorded in this process so far, after running the
/// collectors of every live service. `None` if the recorder could not be installed.
pub fn render_metrics() -> Option<String> {
    let handle = recorder()?;
    let live: Vec<Collector> = {
        let mut all = COLLECTORS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|c| c.strong_count() > 0);
        all.iter().filter_map(Weak::upgrade).collect()
    };
    for collect in live {
        collect();
    }
    handle.run_upkeep();
    Some(handle.render())
}

/// The `/metrics` route's state: it keeps its service's collectors alive.
pub struct MetricsRender {
    _collectors: Vec<Collector>,
}

impl MetricsRender {
    pub fn new(collectors: Vec<Collector>) -> Self {
        // Installed now, so that the first requests are counted.
        let _ = recorder();
        COLLECTORS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(collectors.iter().map(Arc::downgrade));
        Self {
            _collectors: collectors,
        }
    }
}

/// The process's metrics in the Prometheus text format: HTTP requests by route and status with
/// latency histograms, events published, delivered, failed and dropped, the producer queue,
/// events consumed, applied and dead-lettered per consumer group, consumer lag per partition,
/// outbox rows waiting, store errors.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(_render): State<Arc<MetricsRender>>) -> Response {
    match render_metrics() {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        None => crate::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are unavailable: another metrics recorder is installed in this process",
        ),
    }
}

/// Counts each request by service, route template, method and status, and records its latency.
pub(crate) async fn track(
    State(service): State<&'static str>,
    request: Request,
    next: Next,
) -> Response {
    // Route templates (`/api/books/{id}`), never raw paths, keep the label set bounded.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("service", service.to_owned()),
        ("route", route),
        ("method", method.to_owned()),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
