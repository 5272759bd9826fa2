//! One page search followed as one trace across processes: `bookstore web`, `trend` and
//! `recommend` run as three processes exporting to a real Jaeger (started by `dev/services`), and
//! the trace is read back from Jaeger's query API. On the embedded log and on Kafka + MariaDB +
//! Redis. The trace must hold the web's request and producer spans, the page's call to the
//! recommendation service (client and server spans, the context carried in `traceparent`), and
//! each consumer's
//! `process` span, a child of the producer span, linked to the batch whose store write applied
//! it; the web's JSON log lines carry the trace id.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bookstore_testkit::servers::{jaeger_url, otlp_endpoint};
use bookstore_testkit_app::{Infra, Processes, test_bus};
use serde_json::Value;

/// Fails loudly when Jaeger cannot be reached: this test never passes without it.
async fn require_jaeger(http: &reqwest::Client) {
    let url = format!("{}/api/services", jaeger_url());
    let answer = http.get(&url).send().await;
    match answer {
        Ok(response) if response.status().is_success() => {}
        other => panic!(
            "Jaeger's query API is not reachable at {url}: start it with `dev/services start` \
             (or set BOOKSTORE_TEST_JAEGER_URL and BOOKSTORE_TEST_OTLP_ENDPOINT): {other:?}"
        ),
    }
}

/// A span as Jaeger's query API gives it, with its service's name.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    service: String,
    operation: String,
    /// `(CHILD_OF | FOLLOWS_FROM, trace id, span id)`.
    references: Vec<(String, String, String)>,
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.service, self.operation, self.span_id)
    }
}

/// The spans of `trace_id` Jaeger holds so far (none when it knows no such trace yet).
async fn trace(http: &reqwest::Client, trace_id: &str) -> Vec<Span> {
    let url = format!("{}/api/traces/{trace_id}", jaeger_url());
    let Ok(response) = http.get(&url).send().await else {
        return Vec::new();
    };
    if !response.status().is_success() {
        return Vec::new();
    }
    let body: Value = response.json().await.unwrap();
    let mut spans = Vec::new();
    for trace in body["data"].as_array().into_iter().flatten() {
        for span in trace["spans"].as_array().into_iter().flatten() {
            let process = span["processID"].as_str().unwrap_or_default();
            spans.push(Span {
                trace_id: span["traceID"].as_str().unwrap_or_default().to_owned(),
                span_id: span["spanID"].as_str().unwrap_or_default().to_owned(),
                service: trace["processes"][process]["serviceName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                operation: span["operationName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                references: span["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                        (text("refType"), text("traceID"), text("spanID"))
                    })
                    .collect(),
            });
        }
    }
    spans
}

fn find<'a>(spans: &'a [Span], service: &str, operation: &str) -> Option<&'a Span> {
    spans
        .iter()
        .find(|s| s.service == service && s.operation == operation)
}

fn parent(span: &Span) -> Option<&str> {
    span.references
        .iter()
        .find(|(kind, trace, _)| kind == "CHILD_OF" && *trace == span.trace_id)
        .map(|(_, _, id)| id.as_str())
}

fn random_hex(bytes: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..bytes * 2].to_owned()
}

/// The trace id the web service's log gives the request `request_id`.
fn trace_id_in_log(log: &str, request_id: &str) -> Option<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["span"]["request_id"] == request_id)
        .and_then(|line| line["span"]["trace_id"].as_str().map(str::to_owned))
}

