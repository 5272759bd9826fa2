//! The web service: the bookstore page (`GET /`, `POST /forget`), each book's page
//! (`GET /books/{id}`), the live Trends panel (`GET /live/trends`) and the REST API
//! (`/api/books`, `/api/readers/{uid}`), on any [`BookRepository`] (the catalog database) and
//! [`BookSearch`] (the search index); on the operations port, the click-through rates
//! (`GET /stats`).
//!
//! [`router`] builds the whole HTTP surface; the composition root (the `bookstore` binary) gives
//! it a repository and serves it.

mod api;
mod assets;
mod book_page;
mod ctr;
mod error;
mod forget;
mod highlight;
mod live;
mod page;
mod params;
mod publish;
mod remote;
mod visitor;

use std::sync::Arc;

use bookstore_domain::{BookRepository, BookSearch, EventPublisher};
use bookstore_http::Api;
use secrecy::SecretString;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use ctr::{ClickThrough, ClickThroughReport};
pub use error::ApiError;
pub use live::{LiveTrends, follow as follow_trends};
pub use remote::{RemoteError, RemoteRecommendations, RemoteTrends};
pub use visitor::{Visitor, VisitorKeys};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest page of books the API returns.
pub const MAX_LIMIT: u32 = 100;

/// What the web service needs to run.
#[derive(Clone)]
pub struct WebState {
    /// The catalog database: the system of record, for reads by id and for writes.
    pub books: Arc<dyn BookRepository>,
    /// The search index, a read model fed by the catalog's events: every search and listing.
    pub search: Arc<dyn BookSearch>,
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
    /// Signs and checks visitor ids; names anonymous clients.
    pub visitors: Arc<VisitorKeys>,
    /// `trend.min_readers`, for the page to say when a search shows under Trends.
    pub trend_min_readers: u32,
    /// This instance's click-through counts (`GET /stats` on the operations port).
    pub click_through: Arc<ClickThrough>,
    /// The live Trends panel's lists and visitor streams; `None` (no trend service): no live
    /// panel. [`follow_trends`] keeps it up to date.
    pub live: Option<Arc<LiveTrends>>,
    /// Whether search events carry each result's description and creation time: only the
    /// tutorial's format (`events.format: tutorial`) writes them, so `v1` does not copy them.
    pub search_details: bool,
}

impl WebState {
    /// This instance just published an event that changes what the trend and recommendation
    /// services answer (a search, a view, a forgotten reader): for a second, the page keeps
    /// their answers only briefly, so that the next pages show its effect soon.
    pub(crate) fn expect_new_answers(&self) {
        if let Some(recommendations) = &self.recommendations {
            recommendations.expect_new_answers();
        }
        if let Some(trends) = &self.trends {
            trends.expect_new_answers();
        }
    }
}

/// The web service's documented routes: for the public, the page, the book pages, the live
/// panel, the REST API and the static files; for the internal network, the click-through rates.
pub fn api(state: WebState) -> Api {
    let page = OpenApiRouter::new()
        .routes(routes!(page::index))
        .routes(routes!(book_page::book))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            visitor::ensure_uid,
        ));
    let public = OpenApiRouter::new()
        .routes(routes!(api::list_books, api::create_book))
        .routes(routes!(api::suggest))
        .routes(routes!(api::get_book, api::replace_book, api::delete_book))
        .routes(routes!(api::forget_reader))
        .route(
            "/api/readers/",
            axum::routing::delete(api::forget_no_reader),
        )
        .routes(routes!(assets::asset))
        // Not under `ensure_uid`: a request without a valid cookie is refused, never given one.
        .routes(routes!(forget::forget))
        .routes(routes!(live::live_trends))
        .merge(page)
        .with_state(state.clone());
    let internal = OpenApiRouter::new()
        .routes(routes!(ctr::stats))
        .with_state(state);
    Api { public, internal }
}

/// The web service's whole HTTP surface: [`api`] and the shared routes and layers of
/// [`bookstore_http::finish`] (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`).
pub fn router(state: WebState, surface: bookstore_http::Surface) -> bookstore_http::Routers {
    bookstore_http::finish(api(state), surface)
}
