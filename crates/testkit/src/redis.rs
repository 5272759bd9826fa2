//! Redis keys a test made on the shared test Redis, all under a prefix of its own
//! (`test:<uuid>:`), deleted when the test ends, whether it passed or not ([`RedisKeys`]).

use crate::guard::{CLEANUP_TIMEOUT, on_own_runtime, report};
use crate::servers::{self, redis_url};

/// A fresh key prefix on the test Redis ([`servers::redis_url`]), `test:<uuid>:`; every key under
/// it is deleted when this guard is dropped (also while a failed test's panic unwinds).
pub struct RedisKeys {
    prefix: String,
}

/// A fresh key prefix, `test:<uuid>:`, for a store whose keys something else deletes (a
/// [`crate::Cleanup`] of it).
pub fn fresh_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

impl RedisKeys {
    pub fn fresh() -> Self {
        Self {
            prefix: fresh_prefix(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Default for RedisKeys {
    fn default() -> Self {
        Self::fresh()
    }
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        let deleted = on_own_runtime(CLEANUP_TIMEOUT, move || async move {
            try_delete_redis_keys(&prefix).await.map(drop)
        });
        if let Err(error) = deleted {
            report(&format!(
                "could not delete the test's Redis keys under {}: {error}",
                self.prefix
            ));
        }
    }
}

/// Deletes every key of the test Redis under `prefix` (never anything else: the server is
/// shared). Returns how many it deleted; panics when it cannot.
pub async fn delete_redis_keys(prefix: &str) -> usize {
    match try_delete_redis_keys(prefix).await {
        Ok(deleted) => deleted,
        Err(error) => panic!("{error}"),
    }
}

/// [`delete_redis_keys`], its failure as an error.
pub async fn try_delete_redis_keys(prefix: &str) -> Result<usize, String> {
    assert!(
        prefix.len() > 5 && !prefix.contains(['*', '?', '[']),
        "refusing to delete under the prefix {prefix:?}"
    );
    let url = redis_url();
    let unreachable = |error: redis::RedisError| {
        format!(
            "Redis is not reachable at {url} (BOOKSTORE_TEST_REDIS_URL): {error}; {}",
            servers::HOW_TO_START
        )
    };
    let client = redis::Client::open(url.as_str()).map_err(unreachable)?;
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .map_err(unreachable)?;
    let failed = |error: redis::RedisError| format!("deleting the keys under {prefix}: {error}");
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
            .map_err(failed)?;
        if !keys.is_empty() {
            let n: usize = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut redis)
                .await
                .map_err(failed)?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
