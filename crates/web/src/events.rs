//! The "book searched" event every search with a non-empty query publishes.

use bookstore_domain::events::{Event, ResultBook, SearchEvent, normalize_query};
use bookstore_domain::{Book, Published};
use chrono::Utc;
use uuid::Uuid;

use crate::WebState;
use crate::visitor::Visitor;

/// Publishes the search without waiting: the publisher only enqueues (or drops and counts when
/// its bounded queue is full), so the response never waits for the event log. `query` is the
/// search's own cleaned text ([`bookstore_domain::BookQuery::text`]). The reader is the visitor
/// if its signed cookie came with the request, else the search is anonymous; either way it
/// carries its client's pseudonym.
pub fn publish_search(
    state: &WebState,
    visitor: &Visitor,
    query: &str,
    offset: u64,
    results: &[Book],
) {
    if normalize_query(query).is_empty() {
        return;
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
    if let Some(recommendations) = &state.recommendations {
        recommendations.searched();
    }
    if let Some(trends) = &state.trends {
        trends.searched();
    }
    // In the request's span: the request id leads to the event id, which the consumers log.
    match state.events.publish(&Event::BookSearched(event)) {
        Published::Queued => tracing::debug!(%event_id, "search event queued"),
        Published::Dropped => tracing::debug!(%event_id, "search event dropped"),
    }
}
