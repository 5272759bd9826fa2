//! The `bookstore` binary as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bookstore_testkit::FreshDatabase;

use crate::backend_tests;
use crate::helpers::Database;

fn bookstore() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bookstore"));
    // The tests choose every setting themselves.
    for (key, _) in std::env::vars() {
        if key.starts_with("BOOKSTORE_") && !key.starts_with("BOOKSTORE_TEST_") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn with_no_config_it_serves_the_sample_catalog_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bookstore()
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .env("BOOKSTORE_WEB__LISTEN", "127.0.0.1:0")
        .env("BOOKSTORE_TREND__LISTEN", "127.0.0.1:0")
        .env("BOOKSTORE_RECOMMEND__LISTEN", "127.0.0.1:0")
        .env("BOOKSTORE_WEB__OPS_LISTEN", "127.0.0.1:0")
        .env("BOOKSTORE_TREND__OPS_LISTEN", "127.0.0.1:0")
        .env("BOOKSTORE_RECOMMEND__OPS_LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Everything it says, for the message of a failed assertion.
    let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    std::thread::spawn({
        let said = said.clone();
        move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                said.lock().unwrap().push(line.clone());
                if !line.contains("web service listening") {
                    continue;
                }
                if let Some(at) = line.find("http://") {
                    let addr = line[at + 7..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    let _ = tx.send(addr);
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the service logs its address");
    // Ready once the search index has the sample catalog.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reqwest::blocking::get(format!("http://{addr}/readyz"))
        .unwrap()
        .status()
        != 200
    {
        assert!(std::time::Instant::now() < deadline, "not ready after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = reqwest::blocking::get(format!("http://{addr}/?q=pride"))
        .unwrap()
        .text()
        .unwrap();
    assert!(body.contains("<mark>Pride</mark> and Prejudice"));
    assert!(
        dir.path().join("bookstore.db").exists(),
        "data lives in the data dir"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            // The reader has the last lines once the pipe closes.
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                status.success(),
                "exit status {status}; it said:\n{}",
                said.lock().unwrap().join("\n")
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "it stops on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the binary to completion and returns (success, stdout, stderr).
fn run(command: &mut Command) -> (bool, String, String) {
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_invalid_setting_is_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value, expected) in [
        ("BOOKSTORE_WEB__PAGE_SIZE", "lots", "page_size"),
        ("BOOKSTORE_WEB__LISTEN", "nowhere", "listen"),
        ("BOOKSTORE_DB__URL", "postgres://x", "db.url"),
    ] {
        let (ok, _, stderr) = run(bookstore()
            .args(["--data-dir", dir.path().to_str().unwrap(), "web"])
            .env(key, value));
        assert!(!ok, "{key}={value} must fail");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.to_lowercase().contains(expected),
            "{expected} named: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, "web:\n  listen: 127.0.0.1:1\n  colour: blue\n").unwrap();
    let (ok, _, stderr) = run(bookstore().args(["--config", config.to_str().unwrap(), "web"]));
    assert!(!ok);
    assert!(stderr.contains("colour"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn an_unreachable_database_is_one_line_naming_the_server() {
    let (ok, _, stderr) = run(bookstore().arg("web").env(
        "BOOKSTORE_DB__URL",
        "mysql://user:secret-password@127.0.0.1:1/books",
    ));
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("127.0.0.1:1"),
        "the server is named: {stderr}"
    );
    assert!(
        !stderr.contains("secret-password"),
        "no secret printed: {stderr}"
    );
}

#[test]
fn generate_is_deterministic_for_a_seed() {
    let generate = |seed: &str| {
        let (ok, stdout, _) = run(bookstore().args(["generate", "--count", "300", "--seed", seed]));
        assert!(ok);
        stdout
    };
    let a = generate("3");
    assert_eq!(a, generate("3"));
    assert_ne!(a, generate("4"));
    assert_eq!(a.lines().count(), 301, "a header and 300 books");
    assert!(a.starts_with("title,author,published_at,description\n"));
}

backend_tests!(import_loads_good_rows_and_reports_bad_ones_by_line);

async fn import_loads_good_rows_and_reports_bad_ones_by_line(backend: Database) {
    let dir = tempfile::tempdir().unwrap();
    // The MariaDB database goes at the end, whether the test passed or not.
    let db = match backend {
        Database::Sqlite => None,
        Database::MySql => Some(FreshDatabase::create().await),
    };
    let db_url = match &db {
        Some(db) => db.url(),
        None => format!("sqlite://{}", dir.path().join("import.db").display()),
    };
    let csv = dir.path().join("books.csv");
    std::fs::write(
        &csv,
        "title,author,published_at,description\n\
         Emma,Jane Austen,1815-12-23,A matchmaker.\n\
         ,No Title,1900-01-01,\n\
         Persuasion,Jane Austen,1817-12-20,\"Second chances, at last.\"\n\
         Bad Date,Someone,1817-02-30,\n\
         Northanger Abbey,Jane Austen,1817-12-20,\n",
    )
    .unwrap();
    let jsonl = dir.path().join("more.jsonl");
    std::fs::write(
        &jsonl,
        "{\"title\":\"Sanditon\",\"author\":\"Jane Austen\",\"published_at\":\"1925-01-01\"}\n\
         {\"title\":\"X\",\"author\":\"Y\",\"published_at\":\"1900-01-01\",\"isbn\":\"1\"}\n",
    )
    .unwrap();
    let import = |file: &std::path::Path| {
        run(bookstore()
            .args(["import", file.to_str().unwrap(), "--batch-size", "2"])
            .env("BOOKSTORE_DB__URL", &db_url))
    };
    let (ok, stdout, stderr) = import(&csv);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 3 books (3 created, 0 updated and 0 unchanged, matched by ISBN), rejected 2 rows"),
        "{stdout}"
    );
    assert!(
        stderr.contains("line 3: rejected") && stderr.contains("title"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5: rejected") && stderr.contains("published_at"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = import(&jsonl);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 1 books (1 created, 0 updated and 0 unchanged, matched by ISBN), rejected 1 rows"),
        "{stdout}"
    );
    assert!(
        stderr.contains("line 2: rejected") && stderr.contains("isbn"),
        "{stderr}"
    );

    let mut config = bookstore_app::config::Config::default();
    config.db.url = Some(db_url.clone().into());
    let catalog = bookstore_app::open_catalog(&config).await.unwrap();
    let books = catalog.repository();
    assert_eq!(books.count().await.unwrap(), 4);
    let page = books
        .search(&bookstore_domain::BookQuery::new("persuasion", 0, 5))
        .await
        .unwrap();
    assert_eq!(page.books[0].description, "Second chances, at last.");

    let (ok, _, stderr) = run(bookstore()
        .args(["import", "missing.csv"])
        .env("BOOKSTORE_DB__URL", &db_url));
    assert!(!ok);
    assert!(stderr.contains("missing.csv"), "{stderr}");

    // Books with an ISBN: importing the file again adds nothing; a changed field updates the
    // book; one ISBN written two ways (ISBN-10 and ISBN-13) is one book. `--report` says what
    // became of every line.
    let with_isbn = dir.path().join("isbn.csv");
    let isbn_csv = |persuasion: &str| {
        format!(
            "title,author,published_at,isbn\n\
             Pride and Prejudice,Jane Austen,1813-01-28,0-14-143951-3\n\
             {persuasion},Jane Austen,1817-12-20,978-0-14-143968-6\n\
             Pride and Prejudice,Jane Austen,1813-01-28,9780141439518\n\
             Mansfield Park,Jane Austen,1814-07-01,not-an-isbn\n"
        )
    };
    std::fs::write(&with_isbn, isbn_csv("Persuasion")).unwrap();
    let report = dir.path().join("report.csv");
    let import_with_report = || {
        run(bookstore()
            .args(["import", with_isbn.to_str().unwrap(), "--batch-size", "2"])
            .args(["--report", report.to_str().unwrap()])
            .env("BOOKSTORE_DB__URL", &db_url))
    };
    let (ok, stdout, stderr) = import_with_report();
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 3 books (2 created, 0 updated and 1 unchanged, matched by ISBN), rejected 1 rows"),
        "{stdout}"
    );
    let lines = std::fs::read_to_string(&report).unwrap();
    let rows: Vec<Vec<&str>> = lines.lines().map(|l| l.splitn(4, ',').collect()).collect();
    assert_eq!(rows[0], ["line", "outcome", "book_id", "reason"]);
    let outcomes: Vec<(&str, &str)> = rows[1..].iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        outcomes,
        [
            ("2", "created"),
            ("3", "created"),
            ("4", "unchanged"),
            ("5", "rejected")
        ],
        "{lines}"
    );
    assert_eq!(
        rows[1][2], rows[3][2],
        "one ISBN written two ways is one book: {lines}"
    );
    assert!(rows[4][3].contains("isbn"), "{lines}");
    assert_eq!(books.count().await.unwrap(), 6);

    let (ok, stdout, stderr) = import_with_report();
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 3 books (0 created, 0 updated and 3 unchanged, matched by ISBN)"),
        "the second run changes nothing: {stdout}"
    );
    std::fs::write(&with_isbn, isbn_csv("Persuasion (revised)")).unwrap();
    let (ok, stdout, stderr) = import_with_report();
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("(0 created, 1 updated and 2 unchanged, matched by ISBN)"),
        "{stdout}"
    );
    assert_eq!(books.count().await.unwrap(), 6, "no book added twice");
    let found = books
        .search(&bookstore_domain::BookQuery::new("978-0-14-143968-6", 0, 5))
        .await
        .unwrap();
    assert_eq!(found.books.len(), 1);
    assert_eq!(found.books[0].title, "Persuasion (revised)");
    assert_eq!(
        found.books[0].isbn.as_ref().map(|i| i.as_str()),
        Some("9780141439686")
    );
}
