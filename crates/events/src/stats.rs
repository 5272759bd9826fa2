//! Counters a backend keeps and exposes, and a rate limiter for repeated warnings.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bookstore_domain::TopicPartition;
use std::time::{Duration, Instant};

/// What a publisher did with the events it was given. `queued - delivered - failed` are in flight.
#[derive(Debug, Default)]
pub struct PublisherStats {
    pub queued: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

impl PublisherStats {
    pub fn in_flight(&self) -> u64 {
        let queued = self.queued.load(Ordering::Relaxed);
        let done = self.delivered.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed);
        queued.saturating_sub(done)
    }
}

/// What a consumer did with the messages it read.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Messages handed to the pipeline (duplicates of applied ones included).
    pub consumed: AtomicU64,
    /// Events applied by the handler.
    pub applied: AtomicU64,
    /// Batches committed by the handler.
    pub batches: AtomicU64,
    /// Messages read again below the stored position and skipped.
    pub skipped: AtomicU64,
    /// Messages sent to the dead-letter sink.
    pub dead_lettered: AtomicU64,
    /// Attempts that failed because the store was down.
    pub retries: AtomicU64,
    /// Batches refused because another consumer had moved the positions.
    pub stale: AtomicU64,
    /// Partitions this consumer owns now.
    pub owned_partitions: AtomicU64,
    /// Owned partitions whose stored position is past the log's end, as last measured: the log
    /// was lost or replaced while the store was kept, and what is appended below the stored
    /// position will be skipped (delete the store to have it rebuilt).
    pub ahead_of_log: AtomicU64,
    /// Per owned partition, the messages between the next one to apply and the log's end, as
    /// last measured (the backend measures every few seconds).
    lag: Mutex<(BTreeMap<TopicPartition, i64>, Option<Instant>)>,
}

impl ConsumerStats {
    /// The last measured lag of each owned partition, and how long ago it was measured (`None`:
    /// never). The backend measures between polls: while the store is down and a batch is being
    /// retried, the figures age.
    pub fn lag(&self) -> (BTreeMap<TopicPartition, i64>, Option<Duration>) {
        let lag = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        (lag.0.clone(), lag.1.map(|at| at.elapsed()))
    }

    pub(crate) fn set_lag(&self, lag: BTreeMap<TopicPartition, i64>) {
        *self.lag.lock().unwrap_or_else(|e| e.into_inner()) = (lag, Some(Instant::now()));
    }
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Lets a repeated warning through at most once per interval and counts the ones held back.
#[derive(Debug)]
pub struct RateLimited {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimited {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when the caller should log now, `n` being how many were suppressed since the last
    /// time; `None` when it should stay quiet.
    pub fn check(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                state.1 += 1;
                None
            }
            _ => {
                let suppressed = state.1;
                *state = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_lets_one_through_per_interval_and_counts_the_rest() {
        let limiter = RateLimited::new(Duration::from_secs(3600));
        assert_eq!(limiter.check(), Some(0));
        assert_eq!(limiter.check(), None);
        assert_eq!(limiter.check(), None);
        let zero = RateLimited::new(Duration::ZERO);
        assert_eq!(zero.check(), Some(0));
        assert_eq!(zero.check(), Some(0));
    }

    #[test]
    fn in_flight_never_underflows() {
        let stats = PublisherStats::default();
        add(&stats.queued, 3);
        add(&stats.delivered, 2);
        assert_eq!(stats.in_flight(), 1);
        add(&stats.failed, 5);
        assert_eq!(stats.in_flight(), 0);
    }
}