/// `continue_traces`: whether the web service's public port continues a caller's trace
/// (`telemetry.web_continues_traces`). Either way the test sends a `traceparent`; without the
/// key, the request starts a trace of its own, found through the request id in the web's log.
async fn one_search_is_one_trace(infra: Infra, continue_traces: bool) {
    let http = reqwest::Client::new();
    require_jaeger(&http).await;
    let bus = test_bus(infra).await;
    let logs = tempfile::tempdir().unwrap();
    let extra: Vec<(String, String)> = [
        ("BOOKSTORE_TELEMETRY__OTLP_ENDPOINT", otlp_endpoint()),
        ("BOOKSTORE_TELEMETRY__SAMPLING_RATIO", "1".to_owned()),
        (
            "BOOKSTORE_TELEMETRY__WEB_CONTINUES_TRACES",
            continue_traces.to_string(),
        ),
        ("BOOKSTORE_LOG_FORMAT", "json".to_owned()),
        // Spans are exported whatever the log level; a line per request names the trace.
        ("RUST_LOG", "warn,tower_http=debug".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let processes = Processes::start_with(
        env!("CARGO_BIN_EXE_bookstore"),
        &bus,
        &extra,
        Some(logs.path()),
    )
    .await;

    let caller_trace = random_hex(16);
    let caller = random_hex(8);
    let request_id = uuid::Uuid::new_v4().to_string();
    let response = http
        .get(format!("{}/?q=history", processes.web))
        .header("traceparent", format!("00-{caller_trace}-{caller}-01"))
        .header("x-request-id", &request_id)
        .header(
            "cookie",
            bookstore_testkit_app::uid_cookie(&uuid::Uuid::new_v4().to_string()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The web's log lines inside the request name its trace.
    let web_log = logs.path().join("web.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let trace_id = loop {
        let log = std::fs::read_to_string(&web_log).unwrap_or_default();
        if let Some(id) = trace_id_in_log(&log, &request_id) {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "no log line of the web service names the request {request_id} and its trace:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if continue_traces {
        assert_eq!(
            trace_id, caller_trace,
            "the caller's trace was not continued"
        );
    } else {
        assert_ne!(
            trace_id, caller_trace,
            "a client chose the trace of a public request"
        );
    }

    let topic = &bus.config.events.topic;
    let process = format!("{topic} process");
    let wanted = [
        ("bookstore-web", "GET /"),
        ("bookstore-web", "publish book.searched"),
        ("bookstore-web", "GET /recommendations"),
        ("bookstore-recommend", "GET /recommendations"),
        ("bookstore-trend", process.as_str()),
        ("bookstore-recommend", process.as_str()),
    ];
    let deadline = Instant::now() + Duration::from_secs(45);
    let spans = loop {
        let spans = trace(&http, &trace_id).await;
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(service, operation)| find(&spans, service, operation).is_none())
            .collect();
        if missing.is_empty() {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the trace {trace_id} lacks {missing:?}; it holds: {}",
            spans
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        BTreeSet::from(["bookstore-web", "bookstore-trend", "bookstore-recommend"])
    );

    // The page's request continues the caller's span, or starts the trace; the event's producer
    // span is its child.
    let request = find(&spans, "bookstore-web", "GET /").unwrap();
    let callers: Vec<&str> = request
        .references
        .iter()
        .filter(|(kind, _, _)| kind == "CHILD_OF")
        .map(|(_, _, id)| id.as_str())
        .collect();
    if continue_traces {
        assert_eq!(callers, [caller.as_str()]);
    } else {
        assert!(callers.is_empty(), "{request} has a parent: {callers:?}");
    }
    let publish = find(&spans, "bookstore-web", "publish book.searched").unwrap();
    assert_eq!(parent(publish), Some(request.span_id.as_str()));
    // The page's call for the visitor's recommendations: the service's server span is a child
    // of the web's client span. (The Trends panel comes from the web's live copy, refreshed in
    // the background, whose calls are not recorded.)
    let client = find(&spans, "bookstore-web", "GET /recommendations").unwrap();
    assert_eq!(parent(client), Some(request.span_id.as_str()), "{client}");
    let server = find(&spans, "bookstore-recommend", "GET /recommendations").unwrap();
    assert_eq!(parent(server), Some(client.span_id.as_str()), "{server}");

    // Each consumer's span is a child of the producer span, and links to the batch that applied
    // the event, whose own trace holds the store write.
    for service in ["bookstore-trend", "bookstore-recommend"] {
        let consumed = find(&spans, service, &process).unwrap();
        assert_eq!(
            parent(consumed),
            Some(publish.span_id.as_str()),
            "{consumed}"
        );
        let (_, batch_trace, batch_span) = consumed
            .references
            .iter()
            .find(|(kind, trace, _)| kind == "FOLLOWS_FROM" && *trace != trace_id)
            .unwrap_or_else(|| panic!("{consumed} has no link to its batch: {consumed:?}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let batch = trace(&http, batch_trace).await;
            let apply = batch.iter().find(|s| s.span_id == *batch_span);
            let write = batch.iter().find(|s| {
                s.operation.ends_with("store write") && parent(s) == Some(batch_span.as_str())
            });
            if let (Some(apply), Some(_)) = (apply, write) {
                assert_eq!(apply.service, service);
                assert!(
                    apply
                        .references
                        .iter()
                        .any(|(kind, trace, span)| kind == "FOLLOWS_FROM"
                            && *trace == trace_id
                            && span == &publish.span_id),
                    "the batch {apply} does not link to the search's producer span"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the batch trace {batch_trace} of {consumed} lacks its apply span or store write: {batch:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // The processes stop, then the bus drops its topics, databases and Redis keys.
    drop(processes);
    drop(bus);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_page_search_is_one_trace_on_the_embedded_log() {
    one_search_is_one_trace(Infra::Embedded, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_page_search_is_one_trace_on_kafka_mariadb_redis_continuing_the_callers() {
    one_search_is_one_trace(Infra::Real, true).await;
}
