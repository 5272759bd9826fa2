//! The index as a consumer of the catalog topic: each batch of catalog events is applied in one
//! commit together with the positions it takes the index to, so a crash at any point neither
//! loses nor doubles a book (the contract of [`EventHandler`], like every store here).
//!
//! The positions belong to the index, not to a consumer group: every web instance reads the
//! whole topic into its own index, whatever its group is called.

use std::sync::Arc;

use async_trait::async_trait;
use bookstore_domain::events::CatalogChange;
use bookstore_domain::{
    Batch, Book, BookQuery, BookSearch, EventHandler, HandlerError, Highlights, Position,
    RepositoryError, SearchPage, Suggestion,
};

use crate::{BookIndex, Change, SearchError};

/// A [`BookIndex`] fed by catalog events, searched by the web service ([`BookSearch`]).
/// Searches run beside the batches being applied: they read the last commit.
#[derive(Clone)]
pub struct SearchIndex {
    index: Arc<BookIndex>,
}

impl SearchIndex {
    pub fn new(index: BookIndex) -> Self {
        Self {
            index: Arc::new(index),
        }
    }

    /// Runs `work` on the index on a blocking thread (tantivy reads and writes files, and a
    /// search is CPU work).
    pub async fn with_index<T: Send + 'static>(
        &self,
        work: impl FnOnce(&BookIndex) -> T + Send + 'static,
    ) -> Result<T, SearchError> {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || work(&index))
            .await
            .map_err(|e| SearchError::Worker(e.to_string()))
    }

    /// The index itself, for work already on a blocking thread.
    pub fn index(&self) -> &BookIndex {
        &self.index
    }
}

#[async_trait]
impl BookSearch for SearchIndex {
    async fn search(&self, query: &BookQuery) -> Result<SearchPage, RepositoryError> {
        let query = query.clone();
        match self.with_index(move |index| index.page(&query)).await {
            Ok(Ok(page)) => Ok(page),
            // The index's files could not be read now (503); a panic of the search is a bug (500).
            Ok(Err(error)) => Err(RepositoryError::Unavailable(Box::new(error))),
            Err(error) => Err(RepositoryError::Internal(Box::new(error))),
        }
    }

    fn highlight(&self, query: &str, book: &Book, snippet_chars: usize) -> Highlights {
        self.index.highlight(query, book, snippet_chars)
    }

    async fn suggest(&self, typed: &str, n: usize) -> Result<Vec<Suggestion>, RepositoryError> {
        let typed = typed.to_owned();
        match self.with_index(move |index| index.suggest(&typed, n)).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(error)) => Err(RepositoryError::Unavailable(Box::new(error))),
            Err(error) => Err(RepositoryError::Internal(Box::new(error))),
        }
    }
}

fn transient(error: SearchError) -> HandlerError {
    HandlerError::Transient(Box::new(error))
}

#[async_trait]
impl EventHandler for SearchIndex {
    fn name(&self) -> &str {
        "search"
    }

    async fn positions(&self, _group: &str) -> Result<Vec<Position>, HandlerError> {
        self.with_index(|index| index.positions())
            .await
            .map_err(transient)?
            .map_err(transient)
    }

    async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
        let changes: Vec<Change> = batch
            .records
            .iter()
            .filter_map(|record| match record.event.catalog_change()? {
                CatalogChange::Upsert(book) => Some(Change::Upsert(book.clone())),
                CatalogChange::Delete(id) => Some(Change::Delete(id)),
            })
            .collect();
        let batch = batch.clone();
        self.with_index(move |index| {
            let stored = index.positions().map_err(transient)?;
            for update in &batch.positions {
                let have = stored
                    .iter()
                    .find(|p| p.topic == update.topic && p.partition == update.partition)
                    .map(|p| p.next_offset);
                if have != update.from {
                    return Err(HandlerError::StalePosition(format!(
                        "the search index is at {have:?} in {}/{}, the batch starts at {:?}",
                        update.topic, update.partition, update.from
                    )));
                }
            }
            let positions: Vec<Position> = batch
                .positions
                .iter()
                .map(|u| Position {
                    topic: u.topic.clone(),
                    partition: u.partition,
                    next_offset: u.to,
                })
                .collect();
            index.apply(&changes, &positions).map_err(transient)
        })
        .await
        .map_err(transient)?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bookstore_domain::events::{BookDeletedEvent, BookEvent, CatalogBook, Event};
    use bookstore_domain::{PositionUpdate, Record};

    use super::*;

    fn book(id: i64, title: &str) -> CatalogBook {
        CatalogBook {
            id,
            title: title.to_owned(),
            author: "Mary Shelley".to_owned(),
            published_at: chrono::NaiveDate::from_ymd_opt(1818, 1, 1).unwrap().into(),
            description: String::new(),
            created_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            isbn: None,
        }
    }

    fn batch(from: Option<i64>, events: Vec<Event>) -> Batch {
        let start = from.unwrap_or(0);
        let records: Vec<Record> = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Record {
                topic: "catalog".into(),
                partition: 0,
                offset: start + i as i64,
                event,
            })
            .collect();
        let to = start + records.len() as i64;
        Batch {
            group: "search-test".into(),
            records,
            positions: vec![PositionUpdate {
                topic: "catalog".into(),
                partition: 0,
                from,
                to,
            }],
        }
    }

    fn created(id: i64, title: &str) -> Event {
        Event::BookCreated(BookEvent::new(
            uuid::Uuid::now_v7(),
            chrono::Utc::now(),
            book(id, title),
        ))
    }

    #[tokio::test]
    async fn batches_apply_once_with_their_positions() {
        let index = SearchIndex::new(BookIndex::open(None).unwrap());
        let first = batch(
            None,
            vec![created(1, "Frankenstein"), created(2, "Mathilda")],
        );
        index.apply(&first).await.unwrap();
        // The same batch again is refused: the index is past it.
        assert!(matches!(
            index.apply(&first).await,
            Err(HandlerError::StalePosition(_))
        ));
        let second = batch(
            Some(2),
            vec![
                Event::BookUpdated(BookEvent::new(
                    uuid::Uuid::now_v7(),
                    chrono::Utc::now(),
                    book(2, "Mathilda, revised"),
                )),
                Event::BookDeleted(BookDeletedEvent::new(
                    uuid::Uuid::now_v7(),
                    chrono::Utc::now(),
                    1,
                )),
            ],
        );
        index.apply(&second).await.unwrap();
        let positions = index.positions("any group").await.unwrap();
        assert_eq!(positions.len(), 1);
        assert_eq!(positions[0].next_offset, 4);
        let found = index
            .with_index(|i| i.search("revised", 0, 10).unwrap().ids())
            .await
            .unwrap();
        assert_eq!(found, [2]);
        let gone = index
            .with_index(|i| i.search("frankenstein", 0, 10).unwrap().ids())
            .await
            .unwrap();
        assert!(gone.is_empty());
    }
}
