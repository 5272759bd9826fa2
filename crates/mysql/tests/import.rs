//! Imports matched by ISBN on MariaDB: imports running side by side never add one ISBN twice, and
//! an ISBN another book has is a conflict.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bookstore_domain::{BookRepository, Imported, NewBook, NewBookInput, RepositoryError};
use bookstore_mysql::MySqlBookRepository;
use bookstore_testkit::FreshDatabase;

fn book(title: &str, isbn: &str) -> NewBook {
    NewBook::parse(NewBookInput {
        title: Some(title.to_owned()),
        author: Some("Jane Austen".to_owned()),
        published_at: Some("1813-01-28".to_owned()),
        description: None,
        isbn: Some(isbn.to_owned()),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imports_side_by_side_add_each_isbn_once() {
    let db = FreshDatabase::create().await;
    let pool = bookstore_mysql::connect(&db.url(), 16).await.unwrap();
    let repo = Arc::new(MySqlBookRepository::new(pool).await.unwrap());
    // Eight imports of the same file at once, each with the same ten new ISBNs (and one that
    // only it has): every ISBN is added once; the others find it and keep it.
    let shared: Vec<NewBook> = (0..10)
        .map(|i| book(&format!("Shared {i}"), &isbn(i)))
        .collect();
    let runs: Vec<_> = (0..8)
        .map(|run| {
            let repo = repo.clone();
            let mut books = shared.clone();
            books.push(book(&format!("Own {run}"), &isbn(100 + run)));
            tokio::spawn(async move { repo.import_many(&books).await })
        })
        .collect();
    let mut created = 0;
    for run in runs {
        let outcomes = run
            .await
            .unwrap()
            .expect("an import beside others succeeds");
        created += outcomes
            .iter()
            .filter(|o| matches!(o, Imported::Created(_)))
            .count();
    }
    assert_eq!(created, 10 + 8, "each ISBN added once");
    assert_eq!(repo.count().await.unwrap(), 18);

    // Outside an import, another book's ISBN is a conflict.
    let taken = repo.create(&book("Copy", &isbn(0))).await;
    assert!(
        matches!(taken, Err(RepositoryError::Conflict(_))),
        "{taken:?}"
    );
}

/// A valid ISBN-13 for `n` (978 0 000 0nnnn and its check digit).
fn isbn(n: u64) -> String {
    let body = format!("978000000{n:03}");
    let digits: Vec<u32> = body.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = digits
        .iter()
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { *d } else { d * 3 })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}
