//! A web instance's search index: a tantivy index in `<data_dir>/search/index`, fed by a consumer
//! of the catalog topic, and how `/readyz` tells that it has caught up.
//!
//! Every instance reads every partition of the catalog topic into its own index, so its consumer
//! group is its own: `bookstore-search-<id>`, the id made once and kept in
//! `<data_dir>/search/group`. The index stores its positions in its own commits; the group's
//! committed offsets only measure lag. A missing index (first start, or deleted) is built from the
//! topic's beginning.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use bookstore_consumer::ConsumerStats;
use bookstore_http::{Collector, Probe};
use bookstore_search::{BookIndex, SearchIndex};
use tokio_util::sync::CancellationToken;

use crate::bus::EventBus;
use crate::config::{Config, EventsConfig};
use crate::ops::probe;

/// Where the index and its group id live.
pub fn search_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("search")
}

/// The web instance's index and the consumer that feeds it, ready to run.
pub(crate) struct Indexer {
    pub index: SearchIndex,
    pub group: String,
    bus: EventBus,
    events: EventsConfig,
    /// The consumer's counters, once it exists (it is made when the service starts, retrying
    /// while the event log cannot be reached).
    stats: Arc<OnceLock<Arc<ConsumerStats>>>,
    progress: Arc<Progress>,
}

impl Indexer {
    /// Opens (or makes) the index in `<data_dir>/search`; its consumer of the catalog topic
    /// starts with [`Indexer::start`].
    pub async fn open(config: &Config, bus: &EventBus) -> anyhow::Result<Self> {
        config.ensure_data_dir()?;
        let dir = search_dir(&config.data_dir);
        let group = group_id(&dir)?;
        let index_dir = dir.join("index");
        let index = tokio::task::spawn_blocking({
            let index_dir = index_dir.clone();
            move || BookIndex::open(Some(&index_dir))
        })
        .await
        .context("the search index could not be opened")?
        .with_context(|| {
            format!(
                "cannot open the search index {} (is another web instance using this data_dir?)",
                index_dir.display()
            )
        })?;
        let progress = Arc::new(Progress::default());
        progress.say("search index: starting".to_owned());
        Ok(Self {
            index: SearchIndex::new(index),
            group,
            bus: bus.clone(),
            events: config.events.clone(),
            stats: Arc::default(),
            progress,
        })
    }

    /// The consumer's counters in `/metrics` (nothing until the consumer exists).
    pub fn collector(&self) -> Collector {
        let stats = self.stats.clone();
        let group = self.group.clone();
        let inner: OnceLock<Collector> = OnceLock::new();
        Arc::new(move || {
            if let Some(stats) = stats.get() {
                inner.get_or_init(|| {
                    crate::ops::consumer_collector("web", group.clone(), stats.clone())
                })();
            }
        })
    }

    /// `/readyz`'s check: ready once the index has caught up with the topic (and from then on:
    /// a few seconds behind, it still answers).
    pub fn probe(&self) -> Arc<dyn Probe> {
        let progress = self.progress.clone();
        probe(move || {
            let progress = progress.clone();
            async move {
                if progress.caught_up.load(Ordering::Acquire) {
                    Ok(())
                } else {
                    Err(progress.message())
                }
            }
        })
    }

    /// Starts the consumer (made again every few seconds while the event log cannot be
    /// reached) and the measuring of its progress until the index has caught up.
    pub fn start(self) -> RunningIndexer {
        let Self {
            index,
            group,
            bus,
            events,
            stats,
            progress,
        } = self;
        let stop = CancellationToken::new();
        let failed = CancellationToken::new();
        let consumer = tokio::spawn({
            let (index, stats, progress, stop, failed) = (
                index.clone(),
                stats.clone(),
                progress.clone(),
                stop.clone(),
                failed.clone(),
            );
            async move {
                // However this task ends without being asked to stop (an error, a panic, a
                // consumer that returned), the service is told: an index that no longer follows
                // the catalog must not go on answering as ready.
                let unexpected_end = failed.clone().drop_guard();
                let topics = vec![events.catalog_topic.clone()];
                let mut events = events;
                events.batch_size = events.batch_size.max(INDEX_BATCH);
                let consumer = loop {
                    let handler: Arc<dyn bookstore_domain::EventHandler> = Arc::new(index.clone());
                    // Setting the topic up waits for the log (up to events.topic_timeout_ms):
                    // a stop does not.
                    let made = tokio::select! {
                        () = stop.cancelled() => {
                            unexpected_end.disarm();
                            return Ok(());
                        }
                        made = bus.consumer(&events, &group, topics.clone(), handler, stop.clone()) => made,
                    };
                    match made {
                        Ok(consumer) => break consumer,
                        Err(error) => {
                            let error = format!("{error:#}");
                            tracing::warn!(%error, "search index: cannot read the catalog topic yet; retrying");
                            progress
                                .say(format!("search index: waiting for the event log: {error}"));
                            tokio::select! {
                                () = stop.cancelled() => {
                                    unexpected_end.disarm();
                                    return Ok(());
                                }
                                () = tokio::time::sleep(RETRY_EVERY) => {}
                            }
                        }
                    }
                };
                let _ = stats.set(consumer.stats());
                let ran = consumer.run().await;
                if stop.is_cancelled() && ran.is_ok() {
                    unexpected_end.disarm();
                    return ran;
                }
                // The index would stop following the catalog: the web service stops (and its
                // supervisor starts it again), as the trend and recommendation services do when
                // their consumer fails.
                let why = match &ran {
                    Err(error) => format!("{error:#}"),
                    Ok(()) => "it stopped".to_owned(),
                };
                tracing::error!(error = %why, "search index: its consumer of the catalog topic ended");
                progress.caught_up.store(false, Ordering::Release);
                progress.say(format!("search index: its consumer ended: {why}"));
                ran.and(Err(anyhow::anyhow!(
                    "the search index's consumer stopped by itself"
                )))
            }
        });
        let watch = tokio::spawn(watch(index, stats, progress, stop.clone()));
        RunningIndexer {
            consumer,
            watch,
            stop,
            failed,
        }
    }
}

