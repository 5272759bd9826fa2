//! What the three services' HTTP surfaces share, so that an operator finds the same things on
//! each of them:
//!
//! - `GET /healthz` (the process serves), `GET /readyz` (200 when every backend answers, else 503
//!   naming the ones that do not), `GET /metrics` (Prometheus text format), `GET /openapi.json`
//!   (the routes of that port, generated from the handlers' annotations);
//! - two ports per service (see [`OpsRoutes`]): the public one, and the operations one for the
//!   internal network (`/metrics` and the service's internal routes); `/healthz` and `/readyz` on
//!   both;
//! - the server ([`serve`]): header-read, idle and request timeouts, a cap on connections, the
//!   peer's address as `ConnectInfo<SocketAddr>` on every request;
//! - an `x-request-id` on every request and response (taken from the client when it sends one),
//!   carried by the request's log span with its method and route;
//! - request counts and latency histograms by route and status;
//! - security headers (Content-Security-Policy, X-Content-Type-Options, Referrer-Policy,
//!   X-Frame-Options), the request timeout of [`Limits`], and a JSON 500 instead of a dropped connection if a
//!   handler panics;
//! - the body of a GET, HEAD, DELETE or OPTIONS request read and dropped (at most 64 KiB).
//!
//! Handlers share [`query_params`], [`count_param`] and [`StoreReads`]: the same 400s for bad
//! parameters and 503s for a store that fails or is slow.
//!
//! A service builds its API as a [`utoipa_axum::router::OpenApiRouter`] (or an [`Api`] when some
//! routes are for the internal network only) and hands it to [`finish`] with its [`Surface`].

mod answers;
mod layers;
mod metrics;
mod readiness;
mod server;

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;

pub use crate::answers::{StoreReads, count_param, query_params};
pub use crate::metrics::{Collector, MetricsRender, render_metrics};
pub use crate::readiness::{Probe, ProbeError, Readiness};
pub use crate::server::{Limits, REJECT_LINGER, REJECTING, serve};

/// A JSON error body, `{"error": message}`, with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
        fields: None,
    };
    (status, Json(body)).into_response()
}

/// The body of every error answer of every service.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong, for a person.
    pub error: String,
    /// For a request whose fields break the rules (422): each such field and what is wrong
    /// with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<std::collections::BTreeMap<String, String>>,
}

/// Where a service's operational routes are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsRoutes {
    /// On a port of their own (the service's `ops_listen`), off the public port.
    Separate,
    /// On the public port, beside the API (`ops_listen: same`).
    OnPublicPort,
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
    /// How long a handler may take (408 after it).
    pub request_timeout: std::time::Duration,
    /// Where `/metrics` and the internal routes go.
    pub ops: OpsRoutes,
    /// Whether requests to the service's own port continue the trace their `traceparent` header
    /// names (tracing on). The operations port always does. A port open to the internet should
    /// not: any client could then choose to be recorded, under a trace id of its choosing.
    pub continue_traces: bool,
}

/// A service's routes: those for the public, and those for the internal network only (on the
/// operations port with `/metrics`).
pub struct Api {
    pub public: OpenApiRouter,
    pub internal: OpenApiRouter,
}

impl From<OpenApiRouter> for Api {
    /// Public routes only.
    fn from(public: OpenApiRouter) -> Self {
        Self {
            public,
            internal: OpenApiRouter::new(),
        }
    }
}

/// A service's routers: the public port's and, with [`OpsRoutes::Separate`], the operations
/// port's.
pub struct Routers {
    pub public: axum::Router,
    pub ops: Option<axum::Router>,
}

/// The service's routers: its API, the shared routes, and the shared layers. `/healthz` and
/// `/readyz` answer on both ports (load balancers and health checks reach the public one),
/// `/metrics` and `api.internal` on the operations port, `/openapi.json` on each, listing exactly
/// the routes of its port.
pub fn finish(api: impl Into<Api>, surface: Surface) -> Routers {
    let Api { public, internal } = api.into();
    let readiness = Arc::new(surface.readiness);
    let health = || {
        OpenApiRouter::new()
            .routes(utoipa_axum::routes!(readiness::healthz))
            .routes(utoipa_axum::routes!(readiness::readyz))
            .with_state(readiness.clone())
    };
    let ops = internal.merge(health()).merge(
        OpenApiRouter::new()
            .routes(utoipa_axum::routes!(metrics::metrics))
            .with_state(Arc::new(MetricsRender::new(surface.collectors))),
    );
    let port = |routes: OpenApiRouter, title: String, continue_traces: bool| {
        let (router, mut spec) = routes
            .routes(utoipa_axum::routes!(openapi_json))
            .split_for_parts();
        let router = router
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed);
        spec.info.title = title;
        spec.info.description = Some(surface.description.to_owned());
        spec.info.version = env!("CARGO_PKG_VERSION").to_owned();
        let spec = Arc::new(spec);
        layers::wrap(
            router.layer(axum::Extension(spec)),
            surface.service,
            surface.request_timeout,
            continue_traces,
        )
    };
    match surface.ops {
        OpsRoutes::OnPublicPort => Routers {
            public: port(
                public.merge(ops),
                surface.title.to_owned(),
                surface.continue_traces,
            ),
            ops: None,
        },
        OpsRoutes::Separate => Routers {
            public: port(
                public.merge(health()),
                surface.title.to_owned(),
                surface.continue_traces,
            ),
            ops: Some(port(
                ops,
                format!("{} (operations port)", surface.title),
                true,
            )),
        },
    }
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
