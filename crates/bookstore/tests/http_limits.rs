//! The HTTP bounds (configuration section `http`) on the real binary, a `bookstore web` child
//! process whose file descriptors are counted in `/proc/<pid>/fd`: hundreds of clients that never
//! finish their request head, trickle it a byte at a time, or keep an idle connection, are closed
//! within the configured timeouts; the descriptors stay bounded by the connection cap (clients
//! past it get a 503); and `/healthz` and a search stay fast meanwhile.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bookstore_testkit::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The bounds the child runs with: short, so that the test is.
const HEADER_READ: Duration = Duration::from_millis(2_000);
const IDLE: Duration = Duration::from_millis(2_000);
const CAP: usize = 240;
/// Clients past the cap the server answers at a time (`bookstore_http::REJECTING`).
const REJECTING: usize = 32;
/// How late after its deadline a connection may be closed (a loaded 2-core machine).
const LATE: Duration = Duration::from_millis(1_500);
/// The longest `/healthz` or a search may take while the slow clients are held.
const FAST: Duration = Duration::from_millis(1_000);

/// A partial request head: its last header line is never finished.
const PARTIAL_HEAD: &[u8] = b"GET /api/books?q=pride HTTP/1.1\r\nHost: bookstore\r\nX-Slow: ";

/// `bookstore web` on the embedded defaults in a temporary data dir, killed on drop.
struct Web {
    child: Child,
    addr: SocketAddr,
    ops: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Web {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("web.log");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let ops: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_bookstore"))
            .arg("web")
            .env_remove("BOOKSTORE_CONFIG")
            .env("BOOKSTORE_DATA_DIR", dir.path().join("data"))
            .env("BOOKSTORE_WEB__LISTEN", addr.to_string())
            .env("BOOKSTORE_WEB__OPS_LISTEN", ops.to_string())
            .env("BOOKSTORE_WEB__TREND_URL", "")
            .env("BOOKSTORE_WEB__RECOMMEND_URL", "")
            .env(
                "BOOKSTORE_HTTP__HEADER_READ_TIMEOUT_MS",
                HEADER_READ.as_millis().to_string(),
            )
            .env(
                "BOOKSTORE_HTTP__IDLE_TIMEOUT_MS",
                IDLE.as_millis().to_string(),
            )
            .env("BOOKSTORE_HTTP__MAX_CONNECTIONS", CAP.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            addr,
            ops,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The child's open file descriptors.
    fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(Iterator::count)
            .unwrap_or_else(|e| panic!("cannot read the child's descriptors: {e}\n{}", self.log()))
    }

    async fn wait_until_healthy(&mut self) {
        let http = client();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("bookstore web exited ({status}):\n{}", self.log());
            }
            // Ready: the search index has the sample catalog and has merged its segments, so
            // its files are open and its consumer has done its catch-up.
            let answered = http
                .get(format!("http://{}/readyz", self.addr))
                .send()
                .await;
            if answered.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "bookstore web did not answer within 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    // A new connection per request: the test's own requests must not ride on a kept-alive
    // connection the server may close.
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// `GET url` answers 200 within [`FAST`].
async fn fast(http: &reqwest::Client, url: &str) {
    let started = Instant::now();
    let response = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    let _ = response.bytes().await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{url}");
    assert!(
        took < FAST,
        "{url} took {took:?} while slow clients were held"
    );
}

/// Waits until the server closes `stream` (end of stream or reset), at most `limit`; the time it
/// took, or `None` if it is still open.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// What one slow client saw: how long after the point its deadline counts from the server
/// closed its connection (`None`: still open at the end).
#[derive(Debug)]
struct Seen {
    kind: &'static str,
    closed_after: Option<Duration>,
}

/// Opens a connection and sends a head it never finishes.
async fn half_open(addr: SocketAddr) -> Seen {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(PARTIAL_HEAD).await.unwrap();
    let closed = closed_within(&mut stream, HEADER_READ + LATE).await;
    Seen {
        kind: "half-open",
        closed_after: closed.map(|_| started.elapsed()),
    }
}

/// Opens a connection and sends nothing.
async fn silent(addr: SocketAddr) -> Seen {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let closed = closed_within(&mut stream, HEADER_READ + LATE).await;
    Seen {
        kind: "silent",
        closed_after: closed.map(|_| started.elapsed()),
    }
}

/// Sends a head a byte every 400 ms (a byte well within any per-byte timeout), for longer than
/// the header-read timeout.
async fn trickling(addr: SocketAddr) -> Seen {
    let stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        for byte in PARTIAL_HEAD.iter().chain(b"x".repeat(100).iter()) {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + HEADER_READ + LATE),
            read.read(&mut buf),
        )
        .await
        {
            Err(_) => break None,
            Ok(Ok(0) | Err(_)) => break Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    };
    writer.abort();
    Seen {
        kind: "trickling",
        closed_after: closed,
    }
}

/// Sends one whole request, reads the answer, and keeps the connection idle.
async fn idle_keep_alive(addr: SocketAddr) -> Seen {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: bookstore\r\n\r\n")
        .await
        .unwrap();
    // The answer ends with its small JSON body.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer to /healthz")
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    let closed = closed_within(&mut stream, IDLE + LATE).await;
    Seen {
        kind: "idle keep-alive",
        closed_after: closed,
    }
}

/// Checks that every client was closed, and not before its deadline.
fn check_closed(seen: &[Seen]) {
    let still_open: Vec<&Seen> = seen.iter().filter(|s| s.closed_after.is_none()).collect();
    assert!(
        still_open.is_empty(),
        "{} of {} slow connections were still open past their timeout and {LATE:?}: {:?}",
        still_open.len(),
        seen.len(),
        still_open.iter().take(5).collect::<Vec<_>>()
    );
    for s in seen {
        let closed = s.closed_after.unwrap_or_default();
        let limit = if s.kind == "idle keep-alive" {
            IDLE
        } else {
            HEADER_READ
        };
        // A little early is measurement (the client's clock starts after its connect).
        assert!(
            closed + Duration::from_millis(200) >= limit,
            "a {} connection was closed after {closed:?}, before its timeout {limit:?}",
            s.kind
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_on_time_and_bounded_by_the_cap() {
    let mut web = Web::start();
    web.wait_until_healthy().await;
    let http = client();
    let base = format!("http://{}", web.addr);
    // Warm up (the first search opens the index) and count the descriptors at rest.
    fast(&http, &format!("{base}/api/books?q=pride")).await;
    // Past a few heartbeats of the search index's consumer of the embedded log (its connections
    // to the log file are open by then).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let at_rest = web.descriptors();

    // 1. Under the cap: 120 half-open, 20 silent, 30 trickling, 30 idle keep-alive.
    let mut clients = JoinSet::new();
    for _ in 0..120 {
        clients.spawn(half_open(web.addr));
    }
    for _ in 0..20 {
        clients.spawn(silent(web.addr));
    }
    for _ in 0..30 {
        clients.spawn(trickling(web.addr));
    }
    for _ in 0..30 {
        clients.spawn(idle_keep_alive(web.addr));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let held = web.descriptors();
    assert!(
        held >= at_rest + 100,
        "the slow clients are not connected: {held} descriptors, {at_rest} at rest"
    );
    for _ in 0..3 {
        fast(&http, &format!("{base}/healthz")).await;
        fast(&http, &format!("{base}/api/books?q=pride")).await;
        fast(&http, &format!("{base}/?q=frankenstein")).await;
    }
    let seen: Vec<Seen> = clients.join_all().await;
    check_closed(&seen);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = web.descriptors();
    assert!(
        after <= at_rest + 5,
        "{after} descriptors once the slow clients were closed, {at_rest} at rest"
    );

    // 2. Past the cap: CAP + 150 half-open connections. The server holds at most CAP of them
    // (and REJECTING being answered); the others get a 503 or are closed at once. The operations
    // port, a listener of its own, stays fast.
    let mut held = Vec::new();
    let mut refused = 0usize;
    let mut most = 0usize;
    for i in 0..CAP + 150 {
        let mut stream = TcpStream::connect(web.addr).await.unwrap();
        stream.write_all(PARTIAL_HEAD).await.unwrap();
        held.push(stream);
        if i % 50 == 49 {
            most = most.max(web.descriptors());
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    most = most.max(web.descriptors());
    assert!(
        most <= at_rest + CAP + REJECTING + 5,
        "{most} descriptors with {} connections held, {at_rest} at rest, cap {CAP}",
        CAP + 150
    );
    fast(&http, &format!("http://{}/healthz", web.ops)).await;
    fast(&http, &format!("http://{}/metrics", web.ops)).await;
    // Well before the header-read timeout, the connections past the cap have their answer.
    for stream in held.iter_mut().skip(CAP) {
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        let closed = loop {
            match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
                Err(_) => break false,
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            }
        };
        if closed && (answer.is_empty() || answer.starts_with(b"HTTP/1.1 503")) {
            refused += 1;
        }
    }
    assert_eq!(
        refused, 150,
        "the connections past the cap were not refused"
    );
    // The ones held are closed at the header-read timeout; then the public port serves again.
    let mut open = 0;
    for stream in held.iter_mut().take(CAP) {
        if closed_within(stream, HEADER_READ + LATE).await.is_none() {
            open += 1;
        }
    }
    assert_eq!(open, 0, "connections held past the header-read timeout");
    drop(held);
    fast(&http, &format!("{base}/healthz")).await;
    let metrics = http
        .get(format!("http://{}/metrics", web.ops))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("http_connections_refused_total"),
        "{metrics}"
    );
}
