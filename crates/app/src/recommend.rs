//! The recommendation service: a consumer group applying catalog and search events to a
//! recommendation store, and the HTTP API that answers from it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use bookstore_domain::EventHandler;
use bookstore_domain::recommend::RecommendSettings;
use bookstore_mysql::MySqlRecommendations;
use bookstore_recommend::{RecommendReads, RecommendState};
use bookstore_sqlite::SqliteRecommendations;
use secrecy::ExposeSecret;

use crate::config::{Config, DbKind};
use crate::consumer_service::{ConsumerApp, ConsumerSpec};

/// A recommendation store (with its co-view reads) that is also the handler filling it.
pub trait RecommendBackend: RecommendReads + EventHandler {}
impl<T: RecommendReads + EventHandler> RecommendBackend for T {}

/// Opens the recommendation store `recommend.db_url` names: its own SQLite file by default, or a
/// MySQL database (created if missing; its tables are all named `rec_*`, plus
/// `consumer_positions`).
pub async fn open_recommend_store(config: &Config) -> anyhow::Result<Arc<dyn RecommendBackend>> {
    let db = config.recommend_db()?;
    let url = db.url.expose_secret();
    let settings = config.recommend.settings();
    let max = config.recommend.max_connections;
    match db.kind {
        DbKind::Sqlite => {
            config.ensure_data_dir()?;
            let pool = bookstore_sqlite::connect(url, max)
                .await
                .context("cannot open the recommendation store (recommend.db_url)")?;
            let store = SqliteRecommendations::new(pool, settings)
                .await
                .context("cannot create the recommendation tables")?;
            Ok(Arc::new(store))
        }
        DbKind::MySql => {
            bookstore_mysql::create_database_if_missing(url)
                .await
                .context("cannot create the recommendation database (recommend.db_url)")?;
            let pool = bookstore_mysql::connect(url, max)
                .await
                .context("cannot reach the recommendation database (recommend.db_url)")?;
            let store = MySqlRecommendations::new(pool, settings)
                .await
                .context("cannot create the recommendation tables")?;
            Ok(Arc::new(store))
        }
    }
}

/// How often the service deletes the profiles of readers inactive for `recommend.profile_ttl`,
/// and how many at most per statement.
const EXPIRY_EVERY: Duration = Duration::from_secs(3600);
const EXPIRY_CHUNK: usize = 1_000;

/// Deletes expired profiles at once and then every [`EXPIRY_EVERY`], for as long as the store is
/// in use (the task ends when the service drops it).
fn expire_profiles(store: Weak<dyn RecommendBackend>, settings: RecommendSettings) {
    tokio::spawn(async move {
        loop {
            let Some(store) = store.upgrade() else {
                return;
            };
            let before = settings.expired_before(chrono::Utc::now());
            let mut deleted = 0u64;
            loop {
                match store.expire(before, EXPIRY_CHUNK).await {
                    Ok(n) => {
                        deleted += n;
                        if n < EXPIRY_CHUNK as u64 {
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot delete expired reader profiles; trying again later");
                        break;
                    }
                }
            }
            if deleted > 0 {
                tracing::info!(
                    deleted,
                    "deleted the profiles of readers inactive for recommend.profile_ttl"
                );
            }
            drop(store);
            tokio::time::sleep(EXPIRY_EVERY).await;
        }
    });
}

/// The recommendation service of `config`, bound and ready to run.
pub async fn build(config: &Config) -> anyhow::Result<ConsumerApp> {
    let store = open_recommend_store(config).await?;
    expire_profiles(Arc::downgrade(&store), config.recommend.settings());
    let ping = store.clone();
    let answers: Arc<dyn RecommendReads> = store.clone();
    ConsumerSpec {
        service: "recommend",
        name: "recommendation",
        title: "bookstore recommendation service",
        description: "Recommendations per user, from the book.searched events and the catalog events (book.created, book.updated, book.deleted) its consumer group applies.",
        store: config.recommend_db()?.kind.name(),
        store_probe: crate::ops::probe(move || {
            let ping = ping.clone();
            async move { ping.ping().await.map_err(|e| e.to_string()) }
        }),
        handler: store,
        // Larger batches than the other consumers: a batch reads and writes each record it
        // touches once, however many of its events touch it.
        batch_size: Some(config.recommend.batch_size),
        group: &config.recommend.group_id,
        topics: vec![
            config.events.catalog_topic.clone(),
            config.events.topic.clone(),
        ],
        listen: config.recommend.listen,
        ops_listen: config.recommend.ops_listen,
        listen_key: "recommend.listen",
        ops_listen_key: "recommend.ops_listen",
    }
    .build(config, |surface| {
        bookstore_recommend::router(RecommendState { store: answers }, surface)
    })
    .await
}
