//! The events the web service publishes on the search topic: the "book searched" event every
//! search with a non-empty query publishes, the "book viewed" event of every book page opened, and
//! the "reader forgotten" event of a reader who asks to be forgotten.

use std::time::Duration;

use bookstore_domain::events::{
    BookViewedEvent, Event, MAX_ID_BYTES, ReaderForgottenEvent, ResultBook, ResultDetails,
    SearchEvent, ViewSource, normalize_query,
};
use bookstore_domain::{Book, Delivery, EventPublisher, Published};
use chrono::Utc;
use uuid::Uuid;

use crate::WebState;
use crate::error::ApiError;
use crate::visitor::Visitor;

/// How long a request to forget a reader waits for the event log to confirm its event.
pub const FORGET_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes the search without waiting: the publisher only enqueues (or drops and counts when
/// its bounded queue is full), so the response never waits for the event log. `query` is the
/// search's own cleaned text ([`bookstore_domain::BookQuery::text`]). The reader is the visitor
/// if its signed cookie came with the request, else the search is anonymous; either way it
/// carries its client's pseudonym. Returns whether the search made an event (a query that
/// normalizes to nothing makes none), whether or not the publisher's queue took it.
pub fn publish_search(
    state: &WebState,
    visitor: &Visitor,
    query: &str,
    offset: u64,
    results: &[Book],
) -> bool {
    if normalize_query(query).is_empty() {
        return false;
    }
    let event_id = Uuid::now_v7();
    let user_id = visitor.user_id();
    let client_id = visitor.client_id.clone();
    let event = SearchEvent::new(
        event_id,
        Utc::now(),
        user_id.map(|u| u.to_string()),
        query,
        offset,
        results
            .iter()
            .map(|b| ResultBook {
                id: b.id.0,
                title: b.title.clone(),
                author: b.author.clone(),
                published_at: Some(b.published_at),
            })
            .collect(),
    )
    .with_client(client_id);
    // Only the tutorial's format writes them (`events.format`).
    let event = if state.search_details {
        event.with_details(
            results
                .iter()
                .map(|b| ResultDetails {
                    description: b.description.clone(),
                    created_at: b.created_at,
                })
                .collect(),
        )
    } else {
        event
    };
    // In the request's span: the request id leads to the event id, which the consumers log.
    match publish(state, &Event::BookSearched(event)) {
        Published::Queued => tracing::debug!(%event_id, "search event queued"),
        Published::Dropped => tracing::debug!(%event_id, "search event dropped"),
    }
    true
}

/// Publishes that the visitor opened `book`'s page, from the list `source` at `rank` (and, for a
/// recommendation, the kind of its reason), without waiting, like a search.
pub fn publish_view(
    state: &WebState,
    visitor: &Visitor,
    book: &Book,
    source: ViewSource,
    rank: Option<u32>,
    reason: Option<String>,
) {
    let event = BookViewedEvent::now(
        visitor.user_id().map(|u| u.to_string()),
        visitor.client_id.clone(),
        ResultBook {
            id: book.id.0,
            title: book.title.clone(),
            author: book.author.clone(),
            published_at: Some(book.published_at),
        },
        source,
        rank,
        reason,
    );
    let event_id = event.id;
    match publish(state, &Event::BookViewed(event)) {
        Published::Queued => tracing::debug!(%event_id, "view event queued"),
        Published::Dropped => tracing::debug!(%event_id, "view event dropped"),
    }
}

/// Hands `event` to the publisher; when tracing is on, inside a producer span whose context the
/// event carries to the consumers (in its `traceparent` header).
fn publish(state: &WebState, event: &Event) -> Published {
    if !bookstore_telemetry::enabled() {
        return state.events.publish(event);
    }
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {}", event.kind()),
        otel.kind = "producer",
        event.kind = event.kind(),
        published = tracing::field::Empty,
    );
    let published = span.in_scope(|| state.events.publish(event));
    span.record("published", published == Published::Queued);
    published
}

/// Why `user_id` cannot name a reader to forget, if it cannot: the rules of the ids events carry
/// (not empty, at most [`MAX_ID_BYTES`] bytes, no control characters).
pub fn invalid_reader_id(user_id: &str) -> Option<String> {
    if user_id.is_empty() {
        Some("the reader id is empty".to_owned())
    } else if user_id.len() > MAX_ID_BYTES {
        Some(format!(
            "the reader id is {} bytes; at most {MAX_ID_BYTES} are allowed",
            user_id.len()
        ))
    } else if user_id.chars().any(char::is_control) {
        Some("the reader id must not hold control characters".to_owned())
    } else {
        None
    }
}

