//! Static files compiled into the binary, so the page needs no network.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const STYLE_CSS: &str = include_str!("../static/style.css");
const FAVICON_SVG: &str = include_str!("../static/favicon.svg");
const SUGGEST_JS: &str = include_str!("../static/suggest.js");
const LIVE_JS: &str = include_str!("../static/live.js");

/// The page's stylesheet, icon, search-box script and live Trends script.
#[utoipa::path(get, path = "/static/{file}", tag = "page",
    params(("file" = String, Path, description = "style.css, favicon.svg, suggest.js or live.js")),
    responses(
        (status = 200, description = "The file"),
        (status = 404, description = "No such file", body = bookstore_http::ErrorBody),
    ))]
pub async fn asset(file: Result<Path<String>, PathRejection>) -> Response {
    // A name that is not UTF-8 once decoded (`/static/%ff`) gets the API's JSON error too.
    let file = match file {
        Ok(Path(file)) => file,
        Err(err) => return ApiError::BadRequest(err.body_text()).into_response(),
    };
    let (body, content_type) = match file.as_str() {
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        "favicon.svg" => (FAVICON_SVG, "image/svg+xml"),
        "suggest.js" => (SUGGEST_JS, "text/javascript; charset=utf-8"),
        "live.js" => (LIVE_JS, "text/javascript; charset=utf-8"),
        _ => return ApiError::NotFound(format!("no static file {file:?}")).into_response(),
    };
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
