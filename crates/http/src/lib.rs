//! What the three services' HTTP surfaces share, so that an operator finds the same things on
//! each of them:
//!
//! - `GET /healthz` (the process serves), `GET /readyz` (200 when every backend answers, else 503
//!   naming the ones that do not), `GET /metrics` (Prometheus text format), `GET /openapi.json`
//!   (the service's API, generated from the handlers' annotations);
//! - an `x-request-id` on every request and response (taken from the client when it sends one),
//!   carried by the request's log span with its method and route;
//! - request counts and latency histograms by route and status;
//! - security headers (Content-Security-Policy, X-Content-Type-Options, Referrer-Policy,
//!   X-Frame-Options), a request timeout, and a JSON 500 instead of a dropped connection if a
//!   handler panics;
//! - the body of a GET, HEAD, DELETE or OPTIONS request read and dropped (at most 64 KiB).
//!
//! Handlers share [`query_params`], [`count_param`] and [`StoreReads`]: the same 400s for bad
//! parameters and 503s for a store that fails or is slow.
//!
//! A service builds its API as a [`utoipa_axum::router::OpenApiRouter`] and hands it to
//! [`finish`] with its [`Surface`].

mod answers;
mod layers;
mod metrics;
mod readiness;

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;

pub use crate::answers::{StoreReads, count_param, query_params};
pub use crate::metrics::{Collector, MetricsRender, render_metrics};
pub use crate::readiness::{Probe, ProbeError, Readiness};

/// A JSON error body, `{"error": message}`, with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The body of every error answer, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// What was wrong, for a person.
    error: String,
}

/// What a service adds to the shared routes.
pub struct Surface {
    /// `web`, `trend` or `recommend`: the `service` label of its metrics and its log spans.
    pub service: &'static str,
    /// The OpenAPI document's title and description.
    pub title: &'static str,
    pub description: &'static str,
    /// The backends `/readyz` checks.
    pub readiness: Readiness,
    /// Called before each `/metrics` answer, to set gauges from the service's counters.
    pub collectors: Vec<Collector>,
}

/// The service's router: its API, the shared routes, and the shared layers.
pub fn finish(api: OpenApiRouter, surface: Surface) -> axum::Router {
    let shared = OpenApiRouter::new()
        .routes(utoipa_axum::routes!(readiness::healthz))
        .routes(utoipa_axum::routes!(readiness::readyz))
        .with_state(Arc::new(surface.readiness))
        .merge(
            OpenApiRouter::new()
                .routes(utoipa_axum::routes!(metrics::metrics))
                .with_state(Arc::new(MetricsRender::new(surface.collectors))),
        )
        .routes(utoipa_axum::routes!(openapi_json));
    let (router, mut spec) = api.merge(shared).split_for_parts();
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    spec.info.title = surface.title.to_owned();
    spec.info.description = Some(surface.description.to_owned());
    spec.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let spec = Arc::new(spec);
    layers::wrap(router.layer(axum::Extension(spec)), surface.service)
}

/// This document: the service's API in OpenAPI 3.1.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
async fn openapi_json(
    axum::Extension(spec): axum::Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Response {
    Json(spec.as_ref().clone()).into_response()
}

/// No route: a JSON 404.
async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

/// A route that does not answer this method: a JSON 405.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}