/// Publishes `reader.forgotten` for `user_id` (a valid reader id: see [`invalid_reader_id`]) on
/// the search topic, through the publisher of the search events and so after the reader's
/// searches this instance published, and waits (at most [`FORGET_TIMEOUT`]) until the log has it.
/// Unlike a search event, this one must not be dropped silently: a full queue, a log that is down
/// or slow, or one that refuses the event is [`ApiError::EventLogUnavailable`] (503), and the
/// caller may ask again (forgetting twice does no harm).
pub async fn publish_forgotten(state: &WebState, user_id: &str) -> Result<Uuid, ApiError> {
    deliver_forgotten(state.events.as_ref(), user_id).await
}

/// [`publish_forgotten`] through `events` (the tests give it a scripted publisher).
async fn deliver_forgotten(events: &dyn EventPublisher, user_id: &str) -> Result<Uuid, ApiError> {
    let event = ReaderForgottenEvent::now(user_id);
    let event_id = event.id;
    let delivery = events
        .deliver(&[Event::ReaderForgotten(event)], FORGET_TIMEOUT)
        .await
        .into_iter()
        .next();
    // The reader's id is not logged: the event id leads to it for those who may read the log.
    match delivery {
        Some(Delivery::Delivered) => {
            tracing::info!(%event_id, "reader.forgotten published");
            Ok(event_id)
        }
        Some(Delivery::Refused(reason)) => {
            tracing::warn!(%event_id, %reason, "the event log refused a reader.forgotten event");
            Err(ApiError::EventLogUnavailable)
        }
        Some(Delivery::Undelivered(reason)) => {
            tracing::warn!(%event_id, %reason, "a reader.forgotten event was not delivered");
            Err(ApiError::EventLogUnavailable)
        }
        None => {
            tracing::error!(%event_id, "the publisher gave no verdict on a reader.forgotten event");
            Err(ApiError::EventLogUnavailable)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bookstore_domain::events::READER_FORGOTTEN;

    use super::*;

    /// A publisher that answers every delivery with `verdict` and keeps what it was given.
    struct Scripted {
        verdict: Option<Delivery>,
        given: Mutex<Vec<Event>>,
    }

    #[async_trait::async_trait]
    impl EventPublisher for Scripted {
        fn publish(&self, _event: &Event) -> Published {
            Published::Dropped
        }

        async fn deliver(&self, events: &[Event], _timeout: Duration) -> Vec<Delivery> {
            self.given
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(events.iter().cloned());
            self.verdict.iter().cloned().collect()
        }

        async fn flush(&self, _timeout: Duration) -> u64 {
            0
        }
    }

    fn scripted(verdict: Option<Delivery>) -> Scripted {
        Scripted {
            verdict,
            given: Mutex::new(Vec::new()),
        }
    }

    #[tokio::test]
    async fn a_delivered_event_names_the_reader_and_is_keyed_by_them() {
        let publisher = scripted(Some(Delivery::Delivered));
        let id = deliver_forgotten(&publisher, "reader-1").await.unwrap();
        let given = publisher.given.lock().unwrap();
        let [Event::ReaderForgotten(event)] = given.as_slice() else {
            panic!("one reader.forgotten event: {given:?}");
        };
        assert_eq!((event.id, event.user_id.as_str()), (id, "reader-1"));
        assert_eq!(given[0].kind(), READER_FORGOTTEN);
        assert_eq!(given[0].key(), "reader-1");
    }

    #[tokio::test]
    async fn an_event_the_log_does_not_take_is_a_503_never_a_500() {
        for verdict in [
            Some(Delivery::Refused("too large".to_owned())),
            Some(Delivery::Undelivered("the broker is down".to_owned())),
            None,
        ] {
            let err = deliver_forgotten(&scripted(verdict.clone()), "reader-1")
                .await
                .unwrap_err();
            assert_eq!(
                err.status(),
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "{verdict:?}"
            );
        }
    }

    #[test]
    fn reader_ids_follow_the_rules_of_event_ids() {
        assert_eq!(
            invalid_reader_id("0b6c1c1e-7c8e-4d4e-9d43-2b1c7a8e9f00"),
            None
        );
        assert_eq!(invalid_reader_id(&"u".repeat(MAX_ID_BYTES)), None);
        for bad in [
            String::new(),
            "u".repeat(MAX_ID_BYTES + 1),
            "a\nb".to_owned(),
            "\u{0}".to_owned(),
            "x\u{85}".to_owned(),
        ] {
            assert!(invalid_reader_id(&bad).is_some(), "{bad:?}");
        }
    }
}
