//! The live Trends panel: `GET /live/trends`, Server-Sent Events to visitors.
//!
//! Each web instance holds ONE subscription to the trend service's `GET /trends/stream`
//! ([`follow`], started with the service): on each `changed` event it fetches the panel's two
//! lists afresh (past the page's cache) and, when they differ from the last ones, hands them to
//! every open visitor stream through a [`watch`] channel. It also refreshes every
//! `web.live_refresh_ms` in case the subscription is down, and reconnects with backoff. A trend
//! service that is down sends nothing new, and neither do the visitor streams.
//!
//! The number of open visitor streams is bounded (`web.live_streams`; past it a 503). A stream
//! ends by itself after `lifetime` (before the server's limit on a response in flight cuts it)
//! and when the service stops; the browser's `EventSource` reconnects on its own and gets the
//! current lists at once.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bookstore_domain::trends::{Trend, ViewedBook};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::WebState;
use crate::remote::RemoteTrends;

/// How often a visitor stream sends a comment, so that proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a browser waits before reconnecting a stream that ended.
const RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to subscribe to the trend service.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// A subscription that sent nothing (not even its keep-alive, every 15 s) for this long is
/// taken for dead and made again.
const UPSTREAM_SILENCE: Duration = Duration::from_secs(40);
/// How long subscribing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The two lists of the Trends panel, as `GET /live/trends` sends them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveLists {
    pub trends: Vec<Trend>,
    pub books: Vec<ViewedBook>,
}

/// What the visitor streams share: the latest lists (as the JSON each stream sends), the bound
/// on open streams, and the signal to end them.
pub struct LiveTrends {
    latest: watch::Sender<Option<LiveMessage>>,
    streams: Arc<Semaphore>,
    max_streams: usize,
    lifetime: Duration,
    refresh: Duration,
    stop: CancellationToken,
    /// The most viewed books last fetched.
    last_books: Mutex<Arc<Vec<ViewedBook>>>,
    /// One refresh at a time, so that a slow, older fetch never replaces a newer one.
    refreshing: tokio::sync::Mutex<()>,
}

/// The lists as a visitor stream sends them, and how many book links they make on the page
/// (impressions for the click-through rates).
#[derive(Clone, PartialEq)]
struct LiveMessage {
    json: Arc<str>,
    book_links: usize,
}

impl LiveTrends {
    /// At most `max_streams` visitor streams, each ended after `lifetime`; the lists refreshed
    /// at least every `refresh`.
    pub fn new(max_streams: usize, lifetime: Duration, refresh: Duration) -> Self {
        let max_streams = max_streams.min(Semaphore::MAX_PERMITS);
        Self {
            latest: watch::Sender::new(None),
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            lifetime,
            refresh,
            stop: CancellationToken::new(),
            last_books: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// Ends every visitor stream and the subscription: the service is stopping.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Visitor streams open now.
    pub fn open_streams(&self) -> usize {
        self.max_streams
            .saturating_sub(self.streams.available_permits())
    }

    /// Hands `lists` to every open stream, unless they are what was sent last.
    fn publish(&self, lists: &LiveLists) {
        let json: Arc<str> = match serde_json::to_string(lists) {
            Ok(json) => json.into(),
            Err(error) => {
                tracing::error!(%error, "cannot serialize the live trends");
                return;
            }
        };
        let message = LiveMessage {
            json,
            book_links: crate::page::trend_book_links(&lists.trends, &lists.books),
        };
        self.latest.send_if_modified(|latest| {
            if latest.as_ref().map(|m| &m.json) == Some(&message.json) {
                false
            } else {
                *latest = Some(message);
                true
            }
        });
    }
}

/// Follows the trend service until `live` is stopped: one subscription to its
/// `GET /trends/stream`, made again with backoff when it fails or ends, and a refresh every
/// `refresh` whatever it does.
pub async fn follow(remote: Arc<RemoteTrends>, live: Arc<LiveTrends>) {
    let http = match reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot create the client of the trend service's stream; the live panel only refreshes every web.live_refresh_ms");
            reqwest::Client::new()
        }
    };
    let refresh = async {
        let mut every = tokio::time::interval(live.refresh);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            refresh_lists(&remote, &live).await;
        }
    };
    let subscribe = async {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let (alive, failed) = subscribe_once(&http, &remote, &live).await;
            if let Some(error) = failed {
                tracing::debug!(%error, "the trend service's stream failed; subscribing again");
            }
            if alive {
                // It was up (and ended or was cut): subscribe again soon, not after a long
                // backoff.
                backoff = FIRST_BACKOFF;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    };
    tokio::select! {
        () = live.stop.cancelled() => {}
        () = refresh => {}
        () = subscribe => {}
    }
}

/// A background call asks the trend service not to record it (when tracing is on).
fn unrecorded() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    bookstore_telemetry::inject_http(&mut headers);
    headers
}

