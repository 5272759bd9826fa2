//! What an operator relies on, checked on the real binary over HTTP: `/metrics` on every service,
//! `/readyz` naming the backend that is down, `/openapi.json` listing every route, the security
//! headers, request ids in the JSON logs, and a clean exit 0 on SIGTERM and SIGINT with the
//! events flushed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bookstore_testkit::{Cleanup, free_port, servers::kafka_brokers};
use serde_json::Value;

const TOKEN: &str = "ops-test-token";

/// A `bookstore` child process, killed if the test ends before it exits.
struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn start(args: &[&str], env: &[(String, String)], log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_bookstore"))
            .args(args)
            .envs(env.iter().cloned())
            .env_remove("BOOKSTORE_CONFIG")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (TERM or INT) and waits for the exit; panics after `limit`.
    fn stop(&mut self, signal: &str, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let sent = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let started = Instant::now();
        let mut child = self.child.take().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the process did not exit within {limit:?} of SIG{signal}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The all-in-one system on the embedded defaults, in `dir`, on free ports.
struct System {
    web: String,
    trend: String,
    recommend: String,
    /// The operations ports.
    web_ops: String,
    trend_ops: String,
    recommend_ops: String,
    env: Vec<(String, String)>,
}

impl System {
    fn new(dir: &Path) -> Self {
        let (w, t, r) = (free_port(), free_port(), free_port());
        let (wo, to, ro) = (free_port(), free_port(), free_port());
        let env = vec![
            (
                "BOOKSTORE_WEB__OPS_LISTEN".into(),
                format!("127.0.0.1:{wo}"),
            ),
            (
                "BOOKSTORE_TREND__OPS_LISTEN".into(),
                format!("127.0.0.1:{to}"),
            ),
            (
                "BOOKSTORE_RECOMMEND__OPS_LISTEN".into(),
                format!("127.0.0.1:{ro}"),
            ),
            ("BOOKSTORE_DATA_DIR".into(), dir.display().to_string()),
            ("BOOKSTORE_WEB__LISTEN".into(), format!("127.0.0.1:{w}")),
            ("BOOKSTORE_TREND__LISTEN".into(), format!("127.0.0.1:{t}")),
            (
                "BOOKSTORE_RECOMMEND__LISTEN".into(),
                format!("127.0.0.1:{r}"),
            ),
            ("BOOKSTORE_WEB__ADMIN_TOKEN".into(), TOKEN.into()),
            ("BOOKSTORE_WEB__REMOTE_CACHE_MS".into(), "0".into()),
            ("RUST_LOG".into(), "info,tower_http=debug".into()),
        ];
        Self {
            web: format!("http://127.0.0.1:{w}"),
            trend: format!("http://127.0.0.1:{t}"),
            recommend: format!("http://127.0.0.1:{r}"),
            web_ops: format!("http://127.0.0.1:{wo}"),
            trend_ops: format!("http://127.0.0.1:{to}"),
            recommend_ops: format!("http://127.0.0.1:{ro}"),
            env,
        }
    }

    fn ops_urls(&self) -> [(&'static str, &str); 3] {
        [
            ("web", self.web_ops.as_str()),
            ("trend", self.trend_ops.as_str()),
            ("recommend", self.recommend_ops.as_str()),
        ]
    }

    fn urls(&self) -> [(&'static str, &str); 3] {
        [
            ("web", self.web.as_str()),
            ("trend", self.trend.as_str()),
            ("recommend", self.recommend.as_str()),
        ]
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn wait_until_ready(http: &reqwest::Client, url: &str, proc: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(format!("{url}/readyz")).send().await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} was not ready within 60 s; log:\n{}",
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(http: &reqwest::Client, url: &str) -> String {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.text().await.unwrap()
}

/// The value of the first sample of `name` whose labels include every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_has_metrics_readiness_openapi_and_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let system = System::new(dir.path());
    let proc = Proc::start(&["serve"], &system.env, dir.path().join("serve.log"));
    let http = http();
    for (_, url) in system.urls() {
        wait_until_ready(&http, url, &proc).await;
    }

    // Some traffic: a page search, an API search, a write, a bad request, a miss.
    let page = http
        .get(format!("{}/?q=austen", system.web))
        .header("x-request-id", "ops-test-request-1")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["x-request-id"], "ops-test-request-1");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert_eq!(
        html.matches("<script").count(),
        html.matches(r#"<script src="/static/suggest.js" defer></script>"#)
            .count()
            + html
                .matches(r#"<script src="/static/live.js" defer></script>"#)
                .count(),
        "the page's only scripts are its own files (CSP script-src 'self'), never inline"
    );
    assert!(
        !html.contains(" style="),
        "no inline style (CSP style-src 'self')"
    );
    assert_eq!(
        http.get(format!("{}/api/books?q=bronte", system.web))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let created = http
        .post(format!("{}/api/books", system.web))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"title": "Operations", "author": "A. Tester", "published_at": "2026-11-27"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        http.get(format!("{}/api/books?limit=0", system.web))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    // Every service: a generated request id, the headers, a JSON 404.
    for (name, url) in system.urls() {
        let response = http
            .get(format!("{url}/no-such-route"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{name}");
        assert!(response.headers().contains_key("x-request-id"), "{name}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert!(response.headers().contains_key("content-security-policy"));
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{name}: {body}");
    }

    // The events reach both consumers; then every service's /metrics tells so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Each consumer service's collectors run on its own scrape.
        let trend = text(&http, &format!("{}/metrics", system.trend_ops)).await;
        let recommend = text(&http, &format!("{}/metrics", system.recommend_ops)).await;
        let applied = |metrics: &str, service| {
            sample(
                metrics,
                "bookstore_events_applied_total",
                &[("service", service)],
            )
            .unwrap_or(0.0)
        };
        if applied(&trend, "trend") >= 2.0 && applied(&recommend, "recommend") >= 3.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events not applied:\n{trend}\n{recommend}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The web service's collectors run on its own scrape.
    let web_metrics = text(&http, &format!("{}/metrics", system.web_ops)).await;
    for (name, labels) in [
        (
            "http_requests_total",
            &[("service", "web"), ("route", "/"), ("status", "200")][..],
        ),
        (
            "http_requests_total",
            &[
                ("service", "web"),
                ("route", "/api/books"),
                ("status", "400"),
            ],
        ),
        (
            "http_requests_total",
            &[
                ("service", "web"),
                ("route", "unmatched"),
                ("status", "404"),
            ],
        ),
        (
            "http_request_duration_seconds_bucket",
            &[("service", "web"), ("route", "/api/books")],
        ),
        (
            "http_request_duration_seconds_count",
            &[("service", "web"), ("route", "/")],
        ),
        (
            "bookstore_events_published_total",
            &[("publisher", "searches")],
        ),
        (
            "bookstore_events_delivered_total",
            &[("publisher", "searches")],
        ),
        (
            "bookstore_events_failed_total",
            &[("publisher", "searches")],
        ),
        (
            "bookstore_events_dropped_total",
            &[("publisher", "searches")],
        ),
        (
            "bookstore_events_omitted_total",
            &[("publisher", "searches")],
        ),
        (
            "bookstore_producer_queue_depth",
            &[("publisher", "searches")],
        ),
        (
            "bookstore_events_published_total",
            &[("publisher", "catalog")],
        ),
        ("bookstore_outbox_waiting", &[]),
        ("bookstore_outbox_relayed_total", &[]),
        ("bookstore_outbox_refused_total", &[]),
        ("bookstore_outbox_dead_lettered_total", &[]),
        ("bookstore_outbox_dead_letters", &[]),
        // The embedded log's trimming.
        ("bookstore_eventlog_file_bytes", &[]),
        ("bookstore_eventlog_trimmed_bytes_total", &[]),
        ("bookstore_eventlog_trim_errors_total", &[]),
    ] {
        assert!(
            sample(&web_metrics, name, labels).is_some(),
            "web /metrics has no {name} {labels:?}:\n{web_metrics}"
        );
    }
    assert!(
        sample(
            &web_metrics,
            "bookstore_events_published_total",
            &[("publisher", "searches")]
        )
        .unwrap()
            >= 2.0
    );
    for service in ["trend", "recommend"] {
        let url = if service == "trend" {
            &system.trend_ops
        } else {
            &system.recommend_ops
        };
        let metrics = text(&http, &format!("{url}/metrics")).await;
        for name in [
            "bookstore_events_consumed_total",
            "bookstore_events_applied_total",
            "bookstore_events_dead_lettered_total",
            "bookstore_consumer_batches_total",
            "bookstore_consumer_owned_partitions",
            "bookstore_consumer_store_ahead_of_log_partitions",
            "bookstore_consumer_lag",
            "bookstore_store_errors_total",
        ] {
            assert!(
                sample(&metrics, name, &[("service", service)]).is_some(),
                "{service} /metrics has no {name}:\n{metrics}"
            );
        }
        let lag = sample(
            &metrics,
            "bookstore_consumer_lag",
            &[("service", service), ("topic", "lr-book-searches")],
        );
        assert!(lag.is_some(), "{service}: lag per partition");
    }

    // Once everything is applied, the measured lag of every partition falls to 0.
    wait_for_zero_lag(&http, &system.trend_ops, "trend", "lr-book-searches", 3).await;
    wait_for_zero_lag(
        &http,
        &system.recommend_ops,
        "recommend",
        "lr-book-catalog",
        3,
    )
    .await;

    // /readyz names each backend, on both ports; /openapi.json lists exactly the routes its port
    // answers: the API on the public port, /metrics and the internal routes on the operations
    // port, /healthz and /readyz on both.
    let public: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        (
            "web",
            vec![
                "get /",
                "get /books/{id}",
                "get /live/trends",
                "get /api/books",
                "get /api/suggest",
                "post /api/books",
                "get /api/books/{id}",
                "put /api/books/{id}",
                "delete /api/books/{id}",
                "delete /api/readers/{uid}",
                "post /forget",
                "get /static/{file}",
            ],
        ),
        (
            "trend",
            vec!["get /trends", "get /trends/books", "get /trends/stream"],
        ),
        (
            "recommend",
            vec![
                "get /recommendations",
                "get /books/{id}",
                "get /books/{id}/similar",
            ],
        ),
    ]);
    let internal: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("web", vec!["get /stats"]),
        ("trend", vec![]),
        ("recommend", vec!["get /interests", "get /stats"]),
    ]);
    let ports = system
        .urls()
        .into_iter()
        .map(|(name, url)| (name, "public", url, &public[name], &internal[name]))
        .chain(
            system
                .ops_urls()
                .into_iter()
                .map(|(name, url)| (name, "operations", url, &internal[name], &public[name])),
        );
    for (name, port, url, expected, elsewhere) in ports {
        let ready: Value = http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["status"], "ready", "{name} {port}: {ready}");
        assert_eq!(ready["checks"]["broker"], "ok", "{name} {port}: {ready}");
        assert_eq!(
            ready["backends"]["broker"], "embedded log",
            "{name} {port}: {ready}"
        );

        let spec: Value = http
            .get(format!("{url}/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
        let documented: BTreeSet<(String, String)> = spec["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        let route = |r: &str| {
            let (m, p) = r.split_once(' ').unwrap();
            (m.to_owned(), p.to_owned())
        };
        let mut routes: BTreeSet<(String, String)> = expected.iter().map(|r| route(r)).collect();
        let mut shared = vec!["get /healthz", "get /readyz", "get /openapi.json"];
        if port == "operations" {
            shared.push("get /metrics");
        }
        routes.extend(shared.into_iter().map(route));
        assert_eq!(
            documented, routes,
            "{name} {port} port: /openapi.json and the routes differ"
        );
        // Every documented route is served (not the fallback's "no route").
        for (method, path) in &documented {
            let path = path
                .replace("{id}", "1")
                .replace("{uid}", "u1")
                .replace("{file}", "style.css");
            let request = match method.as_str() {
                "get" => http.get(format!("{url}{path}?uid=u1")),
                "post" => http.post(format!("{url}{path}")).bearer_auth("wrong"),
                "put" => http.put(format!("{url}{path}")).bearer_auth("wrong"),
                "delete" => http.delete(format!("{url}{path}")).bearer_auth("wrong"),
                other => panic!("unexpected method {other}"),
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            // A stream (Server-Sent Events) does not end: its status and type say it is served.
            let streams = response
                .headers()
                .get("content-type")
                .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
            let body = if streams {
                String::new()
            } else {
                response.text().await.unwrap()
            };
            assert!(
                !body.contains("no route for") && status != 405,
                "{name}: {method} {path} is documented but not served ({status}: {body})"
            );
        }
        // The other port's routes, and /metrics on the public port, are not served here.
        let mut absent: Vec<String> = elsewhere
            .iter()
            .filter(|r| !expected.contains(r))
            .map(|r| route(r).1)
            .collect();
        if port == "public" {
            absent.push("/metrics".to_owned());
        }
        for path in absent {
            let path = path
                .replace("{id}", "1")
                .replace("{uid}", "u1")
                .replace("{file}", "style.css");
            let response = http
                .get(format!("{url}{path}?uid=u1"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                404,
                "{name}: {path} is answered on the {port} port"
            );
        }
    }

    // The JSON API's 4xx answers and the request's log lines carry the request id.
    let mut proc = proc;
    let (status, _) = proc.stop("TERM", Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    let log = proc.log();
    assert!(log.contains("ops-test-request-1"), "request id in the logs");
}

/// Waits until `service`'s `/metrics` shows a lag for `partitions` partitions of `topic`, all 0.
async fn wait_for_zero_lag(
    http: &reqwest::Client,
    url: &str,
    service: &str,
    topic: &str,
    partitions: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let metrics = text(http, &format!("{url}/metrics")).await;
        let lags: Vec<f64> = (0..partitions)
            .filter_map(|p| {
                sample(
                    &metrics,
                    "bookstore_consumer_lag",
                    &[
                        ("service", service),
                        ("topic", topic),
                        ("partition", &p.to_string()),
                    ],
                )
            })
            .collect();
        if lags.len() == partitions && lags.iter().all(|l| *l == 0.0) {
            assert!(
                sample(
                    &metrics,
                    "bookstore_consumer_lag_age_seconds",
                    &[("service", service)]
                )
                .is_some_and(|age| age < 30.0),
                "{service}: the lag's age:\n{metrics}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service}: the lag of {topic} is not 0 on {partitions} partitions: {lags:?}\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kafka_the_lag_comes_from_the_brokers_and_readyz_names_kafka() {
    let brokers = kafka_brokers();
    let dir = tempfile::tempdir().unwrap();
    let system = System::new(dir.path());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let searches = format!("ops-searches-{run}");
    let catalog = format!("ops-catalog-{run}");
    // The topics (and their dead-letter topics) go at the end, whether the test passed or not.
    let mut made = Cleanup::default();
    made.kafka_brokers = brokers.clone();
    made.kafka_topics = [&searches, &catalog]
        .into_iter()
        .flat_map(|t| [t.clone(), bookstore_kafka::dead_letter_topic(t)])
        .collect();
    let env = [
        system.env.clone(),
        vec![
            ("BOOKSTORE_EVENTS__BACKEND".into(), "kafka".into()),
            ("BOOKSTORE_EVENTS__BROKERS".into(), brokers.clone()),
            ("BOOKSTORE_EVENTS__TOPIC".into(), searches.clone()),
            ("BOOKSTORE_EVENTS__CATALOG_TOPIC".into(), catalog.clone()),
            (
                "BOOKSTORE_TREND__GROUP_ID".into(),
                format!("ops-trend-{run}"),
            ),
            (
                "BOOKSTORE_RECOMMEND__GROUP_ID".into(),
                format!("ops-rec-{run}"),
            ),
        ],
    ]
    .concat();
    let proc = Proc::start(&["serve"], &env, dir.path().join("serve.log"));
    let http = http();
    for (name, url) in system.urls() {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = match http.get(format!("{url}/readyz")).send().await {
                Ok(response) => response.json::<Value>().await.ok(),
                Err(_) => None,
            };
            if let Some(ready) = &ready {
                if ready["status"] == "ready" {
                    assert_eq!(ready["backends"]["broker"], "kafka", "{name}: {ready}");
                    assert_eq!(ready["checks"]["broker"], "ok", "{name}: {ready}");
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready on Kafka at {brokers} (start it with `dev/services start`, or \
                 set BOOKSTORE_TEST_KAFKA_BROKERS): {ready:?}\n{}",
                proc.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for q in ["austen", "bronte", "dickens", "tolstoy", "melville"] {
        let response = http
            .get(format!("{}/api/books?q={q}", system.web))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // The searches reach the trend service (a lag of 0 measured before they were made would say
    // nothing).
    let deadline = Instant::now() + Duration::from_secs(40);
    while !sample(
        &text(&http, &format!("{}/metrics", system.trend_ops)).await,
        "bookstore_events_applied_total",
        &[("service", "trend"), ("group", &format!("ops-trend-{run}"))],
    )
    .is_some_and(|n| n >= 5.0)
    {
        assert!(
            Instant::now() < deadline,
            "the trend service applied no search"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // librdkafka's statistics (every 5 s) give the high watermarks.
    wait_for_zero_lag(&http, &system.trend_ops, "trend", &searches, 3).await;
    wait_for_zero_lag(&http, &system.recommend_ops, "recommend", &searches, 3).await;
    let metrics = text(&http, &format!("{}/metrics", system.trend_ops)).await;
    assert!(
        sample(
            &metrics,
            "bookstore_events_applied_total",
            &[("service", "trend"), ("group", &format!("ops-trend-{run}"))]
        )
        .is_some_and(|n| n >= 5.0),
        "{metrics}"
    );
    let mut proc = proc;
    let (status, _) = proc.stop("TERM", Duration::from_secs(15));
    assert!(status.success(), "{status}: {}", proc.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_ids_and_batches() {
    let dir = tempfile::tempdir().unwrap();
    let system = System::new(dir.path());
    let mut proc = Proc::start(
        &["--log-format", "json", "serve"],
        &[
            system.env.clone(),
            vec![(
                "RUST_LOG".into(),
                "info,tower_http=debug,bookstore_consumer=debug".into(),
            )],
        ]
        .concat(),
        dir.path().join("serve.log"),
    );
    let http = http();
    wait_until_ready(&http, &system.web, &proc).await;
    wait_until_ready(&http, &system.trend, &proc).await;
    let response = http
        .get(format!("{}/api/books?q=emma", system.web))
        .header("x-request-id", "follow-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proc.log().contains("\"batch\"") {
        assert!(Instant::now() < deadline, "no batch span:\n{}", proc.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = proc.stop("INT", Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    let mut request_lines = 0;
    let mut batch_lines = 0;
    for line in proc.log().lines() {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(record["timestamp"].is_string() && record["level"].is_string());
        let spans = record["spans"].as_array().cloned().unwrap_or_default();
        if spans
            .iter()
            .any(|s| s["name"] == "request" && s["request_id"] == "follow-me-42")
        {
            request_lines += 1;
            let span = spans.iter().find(|s| s["name"] == "request").unwrap();
            assert_eq!(span["route"], "/api/books");
            assert_eq!(span["service"], "web");
        }
        if let Some(batch) = spans.iter().find(|s| s["name"] == "batch") {
            batch_lines += 1;
            assert!(
                batch["group"].is_string() && batch["offsets"].is_string(),
                "{line}"
            );
        }
    }
    assert!(request_lines > 0, "no log line carried the request id");
    assert!(batch_lines > 0, "no log line carried a batch span");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_service_cleanly_and_flushes_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let system = System::new(dir.path());
    let http = http();
    // Each service alone, then all in one: exit 0 well within shutdown_timeout_ms.
    for command in ["trend", "recommend", "web", "serve"] {
        let mut proc = Proc::start(
            &[command],
            &system.env,
            dir.path().join(format!("{command}.log")),
        );
        let url = match command {
            "trend" => &system.trend,
            "recommend" => &system.recommend,
            _ => &system.web,
        };
        wait_until_ready(&http, url, &proc).await;
        if command == "web" {
            // Searches queued just before the signal are delivered before the exit.
            for q in ["sigterm-one", "sigterm-two"] {
                let response = http
                    .get(format!("{}/api/books?q={q}", system.web))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        }
        let (status, took) = proc.stop("TERM", Duration::from_secs(12));
        assert!(
            status.success(),
            "{command}: exit status {status}; log:\n{}",
            proc.log()
        );
        assert!(took < Duration::from_secs(10), "{command}: took {took:?}");
        let log = proc.log();
        assert!(log.contains("shutting down"), "{command}: {log}");
        if command != "web" {
            assert!(log.contains("left the consumer group"), "{command}: {log}");
        }
        if command == "web" {
            assert!(log.contains("all queued events delivered"), "{log}");
        }
    }
    // The searches made before the web service's SIGTERM were in the log: the trend service
    // (run again, on the same data) shows them.
    let proc = Proc::start(&["trend"], &system.env, dir.path().join("trend-2.log"));
    wait_until_ready(&http, &system.trend, &proc).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let trends: Value = http
            .get(format!("{}/trends?ps=100&all=true", system.trend))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let queries: Vec<&str> = trends
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["query"].as_str())
            .collect();
        if queries.contains(&"sigterm-one") && queries.contains(&"sigterm-two") {
            break;
        }
        assert!(Instant::now() < deadline, "searches lost: {trends}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_the_broker_when_kafka_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let system = System::new(dir.path());
    // A port nothing listens on: the web service starts (searches must not need the brokers)
    // and says which backend is missing.
    let closed = free_port();
    let env = [
        system.env.clone(),
        vec![
            ("BOOKSTORE_EVENTS__BACKEND".into(), "kafka".into()),
            (
                "BOOKSTORE_EVENTS__BROKERS".into(),
                format!("127.0.0.1:{closed}"),
            ),
        ],
    ]
    .concat();
    let mut proc = Proc::start(&["web"], &env, dir.path().join("web.log"));
    let http = http();
    let deadline = Instant::now() + Duration::from_secs(60);
    let body: Value = loop {
        if let Ok(response) = http.get(format!("{}/readyz", system.web)).send().await {
            assert_eq!(response.status(), 503);
            break response.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "web did not start: {}",
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["checks"]["database"], "ok", "{body}");
    assert_ne!(body["checks"]["broker"], "ok", "{body}");
    assert_eq!(body["backends"]["broker"], "kafka", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("broker (kafka)"),
        "{body}"
    );
    // Alive, and still serving searches.
    assert_eq!(
        http.get(format!("{}/healthz", system.web))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/api/books?q=emma", system.web))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, _) = proc.stop("TERM", Duration::from_secs(15));
    assert!(status.success(), "{status}: {}", proc.log());
}
