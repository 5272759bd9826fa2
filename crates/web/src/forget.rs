//! `POST /forget`: the page's "Forget my history" form. The visitor named by the signed `uid`
//! cookie asks to be forgotten; the service publishes `reader.forgotten` for them and sends the
//! browser back to the page, which says so.
//!
//! A cross-site request must not be able to make a visitor forget their history (the cookie is
//! `SameSite=Lax`, so a cross-site POST carries none in today's browsers; the checks here hold
//! without it):
//!
//! - the form carries a token bound to the visitor's id (an HMAC under the cookie key, see
//!   [`VisitorKeys::form_token`](crate::VisitorKeys::form_token)): another site can neither read
//!   it from the page nor make it;
//! - a request whose `Origin` names another host than the request's, or whose `Sec-Fetch-Site`
//!   is not `same-origin` (or `none`), is refused. `Origin: null` says nothing (a browser sends it
//!   for a same-origin form under `Referrer-Policy: no-referrer`, which every page here has), so
//!   `Sec-Fetch-Site` decides then.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::ORIGIN;
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;
use crate::publish::publish_forgotten;
use crate::visitor::{Visitor, peer};
use crate::{MAX_BODY_BYTES, WebState};

/// The purpose the form's token is made for.
pub const PURPOSE: &str = "forget";
/// The form field holding the token.
pub const TOKEN_FIELD: &str = "token";
/// Where the browser goes once the request is accepted: the page, with a notice.
pub const DONE: &str = "/?forgotten=1";

/// `POST /forget` from the page's form, with the visitor's `uid` cookie.
#[utoipa::path(post, path = "/forget", tag = "page",
    summary = "Forget the visitor's search history (the page's form); publishes a reader.forgotten event",
    request_body(content_type = "application/x-www-form-urlencoded", description = "`token`: the form's token from the page, bound to the visitor's signed `uid` cookie, which must come with the request"),
    responses(
        (status = 303, description = "Accepted: the log has the visitor's reader.forgotten event; `Location: /?forgotten=1`, where the page says so"),
        (status = 403, description = "No valid `uid` cookie, a missing or wrong token, or a request from another site (`Origin`, `Sec-Fetch-Site`)", body = bookstore_http::ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = bookstore_http::ErrorBody),
        (status = 503, description = "The event log did not take the event; nothing is promised, try again", body = bookstore_http::ErrorBody),
    ))]
pub async fn forget(
    State(state): State<WebState>,
    visitor: Visitor,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    // The body first (at most 64 KiB): an answer sent while the client still sends its body could
    // reach it cut short.
    let token = form_token(body).await?;
    let hosts = state
        .visitors
        .request_hosts(peer(&parts.extensions).map(|p| p.ip()), &parts.headers);
    if let Some(reason) = cross_site(&parts.headers, &hosts) {
        return Err(ApiError::Forbidden(format!(
            "refused: {reason}; use the form on the page"
        )));
    }
    let Some(uid) = visitor.user_id() else {
        return Err(ApiError::Forbidden(
            "no valid uid cookie came with the request: open the page, then use its form"
                .to_owned(),
        ));
    };
    match token {
        Some(token) if state.visitors.check_form_token(PURPOSE, uid, &token) => {}
        Some(_) => {
            return Err(ApiError::Forbidden(
                "the form's token does not belong to this visitor: reload the page and try again"
                    .to_owned(),
            ));
        }
        None => {
            return Err(ApiError::Forbidden(format!(
                "the form's token ({TOKEN_FIELD}) is missing: reload the page and try again"
            )));
        }
    }
    publish_forgotten(&state, &uid.to_string()).await?;
    state.expect_new_answers();
    Ok(Redirect::to(DONE).into_response())
}

