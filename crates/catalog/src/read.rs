//! Reading books from files, one validated book (or one rejection with its line number) at a time.

use std::io::Read;
use std::path::Path;

use bookstore_domain::{NewBook, NewBookInput};

/// A catalog file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values with a header row naming the columns
    /// (`title,author,published_at,description`; `description` may be left out).
    Csv,
    /// One JSON object per line, with the same fields as the API.
    Jsonl,
}

impl Format {
    /// The format a file name implies: `.csv`, or `.jsonl` / `.ndjson` / `.json`.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" | "json" => Some(Self::Jsonl),
            _ => None,
        }
    }
}

/// A row that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based line number in the file (for CSV, the line where the record starts).
    pub line: u64,
    pub reason: String,
}

/// A file that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "the CSV header must name the columns title, author, published_at (and optionally description); found: {0}"
    )]
    BadHeader(String),
    #[error("cannot read the file")]
    Io(#[from] std::io::Error),
    #[error("cannot read the CSV file")]
    Csv(#[from] csv::Error),
}

/// Rows of a catalog file: a valid book, a rejected row, or (once, and then the end) an error that
/// stops the reading.
pub type Rows = Box<dyn Iterator<Item = Result<Result<Row, Rejected>, ReadError>> + Send>;

/// A valid book and the line it was read from (for CSV, the line where its record starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub line: u64,
    pub book: NewBook,
}

impl std::ops::Deref for Row {
    type Target = NewBook;

    fn deref(&self) -> &NewBook {
        &self.book
    }
}

/// Every row of `reader` in order: a valid book, a rejected row, or (once, and then the end) an error
/// that stops the reading.
pub fn read(reader: impl Read + Send + 'static, format: Format) -> Result<Rows, ReadError> {
    match format {
        Format::Csv => read_csv(reader),
        Format::Jsonl => Ok(Box::new(read_jsonl(reader))),
    }
}

