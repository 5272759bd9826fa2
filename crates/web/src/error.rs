//! The API's errors: every one is a JSON body `{"error": "...", "fields": {...}}` with the right
//! status. Internal causes are logged, never sent to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bookstore_domain::{FieldErrors, RepositoryError};

/// An error answered to an API client.
#[derive(Debug)]
pub enum ApiError {
    /// The request is malformed (400).
    BadRequest(String),
    /// The request is well formed but its fields break the rules (422).
    Invalid(FieldErrors),
    /// No such resource (404).
    NotFound(String),
    /// The request conflicts with the catalog's state, such as an ISBN another book has (409).
    Conflict(String),
    /// No valid credentials (401).
    Unauthorized,
    /// Writes are disabled on this instance (403).
    WritesDisabled,
    /// The request is refused for the reason given, such as a form posted from another site (403).
    Forbidden(String),
    /// The body is over [`crate::MAX_BODY_BYTES`] (413).
    TooLarge,
    /// The body is not JSON (415).
    UnsupportedMediaType,
    /// A backend is down; try again later (503).
    Unavailable,
    /// The event log did not take an event that must not be lost; try again later (503).
    EventLogUnavailable,
    /// A bug; details are in the log (500).
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::WritesDisabled | Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable | Self::EventLogUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::BadRequest(message)
            | Self::NotFound(message)
            | Self::Conflict(message)
            | Self::Forbidden(message) => message.clone(),
            Self::Invalid(_) => "the book is invalid; see fields".to_owned(),
            Self::Unauthorized => {
                "missing or wrong credentials: send Authorization: Bearer <token>".to_owned()
            }
            Self::WritesDisabled => {
                "the write API is disabled on this server (no web.admin_token is configured); \
                 load books with `bookstore import`"
                    .to_owned()
            }
            Self::TooLarge => format!(
                "the request body is larger than {} bytes",
                crate::MAX_BODY_BYTES
            ),
            Self::UnsupportedMediaType => {
                "the request body must be JSON (Content-Type: application/json)".to_owned()
            }
            Self::Unavailable => "the database is unavailable; try again shortly".to_owned(),
            Self::EventLogUnavailable => {
                "the event log did not take the request; try again shortly".to_owned()
            }
            Self::Internal => "internal error".to_owned(),
        }
    }
}

impl From<RepositoryError> for ApiError {
    fn from(err: RepositoryError) -> Self {
        match &err {
            RepositoryError::Unavailable(_) => {
                metrics::counter!("bookstore_store_errors_total", "service" => "web", "store" => "database", "kind" => "unavailable").increment(1);
                tracing::warn!(error = %error_chain(&err), "database unavailable");
                Self::Unavailable
            }
            RepositoryError::Conflict(message) => Self::Conflict(message.clone()),
            RepositoryError::Internal(_) => {
                metrics::counter!("bookstore_store_errors_total", "service" => "web", "store" => "database", "kind" => "internal").increment(1);
                tracing::error!(error = %error_chain(&err), "database error");
                Self::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let fields = match &self {
            Self::Invalid(fields) => Some(
                fields
                    .iter()
                    .map(|(field, problem)| (field.to_owned(), problem.to_owned()))
                    .collect(),
            ),
            _ => None,
        };
        let body = bookstore_http::ErrorBody {
            error: self.message(),
            fields,
        };
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// An error and all its causes, `outer: inner: innermost`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
