//! Loading catalog rows into a repository in batched transactions, reading and validating on a
//! blocking thread while the previous batch is being written.

use std::sync::Arc;

use bookstore_domain::{BookRepository, NewBook, RepositoryError};
use tokio::sync::mpsc;

use crate::read::{ReadError, Rejected, Rows};

/// How many rejected rows an import keeps to report; the rest are only counted.
pub const MAX_REPORTED_REJECTIONS: usize = 1_000;

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub imported: u64,
    pub rejected_count: u64,
    /// The first [`MAX_REPORTED_REJECTIONS`] rejected rows, in file order.
    pub rejected: Vec<Rejected>,
}

/// Why an import stopped early. Batches committed before the failure stay imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading stopped after {imported} books were imported")]
    Read {
        imported: u64,
        #[source]
        source: ReadError,
    },
    #[error("the database failed after {imported} books were imported")]
    Store {
        imported: u64,
        #[source]
        source: RepositoryError,
    },
}

enum Message {
    Batch(Vec<NewBook>),
    Rejected(Rejected),
    Failed(ReadError),
}

/// Imports `rows` into `repo`, `batch_size` books per transaction, calling `progress` with the
/// number of books imported so far after each batch. Rejected rows do not stop the import.
pub async fn import(
    repo: Arc<dyn BookRepository>,
    rows: Rows,
    batch_size: usize,
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, ImportError> {
    let batch_size = batch_size.max(1);
    let (tx, mut rx) = mpsc::channel::<Message>(4);
    let reader = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(batch_size);
        for row in rows {
            let message = match row {
                Ok(Ok(book)) => {
                    batch.push(book);
                    if batch.len() < batch_size {
                        continue;
                    }
                    Message::Batch(std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(batch_size),
                    ))
                }
                Ok(Err(rejected)) => Message::Rejected(rejected),
                Err(err) => Message::Failed(err),
            };
            if tx.blocking_send(message).is_err() {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(Message::Batch(batch));
        }
    });

    let mut report = ImportReport::default();
    while let Some(message) = rx.recv().await {
        match message {
            Message::Batch(books) => {
                report.imported +=
                    repo.create_many(&books)
                        .await
                        .map_err(|source| ImportError::Store {
                            imported: report.imported,
                            source,
                        })?;
                progress(report.imported);
            }
            Message::Rejected(rejected) => {
                report.rejected_count += 1;
                if report.rejected.len() < MAX_REPORTED_REJECTIONS {
                    report.rejected.push(rejected);
                }
            }
            Message::Failed(source) => {
                return Err(ImportError::Read {
                    imported: report.imported,
                    source,
                });
            }
        }
    }
    // The reader ends by itself once it has sent everything; a panic in it is a bug.
    if let Err(err) = reader.await {
        tracing::error!(error = %err, "the catalog reader thread failed");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bookstore_domain::{Book, BookId, BookQuery, SearchPage};

    use super::*;
    use crate::read::{Format, read};

    /// Records the batches it is given.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<usize>>);

    #[async_trait]
    impl BookRepository for Recorder {
        async fn search(&self, _: &BookQuery) -> Result<SearchPage, RepositoryError> {
            Ok(SearchPage::default())
        }
        async fn get(&self, _: BookId) -> Result<Option<Book>, RepositoryError> {
            Ok(None)
        }
        async fn create(&self, _: &NewBook) -> Result<Book, RepositoryError> {
            Err(RepositoryError::Internal("not used".into()))
        }
        async fn create_many(&self, books: &[NewBook]) -> Result<u64, RepositoryError> {
            self.0.lock().unwrap().push(books.len());
            Ok(books.len() as u64)
        }
        async fn update(&self, _: BookId, _: &NewBook) -> Result<Option<Book>, RepositoryError> {
            Err(RepositoryError::Internal("not used".into()))
        }
        async fn delete(&self, _: BookId) -> Result<bool, RepositoryError> {
            Err(RepositoryError::Internal("not used".into()))
        }
        async fn count(&self) -> Result<u64, RepositoryError> {
            Ok(0)
        }
        async fn ping(&self) -> Result<(), RepositoryError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn rows_are_written_in_batches_and_rejections_reported() {
        let mut csv = String::from("title,author,published_at\n");
        for i in 0..25 {
            if i % 10 == 3 {
                csv.push_str("bad,row,1900-13-01\n");
            } else {
                csv.push_str(&format!("Book {i},Author,1900-01-01\n"));
            }
        }
        let recorder = Arc::new(Recorder::default());
        let mut seen = Vec::new();
        let report = import(
            recorder.clone(),
            read(std::io::Cursor::new(csv), Format::Csv).unwrap(),
            10,
            |n| seen.push(n),
        )
        .await
        .unwrap();
        assert_eq!(report.imported, 22);
        assert_eq!(report.rejected_count, 3);
        let lines: Vec<u64> = report.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![5, 15, 25]);
        assert_eq!(*recorder.0.lock().unwrap(), vec![10, 10, 2]);
        assert_eq!(seen, vec![10, 20, 22]);
    }
}
