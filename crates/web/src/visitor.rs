//! The visitor's `uid` cookie: a random UUID v4 (122 random bits), set for a year.

use axum::extract::{FromRequestParts, Request};
use axum::http::HeaderValue;
use axum::http::header::SET_COOKIE;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use axum_extra::extract::cookie::CookieJar;
use uuid::Uuid;

pub const COOKIE: &str = "uid";
const ONE_YEAR_SECS: u64 = 365 * 24 * 60 * 60;

/// Who is visiting: the `uid` cookie's value, or a fresh id that the response sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visitor {
    pub uid: Uuid,
    /// The id was made for this request; the response carries `Set-Cookie`.
    pub is_new: bool,
}

impl Visitor {
    /// The visitor named by a valid `uid` cookie, if the request has one.
    pub fn from_cookies(jar: &CookieJar) -> Option<Uuid> {
        jar.get(COOKIE)
            .and_then(|c| Uuid::parse_str(c.value()).ok())
            .filter(|uid| !uid.is_nil())
    }
}

/// Gives every request a [`Visitor`], and every response to a new visitor its `uid` cookie.
pub async fn ensure_uid(jar: CookieJar, mut request: Request, next: Next) -> Response {
    let visitor = match Visitor::from_cookies(&jar) {
        Some(uid) => Visitor { uid, is_new: false },
        None => Visitor {
            uid: Uuid::new_v4(),
            is_new: true,
        },
    };
    request.extensions_mut().insert(visitor);
    let mut response = next.run(request).await;
    if visitor.is_new {
        let cookie = format!(
            "{COOKIE}={}; Path=/; Max-Age={ONE_YEAR_SECS}; HttpOnly; SameSite=Lax",
            visitor.uid
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(visitor) = parts.extensions.get::<Visitor>() {
            return Ok(*visitor);
        }
        let jar = CookieJar::from_headers(&parts.headers);
        Ok(match Visitor::from_cookies(&jar) {
            Some(uid) => Visitor { uid, is_new: false },
            None => Visitor {
                uid: Uuid::new_v4(),
                is_new: true,
            },
        })
    }
}