/// Whether the index has caught up with the catalog topic since the instance started, and how
/// far it is while it has not.
#[derive(Debug, Default)]
struct Progress {
    caught_up: AtomicBool,
    message: Mutex<String>,
}

impl Progress {
    fn say(&self, message: String) {
        *self.message.lock().unwrap_or_else(|e| e.into_inner()) = message;
    }

    fn message(&self) -> String {
        self.message
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// How often the index's progress is measured while it catches up.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// How often that progress goes to the log.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// The fewest events the index's consumer applies in one commit when they are there (catching
/// up): each commit writes and syncs a segment, so big batches build an index faster (73,000
/// books/s against 39,000 with 1,000 per commit, in `bookstore bench search`). When the topic is
/// quiet a batch is whatever arrived within `events.batch_wait_ms`, so writes reach search as
/// fast as with small batches.
pub const INDEX_BATCH: usize = 10_000;

/// How long the index waits before trying the event log again.
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// The index's consumer, running.
pub(crate) struct RunningIndexer {
    consumer: tokio::task::JoinHandle<anyhow::Result<()>>,
    watch: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    /// Cancelled when the consumer failed.
    failed: CancellationToken,
}

impl RunningIndexer {
    /// Stops the consumer (the batch in flight is finished and committed) and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.watch.abort();
        match self.consumer.await {
            Ok(done) => done,
            Err(error) => Err(anyhow::anyhow!(
                "the search index's consumer failed: {error}"
            )),
        }
    }

    /// Completes when the consumer has failed (never, while it runs).
    pub fn failed(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.failed.clone().cancelled_owned()
    }

    /// A drop guard of the consumer's stop token: the consumer stops if the service's task is
    /// dropped.
    pub fn guard(&self) -> tokio_util::sync::DropGuard {
        self.stop.clone().drop_guard()
    }
}

/// Measures how far the index is until it has caught up: events read (its positions) against
/// events in the topic (those plus the lag the consumer measured).
async fn watch(
    index: SearchIndex,
    stats: Arc<OnceLock<Arc<ConsumerStats>>>,
    progress: Arc<Progress>,
    stop: CancellationToken,
) {
    let started = Instant::now();
    let mut logged = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(WATCH_EVERY) => {}
        }
        let read: i64 = match index.with_index(|i| i.positions()).await {
            Ok(Ok(positions)) => positions.iter().map(|p| p.next_offset).sum(),
            Ok(Err(error)) => {
                progress.say(format!("search index: unreadable positions: {error}"));
                continue;
            }
            Err(error) => {
                progress.say(format!("search index: {error}"));
                continue;
            }
        };
        let Some(stats) = stats.get() else {
            continue;
        };
        let (lag, measured) = stats.lag();
        let behind: i64 = lag.values().sum();
        // No figure yet, no partition assigned yet, or not every owned partition measured (a
        // Kafka partition has no figure until librdkafka has fetched from it): not known to be
        // caught up.
        let owned = stats.owned_partitions.load(Ordering::Relaxed);
        if measured.is_none() || lag.is_empty() || (lag.len() as u64) < owned {
            progress.say(format!(
                "search index: catching up, {read} events read, the topic's end not yet measured"
            ));
            continue;
        }
        if behind == 0 {
            let books = index.with_index(|i| i.len()).await.unwrap_or(0);
            tracing::info!(
                books,
                events = read,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "search index: caught up with the catalog topic"
            );
            // Searches are fastest on one segment: merge what the catch-up wrote before saying
            // ready (batches go on being applied, and searches answered, meanwhile).
            progress.say(format!(
                "search index: caught up ({books} books), merging its segments"
            ));
            let merging = Instant::now();
            match index.with_index(|i| i.merge_segments()).await {
                Ok(Ok(())) => tracing::info!(
                    elapsed_ms = merging.elapsed().as_millis() as u64,
                    "search index: merged its segments"
                ),
                Ok(Err(error)) => tracing::warn!(%error, "search index: cannot merge its segments"),
                Err(error) => tracing::warn!(%error, "search index: cannot merge its segments"),
            }
            progress.caught_up.store(true, Ordering::Release);
            progress.say(String::new());
            return;
        }
        let message = format!(
            "search index: catching up, {read} of {} events",
            read + behind
        );
        if logged.elapsed() >= LOG_EVERY {
            tracing::info!("{message}");
            logged = Instant::now();
        }
        progress.say(message);
    }
}

/// This instance's consumer group: read from `<dir>/group`, made on first use.
fn group_id(dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the search directory {}", dir.display()))?;
    let path = dir.join("group");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    }
    let group = format!("bookstore-search-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(&path, format!("{group}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(group)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_group_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = group_id(&search_dir(dir.path())).unwrap();
        assert!(first.starts_with("bookstore-search-"), "{first}");
        assert_eq!(group_id(&search_dir(dir.path())).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(group_id(&search_dir(other.path())).unwrap(), first);
    }
}
