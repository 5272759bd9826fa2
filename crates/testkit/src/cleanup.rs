//! [`Cleanup`], for Redis keys and Kafka topics known only at the end of a test (its
//! configuration names them), removed whether the test passed or not.

use crate::guard::{CLEANUP_TIMEOUT, on_own_runtime, report};

/// What a test made on the shared servers, removed when it is dropped, whether the test passed or
/// not: Redis keys under prefixes (see [`crate::redis::delete_redis_keys`]) and Kafka topics.
/// (A MariaDB database has a guard of its own, [`crate::FreshDatabase`], made with it.)
#[derive(Default)]
pub struct Cleanup {
    pub redis_prefixes: Vec<String>,
    /// Kafka topics, and the brokers that hold them.
    pub kafka_topics: Vec<String>,
    pub kafka_brokers: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.redis_prefixes.is_empty() && self.kafka_topics.is_empty() {
            return;
        }
        let prefixes = std::mem::take(&mut self.redis_prefixes);
        let topics = std::mem::take(&mut self.kafka_topics);
        let brokers = std::mem::take(&mut self.kafka_brokers);
        let what = format!("Redis keys under {prefixes:?}, Kafka topics {topics:?}");
        let removed = on_own_runtime(CLEANUP_TIMEOUT, move || async move {
            for prefix in &prefixes {
                crate::redis::try_delete_redis_keys(prefix).await?;
            }
            if !topics.is_empty() {
                // As ever: a broker that refuses is not the test's failure (a topic never made,
                // or one the test deleted itself, is refused too).
                let _ = crate::kafka::delete_kafka_topics(&brokers, &topics).await;
            }
            Ok(())
        });
        if let Err(error) = removed {
            report(&format!(
                "could not remove what the test made on the shared servers ({what}): {error}"
            ));
        }
    }
}
