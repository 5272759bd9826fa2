//! Removing what a test made on the shared servers: MariaDB databases, Redis keys under a prefix,
//! Kafka topics. Self-contained (it names nothing of the test crate), so that every test binary
//! can include it: `#[path = "../support/cleanup.rs"] mod cleanup;`.

/// The Redis server the tests use: `BOOKSTORE_TEST_REDIS_URL`, or `dev/services`' default.
pub fn redis_url() -> String {
    std::env::var("BOOKSTORE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Deletes every key of the test Redis under `prefix` (never anything else: the server is
/// shared). Returns how many it deleted.
pub async fn delete_redis_keys(prefix: &str) -> usize {
    assert!(
        prefix.len() > 5 && !prefix.contains(['*', '?', '[']),
        "refusing to delete under the prefix {prefix:?}"
    );
    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut redis)
            .await
            .unwrap();
        if !keys.is_empty() {
            let n: usize = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut redis)
                .await
                .unwrap();
            deleted += n;
        }
        if next == 0 {
            return deleted;
        }
        cursor = next;
    }
}

/// Drops the MariaDB database `url` names, if it exists. First it ends the sessions still using
/// it: a test's pools are dropped, not closed, and one may be inside a transaction whose locks
/// would hold the DROP up.
pub async fn drop_mysql_database(url: &str) {
    use sqlx::Connection;
    let url = url.split_once('?').map_or(url, |(url, _)| url);
    let (server, name) = url.rsplit_once('/').unwrap();
    assert!(
        name.starts_with("bookstore_test_"),
        "refusing to drop the database {name:?}"
    );
    let mut conn = sqlx::MySqlConnection::connect(server).await.unwrap();
    // A lock taken after the sessions were listed makes the DROP fail rather than wait a year.
    sqlx::query("SET SESSION lock_wait_timeout = 30")
        .execute(&mut conn)
        .await
        .unwrap();
    let sessions: Vec<i64> = sqlx::query_scalar(
        "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = ?",
    )
    .bind(name)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for id in sessions {
        // It may have ended meanwhile.
        let _ = sqlx::raw_sql(&format!("KILL CONNECTION {id}"))
            .execute(&mut conn)
            .await;
    }
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS `{name}`"))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// Deletes `topics` from the Kafka at `brokers`; a topic that does not exist is no error.
pub async fn delete_kafka_topics(brokers: &str, topics: &[String]) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10)));
    // Each topic's own result is `UnknownTopicOrPartition` for one that was never made.
    let _ = admin.delete_topics(&names, &options).await;
}

/// How long removing what a test made may take.
const CLEANUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a test made on the shared servers, removed when it is dropped, whether the test passed or
/// not.
#[derive(Default)]
pub struct Cleanup {
    pub mysql_urls: Vec<String>,
    pub redis_prefixes: Vec<String>,
    /// Kafka topics, and the brokers that hold them.
    pub kafka_topics: Vec<String>,
    pub kafka_brokers: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.mysql_urls.is_empty()
            && self.redis_prefixes.is_empty()
            && self.kafka_topics.is_empty()
        {
            return;
        }
        let urls = std::mem::take(&mut self.mysql_urls);
        let prefixes = std::mem::take(&mut self.redis_prefixes);
        let topics = std::mem::take(&mut self.kafka_topics);
        let brokers = std::mem::take(&mut self.kafka_brokers);
        // Drop runs inside the test's runtime, which cannot be blocked on: clean up from a
        // runtime of its own on a thread of its own. A failure fails the test, unless it is
        // failing already.
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let all = async move {
                for url in &urls {
                    drop_mysql_database(url).await;
                }
                for prefix in &prefixes {
                    delete_redis_keys(prefix).await;
                }
                if !topics.is_empty() {
                    delete_kafka_topics(&brokers, &topics).await;
                }
            };
            // Bounded: a server that does not answer must not hold the test up. (The timer is
            // made inside the runtime: it needs one.)
            runtime
                .block_on(async { tokio::time::timeout(CLEANUP_TIMEOUT, all).await })
                .unwrap();
        })
        .join();
        if done.is_err() {
            report("could not remove everything the test made on the shared servers");
        }
    }
}

/// A cleanup that failed fails the test, unless the test is failing already (its own message
/// matters more, and a second panic would abort).
pub fn report(message: &str) {
    if std::thread::panicking() {
        eprintln!("{message}");
    } else {
        panic!("{message}");
    }
}
