//! The HTTP server every listener runs: hyper's HTTP/1.1 connections with the bounds an
//! attacker or a broken client cannot get past.
//!
//! - **Request head**: the request line and the headers must arrive in full within
//!   [`Limits::header_read_timeout`] of the connection's opening (first request) or of the first
//!   byte of the request (later requests on a kept-alive connection). The time is not reset per
//!   byte, so a head trickled a byte every few seconds is cut as surely as one never finished.
//! - **Idle keep-alive**: a connection with no request in flight and no byte of a next request
//!   is closed [`Limits::idle_timeout`] after its last answer was sent.
//! - **Request**: the handler's answer comes within [`Limits::request_timeout`] (408 after it,
//!   the layer in `layers.rs`); a connection whose answer is still not sent another
//!   `request_timeout` later (a client that does not read) is closed.
//! - **Connections**: at most [`Limits::max_connections`] per listener. A client past the cap
//!   gets a short `503` with `Connection: close` (at most [`REJECTING`] such answers at a time,
//!   each given at most [`REJECT_LINGER`]; past those the connection is closed at once), so the
//!   process holds at most `max_connections + REJECTING` connections per listener.
//!
//! Every request carries the peer's address as `axum::extract::ConnectInfo<SocketAddr>`.
//!
//! On shutdown the listener stops accepting; connections waiting for a request are closed at
//! once, and the requests in flight get the drain window, after which they are cut.
//!
//! hyper's own `header_read_timeout` (hyper 1.x starts it when a connection opens and again when
//! it goes idle, and never resets it per byte) is set to `idle_timeout + header_read_timeout` as
//! a backstop; the rules above are enforced here, per connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The bounds of every listener (configuration section `http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a request's head (request line and headers) may take to arrive in full.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long a handler may take (408 after it).
    pub request_timeout: Duration,
    /// Connections served at once per listener.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

/// Clients past the connection cap answered at a time (per listener); more are closed at once.
pub const REJECTING: usize = 32;
/// How long a client past the cap is given to read its 503 (the rest of its request is read and
/// dropped meanwhile, so that closing does not reset the connection before the answer is read).
pub const REJECT_LINGER: Duration = Duration::from_secs(1);
/// What a client past the cap gets.
const REJECTION: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: application/json\r\n\
    content-length: 50\r\n\
    retry-after: 1\r\n\
    connection: close\r\n\
    \r\n\
    {\"error\": \"too many connections; try again later\"}";

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, closes the connections waiting for a request, lets the requests in flight finish
/// for at most `drain`, and cuts the rest. `name` names the listener in the logs.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let rejecting = Arc::new(Semaphore::new(REJECTING));
    let connections = TaskTracker::new();
    // `stopping`: finish the request in flight and close; `cut`: close now.
    let stopping = CancellationToken::new();
    let cut = CancellationToken::new();
    let mut full_logged = false;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(name, &error).await;
                    continue;
                }
            },
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                full_logged = false;
                connections.spawn(serve_connection(
                    Connection {
                        stream,
                        peer,
                        listener: name,
                        limits,
                        stopping: stopping.clone(),
                        cut: cut.clone(),
                        _slot: slot,
                    },
                    router.clone(),
                ));
            }
            Err(_) => {
                if !full_logged {
                    full_logged = true;
                    tracing::warn!(
                        listener = name,
                        max_connections = limits.max_connections,
                        "connection cap reached: new clients get a 503 until connections close"
                    );
                }
                metrics::counter!("http_connections_refused_total", "listener" => name)
                    .increment(1);
                if let Ok(answering) = rejecting.clone().try_acquire_owned() {
                    connections.spawn(async move {
                        refuse(stream).await;
                        drop(answering);
                    });
                }
                // Else `stream` is dropped here: closed at once.
            }
        }
    }
    drop(listener);
    connections.close();
    stopping.cancel();
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "requests still running {} s after the stop signal were cut off",
            drain.as_secs()
        );
        cut.cancel();
        connections.wait().await;
    }
    Ok(())
}

/// An accept error other than a client's: most likely out of file descriptors. Like hyper and
/// axum, log it and wait a moment for connections to close.
async fn accept_failed(name: &'static str, error: &io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(listener = name, %error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A client past the cap: a 503, then whatever it still sends is read and dropped until it closes
/// or [`REJECT_LINGER`] has passed.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REJECT_LINGER, async {
        stream.write_all(REJECTION).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut read = 0usize;
        while read < 64 * 1024 {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        io::Result::Ok(())
    })
    .await;
}

/// An accepted connection, and what tells it to stop.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    listener: &'static str,
    limits: Limits,
    /// Finish the request in flight and close.
    stopping: CancellationToken,
    /// Close now.
    cut: CancellationToken,
    /// Its place under the listener's cap, given back when it closes.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// One connection: hyper's HTTP/1.1 state machine, and the deadlines of [`Activity`] around it.
