//! Loading catalog rows into a repository in batched transactions, reading and validating on a
//! blocking thread while the previous batch is being written. Books are matched by ISBN, so that
//! importing a file again updates its books instead of adding them twice.

use std::sync::Arc;

use bookstore_domain::{BookRepository, Imported, NewBook, RepositoryError};
use tokio::sync::mpsc;

use crate::read::{ReadError, Rejected, Rows};

/// How many rejected rows an import keeps to report; the rest are only counted.
pub const MAX_REPORTED_REJECTIONS: usize = 1_000;

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Books added.
    pub created: u64,
    /// Books whose ISBN the catalog had, replaced by the file's fields.
    pub updated: u64,
    /// Books whose ISBN the catalog had with exactly the file's fields.
    pub unchanged: u64,
    pub rejected_count: u64,
    /// The first [`MAX_REPORTED_REJECTIONS`] rejected rows, in file order.
    pub rejected: Vec<Rejected>,
}

impl ImportReport {
    /// Valid rows: created, updated or unchanged.
    pub fn imported(&self) -> u64 {
        self.created + self.updated + self.unchanged
    }
}

/// What became of one line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome {
    Imported(Imported),
    Rejected(String),
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

/// A batch: its books, and every line it covers (rejected ones too), in file order.
struct Batch {
    books: Vec<NewBook>,
    lines: Vec<Line>,
}

enum Line {
    /// The line of the batch's next book.
    Book(u64),
    Rejected(Rejected),
}

enum Message {
    Batch(Batch),
    Failed(ReadError),
}

/// Imports `rows` into `repo`, `batch_size` books per transaction, calling `progress` with the
/// number of valid rows imported so far after each batch, and `on_line` with what became of
/// every line, in file order. Rejected rows do not stop the import.
pub async fn import(
    repo: Arc<dyn BookRepository>,
    rows: Rows,
    batch_size: usize,
    mut progress: impl FnMut(u64),
    mut on_line: impl FnMut(u64, &LineOutcome),
) -> Result<ImportReport, ImportError> {
    let batch_size = batch_size.max(1);
    let (tx, mut rx) = mpsc::channel::<Message>(4);
    let reader = tokio::task::spawn_blocking(move || {
        let new_batch = || Batch {
            books: Vec::with_capacity(batch_size),
            lines: Vec::with_capacity(batch_size),
        };
        let mut batch = new_batch();
        for row in rows {
            match row {
                Ok(Ok(row)) => {
                    batch.lines.push(Line::Book(row.line));
                    batch.books.push(row.book);
                }
                Ok(Err(rejected)) => batch.lines.push(Line::Rejected(rejected)),
                Err(err) => {
                    // The batch being read is not imported: the import stops here.
                    let _ = tx.blocking_send(Message::Failed(err));
                    return;
                }
            }
            // A batch also ends after `batch_size` lines, so that a file of rejected rows is
            // reported as it is read, never held whole.
            if (batch.books.len() >= batch_size || batch.lines.len() >= batch_size)
                && tx
                    .blocking_send(Message::Batch(std::mem::replace(&mut batch, new_batch())))
                    .is_err()
            {
                return;
            }
        }
        if !batch.lines.is_empty() {
            let _ = tx.blocking_send(Message::Batch(batch));
        }
    });

    let mut report = ImportReport::default();
    while let Some(message) = rx.recv().await {
        match message {
            Message::Batch(Batch { books, lines }) => {
                let mut outcomes = if books.is_empty() {
                    Vec::new()
                } else {
                    repo.import_many(&books)
                        .await
                        .map_err(|source| ImportError::Store {
                            imported: report.imported(),
                            source,
                        })?
                }
                .into_iter();
                for line in lines {
                    match line {
                        Line::Book(line) => {
                            let Some(outcome) = outcomes.next() else {
                                return Err(ImportError::Store {
                                    imported: report.imported(),
                                    source: RepositoryError::Internal(
                                        "the catalog answered for fewer books than it was given"
                                            .into(),
                                    ),
                                });
                            };
                            match outcome {
                                Imported::Created(_) => report.created += 1,
                                Imported::Updated(_) => report.updated += 1,
                                Imported::Unchanged(_) => report.unchanged += 1,
                            }
                            on_line(line, &LineOutcome::Imported(outcome));
                        }
                        Line::Rejected(rejected) => {
                            report.rejected_count += 1;
                            on_line(
                                rejected.line,
                                &LineOutcome::Rejected(rejected.reason.clone()),
                            );
                            if report.rejected.len() < MAX_REPORTED_REJECTIONS {
                                report.rejected.push(rejected);
                            }
                        }
                    }
                }
                progress(report.imported());
            }
            Message::Failed(source) => {
                return Err(ImportError::Read {
                    imported: report.imported(),
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
        async fn create_many(&self, _: &[NewBook]) -> Result<u64, RepositoryError> {
            Err(RepositoryError::Internal("not used".into()))
        }
        async fn import_many(&self, books: &[NewBook]) -> Result<Vec<Imported>, RepositoryError> {
            let mut batches = self.0.lock().unwrap();
            let first = batches.iter().sum::<usize>() as i64;
            batches.push(books.len());
            // Every third book is one the catalog had.
            Ok((0..books.len() as i64)
                .map(|i| {
                    let id = BookId(first + i + 1);
                    if (first + i) % 3 == 2 {
                        Imported::Updated(id)
                    } else {
                        Imported::Created(id)
                    }
                })
                .collect())
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
        let mut per_line = Vec::new();
        let report = import(
            recorder.clone(),
            read(std::io::Cursor::new(csv), Format::Csv).unwrap(),
            10,
            |n| seen.push(n),
            |line, outcome| per_line.push((line, outcome.clone())),
        )
        .await
        .unwrap();
        assert_eq!(report.imported(), 22);
        assert_eq!(
            (report.created, report.updated, report.unchanged),
            (15, 7, 0)
        );
        assert_eq!(report.rejected_count, 3);
        let lines: Vec<u64> = report.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![5, 15, 25]);
        // A batch ends at 10 lines, rejected ones included.
        assert_eq!(*recorder.0.lock().unwrap(), vec![9, 9, 4]);
        assert_eq!(seen, vec![9, 18, 22]);
        // Every line of the file (2 to 26, after the header) is reported once, in file order.
        assert_eq!(
            per_line.iter().map(|(line, _)| *line).collect::<Vec<_>>(),
            (2..=26).collect::<Vec<u64>>()
        );
        assert!(matches!(per_line[3].1, LineOutcome::Rejected(_)), "line 5");
        assert_eq!(
            per_line[0].1,
            LineOutcome::Imported(Imported::Created(BookId(1)))
        );
        assert_eq!(
            per_line[2].1,
            LineOutcome::Imported(Imported::Updated(BookId(3)))
        );
    }
}
