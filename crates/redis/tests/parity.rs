//! The Redis trend store against the real Redis from `dev/services`: it passes the check every
//! trend store passes (`bookstore_domain::trends::conformance`). Fails, naming the fix, when
//! Redis cannot be reached.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bookstore_domain::trends::conformance;
use bookstore_redis::RedisTrends;

fn redis_url() -> String {
    std::env::var("BOOKSTORE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

#[tokio::test]
async fn the_redis_store_follows_the_reference_rules() {
    let redis = bookstore_redis::connect(&redis_url(), Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis at {} is unreachable ({e}); start it with `dev/services start`",
                redis_url()
            )
        });
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    // Leave Redis as it was, whether the check passes or not.
    let _cleanup = Cleanup {
        url: redis_url(),
        prefix: prefix.clone(),
    };
    let store = RedisTrends::new(redis.clone(), &prefix, conformance::settings());
    conformance::check_store(&store).await;

    // The check searches one query in six spellings: a bounded number of them is stored, and
    // public trends keep no readers.
    let mut redis = redis;
    let trends: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}q:*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut most = 0;
    for key in &trends {
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap();
        most = most.max(fields.iter().filter(|f| f.starts_with("s:")).count());
        if fields.iter().any(|f| f == "pub") {
            let readers = key.replacen(&format!("{prefix}q:"), &format!("{prefix}r:"), 1);
            let exists: bool = redis::cmd("EXISTS")
                .arg(readers)
                .query_async(&mut redis)
                .await
                .unwrap();
            assert!(!exists, "{key} is public and still lists its readers");
        }
    }
    assert_eq!(most, bookstore_domain::trends::SPELLINGS_PER_TREND);
}

/// Deletes the test's keys when dropped, also after a failed assertion.
struct Cleanup {
    url: String,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut connection)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut connection);
        }
    }
}