async fn serve_connection(connection: Connection, router: axum::Router) {
    let Connection {
        stream,
        peer,
        listener,
        limits,
        stopping,
        cut,
        _slot,
    } = connection;
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |request: hyper::Request<hyper::body::Incoming>| {
            let answering = activity.request_started();
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                let response = match router.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                // The answer is sent when hyper drops its body.
                Ok::<_, Infallible>(response.map(move |body| {
                    axum::body::Body::new(body.map_frame(move |frame| {
                        let _answering = &answering;
                        frame
                    }))
                }))
            }
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout + limits.header_read_timeout)
        .serve_connection(io, service);
    tokio::pin!(served);
    let mut graceful = false;
    loop {
        let (deadline, _) = activity.deadline(&limits);
        tokio::select! {
            served = served.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = tokio::time::sleep_until(deadline) => {
                let (deadline, why) = activity.deadline(&limits);
                if deadline <= Instant::now() {
                    tracing::debug!(listener, %peer, "closing the connection: {why}");
                    metrics::counter!(
                        "http_connections_timed_out_total",
                        "listener" => listener,
                        "reason" => why.label()
                    )
                    .increment(1);
                    return;
                }
            }
            () = stopping.cancelled(), if !graceful => {
                graceful = true;
                if activity.in_flight() == 0 {
                    return;
                }
                served.as_mut().graceful_shutdown();
            }
            () = cut.cancelled() => return,
        }
    }
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    Head,
    Idle,
    Answer,
}

impl Deadline {
    fn label(self) -> &'static str {
        match self {
            Self::Head => "header_read",
            Self::Idle => "idle",
            Self::Answer => "answer_unsent",
        }
    }
}

impl std::fmt::Display for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Head => "the request head did not arrive within http.header_read_timeout_ms",
            Self::Idle => "idle for http.idle_timeout_ms",
            Self::Answer => "the answer was not taken within twice http.request_timeout_ms",
        })
    }
}

