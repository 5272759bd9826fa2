//! The trend service's HTTP API over a [`TrendStore`]:
//!
//! - `GET /trends?ps=N&by=score|count&all=true` (or `q=QUERY` for one trend): the top N (default 10, 1 to 100) public trends
//!   (searched from `trend.min_readers` distinct networks; `all=true`: every trend, for internal
//!   callers), by time-decayed score (default) or all-time count, as a JSON array of `{query,
//!   query_normalized, count, score, books, last_searched_at, public}`;
//! - `GET /trends/books?ps=N`: the top N (default 10, 1 to 100) most viewed books now
//!   (`book.viewed`, decayed like the trends), as a JSON array of `{id, title, author, views,
//!   score, last_viewed_at}`;
//! - `GET /trends/stream`: Server-Sent Events telling that the trends or the viewed books changed
//!   (see [`live`]);
//! - and the shared `GET /healthz`, `/readyz`, `/metrics`, `/openapi.json` (crate `bookstore-http`).
//!
//! Bad parameters get a 400 with a JSON message; a store that is down, a 503.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bookstore_domain::TrendStore;
use bookstore_domain::events::{clean_query, normalize_query};
use bookstore_domain::trends::{Audience, TrendRanking};
use bookstore_http::{StoreReads, count_param, error, query_params};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod live;

pub use live::{Changes, Notifying};

/// Trends per response by default, and at most.
pub const DEFAULT_TRENDS: usize = 10;
pub const MAX_TRENDS: usize = 100;

/// What the trend service's handlers answer from (axum's state): the store, and the changes
/// the consumer applied. Not the domain's `TrendState`, which is a store's trends.
#[derive(Clone)]
pub struct TrendApi {
    pub store: Arc<dyn TrendStore>,
    /// What the consumer of this process applied, for `GET /trends/stream`.
    pub changes: Changes,
}

/// The trend service's documented API routes.
pub fn api(state: TrendApi) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(trends))
        .routes(routes!(viewed_books))
        .routes(routes!(live::stream))
        .with_state(state)
}

/// The whole HTTP surface: [`api`] and the shared routes and layers of
/// [`bookstore_http::finish`] (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`).
pub fn router(state: TrendApi, surface: bookstore_http::Surface) -> bookstore_http::Routers {
    bookstore_http::finish(api(state), surface)
}

/// The trend store, as the handlers read it.
const STORE: StoreReads = StoreReads {
    service: "trend",
    store: "trends",
    name: "the trend store",
    timeout: Duration::from_secs(2),
};

/// `ps`, `by` and `all`, checked.
fn parse(params: &HashMap<String, String>) -> Result<(usize, TrendRanking, Audience), String> {
    let n = count_param(params, "ps", DEFAULT_TRENDS, MAX_TRENDS)?;
    let by = match params.get("by").map(String::as_str) {
        None | Some("") | Some("score") => TrendRanking::Score,
        Some("count") => TrendRanking::Count,
        Some(other) => return Err(format!("by must be score or count, not {other:?}")),
    };
    let audience = match params.get("all").map(String::as_str) {
        None | Some("") | Some("false") | Some("0") => Audience::Public,
        Some("true") | Some("1") => Audience::Everyone,
        Some(other) => return Err(format!("all must be true or false, not {other:?}")),
    };
    Ok((n, by, audience))
}

/// The trending searches, best first.
#[utoipa::path(get, path = "/trends", tag = "trends",
    params(
        ("ps" = Option<usize>, Query, description = "How many, 1 to 100 (default 10)"),
        ("by" = Option<String>, Query, description = "score (time-decayed, default) or count (all time)"),
        ("all" = Option<bool>, Query, description = "true: every trend kept, also those fewer than trend.min_readers distinct origins searched (for internal callers); default false: public trends only"),
        ("q" = Option<String>, Query, description = "Only the trend of this query (normalized here), if kept: an array of at most one; ps and by are ignored"),
    ),
    responses(
        (status = 200, description = "JSON array of `{query, query_normalized, count, score, books, last_searched_at, public}`"),
        (status = 400, description = "Bad parameters", body = bookstore_http::ErrorBody),
        (status = 503, description = "The trend store is unavailable", body = bookstore_http::ErrorBody),
    ))]
async fn trends(
    State(state): State<TrendApi>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let params = match query_params(params) {
        Ok(params) => params,
        Err(answer) => return answer,
    };
    let (n, by, audience) = match parse(&params) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if let Some(q) = params.get("q") {
        let query = normalize_query(&clean_query(q));
        let found = STORE
            .read("the trend", state.store.trend(&query, chrono::Utc::now()))
            .await;
        return match found {
            Ok(trend) => Json(
                trend
                    .filter(|t| audience == Audience::Everyone || t.public)
                    .into_iter()
                    .collect::<Vec<_>>(),
            )
            .into_response(),
            Err(answer) => answer,
        };
    }
    match STORE
        .read(
            "the trends",
            state.store.top(n, by, audience, chrono::Utc::now()),
        )
        .await
    {
        Ok(trends) => Json(trends).into_response(),
        Err(answer) => answer,
    }
}

/// The most viewed books now, best first.
#[utoipa::path(get, path = "/trends/books", tag = "trends",
    params(
        ("ps" = Option<usize>, Query, description = "How many, 1 to 100 (default 10)"),
    ),
    responses(
        (status = 200, description = "JSON array of `{id, title, author, views, score, last_viewed_at}`: `views` all time, `score` the views decayed like the trends' searches (trend.half_life), at most trend.user_cap per reader and book and trend.client_cap per network and book in each trend.user_window"),
        (status = 400, description = "Bad parameters", body = bookstore_http::ErrorBody),
        (status = 503, description = "The trend store is unavailable", body = bookstore_http::ErrorBody),
    ))]
async fn viewed_books(
    State(state): State<TrendApi>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let params = match query_params(params) {
        Ok(params) => params,
        Err(answer) => return answer,
    };
    let n = match count_param(&params, "ps", DEFAULT_TRENDS, MAX_TRENDS) {
        Ok(n) => n,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match STORE
        .read(
            "the viewed books",
            state.store.viewed_books(n, chrono::Utc::now()),
        )
        .await
    {
        Ok(books) => Json(books).into_response(),
        Err(answer) => answer,
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
        assert_eq!(
            parse(&params(&[])),
            Ok((10, TrendRanking::Score, Audience::Public))
        );
        assert_eq!(
            parse(&params(&[("ps", "3"), ("by", "count"), ("all", "true")])),
            Ok((3, TrendRanking::Count, Audience::Everyone))
        );
        assert_eq!(
            parse(&params(&[("ps", "100"), ("all", "false")])),
            Ok((100, TrendRanking::Score, Audience::Public))
        );
        assert!(parse(&params(&[("all", "yes please")])).is_err());
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
