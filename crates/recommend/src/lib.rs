//! The recommendation service's HTTP API over a [`RecommendStore`]:
//!
//! - `GET /recommendations?uid=U&n=N`: up to N (default 10, 1 to 50) books U has neither been
//!   shown nor opened, best first, as a JSON array of `{id, title, author, score, reason, kind}`
//!   (`kind`: `searched`, `viewed`, `author` or `popular`); popular books for a user without
//!   history;
//! - `GET /books/{id}/similar?n=N`: "readers who looked at this also looked at": up to N (default
//!   10, 1 to 50) books viewed in the same visit by the readers who viewed book `id`, the most
//!   such readers first,
//!   as the same JSON objects (`score`: how many readers viewed both, `kind`: `similar`); `[]`
//!   for a book nobody viewed, or unknown;
//! - on the operations port (internal network), `GET /interests?uid=U&n=N`: U's profile, `{uid, books, authors, queries}`, each list strongest
//!   first (N per list, default 10, 1 to 100), weights decayed to now;
//! - `GET /books/{id}`: the service's copy of a catalog book (404 when it has none);
//! - on the operations port, `GET /stats`: how many catalog books, reader profiles and query records
//!   the store holds;
//! - and the shared `GET /healthz`, `/readyz`, `/metrics`, `/openapi.json` (crate `bookstore-http`;
//!   `/metrics` on the operations port).
//!
//! Bad parameters get a 400 with a JSON message; a store that is down, a 503.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bookstore_domain::RecommendStore;
use bookstore_domain::recommend::{DEFAULT_RECOMMENDATIONS, MAX_RECOMMENDATIONS, SimilarBooks};
use bookstore_http::{Api, Routers, StoreReads, count_param, error, query_params};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Entries per list of `GET /interests` by default, and at most.
pub const DEFAULT_INTERESTS: usize = 10;
pub const MAX_INTERESTS: usize = 100;
/// The longest user id accepted (the `uid` cookie is a UUID); longer ones have no profile.
pub const MAX_UID_CHARS: usize = bookstore_domain::recommend::MAX_USER_CHARS;

/// What the handlers read: a recommendation store with its co-view reads.
pub trait RecommendReads: RecommendStore + SimilarBooks {}
impl<T: RecommendStore + SimilarBooks> RecommendReads for T {}

#[derive(Clone)]
pub struct RecommendState {
    pub store: Arc<dyn RecommendReads>,
}

/// The recommendation service's documented API routes: `/recommendations`, `/books/{id}` and
/// `/books/{id}/similar` for the web service, and a reader's profile and the store's counts (`/interests`, `/stats`) for
/// the internal network only.
pub fn api(state: RecommendState) -> Api {
    Api {
        public: OpenApiRouter::new()
            .routes(routes!(recommendations))
            .routes(routes!(book))
            .routes(routes!(similar))
            .with_state(state.clone()),
        internal: OpenApiRouter::new()
            .routes(routes!(interests))
            .routes(routes!(stats))
            .with_state(state),
    }
}

/// The whole HTTP surface: [`api`] and the shared routes and layers of
/// [`bookstore_http::finish`] (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`).
pub fn router(state: RecommendState, surface: bookstore_http::Surface) -> Routers {
    bookstore_http::finish(api(state), surface)
}

/// The recommendation store, as the handlers read it.
const STORE: StoreReads = StoreReads {
    service: "recommend",
    store: "recommendations",
    name: "the recommendation store",
    timeout: Duration::from_secs(2),
};

/// `uid` and `n`, checked.
fn parse(
    params: &HashMap<String, String>,
    default_n: usize,
    max_n: usize,
) -> Result<(String, usize), String> {
    let uid = match params.get("uid").map(|u| u.trim()) {
        None | Some("") => return Err("uid is required".to_owned()),
        Some(uid) if uid.chars().count() > MAX_UID_CHARS => {
            return Err(format!("uid must be at most {MAX_UID_CHARS} characters"));
        }
        Some(uid) => uid.to_owned(),
    };
    let n = count_param(params, "n", default_n, max_n)?;
    Ok((uid, n))
}

/// Books the user has not been shown, best first, with the reason for each; popular books for a
/// user without history.
#[utoipa::path(get, path = "/recommendations", tag = "recommendations",
    params(
        ("uid" = String, Query, description = "The user (the page's `uid` cookie)"),
        ("n" = Option<usize>, Query, description = "How many, 1 to 50 (default 10)"),
    ),
    responses(
        (status = 200, description = "JSON array of `{id, title, author, score, reason, kind}`"),
        (status = 400, description = "Bad parameters", body = bookstore_http::ErrorBody),
        (status = 503, description = "The store is unavailable", body = bookstore_http::ErrorBody),
    ))]
async fn recommendations(
    State(state): State<RecommendState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let params = match query_params(params) {
        Ok(params) => params,
        Err(answer) => return answer,
    };
    let (uid, n) = match parse(&params, DEFAULT_RECOMMENDATIONS, MAX_RECOMMENDATIONS) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match STORE
        .read("the recommendations", state.store.recommend(&uid, n))
        .await
    {
        Ok(books) => Json(books).into_response(),
        Err(answer) => answer,
    }
}

