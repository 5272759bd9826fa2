//! The three services as separate `bookstore` processes on Kafka, MariaDB and Redis, as the
//! README runs them: two visitors (two `uid` cookies) search on the page and each then sees
//! recommendations they had not been shown, with reasons, and the Trends section.

use std::time::Duration;

use bookstore_testkit::http::get_json;
use bookstore_testkit_app::{Infra, Processes, test_bus};

const READER_A: &str = "3f1e2d4c-5b6a-4798-8a9b-0c1d2e3f4a5b";
const READER_B: &str = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_on_kafka_mariadb_redis_recommend_to_two_visitors() {
    let bus = test_bus(Infra::Real).await;
    let processes = Processes::start(env!("CARGO_BIN_EXE_bookstore"), &bus).await;
    let http = reqwest::Client::new();
    let web = processes.web.clone();
    let rec = processes.rec_ops.clone();

    let page = |uid: &'static str, q: &'static str| {
        let http = http.clone();
        let web = web.clone();
        async move {
            let response = http
                .get(format!("{web}/?q={q}"))
                .header("cookie", bookstore_testkit_app::uid_cookie(uid))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    page(READER_A, "austen").await;
    page(READER_B, "austen").await;
    page(READER_B, "bronte").await;
    page(READER_A, "frankenstein").await;

    for (uid, expect) in [
        (READER_A, "because you searched for austen"),
        // A's Frankenstein search pairs Frankenstein with Austen.
        (READER_B, "because you searched for austen"),
    ] {
        let shown: Vec<i64> =
            get_json(&http, &format!("{rec}/interests?uid={uid}&n=100")).await["books"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["id"].as_i64().unwrap())
                .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let html = loop {
            let html = page(uid, "").await;
            if html.contains(expect) && html.contains("id=\"trends\"") {
                break html;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{uid}'s page never showed {expect:?} and the trends: {html}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let section = html.split("Recommended for you").nth(1).unwrap();
        assert!(
            section.contains("data-book-id="),
            "{uid} gets recommendations"
        );
        for id in shown {
            assert!(
                !section.contains(&format!("data-book-id=\"{id}\"")),
                "book {id} was already shown to {uid}"
            );
        }
    }
}
