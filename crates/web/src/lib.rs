//! The web service: the bookstore page (`GET /`) and its REST API (`/api/books`), on any
//! [`BookRepository`].
//!
//! [`router`] builds the whole HTTP surface; the composition root (the `bookstore` binary) gives
//! it a repository and serves it.

mod api;
mod assets;
mod error;
mod events;
mod health;
mod page;
mod params;
mod remote;
mod visitor;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bookstore_domain::{BookRepository, EventPublisher};
use secrecy::SecretString;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use remote::{RemoteError, RemoteRecommendations, RemoteTrends};
pub use visitor::Visitor;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest page of books the API returns.
pub const MAX_LIMIT: u32 = 100;

/// What the web service needs to run.
#[derive(Clone)]
pub struct WebState {
    pub books: Arc<dyn BookRepository>,
    /// Where search events go.
    pub events: Arc<dyn EventPublisher>,
    /// Books per page on the page, and the API's default `limit`.
    pub page_size: u32,
    /// The bearer token that allows writes; `None` disables the write API.
    pub admin_token: Option<SecretString>,
    /// The trend service, for the page's Trends section; `None`: no section.
    pub trends: Option<Arc<RemoteTrends>>,
    /// The recommendation service, for the page's "Recommended for you" section; `None`: no
    /// section.
    pub recommendations: Option<Arc<RemoteRecommendations>>,
}

/// The web service's routes, with tracing, a request timeout and panic safety.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route(
            "/",
            get(page::index).layer(axum::middleware::from_fn(visitor::ensure_uid)),
        )
        .route("/api/books", get(api::list_books).post(api::create_book))
        .route("/api/books/{id}", get(api::get_book))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/static/{file}", get(assets::asset))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(TraceLayer::new_for_http())
}
