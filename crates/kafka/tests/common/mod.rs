//! A test's topic, deleted from the shared broker when the test ends, whether it passed or not.

use std::time::Duration;

use bookstore_kafka::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

pub struct TestTopic {
    pub name: String,
    settings: KafkaSettings,
}

impl TestTopic {
    /// A fresh name that starts with `prefix`; the test creates the topic.
    pub fn new(prefix: &str, settings: &KafkaSettings) -> Self {
        Self {
            name: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            settings: settings.clone(),
        }
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        let (name, settings) = (self.name.clone(), self.settings.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: a runtime of its own
        // on a thread of its own. A failure fails the test, unless it is failing already.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let delete = async {
                let admin: AdminClient<DefaultClientContext> = settings
                    .client_config()
                    .create()
                    .map_err(|e| e.to_string())?;
                let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
                admin
                    .delete_topics(&[name.as_str()], &options)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            // Bounded: a broker that does not answer must not hold the test up.
            // (The timer is made inside the runtime: it needs one.)
            runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(60), delete).await })
                .map_err(|_| "timed out".to_owned())?
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(error)) => report(&format!(
                "could not delete the test topic {}: {error}",
                self.name
            )),
            Err(_) => report(&format!("could not delete the test topic {}", self.name)),
        }
    }
}

/// Fails the test, unless it is failing already (its own message matters more, and a second
/// panic would abort).
fn report(message: &str) {
    if std::thread::panicking() {
        eprintln!("{message}");
    } else {
        panic!("{message}");
    }
}
