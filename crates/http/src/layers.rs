//! The layers around every route: request ids, log spans, metrics, security headers, a timeout,
//! and panics turned into JSON 500s.

use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

/// The page loads its stylesheet, icon and one script (the search box's suggestions) from this
/// origin, and that script calls only this origin; no inline script; nothing may frame it.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub(crate) fn wrap(
    router: axum::Router,
    service: &'static str,
    request_timeout: Duration,
    continue_traces: bool,
) -> axum::Router {
    // Router::layer: the last one added runs first. The metrics layer is outside the timeout and
    // the panic catcher, so that 408s and panics are counted with their latency.
    router
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            time_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            service,
            crate::metrics::track,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(move |request: &Request| {
                let id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or("unmatched", MatchedPath::as_str);
                let span = tracing::info_span!(
                    "request",
                    otel.name = tracing::field::Empty,
                    otel.kind = tracing::field::Empty,
                    service,
                    request_id = %id,
                    method = %request.method(),
                    route,
                    trace_id = tracing::field::Empty,
                );
                // A caller's trace goes on through this request (the web page's calls to the
                // trend and recommendation services, or any client sending `traceparent`).
                if bookstore_telemetry::enabled() {
                    span.record("otel.name", format!("{} {route}", request.method()));
                    span.record("otel.kind", "server");
                    if continue_traces {
                        bookstore_telemetry::set_parent_from_http(&span, request.headers());
                    }
                }
                bookstore_telemetry::record_trace_id(&span);
                span
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::map_request(drop_unusable_request_id))
        .layer(axum::middleware::from_fn(read_unused_bodies))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
}

/// A handler that takes longer than `limit` (`http.request_timeout_ms`) is dropped, and the
/// client gets a JSON 408.
async fn time_limit(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => crate::error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {} ms and was given up",
                limit.as_millis()
            ),
        ),
    }
}

/// The largest body a request whose method takes none may carry (it is read and dropped), and
/// how long it may take to arrive.
const MAX_UNUSED_BODY: usize = 64 * 1024;
const UNUSED_BODY_TIMEOUT: Duration = Duration::from_secs(2);

/// A GET, HEAD, DELETE or OPTIONS request with a body: the body is read (up to 64 KiB, else 413)
/// and dropped before the handler runs. Left unread, hyper would close the connection with bytes
/// still in the socket, and the kernel's reset can cut off the end of the answer.
async fn read_unused_bodies(request: Request, next: axum::middleware::Next) -> Response {
    use axum::http::Method;
    let takes_no_body = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
    );
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if !(takes_no_body && has_body) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    // Bounded in time too: a client announcing a body it never sends must not hold the request.
    match tokio::time::timeout(
        UNUSED_BODY_TIMEOUT,
        axum::body::to_bytes(body, MAX_UNUSED_BODY),
    )
    .await
    {
        Ok(Ok(_)) => {
            next.run(Request::from_parts(parts, axum::body::Body::empty()))
                .await
        }
        Ok(Err(_)) => crate::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a {} request may carry at most {MAX_UNUSED_BODY} bytes of body",
                parts.method
            ),
        ),
        Err(_) => crate::error(
            StatusCode::REQUEST_TIMEOUT,
            "the request's body did not arrive in time",
        ),
    }
}

/// The longest client request id kept.
const MAX_REQUEST_ID: usize = 64;

/// A client's `x-request-id` is kept only if it is a short token (letters, digits, `.`, `_`,
/// `:`, `-`): anything else (too long, spaces, quotes, `=`) could forge fields in text logs, so it
/// is replaced by a new UUID.
async fn drop_unusable_request_id(mut request: Request) -> Request {
    let usable = |v: &HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(b))
    };
    let headers = request.headers_mut();
    let keep = {
        let mut values = headers.get_all(&REQUEST_ID).iter();
        matches!((values.next(), values.next()), (Some(v), None) if usable(v))
    };
    if !keep {
        headers.remove(&REQUEST_ID);
    }
    request
}

/// A handler panicked: log it, answer a JSON 500.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = detail, "a request handler panicked");
    crate::error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn kept(values: &[&[u8]]) -> Option<String> {
        let mut builder = Request::builder().uri("/");
        for v in values {
            builder = builder.header("x-request-id", HeaderValue::from_bytes(v).unwrap());
        }
        let request =
            drop_unusable_request_id(builder.body(axum::body::Body::empty()).unwrap()).await;
        request
            .headers()
            .get(&REQUEST_ID)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn bodies_of_get_requests_are_read_and_dropped_or_refused() {
        use tower::ServiceExt;
        let app = wrap(
            axum::Router::new().route("/", axum::routing::get(|| async { "ok" })),
            "test",
            Duration::from_secs(30),
            true,
        );
        let get = |body: Vec<u8>| {
            Request::builder()
                .uri("/")
                .header(header::CONTENT_LENGTH, body.len())
                .body(axum::body::Body::from(body))
                .unwrap()
        };
        let small = app.clone().oneshot(get(vec![b'x'; 1024])).await.unwrap();
        assert_eq!(small.status(), StatusCode::OK);
        let large = app
            .clone()
            .oneshot(get(vec![b'x'; 65 * 1024]))
            .await
            .unwrap();
        assert_eq!(large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let none = app.clone().oneshot(get(Vec::new())).await.unwrap();
        assert_eq!(none.status(), StatusCode::OK);
        // A body announced and never sent (the fuzz test found this hanging).
        let never = Request::builder()
            .uri("/")
            .header(header::TRANSFER_ENCODING, "chunked")
            .body(axum::body::Body::from_stream(futures::stream::pending::<
                Result<Vec<u8>, std::io::Error>,
            >()))
            .unwrap();
        let started = std::time::Instant::now();
        let waited = app.oneshot(never).await.unwrap();
        assert_eq!(waited.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_slow_handler_gets_a_json_408_after_the_request_timeout() {
        use tower::ServiceExt;
        let app = wrap(
            axum::Router::new().route(
                "/",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            ),
            "test",
            Duration::from_millis(100),
            true,
        );
        let started = std::time::Instant::now();
        let response = app
            .oneshot(
                Request::builder()
                    .uri("/")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(started.elapsed() < Duration::from_secs(2));
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(body["error"].as_str().unwrap().contains("100 ms"), "{body}");
    }

    #[tokio::test]
    async fn only_short_plain_request_ids_are_kept() {
        assert_eq!(
            kept(&[b"abc-123_x.y:z"]).await.as_deref(),
            Some("abc-123_x.y:z")
        );
        assert_eq!(kept(&[b"a b"]).await, None);
        assert_eq!(kept(&[b"id=1 status=200"]).await, None);
        assert_eq!(kept(&[b"\"quoted\""]).await, None);
        assert_eq!(kept(&["x".repeat(65).as_bytes()]).await, None);
        assert_eq!(
            kept(&["x".repeat(64).as_bytes()]).await.map(|v| v.len()),
            Some(64)
        );
        assert_eq!(kept(&[b"one", b"two"]).await, None);
        assert_eq!(kept(&[b"caf\xc3\xa9"]).await, None);
    }
}
