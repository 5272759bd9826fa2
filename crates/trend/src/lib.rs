//! The trend service's HTTP API over a [`TrendStore`]:
//!
//! - `GET /trends?ps=N&by=score|count`: the top N (default 10, 1 to 100) trends, by time-decayed
//!   score (default) or all-time count, as a JSON array of `{query, query_normalized, count, score,
//!   books, last_searched_at}`;
//! - and the shared `GET /healthz`, `/readyz`, `/metrics`, `/openapi.json` (crate `bookstore-http`).
//!
//! Bad parameters get a 400 with a JSON message; a store that is down, a 503.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bookstore_domain::TrendStore;
use bookstore_domain::trends::TrendRanking;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Trends per response by default, and at most.
pub const DEFAULT_TRENDS: usize = 10;
pub const MAX_TRENDS: usize = 100;

const STORE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct TrendState {
    pub store: Arc<dyn TrendStore>,
}

/// The trend service's documented API routes.
pub fn api(state: TrendState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(trends))
        .with_state(state)
}

/// The whole HTTP surface: [`api`] and the shared routes and layers of
/// [`bookstore_http::finish`] (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`).
pub fn router(state: TrendState, surface: bookstore_http::Surface) -> Router {
    bookstore_http::finish(api(state), surface)
}

fn error(status: StatusCode, message: &str) -> Response {
    bookstore_http::error(status, message)
}

/// `ps` and `by`, checked.
fn parse(params: &HashMap<String, String>) -> Result<(usize, TrendRanking), String> {
    let n = match params.get("ps").map(String::as_str) {
        None | Some("") => DEFAULT_TRENDS,
        Some(ps) => match ps.parse::<usize>() {
            Ok(n) if (1..=MAX_TRENDS).contains(&n) => n,
            _ => {
                return Err(format!(
                    "ps must be a whole number from 1 to {MAX_TRENDS}, not {ps:?}"
                ));
            }
        },
    };
    let by = match params.get("by").map(String::as_str) {
        None | Some("") | Some("score") => TrendRanking::Score,
        Some("count") => TrendRanking::Count,
        Some(other) => return Err(format!("by must be score or count, not {other:?}")),
    };
    Ok((n, by))
}

/// The trending searches, best first.
#[utoipa::path(get, path = "/trends", tag = "trends",
    params(
        ("ps" = Option<usize>, Query, description = "How many, 1 to 100 (default 10)"),
        ("by" = Option<String>, Query, description = "score (time-decayed, default) or count (all time)"),
    ),
    responses(
        (status = 200, description = "JSON array of `{query, query_normalized, count, score, books, last_searched_at}`"),
        (status = 400, description = "Bad parameters", body = bookstore_http::ErrorBody),
        (status = 503, description = "The trend store is unavailable", body = bookstore_http::ErrorBody),
    ))]
async fn trends(
    State(state): State<TrendState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return error(StatusCode::BAD_REQUEST, "the query string is malformed");
    };
    let (n, by) = match parse(&params) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match tokio::time::timeout(STORE_TIMEOUT, state.store.top(n, by, chrono::Utc::now())).await {
        Ok(Ok(trends)) => Json(trends).into_response(),
        Ok(Err(err)) => {
            metrics::counter!("bookstore_store_errors_total", "service" => "trend", "store" => "trends", "kind" => "read").increment(1);
            tracing::warn!(error = %err, "cannot read the trends");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the trend store is unavailable",
            )
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the trend store did not answer in time",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parameters_are_checked() {
        assert_eq!(parse(&params(&[])), Ok((10, TrendRanking::Score)));
        assert_eq!(
            parse(&params(&[("ps", "3"), ("by", "count")])),
            Ok((3, TrendRanking::Count))
        );
        assert_eq!(
            parse(&params(&[("ps", "100")])),
            Ok((100, TrendRanking::Score))
        );
        for bad in ["0", "101", "-1", "ten", "1e3"] {
            assert!(parse(&params(&[("ps", bad)])).is_err(), "{bad}");
        }
        assert!(
            parse(&params(&[("by", "popularity")]))
                .unwrap_err()
                .contains("score or count")
        );
    }
}
