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
    let store = RedisTrends::new(redis.clone(), &prefix, conformance::settings());
    conformance::check_store(&store).await;

    // Leave Redis as it was.
    let mut redis = redis;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut redis)
        .await
        .unwrap();
}
