//! Waiting for a condition, with a deadline: a test never waits forever, and says what it waited
//! for when it gives up.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 20 ms until it returns true; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `difference` (what a store holds against what it should hold; `None` when they agree)
/// every 200 ms until it is `None`, for 60 s at most; then checks that it is still `None` half a
/// second later: nothing arrives late and counts twice. `what` names the case and `store` the
/// store in the failure's message.
pub async fn wait_until_settled<F, Fut>(what: &str, store: &str, mut difference: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let mut last = None;
    let reached = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            last = difference().await;
            if last.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "{what}: the {store} never held every event applied once; last difference: {last:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = difference().await;
    assert!(
        late.is_none(),
        "{what}: the {store} changed afterwards: {late:?}"
    );
}