fn read_csv(reader: impl Read + Send + 'static) -> Result<Rows, ReadError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(reader);
    let headers = csv.headers()?.clone();
    let names: Vec<String> = headers.iter().map(|h| h.trim().to_owned()).collect();
    let known = names
        .iter()
        .all(|n| NewBookInput::FIELDS.contains(&n.as_str()));
    let complete = ["title", "author", "published_at"]
        .iter()
        .all(|required| names.iter().any(|n| n == required));
    if !known || !complete {
        return Err(ReadError::BadHeader(names.join(",")));
    }
    let index = |name: &str| names.iter().position(|n| n == name);
    let (title, author, published_at, description, isbn) = (
        index("title"),
        index("author"),
        index("published_at"),
        index("description"),
        index("isbn"),
    );
    let mut stopped = false;
    Ok(Box::new(csv.into_records().map_while(move |record| {
        if stopped {
            return None;
        }
        let record = match record {
            Ok(record) => record,
            Err(err) if err.is_io_error() => {
                stopped = true;
                return Some(Err(ReadError::Csv(err)));
            }
            Err(err) => {
                let line = err.position().map_or(0, |p| p.line());
                return Some(Ok(Err(Rejected {
                    line,
                    reason: err.to_string(),
                })));
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != names.len() {
            return Some(Ok(Err(Rejected {
                line,
                reason: format!("expected {} fields, found {}", names.len(), record.len()),
            })));
        }
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).map(str::to_owned);
        let input = NewBookInput {
            title: field(title),
            author: field(author),
            published_at: field(published_at),
            description: field(description),
            isbn: field(isbn),
        };
        Some(Ok(NewBook::parse(input)
            .map(|book| Row { line, book })
            .map_err(|err| Rejected {
                line,
                reason: err.0.to_string(),
            })))
    })))
}

fn read_jsonl(
    reader: impl Read + Send + 'static,
) -> impl Iterator<Item = Result<Result<Row, Rejected>, ReadError>> {
    use std::io::BufRead;
    let mut stopped = false;
    std::io::BufReader::with_capacity(1 << 16, reader)
        .lines()
        .enumerate()
        .filter(|(_, line)| !matches!(line, Ok(text) if text.trim().is_empty()))
        .map_while(move |(i, line)| {
            if stopped {
                return None;
            }
            let line_no = i as u64 + 1;
            let line = match line {
                Ok(line) => line,
                Err(err) => {
                    stopped = true;
                    return Some(Err(ReadError::Io(err)));
                }
            };
            Some(Ok(parse_json_line(&line, line_no)))
        })
}

/// One JSON Lines row.
fn parse_json_line(line: &str, line_no: u64) -> Result<Row, Rejected> {
    let input: NewBookInput = serde_json::from_str(line).map_err(|err| Rejected {
        line: line_no,
        reason: format!("invalid JSON: {err}"),
    })?;
    NewBook::parse(input)
        .map(|book| Row {
            line: line_no,
            book,
        })
        .map_err(|err| Rejected {
            line: line_no,
            reason: err.0.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(data: &'static str, format: Format) -> Vec<Result<Row, Rejected>> {
        read(data.as_bytes(), format)
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn csv_rows_are_validated_with_their_line_numbers() {
        let rows = collect(
            "title,author,published_at,description\n\
             Emma,Jane Austen,1815-12-23,\"A matchmaker, meddling.\"\n\
             ,Nobody,1900-01-01,\n\
             \"Two\nLines\",A,1900-02-30,x\n\
             Dracula,Bram Stoker,1897-05-26,Vampires.\n",
            Format::Csv,
        );
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[0].as_ref().unwrap().description(),
            "A matchmaker, meddling."
        );
        assert_eq!(rows[1].as_ref().unwrap_err().line, 3);
        assert!(rows[1].as_ref().unwrap_err().reason.contains("title"));
        let multi = rows[2].as_ref().unwrap_err();
        assert_eq!(multi.line, 4);
        assert!(multi.reason.contains("published_at"), "{multi:?}");
        assert_eq!(rows[3].as_ref().unwrap().title(), "Dracula");
    }

    #[test]
    fn csv_columns_may_come_in_any_order_and_description_is_optional() {
        let rows = collect(
            "author,title,published_at\nMary Shelley,Frankenstein,1818-01-01\n",
            Format::Csv,
        );
        assert_eq!(rows[0].as_ref().unwrap().author(), "Mary Shelley");
    }

    #[test]
    fn a_csv_row_with_the_wrong_number_of_fields_is_rejected() {
        let rows = collect(
            "title,author,published_at\nA,B\nC,D,1900-01-01\n",
            Format::Csv,
        );
        assert_eq!(rows[0].as_ref().unwrap_err().line, 2);
        assert!(rows[1].is_ok());
    }

    #[test]
    fn a_csv_header_with_unknown_or_missing_columns_is_refused() {
        for header in ["title,author\n", "title,author,published_at,price\n", "\n"] {
            assert!(read(header.as_bytes(), Format::Csv).is_err(), "{header:?}");
        }
    }

    #[test]
    fn jsonl_rows_are_validated_and_blank_lines_skipped() {
        let rows = collect(
            "{\"title\":\"Emma\",\"author\":\"Jane Austen\",\"published_at\":\"1815-12-23\"}\n\
             \n\
             {\"title\":\"X\",\"author\":\"Y\",\"published_at\":\"1815-12-23\",\"isbn\":\"1\"}\n\
             not json\n\
             {\"title\":\"\",\"author\":\"Y\",\"published_at\":\"1815-12-23\"}\n",
            Format::Jsonl,
        );
        assert_eq!(rows.len(), 4);
        assert!(rows[0].is_ok());
        let lines: Vec<u64> = rows[1..]
            .iter()
            .map(|r| r.as_ref().unwrap_err().line)
            .collect();
        assert_eq!(lines, vec![3, 4, 5]);
        assert!(rows[1].as_ref().unwrap_err().reason.contains("isbn"));
    }

    #[test]
    fn formats_come_from_file_names() {
        assert_eq!(Format::from_path(Path::new("a/b.CSV")), Some(Format::Csv));
        assert_eq!(
            Format::from_path(Path::new("b.ndjson")),
            Some(Format::Jsonl)
        );
        assert_eq!(Format::from_path(Path::new("b.txt")), None);
    }
}
