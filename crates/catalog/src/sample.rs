//! The built-in sample catalog: real public-domain books with descriptions written for this
//! project, loaded on first start when the catalog is empty.

use bookstore_domain::{BookRepository, NewBook, RepositoryError};

use crate::read::{Format, read};

/// The sample catalog as shipped (CSV with a header row).
pub const SAMPLE_CSV: &str = include_str!("../data/sample-books.csv");

/// The sample catalog's books. Every row is valid (a unit test checks it).
pub fn books() -> Vec<NewBook> {
    match read(SAMPLE_CSV.as_bytes(), Format::Csv) {
        Ok(rows) => rows.filter_map(|row| Some(row.ok()?.ok()?.book)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Loads the sample catalog when `repo` holds no book, and returns how many books it loaded.
pub async fn load_if_empty(repo: &dyn BookRepository) -> Result<u64, RepositoryError> {
    if repo.count().await? > 0 {
        return Ok(0);
    }
    let loaded = repo.create_many(&books()).await?;
    tracing::info!(
        books = loaded,
        "loaded the sample catalog into the empty catalog"
    );
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_row_is_valid_and_the_classics_are_there() {
        let rows: Vec<_> = read(SAMPLE_CSV.as_bytes(), Format::Csv)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let rejected: Vec<_> = rows.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(rejected.is_empty(), "{rejected:?}");
        let books = books();
        assert!(books.len() >= 200, "only {} books", books.len());
        for (title, author) in [
            ("Pride and Prejudice", "Jane Austen"),
            ("Frankenstein", "Mary Shelley"),
            ("Moby-Dick", "Herman Melville"),
            ("Dracula", "Bram Stoker"),
            ("Jane Eyre", "Charlotte Brontë"),
        ] {
            assert!(
                books
                    .iter()
                    .any(|b| b.title() == title && b.author() == author),
                "{title} by {author} is missing"
            );
        }
        for book in &books {
            assert!(
                !book.description().is_empty(),
                "{} has no description",
                book.title()
            );
        }
    }
}
