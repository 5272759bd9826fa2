//! The three services as separate `bookstore` processes on Kafka, MariaDB and Redis, as the
//! README runs them: two visitors (two `uid` cookies) search on the page and each then sees
//! recommendations they had not been shown, with reasons, and the Trends section.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{KillOnDrop, wait_until};
use crate::{Infra, get_json, redis_url, test_bus};

const READER_A: &str = "3f1e2d4c-5b6a-4798-8a9b-0c1d2e3f4a5b";
const READER_B: &str = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d";

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_on_kafka_mariadb_redis_recommend_to_two_visitors() {
    let bus = test_bus(Infra::Real).await;
    let config = &bus.config;
    let (web_port, trend_port, rec_port) = (free_port(), free_port(), free_port());
    let mut env = bus.env();
    env.extend([
        (
            "BOOKSTORE_DB__URL".to_owned(),
            config.db.url.as_ref().unwrap().expose().to_owned(),
        ),
        (
            "BOOKSTORE_WEB__LISTEN".into(),
            format!("127.0.0.1:{web_port}"),
        ),
        (
            "BOOKSTORE_WEB__TREND_URL".into(),
            format!("http://127.0.0.1:{trend_port}"),
        ),
        (
            "BOOKSTORE_WEB__RECOMMEND_URL".into(),
            format!("http://127.0.0.1:{rec_port}"),
        ),
        (
            "BOOKSTORE_TREND__LISTEN".into(),
            format!("127.0.0.1:{trend_port}"),
        ),
        (
            "BOOKSTORE_TREND__GROUP_ID".into(),
            config.trend.group_id.clone(),
        ),
        ("BOOKSTORE_TREND__STORE".into(), "redis".into()),
        ("BOOKSTORE_TREND__REDIS_URL".into(), redis_url()),
        (
            "BOOKSTORE_TREND__REDIS_PREFIX".into(),
            config.trend.redis_prefix.clone(),
        ),
        (
            "BOOKSTORE_RECOMMEND__LISTEN".into(),
            format!("127.0.0.1:{rec_port}"),
        ),
        (
            "BOOKSTORE_RECOMMEND__GROUP_ID".into(),
            config.recommend.group_id.clone(),
        ),
        (
            "BOOKSTORE_RECOMMEND__DB_URL".into(),
            config
                .recommend
                .db_url
                .as_ref()
                .unwrap()
                .expose()
                .to_owned(),
        ),
        ("RUST_LOG".into(), "warn".into()),
    ]);
    let spawn = |service: &str| {
        KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_bookstore"))
                .arg(service)
                .envs(env.iter().cloned())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _trend = spawn("trend");
    let _recommend = spawn("recommend");
    let _web = spawn("web");
    let http = reqwest::Client::new();
    let web = format!("http://127.0.0.1:{web_port}");
    let rec = format!("http://127.0.0.1:{rec_port}");
    for url in [&web, &rec, &format!("http://127.0.0.1:{trend_port}")] {
        wait_until(Duration::from_secs(60), "a service to answer", || async {
            http.get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }
    wait_until(
        Duration::from_secs(60),
        "the sample catalog copied",
        || async {
            get_json(&http, &format!("{rec}/stats")).await["catalog_books"].as_u64() > Some(200)
        },
    )
    .await;

    let page = |uid: &'static str, q: &'static str| {
        let http = http.clone();
        let web = web.clone();
        async move {
            let response = http
                .get(format!("{web}/?q={q}"))
                .header("cookie", format!("uid={uid}"))
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