/// One subscription, until it ends or fails: whether it got at least one event or comment (the
/// service was up), and the error that ended it, if one did.
async fn subscribe_once(
    http: &reqwest::Client,
    remote: &RemoteTrends,
    live: &LiveTrends,
) -> (bool, Option<reqwest::Error>) {
    let mut alive = false;
    match subscription(http, remote, live, &mut alive).await {
        Ok(()) => (alive, None),
        Err(error) => (alive, Some(error)),
    }
}

async fn subscription(
    http: &reqwest::Client,
    remote: &RemoteTrends,
    live: &LiveTrends,
    alive: &mut bool,
) -> Result<(), reqwest::Error> {
    let sent = tokio::time::timeout(
        CONNECT_TIMEOUT,
        http.get(remote.stream_url())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .headers(unrecorded())
            .send(),
    )
    .await;
    let Ok(sent) = sent else {
        tracing::debug!("subscribing to the trend service's stream timed out");
        return Ok(());
    };
    let mut response = sent?.error_for_status()?;
    // What was missed while unsubscribed.
    refresh_lists(remote, live).await;
    let mut lines = EventLines::default();
    loop {
        let chunk = match tokio::time::timeout(UPSTREAM_SILENCE, response.chunk()).await {
            Err(_) => {
                tracing::debug!("the trend service's stream went silent; subscribing again");
                return Ok(());
            }
            Ok(chunk) => chunk?,
        };
        let Some(chunk) = chunk else {
            return Ok(());
        };
        *alive = true;
        if lines.push(&chunk) {
            refresh_lists(remote, live).await;
        }
    }
}

/// Fetches both lists afresh and publishes them when the trends answered (the most viewed
/// books as last known when only they did not: a hiccup does not empty the list).
async fn refresh_lists(remote: &RemoteTrends, live: &LiveTrends) {
    let _one_at_a_time = live.refreshing.lock().await;
    let (trends, books) = remote.fresh().await;
    let Some(trends) = trends else {
        return;
    };
    let books = {
        let mut last = live
            .last_books
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(books) = books {
            *last = books;
        }
        last.clone()
    };
    live.publish(&LiveLists {
        trends: trends.as_ref().clone(),
        books: books.as_ref().clone(),
    });
}

/// The lines of an event stream, as far as the subscription needs them: whether a `changed`
/// event was completed.
#[derive(Debug, Default)]
struct EventLines {
    /// The unfinished last line.
    partial: Vec<u8>,
    /// The `event:` field of the event being read.
    event: Option<String>,
}

/// Longest line kept; the trend service's lines are far shorter.
const MAX_LINE: usize = 64 * 1024;

impl EventLines {
    /// Reads `bytes`; true when at least one `changed` event ended in them.
    fn push(&mut self, bytes: &[u8]) -> bool {
        let mut changed = false;
        for &byte in bytes {
            if byte == b'\n' {
                let line = std::mem::take(&mut self.partial);
                let line = line.strip_suffix(b"\r").unwrap_or(&line);
                changed |= self.line(line);
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(byte);
            }
        }
        changed
    }

    fn line(&mut self, line: &[u8]) -> bool {
        if line.is_empty() {
            return self.event.take().as_deref() == Some("changed");
        }
        if let Some(name) = line.strip_prefix(b"event:") {
            let name = String::from_utf8_lossy(name);
            self.event = Some(name.strip_prefix(' ').unwrap_or(&name).to_owned());
        }
        // `data:`, `id:`, `retry:` and comments: nothing the subscription needs.
        false
    }
}

/// `GET /live/trends`: the Trends panel's lists as Server-Sent Events.
#[utoipa::path(get, path = "/live/trends", tag = "page",
    summary = "The Trends panel's lists as they change (Server-Sent Events)",
    responses(
        (status = 200, description = "`text/event-stream`: `event: trends` with `data: {\"trends\": [Trend], \"books\": [ViewedBook]}` (the top 5 of each, as the page shows them), first the current lists, then each time they change; a `: keep-alive` comment every 15 s. The stream ends after a while (`retry: 1000` tells the browser to reconnect) and when the service stops.", content_type = "text/event-stream"),
        (status = 503, description = "Too many open streams (web.live_streams), or no trend service", body = bookstore_http::ErrorBody),
    ))]
