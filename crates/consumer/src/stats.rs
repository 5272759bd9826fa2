//! Counters a backend keeps and exposes, and a rate limiter for repeated warnings.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bookstore_domain::TopicPartition;
use bookstore_domain::events::Event;
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

/// What a publisher did with the events it was given. `queued - delivered - failed` are in flight.
#[derive(Debug, Default)]
pub struct PublisherStats {
    pub queued: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    /// Events left out because the publisher's wire format has no message for them (`book.viewed`
    /// and `reader.forgotten` in the tutorial's format, see `events.format`); never queued.
    pub omitted: AtomicU64,
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
    /// Per owned partition, where its events stand in event time (see
    /// [`ConsumerStats::oldest_unapplied_age`]).
    progress: Mutex<BTreeMap<TopicPartition, Progress>>,
}

/// Where a partition's events stand in event time (`occurred_at`), since it was assigned.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// When the first event read and not yet applied occurred.
    first_unapplied: Option<DateTime<Utc>>,
    /// When the last event applied (or dead-lettered by the handler) occurred.
    last_applied: Option<DateTime<Utc>>,
    /// When the partition's lag was last measured 0: everything in it then was applied.
    caught_up: Option<DateTime<Utc>>,
}

impl Progress {
    /// A time before which none of the partition's unapplied events occurred, if one is known:
    /// the first one read and not applied, else the later of the last applied event and the
    /// last time the partition was caught up.
    fn unapplied_since(&self) -> Option<DateTime<Utc>> {
        self.first_unapplied
            .or_else(|| self.last_applied.max(self.caught_up))
    }
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
        let now = Utc::now();
        {
            let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            for (tp, _) in lag.iter().filter(|(_, n)| **n <= 0) {
                progress.entry(tp.clone()).or_default().caught_up = Some(now);
            }
        }
        *self.lag.lock().unwrap_or_else(|e| e.into_inner()) = (lag, Some(Instant::now()));
    }

    /// An upper bound of the age of the oldest event not yet applied: how long before `now` it
    /// occurred (its `occurred_at`). Zero when no owned partition is behind (none has a measured
    /// lag above 0 or events read and not yet applied). For a partition behind, the age of the
    /// first event read there and not yet applied if there is one (the oldest unapplied one, in
    /// log order), else of the last event applied there or of the last time its lag was measured
    /// 0, whichever is later: every event not yet applied comes after those. A bound as far as a
    /// partition's events occur in log order and reach the log soon after they occur. It may
    /// overstate the age by up to the interval between lag measurements (a partition measured
    /// behind before its newest events are read), and the lag itself is as of its last
    /// measurement.
    ///
    /// `None` when it is not known: the lag was never measured and nothing is being applied, or
    /// a partition is behind and, since it was assigned, nothing of it was read, applied or
    /// measured caught up.
    pub fn oldest_unapplied_age(&self, now: DateTime<Utc>) -> Option<Duration> {
        let (mut behind, measured): (BTreeSet<TopicPartition>, bool) = {
            let lag = self.lag.lock().unwrap_or_else(|e| e.into_inner());
            (
                lag.0
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(tp, _)| tp.clone())
                    .collect(),
                lag.1.is_some(),
            )
        };
        let progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        behind.extend(
            progress
                .iter()
                .filter(|(_, p)| p.first_unapplied.is_some())
                .map(|(tp, _)| tp.clone()),
        );
        if behind.is_empty() {
            return measured.then_some(Duration::ZERO);
        }
        let mut oldest = now;
        for tp in &behind {
            oldest = oldest.min(progress.get(tp).and_then(Progress::unapplied_since)?);
        }
        Some((now - oldest).to_std().unwrap_or(Duration::ZERO))
    }

    /// An event of `tp` that occurred at `occurred_at` was read, to be applied.
    pub(crate) fn read_unapplied(&self, tp: &TopicPartition, occurred_at: Option<DateTime<Utc>>) {
        let Some(at) = occurred_at else {
            return;
        };
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let entry = progress.entry(tp.clone()).or_default();
        entry.first_unapplied = entry.first_unapplied.or(Some(at));
    }

    /// Everything read from these partitions was applied (or dead-lettered), the last event of
    /// each having occurred at the time given (`None`: none had a time).
    pub(crate) fn applied<'a>(
        &self,
        done: impl IntoIterator<Item = (&'a TopicPartition, Option<DateTime<Utc>>)>,
    ) {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        for (tp, last) in done {
            let entry = progress.entry(tp.clone()).or_default();
            entry.first_unapplied = None;
            if last.is_some() {
                entry.last_applied = last;
            }
        }
    }

    /// What was read and not applied was dropped, to be read again.
    pub(crate) fn unread(&self) {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        for entry in progress.values_mut() {
            entry.first_unapplied = None;
        }
    }

    /// `partitions` were assigned anew: what was known of them before no longer holds.
    pub(crate) fn reset(&self, partitions: &[TopicPartition]) {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        for tp in partitions {
            progress.remove(tp);
        }
    }

    /// `partitions` were given up: neither their lag nor their progress is this consumer's now.
    pub(crate) fn forget(&self, partitions: &[TopicPartition]) {
        self.reset(partitions);
        let mut lag = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        for tp in partitions {
            lag.0.remove(tp);
        }
    }
}

