//! The pieces of an API handler's answer that the services share: the query string's
//! parameters checked into 400s, and store reads turned into 503s.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::Response;

use crate::error;

/// The query string's parameters, or a 400 when it cannot be parsed.
#[allow(clippy::result_large_err)]
pub fn query_params(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, Response> {
    match query {
        Ok(Query(params)) => Ok(params),
        Err(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "the query string is malformed",
        )),
    }
}

/// The parameter `name`: a whole number from 1 to `max`, `default` when absent or empty; else
/// what is wrong with it.
pub fn count_param(
    params: &HashMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, String> {
    match params.get(name).map(String::as_str) {
        None | Some("") => Ok(default),
        Some(given) => match given.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "{name} must be a whole number from 1 to {max}, not {given:?}"
            )),
        },
    }
}

/// A service's store as its handlers read it: a read that fails or takes longer than `timeout`
/// is answered with a JSON 503 naming the store, and a failure is logged and counted in
/// `bookstore_store_errors_total{service, store, kind="read"}`.
pub struct StoreReads {
    /// The `service` and `store` labels of the error counter.
    pub service: &'static str,
    pub store: &'static str,
    /// The store for a person, as in "the trend store is unavailable".
    pub name: &'static str,
    pub timeout: Duration,
}

impl StoreReads {
    /// What `read` (reading `what`, for the log) gave, or the 503 to answer.
    #[allow(clippy::result_large_err)]
    pub async fn read<T, E: Display>(
        &self,
        what: &str,
        read: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Response> {
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                metrics::counter!("bookstore_store_errors_total", "service" => self.service, "store" => self.store, "kind" => "read").increment(1);
                tracing::warn!(error = %err, "cannot read {what}");
                Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{} is unavailable", self.name),
                ))
            }
            Err(_) => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{} did not answer in time", self.name),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn counts_are_whole_numbers_in_range() {
        assert_eq!(count_param(&params(&[]), "n", 10, 50), Ok(10));
        assert_eq!(count_param(&params(&[("n", "")]), "n", 10, 50), Ok(10));
        assert_eq!(count_param(&params(&[("n", "1")]), "n", 10, 50), Ok(1));
        assert_eq!(count_param(&params(&[("n", "50")]), "n", 10, 50), Ok(50));
        for bad in [
            "0",
            "51",
            "-1",
            "ten",
            "1e3",
            " 5",
            "99999999999999999999999",
        ] {
            let message = count_param(&params(&[("n", bad)]), "n", 10, 50).unwrap_err();
            assert!(
                message.starts_with("n must be a whole number from 1 to 50"),
                "{message}"
            );
        }
    }

    const STORE: StoreReads = StoreReads {
        service: "test",
        store: "things",
        name: "the thing store",
        timeout: Duration::from_millis(50),
    };

    async fn body(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let bytes = to_bytes(response.into_body(), 4096).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn store_failures_and_timeouts_are_503s_naming_the_store() {
        assert_eq!(
            STORE.read("x", async { Ok::<_, String>(7) }).await.ok(),
            Some(7)
        );

        let failed = STORE
            .read("x", async { Err::<u8, _>("connection refused") })
            .await
            .unwrap_err();
        assert_eq!(
            body(failed).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"the thing store is unavailable"}"#.to_owned()
            )
        );

        let slow = STORE
            .read("x", async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<u8, String>(1)
            })
            .await
            .unwrap_err();
        assert_eq!(
            body(slow).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"the thing store did not answer in time"}"#.to_owned()
            )
        );
    }
}
