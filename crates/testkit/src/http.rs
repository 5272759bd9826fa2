//! Asking a running service over HTTP: whether it is ready, its pages and its JSON.

use std::time::{Duration, Instant};

/// Waits (at most 60 s) until `GET <base>/readyz` answers 200: for the web service, its search
/// index has caught up with the catalog topic.
pub async fn wait_ready(base: &str) {
    let readyz = format!("{base}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match reqwest::get(&readyz).await {
            Ok(response) if response.status() == 200 => return,
            Ok(response) => {
                let body = response.text().await.unwrap_or_default();
                assert!(
                    Instant::now() < deadline,
                    "{readyz} is not ready after 60 s: {body}"
                );
            }
            Err(error) => assert!(
                Instant::now() < deadline,
                "{readyz} does not answer after 60 s: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET url`, its body as text (whatever the status).
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    let response = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"))
}

/// `GET url` as JSON, expecting 200.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status(), 200, "{url}");
    response
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: the body is not JSON: {e}"))
}