pub async fn live_trends(State(state): State<WebState>) -> Response {
    let Some(live) = state.live.clone() else {
        return bookstore_http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "live trends are off: this instance has no trend service (web.trend_url)",
        );
    };
    let Ok(permit) = live.streams.clone().try_acquire_owned() else {
        metrics::counter!("bookstore_web_live_streams_refused_total").increment(1);
        return bookstore_http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many open live streams; try again later",
        );
    };
    let stream = visitor_stream(&live, permit, state.click_through.clone());
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// One visitor's events: the retry hint, the current lists, then each change, until the stream's
/// lifetime is over or the service stops. `permit` is its place under the bound. The book links
/// of each change the page's script shows count as impressions (`trends`) in `click_through`;
/// those of the first lists, which the page rendered and counted already, do not.
fn visitor_stream(
    live: &LiveTrends,
    permit: OwnedSemaphorePermit,
    click_through: Arc<crate::ctr::ClickThrough>,
) -> impl futures::Stream<Item = Result<Event, Infallible>> + use<> {
    struct Visitor {
        latest: watch::Receiver<Option<LiveMessage>>,
        stop: CancellationToken,
        ends: tokio::time::Instant,
        first: bool,
        sent_lists: bool,
        click_through: Arc<crate::ctr::ClickThrough>,
        _permit: OwnedSemaphorePermit,
    }
    let mut latest = live.latest.subscribe();
    // The current lists go first, as if just changed.
    latest.mark_changed();
    let visitor = Visitor {
        latest,
        stop: live.stop.clone(),
        ends: tokio::time::Instant::now() + live.lifetime,
        first: true,
        sent_lists: false,
        click_through,
        _permit: permit,
    };
    futures::stream::unfold(visitor, |mut visitor| async move {
        if visitor.first {
            visitor.first = false;
            return Some((Ok(Event::default().retry(RETRY)), visitor));
        }
        loop {
            tokio::select! {
                () = visitor.stop.cancelled() => return None,
                () = tokio::time::sleep_until(visitor.ends) => return None,
                changed = visitor.latest.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    let message = visitor.latest.borrow_and_update().clone();
                    if let Some(message) = message {
                        if visitor.sent_lists {
                            visitor.click_through.shown(
                                bookstore_domain::events::ViewSource::Trends,
                                None,
                                message.book_links,
                            );
                        }
                        visitor.sent_lists = true;
                        let event = Event::default().event("trends").data(&*message.json);
                        return Some((Ok(event), visitor));
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_event_is_seen_once_it_ends_however_it_is_cut() {
        let stream = b": keep-alive\n\nevent: changed\ndata: {\"at\":\"2026-01-01T00:00:00Z\"}\n\n";
        for cut in 0..stream.len() {
            let mut lines = EventLines::default();
            let (a, b) = stream.split_at(cut);
            let seen = u8::from(lines.push(a)) + u8::from(lines.push(b));
            assert_eq!(seen, 1, "cut at {cut}");
        }
        let mut lines = EventLines::default();
        assert!(
            lines.push(b"event:changed\r\ndata: x\r\n\r\n"),
            "CRLF, no space"
        );
        assert!(!lines.push(b"event: other\ndata: x\n\n"));
        assert!(
            !lines.push(b"data: changed\n\n"),
            "data is not the event name"
        );
        assert!(!lines.push(b"event: changed\n"), "not ended yet");
        assert!(lines.push(b"\n"));
    }

    fn lists(query: &str) -> LiveLists {
        LiveLists {
            trends: vec![Trend {
                query: query.to_owned(),
                query_normalized: query.to_owned(),
                count: 1,
                score: 1.0,
                books: Vec::new(),
                last_searched_at: chrono::DateTime::UNIX_EPOCH,
                public: true,
            }],
            books: vec![ViewedBook {
                id: 7,
                title: format!("{query} the book"),
                author: "An Author".to_owned(),
                views: 1,
                score: 1.0,
                last_viewed_at: chrono::DateTime::UNIX_EPOCH,
            }],
        }
    }

    #[tokio::test]
    async fn streams_get_the_current_lists_then_each_change_and_are_bounded() {
        use futures::StreamExt;
        let live = Arc::new(LiveTrends::new(
            1,
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        live.publish(&lists("dune"));
        let permit = live.streams.clone().try_acquire_owned().unwrap();
        assert_eq!(live.open_streams(), 1);
        assert!(live.streams.clone().try_acquire_owned().is_err(), "bounded");
        let click_through = Arc::new(crate::ctr::ClickThrough::default());
        let mut stream = Box::pin(visitor_stream(&live, permit, click_through.clone()));
        // The retry hint, then the current lists.
        assert!(stream.next().await.is_some());
        let current = tokio::time::timeout(Duration::from_secs(1), stream.next())
            .await
            .unwrap();
        assert!(current.is_some());
        // The same lists again: nothing new.
        live.publish(&lists("dune"));
        assert!(
            tokio::time::timeout(Duration::from_millis(100), stream.next())
                .await
                .is_err()
        );
        assert_eq!(
            click_through.report().total.shown,
            0,
            "the first lists are the page's, counted when it was rendered"
        );
        live.publish(&lists("emma"));
        assert!(
            tokio::time::timeout(Duration::from_secs(1), stream.next())
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            click_through.report().total.shown,
            1,
            "the book link of a change the script shows is an impression"
        );
        live.stop();
        assert!(
            tokio::time::timeout(Duration::from_secs(1), stream.next())
                .await
                .unwrap()
                .is_none(),
            "a stopping service ends the stream"
        );
        drop(stream);
        assert_eq!(live.open_streams(), 0, "its place is given back");
    }
}
