//! `bookstore loadgen` against the all-in-one `bookstore` on embedded defaults, started in this
//! process: the binary runs a short open-loop load and reports throughput, no errors, and the
//! delay from a search to `/trends`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bookstore_app::config::Config;
use bookstore_app::serve_all;
use bookstore_bench::loadgen::Report;
use bookstore_testkit::{KillOnDrop, free_port};
use tokio::sync::oneshot;

/// A free port on the loopback, for a service `serve_all` binds itself.
fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loadgen_measures_the_all_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    // Ports chosen here, as serve_all binds the trend service before the web service.
    config.web.listen = free_addr();
    config.trend.listen = free_addr();
    config.recommend.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let free = bookstore_app::config::OpsListen::Addr(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.web.ops_listen = free;
    config.trend.ops_listen = free;
    config.recommend.ops_listen = free;
    let web_url = format!("http://{}", config.web.listen);
    let trend_url = format!("http://{}", config.trend.listen);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve_all(&config, async move {
            let _ = stopped.await;
        })
        .await
    });
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let web = http.get(format!("{web_url}/healthz")).send().await;
        let trend = http.get(format!("{trend_url}/healthz")).send().await;
        if web.is_ok_and(|r| r.status().is_success())
            && trend.is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        assert!(
            !server.is_finished(),
            "the all-in-one stopped while starting"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the all-in-one did not answer within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_bookstore"))
            .args([
                "loadgen",
                "--web-url",
                &web_url,
                "--trend-url",
                &trend_url,
                "--duration",
                "3",
                "--rate",
                "50",
                "--baseline-secs",
                "2",
                "--json",
            ])
            .env_remove("BOOKSTORE_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "bookstore loadgen did not finish within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        status.success(),
        "bookstore loadgen failed: {status}\n{out}"
    );
    eprintln!("{out}");
    let report: Report = serde_json::from_str(&out).expect("the report is JSON");

    assert_eq!(report.mode, "open");
    assert!(report.total.throughput_per_s > 0.0, "{out}");
    assert!(report.total.ok > 0, "{out}");
    assert_eq!(report.total.errors, 0, "{out}");
    assert_eq!(report.baseline.errors, 0, "{out}");
    assert!(
        report.baseline.ok > 0 && report.baseline.p50_ms > 0.01,
        "{out}"
    );
    for kind in ["api", "page"] {
        let k = &report.kinds[kind];
        // Nothing answers over HTTP within 10 µs.
        assert!(k.ok > 0 && k.p50_ms > 0.01, "{kind}: {out}");
        assert!(report.ratios[kind].p50 > 0.0, "{kind}: {out}");
    }
    let trend = &report.trend_delay;
    assert!(trend.markers > 0, "{out}");
    assert!(
        trend.appeared > 0,
        "no marker search showed in /trends: {out}"
    );
    assert_eq!(trend.search_errors, 0, "{out}");
    assert!(trend.p50_ms.is_some_and(|ms| ms > 0.01), "{out}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the all-in-one stops within 30 s")
        .unwrap()
        .unwrap();
}