/// The `token` field of a form body (`application/x-www-form-urlencoded`), at most
/// [`MAX_BODY_BYTES`]. The token is hex, so a value with escapes is simply not it.
async fn form_token(body: Body) -> Result<Option<String>, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::TooLarge)?;
    let body = String::from_utf8_lossy(&bytes);
    Ok(body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == TOKEN_FIELD)
        .map(|(_, value)| value.trim().to_owned()))
}

/// Why the request seems to come from another site, if it does: an `Origin` whose host is none
/// of `hosts` (what the request names itself by), or a `Sec-Fetch-Site` other than `same-origin`
/// and `none`.
pub fn cross_site(headers: &HeaderMap, hosts: &[String]) -> Option<String> {
    let origin = headers
        .get(ORIGIN)
        .map(|v| v.to_str().unwrap_or("(not text)").trim());
    if let Some(origin) = origin.filter(|o| *o != "null") {
        let same = origin_authority(origin)
            .is_some_and(|(authority, port)| hosts.iter().any(|h| same_host(h, authority, port)));
        if !same {
            return Some(format!(
                "the request comes from another site (Origin: {origin})"
            ));
        }
    }
    let fetch_site = headers.get("sec-fetch-site").map(|v| {
        v.to_str()
            .unwrap_or("(not text)")
            .trim()
            .to_ascii_lowercase()
    });
    match fetch_site.as_deref() {
        None | Some("same-origin" | "none") => None,
        Some(other) => Some(format!(
            "the request comes from another site (Sec-Fetch-Site: {other})"
        )),
    }
}

/// The authority (`host[:port]`) of a serialized origin (`scheme://host[:port]`) and its
/// scheme's default port.
fn origin_authority(origin: &str) -> Option<(&str, &'static str)> {
    let (scheme, authority) = origin.split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    (!authority.is_empty() && !authority.contains(['/', '?', '#', '@']))
        .then_some((authority, default_port))
}

/// Whether the `Host` value `host` names the origin's authority (case aside; an origin without a
/// port is on its scheme's default port).
fn same_host(host: &str, authority: &str, default_port: &str) -> bool {
    host.eq_ignore_ascii_case(authority)
        || host
            .strip_suffix(default_port)
            .and_then(|h| h.strip_suffix(':'))
            .is_some_and(|h| h.eq_ignore_ascii_case(authority))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn refused(pairs: &[(&str, &str)]) -> bool {
        cross_site(&headers(pairs), &["books.example".to_owned()]).is_some()
    }

    #[test]
    fn requests_from_this_site_pass() {
        for pairs in [
            &[][..],
            &[("origin", "https://books.example")],
            &[("origin", "http://BOOKS.example")],
            &[("origin", "null"), ("sec-fetch-site", "same-origin")],
            &[("origin", "null")],
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
            &[
                ("origin", "https://books.example"),
                ("sec-fetch-site", "same-origin"),
            ],
        ] {
            assert!(!refused(pairs), "{pairs:?}");
        }
        let hosts = ["books.example:443".to_owned()];
        assert!(cross_site(&headers(&[("origin", "https://books.example")]), &hosts).is_none());
        let hosts = ["127.0.0.1:8000".to_owned()];
        assert!(cross_site(&headers(&[("origin", "http://127.0.0.1:8000")]), &hosts).is_none());
    }

    #[test]
    fn requests_from_other_sites_are_refused() {
        for pairs in [
            &[("origin", "https://evil.example")][..],
            &[("origin", "https://books.example.evil.example")],
            &[("origin", "https://books.example:8443")],
            &[("origin", "https://user@books.example")],
            &[("origin", "books.example")],
            &[("origin", "file://books.example")],
            &[("origin", "")],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
            &[("origin", "null"), ("sec-fetch-site", "cross-site")],
            &[
                ("origin", "https://books.example"),
                ("sec-fetch-site", "cross-site"),
            ],
        ] {
            assert!(refused(pairs), "{pairs:?}");
        }
        // A request that names no host cannot show it is this one's.
        assert!(cross_site(&headers(&[("origin", "https://books.example")]), &[]).is_some());
    }
}