/// When an event occurred, for the age of unapplied events; `None` for the version-0 events that
/// carried no time (given the epoch).
pub(crate) fn event_time(event: &Event) -> Option<DateTime<Utc>> {
    let at = match event {
        Event::BookSearched(e) => e.occurred_at,
        Event::BookCreated(e) | Event::BookUpdated(e) => e.occurred_at,
        Event::BookDeleted(e) => e.occurred_at,
        Event::ReaderForgotten(e) => e.occurred_at,
        Event::BookViewed(e) => e.occurred_at,
    };
    (at > DateTime::<Utc>::UNIX_EPOCH).then_some(at)
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

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition {
            topic: "t".into(),
            partition,
        }
    }

    #[test]
    fn the_oldest_unapplied_age_is_bounded_per_partition() {
        let stats = ConsumerStats::default();
        let now = Utc::now();
        let ago = |secs: i64| Some(now - chrono::TimeDelta::seconds(secs));
        assert_eq!(stats.oldest_unapplied_age(now), None, "nothing known yet");

        // Read and not applied: the first one read is the oldest.
        stats.read_unapplied(&tp(0), ago(30));
        stats.read_unapplied(&tp(0), ago(20));
        assert_eq!(
            stats.oldest_unapplied_age(now),
            Some(Duration::from_secs(30))
        );
        stats.applied([(&tp(0), ago(20))]);
        assert_eq!(
            stats.oldest_unapplied_age(now),
            None,
            "applied, and the lag never measured"
        );

        // Partition 1 is behind and nothing of it is known; then its last applied event is.
        stats.set_lag(BTreeMap::from([(tp(0), 0), (tp(1), 4)]));
        assert_eq!(stats.oldest_unapplied_age(now), None);
        stats.applied([(&tp(1), ago(50))]);
        assert_eq!(
            stats.oldest_unapplied_age(now),
            Some(Duration::from_secs(50))
        );
        // A batch whose events had no time keeps the last known one.
        stats.applied([(&tp(1), None)]);
        assert_eq!(
            stats.oldest_unapplied_age(now),
            Some(Duration::from_secs(50))
        );

        // Caught up: 0; measured behind again, bounded by when it was last caught up.
        stats.set_lag(BTreeMap::from([(tp(0), 0), (tp(1), 0)]));
        assert_eq!(stats.oldest_unapplied_age(now), Some(Duration::ZERO));
        stats.set_lag(BTreeMap::from([(tp(0), 0), (tp(1), 2)]));
        let later = Utc::now() + chrono::TimeDelta::seconds(60);
        let age = stats.oldest_unapplied_age(later).unwrap();
        assert!(
            age >= Duration::from_secs(60) && age < Duration::from_secs(61),
            "{age:?}"
        );

        // A partition given up no longer counts, nor does its lag.
        stats.forget(&[tp(1)]);
        assert_eq!(stats.oldest_unapplied_age(now), Some(Duration::ZERO));
        assert_eq!(stats.lag().0, BTreeMap::from([(tp(0), 0)]));
        // One read again after a reseek is forgotten.
        stats.read_unapplied(&tp(0), ago(5));
        stats.unread();
        assert_eq!(stats.oldest_unapplied_age(now), Some(Duration::ZERO));
    }

    #[test]
    fn events_without_a_time_have_none() {
        let search = |at| {
            Event::BookSearched(bookstore_domain::events::SearchEvent::new(
                uuid::Uuid::now_v7(),
                at,
                None,
                "q",
                0,
                vec![],
            ))
        };
        let now = Utc::now();
        assert_eq!(event_time(&search(now)), Some(now));
        assert_eq!(event_time(&search(DateTime::<Utc>::UNIX_EPOCH)), None);
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
