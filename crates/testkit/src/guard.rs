//! What the guards share (a MariaDB database, Redis keys, Kafka topics, [`crate::Cleanup`]):
//! removing what a test made on the shared servers when the test ends, whether it passed or not.
//!
//! A guard's `Drop` runs inside the test's runtime, which cannot be blocked on, and also while a
//! panic unwinds: it removes from a runtime of its own on a thread of its own, bounded in time so
//! that a server that does not answer never holds the test up.

use std::future::Future;
use std::time::Duration;

/// How long removing what a test made may take.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the future `work` makes to its end on a current-thread runtime of its own, on a thread of
/// its own, and waits for it at most `limit` (a little more, for the thread to start). An error
/// says what failed: the work, its thread, or the time.
pub fn on_own_runtime<W, F>(limit: Duration, work: W) -> Result<(), String>
where
    W: FnOnce() -> F + Send + 'static,
    F: Future<Output = Result<(), String>>,
{
    let (done, outcome) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("test-cleanup".into())
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                // The timer is made inside the runtime: it needs one.
                Ok(runtime) => runtime
                    .block_on(async { tokio::time::timeout(limit, work()).await })
                    .unwrap_or_else(|_| Err(format!("timed out after {limit:?}"))),
                Err(error) => Err(format!("cannot build a runtime: {error}")),
            };
            let _ = done.send(result);
        });
    if let Err(error) = spawned {
        return Err(format!("cannot start a thread: {error}"));
    }
    // Bounded even if the work blocks its thread: the thread is then left behind.
    match outcome.recv_timeout(limit + Duration::from_secs(5)) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            Err(format!("timed out after {limit:?}"))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err("the cleanup thread panicked".to_owned())
        }
    }
}

/// A cleanup that failed fails the test, unless the test is failing already (its own message
/// matters more, and a second panic would abort).
pub fn report(message: &str) {
    if std::thread::panicking() {
        eprintln!("{message}");
    } else {
        panic!("{message}");
    }
}
