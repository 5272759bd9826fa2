//! Catalog files: reading books from CSV or JSON Lines with the same rules as the API
//! ([`read`]), loading them into a [`BookRepository`](bookstore_domain::BookRepository) in batched
//! transactions ([`import`]), the built-in [`sample`] catalog, and a deterministic synthetic
//! catalog [`generate`]d from word lists for benchmarks.

pub mod generate;
pub mod import;
pub mod read;
pub mod sample;

pub use import::{ImportReport, LineOutcome, import};
pub use read::{Format, ReadError, Rejected};
