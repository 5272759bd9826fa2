//! What the event benchmarks share: a publisher's queue big enough for a whole history, a
//! throughput figure, and waiting for a publisher's deliveries and a consumer's applies.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use bookstore_consumer::{ConsumerStats, PublisherStats};
use bookstore_domain::events::Event;

/// `events.queue_max_bytes` of the benchmarks' publishers: they are handed a whole history at
/// once, faster than any log takes it, so their queues must hold it all (4 GiB).
pub(crate) const BENCH_QUEUE_BYTES: usize = 4 << 30;

/// One throughput figure.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub backend: &'static str,
    pub path: &'static str,
    pub events: u64,
    pub seconds: f64,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

/// `rows` as a Markdown table whose first column is headed `what` (the backend or store).
pub(crate) fn throughput_table(what: &str, rows: &[Throughput]) -> String {
    let mut out =
        format!("| {what} | path | events | seconds | events/s |\n|---|---|---:|---:|---:|\n");
    for t in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.0} |\n",
            t.backend,
            t.path,
            t.events,
            t.seconds,
            t.per_second()
        ));
    }
    out
}

/// Publishes `events` through the port (after one warm-up event, since the first delivery of an
/// idempotent producer waits for its producer id) and waits until all are delivered: seconds.
pub(crate) async fn publish_all(
    publisher: &bookstore_app::bus::Publisher,
    events: &[Event],
) -> anyhow::Result<f64> {
    let before = publisher.stats.delivered.load(Ordering::Relaxed);
    if let Some(first) = events.first() {
        publisher.port.publish(first);
        publisher.port.flush(Duration::from_secs(60)).await;
    }
    let started = Instant::now();
    for event in events {
        publisher.port.publish(event);
    }
    let left = publisher.port.flush(Duration::from_secs(120)).await;
    let seconds = started.elapsed().as_secs_f64();
    check_delivered(&publisher.stats, before + events.len() as u64 + 1, left)?;
    Ok(seconds)
}

fn check_delivered(stats: &PublisherStats, expected: u64, left: u64) -> anyhow::Result<()> {
    let delivered = stats.delivered.load(Ordering::Relaxed);
    if left > 0 || delivered != expected {
        bail!(
            "the publisher delivered {delivered} of {expected} events ({left} undelivered, {} dropped, {} failed)",
            stats.dropped.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed)
        );
    }
    Ok(())
}

/// Seconds from the first event consumed to the last one applied.
pub(crate) async fn wait_applied(
    stats: &ConsumerStats,
    expected: u64,
    limit: Duration,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + limit;
    let mut first = None;
    loop {
        if first.is_none() && stats.consumed.load(Ordering::Relaxed) > 0 {
            first = Some(Instant::now());
        }
        if stats.applied.load(Ordering::Relaxed) >= expected {
            return Ok(first.map_or(0.0, |f| f.elapsed().as_secs_f64()));
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {expected} events applied within {limit:?}",
                stats.applied.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
