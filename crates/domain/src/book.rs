//! Books and the rules that a new book must follow, whatever way it comes in (API or import).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::date::PublishedDate;
use crate::isbn::Isbn;

/// Longest title or author, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;

/// The identifier a store gives a book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BookId(pub i64);

impl fmt::Display for BookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A book in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    pub id: BookId,
    pub title: String,
    pub author: String,
    /// First publication date, as precise as it is known: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
    pub published_at: PublishedDate,
    pub description: String,
    /// When the book entered this catalog (UTC, RFC 3339).
    pub created_at: DateTime<Utc>,
    /// Its ISBN-13, when the catalog knows it; absent from the JSON when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isbn: Option<Isbn>,
}

/// A book that passed validation and can be stored. Its fields can only be set through
/// [`NewBook::parse`], so every stored book follows the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBook {
    title: String,
    author: String,
    published_at: PublishedDate,
    description: String,
    isbn: Option<Isbn>,
}

impl NewBook {
    pub fn title(&self) -> &str {
        &self.title
    }
    pub fn author(&self) -> &str {
        &self.author
    }
    pub fn published_at(&self) -> PublishedDate {
        self.published_at
    }
    pub fn description(&self) -> &str {
        &self.description
    }
    pub fn isbn(&self) -> Option<&Isbn> {
        self.isbn.as_ref()
    }

    /// Whether `book` has exactly these fields (its id and creation time aside).
    pub fn describes(&self, book: &Book) -> bool {
        self.title == book.title
            && self.author == book.author
            && self.published_at == book.published_at
            && self.description == book.description
            && self.isbn == book.isbn
    }

    /// Checks every field of `input` and returns either a valid book or every field's error.
    pub fn parse(input: NewBookInput) -> Result<Self, ValidationError> {
        let mut errors = FieldErrors::default();
        let title = required_name(&mut errors, "title", input.title);
        let author = required_name(&mut errors, "author", input.author);
        let published_at = match input.published_at.as_deref().map(str::trim) {
            None | Some("") => {
                errors.add("published_at", "is required (YYYY, YYYY-MM or YYYY-MM-DD)");
                None
            }
            Some(raw) => match PublishedDate::parse(raw) {
                Some(date) => Some(date),
                None => {
                    errors.add(
                        "published_at",
                        "must be a real date written YYYY-MM-DD, or a year (YYYY) or month (YYYY-MM) when the day is not known",
                    );
                    None
                }
            },
        };
        // Line ends written `\r\n` (files from Windows) are kept as `\n`.
        let description = input
            .description
            .unwrap_or_default()
            .trim()
            .replace("\r\n", "\n");
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            errors.add(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            );
        } else if description
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            errors.add(
                "description",
                "must not contain control characters other than newline and tab",
            );
        }
        let isbn = match input.isbn.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => match Isbn::parse(raw) {
                Ok(isbn) => Some(isbn),
                Err(problem) => {
                    errors.add("isbn", problem);
                    None
                }
            },
        };
        match (title, author, published_at) {
            (Some(title), Some(author), Some(published_at)) if errors.is_empty() => Ok(Self {
                title,
                author,
                published_at,
                description,
                isbn,
            }),
            _ => Err(ValidationError(errors)),
        }
    }
}

fn required_name(errors: &mut FieldErrors, field: &str, value: Option<String>) -> Option<String> {
    let value = value.map(|v| v.trim().to_owned()).unwrap_or_default();
    if value.is_empty() {
        errors.add(field, "is required and must not be empty");
        None
    } else if value.chars().count() > MAX_NAME_CHARS {
        errors.add(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        );
        None
    } else if value.chars().any(char::is_control) {
        errors.add(field, "must not contain control characters");
        None
    } else if value.chars().any(is_bidi_control) {
        errors.add(
            field,
            "must not contain bidi embedding, override or isolate characters (U+202A to U+202E, U+2066 to U+2069)",
        );
        None
    } else {
        Some(value)
    }
}

/// The bidi embedding, override and isolate controls: in a title or an author they could make
/// the page show text in another order than it is stored (and hide what follows them).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A book as a client or a file sent it, before validation. Every field is optional here so that
/// a missing field is reported like any other invalid one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBookInput {
    pub title: Option<String>,
    pub author: Option<String>,
    pub published_at: Option<String>,
    pub description: Option<String>,
    /// ISBN-10 or ISBN-13; optional.
    #[serde(default)]
    pub isbn: Option<String>,
}

