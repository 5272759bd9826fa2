//! `GET /trends/stream`: tells subscribers (the web services) that the trends or the most viewed
//! books changed, so that they fetch them again instead of polling.
//!
//! The news comes from the consumer of the same process: [`Notifying`] wraps the store's
//! [`EventHandler`] and, after a batch that held a search, a view or a reader to forget is
//! applied (committed with its positions), bumps a [`tokio::sync::watch`] channel that every
//! open stream follows. A stream sends `event: changed` with `data: {"at": "<rfc3339>"}` at most
//! once per [`COALESCE`] however many batches were applied meanwhile (a watch keeps only the
//! latest value), and a comment line (`: keep-alive`) every [`KEEP_ALIVE`] so that proxies and
//! clients see the connection alive. The number of open streams is bounded (`trend.max_streams`):
//! beyond it a request gets a 503 JSON, as the subscribers are a few web instances, not visitors.
//! A stream ends by itself after `lifetime` (`http.request_timeout_ms`), before the server's limit
//! on an answer in flight (twice that) would cut it: the subscriber subscribes again at once and
//! reads the lists, so nothing is missed.
//!
//! With several trend instances (members of one consumer group), each one applies only its
//! partitions' batches and tells only its own subscribers: a web service following one instance
//! hears of a change applied by another member only with that instance's next change (or its own
//! periodic refresh). The message carries no trends: the subscriber reads them from
//! `GET /trends` and `GET /trends/books`, which every member answers from the shared store.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bookstore_domain::{Batch, EventHandler, HandlerError, Position};
use chrono::{SecondsFormat, Utc};
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// At most one message per this, however many batches are applied.
pub const COALESCE: Duration = Duration::from_millis(200);
/// A comment line this often when nothing changed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Open streams at most, by default (`trend.max_streams`).
pub const DEFAULT_MAX_STREAMS: usize = 64;

/// The changes a trend service's consumer announces, and the streams that follow them.
#[derive(Clone)]
pub struct Changes {
    /// How many announcing batches were applied (only its changes matter).
    applied: Arc<watch::Sender<u64>>,
    /// One permit per open stream.
    streams: Arc<Semaphore>,
    /// How long a stream stays open.
    lifetime: Duration,
}

impl Changes {
    /// Changes followed by at most `max_streams` streams at a time, each open for `lifetime`.
    pub fn new(max_streams: usize, lifetime: Duration) -> Self {
        Self {
            applied: Arc::new(watch::Sender::new(0)),
            streams: Arc::new(Semaphore::new(max_streams.min(Semaphore::MAX_PERMITS))),
            lifetime,
        }
    }

    /// Tells every open stream that something changed.
    pub fn announce(&self) {
        self.applied.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.applied.receiver_count()
    }
}

/// The store's handler, announcing the batches that change what the trend service serves.
pub struct Notifying {
    inner: Arc<dyn EventHandler>,
    changes: Changes,
}

impl Notifying {
    pub fn new(inner: Arc<dyn EventHandler>, changes: Changes) -> Self {
        Self { inner, changes }
    }
}

/// Whether applying `batch` may have changed the trends or the viewed books.
fn changes_trends(batch: &Batch) -> bool {
    batch.records.iter().any(|record| {
        record.event.as_search().is_some()
            || record.event.as_view().is_some()
            || record.event.as_forgotten().is_some()
    })
}

#[async_trait]
impl EventHandler for Notifying {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn positions(&self, group: &str) -> Result<Vec<Position>, HandlerError> {
        self.inner.positions(group).await
    }

    async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
        self.inner.apply(batch).await?;
        // Only once committed: a subscriber that reads at once sees the change.
        if changes_trends(batch) {
            self.changes.announce();
        }
        Ok(())
    }
}

/// Tells the subscriber when the trends or the most viewed books changed: `event: changed`, `data: {"at": "<rfc3339>"}`.
#[utoipa::path(get, path = "/trends/stream", tag = "trends",
    responses(
        (status = 200, description = "Server-Sent Events (`text/event-stream`): `event: changed` with `data: {\"at\": \"<rfc3339>\"}` after a consumer batch of this instance changed the trends or the viewed books, at most one per 200 ms; a comment `: keep-alive` every 15 s. Read `GET /trends` and `GET /trends/books` again on each."),
        (status = 503, description = "Too many open streams (trend.max_streams)", body = bookstore_http::ErrorBody),
    ))]
pub(crate) async fn stream(State(state): State<crate::TrendApi>) -> Response {
    let changes = state.changes;
    let Ok(permit) = changes.streams.clone().try_acquire_owned() else {
        return bookstore_http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many open trend streams; try again later",
        );
    };
    Sse::new(changed(
        changes.applied.subscribe(),
        permit,
        changes.lifetime,
    ))
    .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
    .into_response()
}

/// One message per change seen, at most one per [`COALESCE`]; ends after `lifetime`, or when
/// the consumer's handler is gone. Holds `permit` while open.
fn changed(
    receiver: watch::Receiver<u64>,
    permit: OwnedSemaphorePermit,
    lifetime: Duration,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let ends = tokio::time::Instant::now() + lifetime;
    futures::stream::unfold(
        (receiver, permit, None::<tokio::time::Instant>),
        move |(mut receiver, permit, last)| async move {
            tokio::select! {
                changed = receiver.changed() => changed.ok()?,
                () = tokio::time::sleep_until(ends) => return None,
            }
            if let Some(last) = last {
                // Whatever else changes meanwhile is in this one message.
                tokio::time::sleep_until(last + COALESCE).await;
            }
            receiver.borrow_and_update();
            let at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
            let event = SseEvent::default()
                .event("changed")
                .data(serde_json::json!({ "at": at }).to_string());
            Some((
                Ok(event),
                (receiver, permit, Some(tokio::time::Instant::now())),
            ))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn changes_are_coalesced() {
        let changes = Changes::new(2, Duration::from_secs(60));
        let permit = changes.streams.clone().try_acquire_owned().unwrap();
        let stream = changed(changes.applied.subscribe(), permit, changes.lifetime);
        tokio::pin!(stream);
        changes.announce();
        let started = tokio::time::Instant::now();
        assert!(stream.next().await.is_some());
        // Ten changes right after: one message, 200 ms after the first.
        for _ in 0..10 {
            changes.announce();
        }
        assert!(stream.next().await.is_some());
        assert!(started.elapsed() >= COALESCE);
        let next = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
        assert!(next.is_err(), "nothing more changed");
        assert_eq!(changes.open_streams(), 1);
        assert_eq!(changes.streams.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_stream_ends_after_its_lifetime_and_gives_its_place_back() {
        let changes = Changes::new(1, Duration::from_millis(300));
        let permit = changes.streams.clone().try_acquire_owned().unwrap();
        let mut stream = Box::pin(changed(
            changes.applied.subscribe(),
            permit,
            changes.lifetime,
        ));
        let started = tokio::time::Instant::now();
        assert!(stream.next().await.is_none(), "nothing changed: it ends");
        assert!(started.elapsed() >= Duration::from_millis(300));
        drop(stream);
        assert_eq!(changes.streams.available_permits(), 1);
    }
}