/// What a connection is doing, for its deadlines: times in microseconds since it opened.
struct Activity {
    opened: Instant,
    /// Requests whose answer is not yet sent (0 or 1 on HTTP/1.1).
    in_flight: AtomicUsize,
    /// When the request in flight began.
    request_started: AtomicU64,
    /// When the last answer was sent (0: none yet).
    idle_since: AtomicU64,
    /// 1 + when the head now expected began: the opening for the first request, the first byte
    /// after the last answer for the others; 0: no byte since the last answer.
    head_started: AtomicU64,
    /// Wakes the connection's task when an answer has been sent (its deadline moves).
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            request_started: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(1),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn at(&self, micros: u64) -> Instant {
        self.opened + Duration::from_micros(micros)
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Bytes arrived: if the connection was idle, a request head has begun.
    fn bytes_read(&self) {
        if self.head_started.load(Ordering::Relaxed) == 0
            && self
                .head_started
                .compare_exchange(
                    0,
                    self.now().saturating_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            // The connection's task sleeps until the idle deadline: the head's is sooner.
            self.changed.notify_one();
        }
    }

    /// hyper has read a request's head and called the service.
    fn request_started(self: &Arc<Self>) -> Answering {
        self.request_started.store(self.now(), Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Answering(self.clone())
    }

    /// When the connection is to be closed unless something happens first, and why.
    fn deadline(&self, limits: &Limits) -> (Instant, Deadline) {
        if self.in_flight() > 0 {
            let started = self.at(self.request_started.load(Ordering::Acquire));
            return (started + limits.request_timeout * 2, Deadline::Answer);
        }
        match self.head_started.load(Ordering::Acquire) {
            0 => (
                self.at(self.idle_since.load(Ordering::Acquire)) + limits.idle_timeout,
                Deadline::Idle,
            ),
            started => (
                self.at(started - 1) + limits.header_read_timeout,
                Deadline::Head,
            ),
        }
    }
}

/// A request in flight; dropped when its answer has been sent (or abandoned).
struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since.store(activity.now(), Ordering::Release);
        activity.head_started.store(0, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        activity.changed.notify_one();
    }
}

/// The connection's socket, telling [`Activity`] when bytes arrive.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const LIMITS: Limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(5),
        max_connections: 4,
    };

    /// Serves a router echoing the peer's address (`/`) and sleeping (`/slow`) until the returned
    /// token is cancelled.
    async fn start(limits: Limits) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let router = axum::Router::new()
            .route(
                "/",
                axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    peer.to_string()
                }),
            )
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    "done"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn({
            let stop = stop.clone();
            async move {
                serve(
                    listener,
                    router,
                    limits,
                    "test",
                    stop.cancelled_owned(),
                    Duration::from_secs(2),
                )
                .await
                .unwrap();
            }
        });
        (addr, stop, server)
    }

    /// Reads until the server closes the connection (or 5 s pass); what it sent, and when it
    /// closed.
    async fn read_to_close(stream: &mut TcpStream) -> (String, Option<Duration>) {
        let started = Instant::now();
        let mut received = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Err(_) => return (String::from_utf8_lossy(&received).into_owned(), None),
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            }
        }
        (
            String::from_utf8_lossy(&received).into_owned(),
            Some(started.elapsed()),
        )
    }

    async fn get(stream: &mut TcpStream, path: &str) {
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn every_request_carries_the_peer_address() {
        let (addr, _stop, _server) = start(LIMITS).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let me = stream.local_addr().unwrap().to_string();
        get(&mut stream, "/").await;
        let (answer, _) = read_to_close(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&me), "{answer} does not end with {me}");
    }

    #[tokio::test]
    async fn idle_unfinished_and_trickled_heads_are_closed_on_time() {
        let (addr, _stop, _server) = start(LIMITS).await;
        // Idle after an answer: closed after idle_timeout.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        get(&mut idle, "/").await;
        let (answer, closed) = read_to_close(&mut idle).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let closed = closed.expect("the idle connection is closed");
        assert!(closed < Duration::from_secs(2), "{closed:?}");
        // Never finished: closed after header_read_timeout.
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial.write_all(b"GET / HTTP/1.1\r\nHost").await.unwrap();
        let (answer, closed) = read_to_close(&mut partial).await;
        assert_eq!(answer, "");
        assert!(closed.is_some_and(|c| c < Duration::from_secs(2)));
        // A byte every 100 ms (each well within the timeout): cut all the same.
        let mut trickle = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let mut cut = false;
        for byte in b"GET / HTTP/1.1\r\nHost: a-very-long-host-name\r\n\r\n" {
            if trickle.write_all(&[*byte]).await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (answer, _) = read_to_close(&mut trickle).await;
        assert!(
            cut || answer.is_empty(),
            "answered a trickled head: {answer}"
        );
        assert!(started.elapsed() < Duration::from_secs(6));
    }

    #[tokio::test]
    async fn a_later_head_gets_the_head_timeout_not_the_idle_one() {
        let (addr, _stop, _server) = start(Limits {
            idle_timeout: Duration::from_secs(4),
            ..LIMITS
        })
        .await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        get(&mut stream, "/").await;
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        // The next head trickles in: cut header_read_timeout (300 ms) after its first byte,
        // long before the idle timeout (4 s).
        let started = Instant::now();
        let trickle = async {
            for byte in b"GET / HTTP/1.1\r\nHost: a-very-long-host-name\r\n\r\n" {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        trickle.await;
        let (answer, closed) = read_to_close(&mut stream).await;
        assert!(answer.is_empty(), "answered a trickled head: {answer}");
        assert!(closed.is_some());
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(2), "cut after {elapsed:?}");
    }

    #[tokio::test]
    async fn a_request_in_flight_outlives_the_idle_and_head_timeouts() {
        let (addr, _stop, _server) = start(LIMITS).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        get(&mut stream, "/slow").await;
        let (answer, _) = read_to_close(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
    }

    #[tokio::test]
    async fn past_the_cap_a_client_gets_a_503_and_a_freed_slot_is_reused() {
        let (addr, _stop, _server) = start(Limits {
            header_read_timeout: Duration::from_secs(30),
            ..LIMITS
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..LIMITS.max_connections {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"GET / HT").await.unwrap();
            held.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut refused = TcpStream::connect(addr).await.unwrap();
        get(&mut refused, "/").await;
        let (answer, closed) = read_to_close(&mut refused).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(body["error"].is_string());
        assert!(closed.is_some());
        // One held connection goes: the next client is served.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut served = TcpStream::connect(addr).await.unwrap();
        get(&mut served, "/").await;
        let (answer, _) = read_to_close(&mut served).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn on_shutdown_idle_connections_close_and_requests_in_flight_finish() {
        let (addr, stop, server) = start(Limits {
            idle_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            ..LIMITS
        })
        .await;
        let mut waiting = TcpStream::connect(addr).await.unwrap();
        let mut busy = TcpStream::connect(addr).await.unwrap();
        get(&mut busy, "/slow").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
        let (answer, closed) = read_to_close(&mut waiting).await;
        assert_eq!(answer, "");
        assert!(closed.is_some_and(|c| c < Duration::from_secs(1)));
        let (answer, _) = read_to_close(&mut busy).await;
        assert!(answer.ends_with("done"), "{answer}");
        tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }

    #[test]
    fn the_refusal_is_well_formed() {
        let text = std::str::from_utf8(REJECTION).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