impl NewBookInput {
    /// The field names a client may send.
    pub const FIELDS: [&'static str; 5] =
        ["title", "author", "published_at", "description", "isbn"];
}

/// Field name to a human message, in field order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_insert_with(|| message.into());
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (field, message)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{field} {message}")?;
        }
        Ok(())
    }
}

/// A book that broke one or more rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid book: {0}")]
pub struct ValidationError(pub FieldErrors);

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn input(title: &str, author: &str, date: &str) -> NewBookInput {
        NewBookInput {
            isbn: None,
            title: Some(title.into()),
            author: Some(author.into()),
            published_at: Some(date.into()),
            description: Some("A novel.".into()),
        }
    }

    #[test]
    fn a_valid_book_is_trimmed_and_kept() {
        let book = NewBook::parse(input("  Emma ", "Jane Austen", "1815-12-23")).unwrap();
        assert_eq!(book.title(), "Emma");
        assert_eq!(book.published_at().to_string(), "1815-12-23");
    }

    #[test]
    fn every_broken_field_is_reported() {
        let err = NewBook::parse(NewBookInput {
            isbn: None,
            title: Some("   ".into()),
            author: Some("x".repeat(256)),
            published_at: Some("2023-02-29".into()),
            description: Some("d".repeat(10_001)),
        })
        .unwrap_err();
        for field in ["title", "author", "published_at", "description"] {
            assert!(err.0.get(field).is_some(), "{field} not reported: {err}");
        }
    }

    #[test]
    fn names_are_counted_in_characters_not_bytes() {
        assert!(NewBook::parse(input(&"é".repeat(255), "A", "1900-01-01")).is_ok());
        assert!(NewBook::parse(input(&"é".repeat(256), "A", "1900-01-01")).is_err());
    }

    #[test]
    fn control_characters_and_bidi_overrides_are_refused() {
        let with = |title: &str, author: &str, description: &str| {
            NewBook::parse(NewBookInput {
                description: Some(description.into()),
                ..input(title, author, "1900-01-01")
            })
        };
        for description in ["a\u{0}b", "\u{1b}[31mred", "bell\u{7}", "x\u{85}y"] {
            let err = with("T", "A", description).unwrap_err();
            assert!(err.0.get("description").is_some(), "{description:?}");
        }
        let ok = with("T", "A", "Line one\r\nline two\n\tindented").unwrap();
        assert_eq!(ok.description(), "Line one\nline two\n\tindented");
        for bidi in ['\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}'] {
            let text = format!("Evil{bidi}txt.exe");
            assert!(with(&text, "A", "").unwrap_err().0.get("title").is_some());
            assert!(with("T", &text, "").unwrap_err().0.get("author").is_some());
        }
        // Right-to-left text itself is welcome.
        assert!(with("\u{5e9}\u{5dc}\u{5d5}\u{5dd}", "\u{627}\u{644}", "").is_ok());
    }

    #[test]
    fn missing_fields_are_reported() {
        let err = NewBook::parse(NewBookInput::default()).unwrap_err();
        assert_eq!(err.0.iter().count(), 3, "{err}");
        assert!(err.0.get("description").is_none());
    }

    #[test]
    fn dates_must_be_strict_and_real() {
        for ok in ["1813-01-28", "2024-02-29", "0999-12-31", "1813", "1813-01"] {
            assert!(PublishedDate::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "2023-02-29",
            "1813-1-28",
            "1813/01/28",
            "18130128",
            "1813-01-28T00:00:00",
            "+1813-01-28",
            "1813-13-01",
            "",
            "abcd-ef-gh",
        ] {
            assert!(PublishedDate::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_book_serializes_with_plain_dates() {
        let book = Book {
            isbn: None,
            id: BookId(7),
            title: "Dracula".into(),
            author: "Bram Stoker".into(),
            published_at: NaiveDate::from_ymd_opt(1897, 5, 26).unwrap().into(),
            description: String::new(),
            created_at: DateTime::from_timestamp(0, 0).unwrap(),
        };
        let json = serde_json::to_value(&book).unwrap();
        assert_eq!(json["published_at"], "1897-05-26");
        assert_eq!(json["id"], 7);
        assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
    }
}
