//! The life of a service process: its listeners, serving until told to stop then draining the
//! requests in flight, and the signals (SIGINT, SIGTERM) that tell it to stop within
//! `shutdown_timeout_ms`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::OpsListen;

/// How long a stopping server waits for the requests in flight before it closes them, so that
/// a hung request cannot use up `shutdown_timeout_ms`.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(4);

/// A service's listeners: its public address and, unless its `ops_listen` is `same`, the
/// operations port.
pub(crate) struct Listeners {
    service: &'static str,
    public: TcpListener,
    ops: Option<TcpListener>,
}

impl Listeners {
    /// Binds `listen` and `ops_listen` (each with its configuration key, for the error).
    pub(crate) async fn bind(
        service: &'static str,
        (listen, listen_key): (SocketAddr, &str),
        (ops_listen, ops_key): (OpsListen, &str),
    ) -> anyhow::Result<Self> {
        let public = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} ({listen_key})"))?;
        let ops = match ops_listen {
            OpsListen::Same => None,
            OpsListen::Addr(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} ({ops_key})"))?,
            ),
        };
        Ok(Self {
            service,
            public,
            ops,
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }

    pub(crate) fn ops_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.ops.as_ref().map(TcpListener::local_addr).transpose()
    }

    /// Logs where `what` listens.
    pub(crate) fn log(&self, what: &str) {
        if let Ok(addr) = self.public.local_addr() {
            tracing::info!(%addr, "{what} listening on http://{addr}");
        }
        if let Ok(Some(addr)) = self.ops_addr() {
            tracing::info!(%addr, "{what} operations port on http://{addr}");
        }
    }

    /// The operations listener's name in logs and metrics.
    fn ops_name(&self) -> &'static str {
        match self.service {
            "web" => "web-ops",
            "trend" => "trend-ops",
            "recommend" => "recommend-ops",
            _ => "ops",
        }
    }
}

/// Serves `routers` on `listeners` within `limits` until `shutdown` completes, then lets the
/// requests in flight finish for at most [`DRAIN_TIMEOUT`].
pub(crate) async fn drained(
    listeners: Listeners,
    routers: bookstore_http::Routers,
    limits: bookstore_http::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = tokio_util::sync::CancellationToken::new();
    let ops_name = listeners.ops_name();
    let public = bookstore_http::serve(
        listeners.public,
        routers.public,
        limits,
        listeners.service,
        stop.clone().cancelled_owned(),
        DRAIN_TIMEOUT,
    );
    let ops = async {
        match (listeners.ops, routers.ops) {
            (Some(listener), Some(router)) => {
                bookstore_http::serve(
                    listener,
                    router,
                    limits,
                    ops_name,
                    stop.clone().cancelled_owned(),
                    DRAIN_TIMEOUT,
                )
                .await
            }
            _ => Ok(()),
        }
    };
    let signal = async {
        shutdown.await;
        stop.cancel();
    };
    let ((), public, ops) = tokio::join!(signal, public, ops);
    public.and(ops)
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// Runs a service until SIGINT or SIGTERM, then gives it `timeout` to stop: `service` gets the
/// future that completes on the signal. Past the timeout, an error (the process exits non-zero).
pub async fn run_until_signalled<F, Fut>(service: F, timeout: Duration) -> anyhow::Result<()>
where
    F: FnOnce(tokio_util::sync::WaitForCancellationFutureOwned) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let signalled = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let signalled = signalled.clone();
        async move {
            shutdown_signal().await;
            signalled.cancel();
        }
    });
    let run = service(signalled.clone().cancelled_owned());
    tokio::pin!(run);
    tokio::select! {
        done = &mut run => done,
        () = signalled.cancelled() => {
            let started = std::time::Instant::now();
            match tokio::time::timeout(timeout, &mut run).await {
                Ok(done) => {
                    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "stopped");
                    done
                }
                Err(_) => anyhow::bail!(
                    "did not stop within {} ms of the signal (shutdown_timeout_ms); exiting anyway",
                    timeout.as_millis()
                ),
            }
        }
    }
}
