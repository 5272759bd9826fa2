//! An in-memory event handler with the full contract, for tests of the consumers and the logs.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use bookstore_domain::events::SearchEvent;
use bookstore_domain::{Batch, EventHandler, HandlerError, Position, Record, TopicPartition};

/// An in-memory handler with the full contract (positions checked and moved with each batch),
/// that keeps every record it applied.
#[derive(Default)]
pub struct Recorder {
    state: Mutex<(BTreeMap<TopicPartition, i64>, Vec<Record>)>,
}

impl Recorder {
    /// The state; a test that panicked while holding it left it whole (every change is made
    /// after the checks).
    fn state(&self) -> MutexGuard<'_, (BTreeMap<TopicPartition, i64>, Vec<Record>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every record applied, in the order applied.
    pub fn records(&self) -> Vec<Record> {
        self.state().1.clone()
    }

    /// The searches among [`Recorder::records`].
    pub fn searches(&self) -> Vec<SearchEvent> {
        self.records()
            .into_iter()
            .filter_map(|r| r.event.as_search().cloned())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.state().1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl EventHandler for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn positions(&self, _: &str) -> Result<Vec<Position>, HandlerError> {
        Ok(self
            .state()
            .0
            .iter()
            .map(|(tp, n)| Position {
                topic: tp.topic.clone(),
                partition: tp.partition,
                next_offset: *n,
            })
            .collect())
    }

    async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
        let mut state = self.state();
        for u in &batch.positions {
            let tp = TopicPartition {
                topic: u.topic.clone(),
                partition: u.partition,
            };
            if state.0.get(&tp).copied() != u.from {
                return Err(HandlerError::StalePosition(tp.to_string()));
            }
        }
        for u in &batch.positions {
            state.0.insert(
                TopicPartition {
                    topic: u.topic.clone(),
                    partition: u.partition,
                },
                u.to,
            );
        }
        state.1.extend(batch.records.iter().cloned());
        Ok(())
    }
}