/// The user's profile: books, authors and queries, strongest first, weights decayed to now.
#[utoipa::path(get, path = "/interests", tag = "recommendations",
    params(
        ("uid" = String, Query, description = "The user"),
        ("n" = Option<usize>, Query, description = "Entries per list, 1 to 100 (default 10)"),
    ),
    responses(
        (status = 200, description = "`{uid, books, authors, queries}`"),
        (status = 400, description = "Bad parameters", body = bookstore_http::ErrorBody),
        (status = 503, description = "The store is unavailable", body = bookstore_http::ErrorBody),
    ))]
async fn interests(
    State(state): State<RecommendState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let params = match query_params(params) {
        Ok(params) => params,
        Err(answer) => return answer,
    };
    let (uid, n) = match parse(&params, DEFAULT_INTERESTS, MAX_INTERESTS) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let now = chrono::Utc::now();
    match STORE
        .read("the interests", state.store.interests(&uid, n, now))
        .await
    {
        Ok(profile) => Json(profile).into_response(),
        Err(answer) => answer,
    }
}

/// The service's copy of a catalog book (from book.created and book.updated events; gone after book.deleted).
#[utoipa::path(get, path = "/books/{id}", tag = "recommendations",
    params(("id" = i64, Path, description = "The book's id")),
    responses(
        (status = 200, description = "`{id, title, author}`"),
        (status = 400, description = "The id is not a whole number", body = bookstore_http::ErrorBody),
        (status = 404, description = "The service has no such book", body = bookstore_http::ErrorBody),
        (status = 503, description = "The store is unavailable", body = bookstore_http::ErrorBody),
    ))]
async fn book(
    State(state): State<RecommendState>,
    id: Result<Path<i64>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return error(
            StatusCode::BAD_REQUEST,
            "the book id must be a whole number",
        );
    };
    match STORE
        .read("a catalog book", state.store.catalog_book(id))
        .await
    {
        Ok(Some(book)) => Json(book).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "the recommendation service has no such book",
        ),
        Err(answer) => answer,
    }
}

/// Readers who looked at this book also looked at these: the books most viewed by the readers
/// who viewed it, every partition's co-view counts merged, with the catalog copy's titles.
#[utoipa::path(get, path = "/books/{id}/similar", tag = "recommendations",
    params(
        ("id" = i64, Path, description = "The book's id"),
        ("n" = Option<usize>, Query, description = "How many, 1 to 50 (default 10)"),
    ),
    responses(
        (status = 200, description = "JSON array of `{id, title, author, score, reason, kind}`, \
            the most readers first (`score`: readers who viewed both; `kind`: `similar`); `[]` \
            for a book nobody viewed"),
        (status = 400, description = "Bad parameters", body = bookstore_http::ErrorBody),
        (status = 503, description = "The store is unavailable", body = bookstore_http::ErrorBody),
    ))]
async fn similar(
    State(state): State<RecommendState>,
    id: Result<Path<i64>, PathRejection>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return error(
            StatusCode::BAD_REQUEST,
            "the book id must be a whole number",
        );
    };
    let params = match query_params(params) {
        Ok(params) => params,
        Err(answer) => return answer,
    };
    let n = match count_param(&params, "n", DEFAULT_RECOMMENDATIONS, MAX_RECOMMENDATIONS) {
        Ok(n) => n,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match STORE
        .read("the similar books", state.store.similar(id, n))
        .await
    {
        Ok(books) => Json(books).into_response(),
        Err(answer) => answer,
    }
}

/// How many catalog books, reader profiles and query records the store holds.
#[utoipa::path(get, path = "/stats", tag = "recommendations",
    responses(
        (status = 200, description = "`{catalog_books, users, query_records}`"),
        (status = 503, description = "The store is unavailable", body = bookstore_http::ErrorBody),
    ))]
async fn stats(State(state): State<RecommendState>) -> Response {
    match STORE.read("the store's counts", state.store.stats()).await {
        Ok(stats) => Json(stats).into_response(),
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
            parse(&params(&[("uid", "u1")]), 10, 50),
            Ok(("u1".to_owned(), 10))
        );
        assert_eq!(
            parse(&params(&[("uid", "u1"), ("n", "50")]), 10, 50),
            Ok(("u1".to_owned(), 50))
        );
        assert!(parse(&params(&[]), 10, 50).unwrap_err().contains("uid"));
        assert!(parse(&params(&[("uid", " ")]), 10, 50).is_err());
        let long = "x".repeat(MAX_UID_CHARS + 1);
        assert!(parse(&params(&[("uid", &long)]), 10, 50).is_err());
        for bad in ["0", "51", "-1", "ten", "1e3"] {
            assert!(
                parse(&params(&[("uid", "u"), ("n", bad)]), 10, 50).is_err(),
                "{bad}"
            );
        }
    }
}
