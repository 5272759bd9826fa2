//! How an event becomes a log message: in this project's format (version 1), or in the
//! tutorial's (version 0), which a web service writes during a migration from the tutorial's
//! services so that their trend and recommendation consumers can still read the search topic
//! (`events.format`). Encoding only; the publishers send what it gives.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BOOK_SEARCHED, Event, ResultBook, ResultDetails, SearchEvent};

/// The format events are written in (`events.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// Version 1 (`docs/events.md`): every event, a JSON object keyed by its reader (or book),
    /// with the [`TYPE_HEADER`](super::TYPE_HEADER) and [`VERSION_HEADER`](super::VERSION_HEADER)
    /// headers.
    #[default]
    V1,
    /// The tutorial's format: searches only. Key `<query>:<uid>`, or `<query>:` without a user
    /// (what the tutorial's API writes; a bare `<query>` would make a query holding a `:` read as
    /// a query and a user); value the JSON array of the result books, each with exactly the
    /// tutorial's fields (`id`, `title`, `author`, `published_at`, `description`, `created_at`
    /// as `YYYY-MM-DD HH:MM:SS`, UTC); no type or version header. The client, the offset and
    /// the event id are not written. `published_at` is written as precisely as it is known
    /// (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`), `null` when unknown. Every other event has no message
    /// in it ([`NotInFormat`]).
    Tutorial,
}

impl WireFormat {
    pub const ALL: [WireFormat; 2] = [WireFormat::V1, WireFormat::Tutorial];

    /// Its name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            WireFormat::V1 => "v1",
            WireFormat::Tutorial => "tutorial",
        }
    }

    /// The message of `event` in this format, or why it has none.
    pub fn encode(self, event: &Event) -> Result<WireMessage<'_>, NotInFormat> {
        match self {
            WireFormat::V1 => Ok(WireMessage {
                key: event.key(),
                value: event.to_json(),
                typed: true,
            }),
            WireFormat::Tutorial => match event {
                Event::BookSearched(search) => tutorial_search(search),
                other => Err(NotInFormat {
                    kind: other.kind(),
                    format: self,
                    reason: "the tutorial's services have no such event",
                }),
            },
        }
    }

    /// Whether a publisher writing this format may send events stored in their version 1 form
    /// as they are (only a version 1 publisher may); the refusal's reason when it may not.
    pub fn takes_stored(self) -> Result<(), String> {
        match self {
            WireFormat::V1 => Ok(()),
            other => Err(format!(
                "a {other} publisher does not take events stored in version 1"
            )),
        }
    }
}

impl std::fmt::Display for WireFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event as a log message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireMessage<'a> {
    pub key: Cow<'a, str>,
    pub value: Vec<u8>,
    /// Whether the message carries the [`TYPE_HEADER`](super::TYPE_HEADER) and
    /// [`VERSION_HEADER`](super::VERSION_HEADER) headers (version 1 does; the tutorial's format
    /// does not).
    pub typed: bool,
}

/// An event that a format cannot carry: the publisher leaves it out (and counts it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} is not written in the {format} format: {reason}")]
pub struct NotInFormat {
    /// The event's type.
    pub kind: &'static str,
    pub format: WireFormat,
    pub reason: &'static str,
}

/// A book as the tutorial's producer writes it, its fields in the tutorial's order.
#[derive(Serialize)]
struct TutorialBook<'a> {
    id: i64,
    title: &'a str,
    author: &'a str,
    published_at: Option<String>,
    description: &'a str,
    created_at: String,
}

/// The tutorial's `created_at`: MySQL's `DATETIME` as its producer prints it.
fn tutorial_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn tutorial_search(search: &SearchEvent) -> Result<WireMessage<'_>, NotInFormat> {
    let refuse = |reason| NotInFormat {
        kind: BOOK_SEARCHED,
        format: WireFormat::Tutorial,
        reason,
    };
    if search.query_normalized.trim().is_empty() {
        return Err(refuse("the tutorial publishes no search without a query"));
    }
    let key = match search.user_id.as_deref() {
        // A reader's id after the last `:` is how every reader of the format finds it.
        Some(user) if user.contains(':') => {
            return Err(refuse(
                "the user id holds a `:`, which the key cannot carry",
            ));
        }
        Some(user) => format!("{}:{user}", search.query),
        None => format!("{}:", search.query),
    };
    // Without the details (a producer other than the web service), a book is written with an
    // empty description and the search's time as its `created_at`, so that the shape holds.
    let missing = ResultDetails {
        description: String::new(),
        created_at: search.occurred_at,
    };
    let books: Vec<TutorialBook<'_>> = search
        .results
        .iter()
        .enumerate()
        .map(|(i, book): (usize, &ResultBook)| {
            let details = search.result_details.get(i).unwrap_or(&missing);
            TutorialBook {
                id: book.id,
                title: &book.title,
                author: &book.author,
                published_at: book.published_at.map(|d| d.to_string()),
                description: &details.description,
                created_at: tutorial_time(details.created_at),
            }
        })
        .collect();
    // Serializing plain data with string keys into a Vec cannot fail.
    let value = serde_json::to_vec(&books).unwrap_or_default();
    Ok(WireMessage {
        key: Cow::Owned(key),
        value,
        typed: false,
    })
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use uuid::Uuid;

    use super::super::{
        BOOK_VIEWED, BookEvent, BookViewedEvent, CatalogBook, DecodeError, LEGACY_VERSION,
        PublishedDate, READER_FORGOTTEN, ReaderForgottenEvent, ViewSource, decode,
    };
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn books() -> Vec<(ResultBook, ResultDetails)> {
        vec![
            (
                ResultBook {
                    id: 7,
                    title: "Pride and Prejudice".into(),
                    author: "Jane Austen".into(),
                    published_at: NaiveDate::from_ymd_opt(1813, 1, 28).map(Into::into),
                },
                ResultDetails {
                    description: "A novel of manners: \"quoted\", ünïcode.".into(),
                    created_at: at("2026-01-02T03:04:05.678Z"),
                },
            ),
            (
                ResultBook {
                    id: 8,
                    title: "Beowulf".into(),
                    author: "Unknown".into(),
                    published_at: Some(PublishedDate::Year(1000)),
                },
                ResultDetails {
                    description: String::new(),
                    created_at: at("2026-12-31T23:59:59Z"),
                },
            ),
        ]
    }

    fn search(user: Option<&str>, query: &str) -> SearchEvent {
        let (results, details) = books().into_iter().unzip();
        SearchEvent::new(
            Uuid::now_v7(),
            at("2026-11-26T10:00:00Z"),
            user.map(str::to_owned),
            query,
            5,
            results,
        )
        .with_details(details)
        .with_client(Some("c-0123456789abcdef".into()))
    }

    fn tutorial(event: &SearchEvent) -> WireMessage<'static> {
        let event = Event::BookSearched(event.clone());
        let message = WireFormat::Tutorial.encode(&event).unwrap();
        WireMessage {
            key: Cow::Owned(message.key.into_owned()),
            value: message.value,
            typed: message.typed,
        }
    }

    #[test]
    fn version_1_is_the_events_own_encoding_with_headers() {
        let sent = search(Some("u1"), "Rust");
        let event = Event::BookSearched(sent.clone());
        let message = WireFormat::V1.encode(&event).unwrap();
        assert_eq!(message.key, event.key());
        assert_eq!(message.value, event.to_json());
        assert!(message.typed);
        // Version 1 carries no details.
        let read = decode(Some(message.key.as_bytes()), &message.value, None).unwrap();
        let expected = SearchEvent {
            result_details: Vec::new(),
            ..sent
        };
        assert_eq!(read, Event::BookSearched(expected));
        for e in [
            Event::BookViewed(BookViewedEvent::now(
                None,
                None,
                books()[0].0.clone(),
                ViewSource::Direct,
                None,
                None,
            )),
            Event::ReaderForgotten(ReaderForgottenEvent::now("u1")),
        ] {
            assert!(WireFormat::V1.encode(&e).is_ok_and(|m| m.typed));
        }
    }

    #[test]
    fn a_search_is_keyed_by_query_and_user_and_valued_with_the_tutorials_books() {
        let message = tutorial(&search(
            Some("0b1c7a52-0c4e-4c1e-9d0e-9a1f0e2c3d4e"),
            "  Pride ",
        ));
        assert_eq!(message.key, "Pride:0b1c7a52-0c4e-4c1e-9d0e-9a1f0e2c3d4e");
        assert!(!message.typed);
        let value: serde_json::Value = serde_json::from_slice(&message.value).unwrap();
        assert_eq!(
            value,
            serde_json::json!([
                {
                    "id": 7,
                    "title": "Pride and Prejudice",
                    "author": "Jane Austen",
                    "published_at": "1813-01-28",
                    "description": "A novel of manners: \"quoted\", ünïcode.",
                    "created_at": "2026-01-02 03:04:05"
                },
                {
                    "id": 8,
                    "title": "Beowulf",
                    "author": "Unknown",
                    "published_at": "1000",
                    "description": "",
                    "created_at": "2026-12-31 23:59:59"
                }
            ])
        );
        // In the tutorial's order of fields, as its producer writes them.
        let text = String::from_utf8(message.value).unwrap();
        let order: Vec<usize> = [
            "\"id\"",
            "\"title\"",
            "\"author\"",
            "\"published_at\"",
            "\"description\"",
            "\"created_at\"",
        ]
        .iter()
        .map(|f| text.find(f).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn an_anonymous_search_ends_its_key_with_a_colon_and_leaves_its_client_out() {
        let event = search(None, "Rust");
        let message = tutorial(&event);
        assert_eq!(message.key, "Rust:");
        assert!(!String::from_utf8_lossy(&message.value).contains("c-0123"));
        let no_results = SearchEvent {
            results: Vec::new(),
            result_details: Vec::new(),
            ..event
        };
        assert_eq!(tutorial(&no_results).value, b"[]");
    }

    #[test]
    fn what_is_written_reads_back_as_the_same_search() {
        let ts = at("2026-11-26T10:00:01.5Z");
        for (user, query) in [
            (Some("0b1c7a52-0c4e-4c1e-9d0e-9a1f0e2c3d4e"), "Pride"),
            (None, "Pride"),
            (Some("u1"), "c++: the language: 2nd ed"),
            (None, "std::io"),
            (None, "ends with a colon:"),
            (Some("u1"), "Ｒｕｓｔ  BOOKS"),
        ] {
            let event = search(user, query);
            let message = tutorial(&event);
            let read = decode(Some(message.key.as_bytes()), &message.value, Some(ts)).unwrap();
            let read = read.as_search().unwrap();
            assert_eq!(read.version, LEGACY_VERSION);
            assert_eq!(read.query, event.query, "{query}");
            assert_eq!(read.query_normalized, event.query_normalized);
            assert_eq!(read.user_id, event.user_id, "{query}");
            assert_eq!(read.results, event.results);
            assert_eq!(read.occurred_at, ts);
            // What the tutorial's format does not carry.
            assert_eq!((read.client_id.as_deref(), read.offset), (None, 0));
            // The same message always gets the same id.
            let again = decode(Some(message.key.as_bytes()), &message.value, Some(ts)).unwrap();
            assert_eq!(again.as_search().unwrap().id, read.id);
        }
    }

    #[test]
    fn books_without_details_keep_the_shape() {
        let event = SearchEvent {
            result_details: Vec::new(),
            ..search(None, "Rust")
        };
        let value: serde_json::Value = serde_json::from_slice(&tutorial(&event).value).unwrap();
        assert_eq!(value[1]["description"], "");
        assert_eq!(value[1]["created_at"], "2026-11-26 10:00:00");
        let unknown_date = SearchEvent {
            results: vec![ResultBook {
                published_at: None,
                ..books()[0].0.clone()
            }],
            ..event
        };
        let value: serde_json::Value =
            serde_json::from_slice(&tutorial(&unknown_date).value).unwrap();
        assert!(value[0]["published_at"].is_null());
        let read = decode(Some(b"Rust:"), &tutorial(&unknown_date).value, None).unwrap();
        assert_eq!(read.as_search().unwrap().results[0].published_at, None);
    }

    #[test]
    fn events_the_tutorial_has_no_message_for_are_refused() {
        let book = CatalogBook {
            id: 1,
            title: "T".into(),
            author: "A".into(),
            published_at: PublishedDate::Year(2000),
            description: String::new(),
            created_at: Utc::now(),
            isbn: None,
        };
        let view = Event::BookViewed(BookViewedEvent::now(
            Some("u1".into()),
            None,
            books()[0].0.clone(),
            ViewSource::Search,
            Some(0),
            None,
        ));
        let forgotten = Event::ReaderForgotten(ReaderForgottenEvent::now("u1"));
        assert_eq!(
            WireFormat::Tutorial.encode(&view).unwrap_err().kind,
            BOOK_VIEWED
        );
        assert_eq!(
            WireFormat::Tutorial.encode(&forgotten).unwrap_err().kind,
            READER_FORGOTTEN
        );
        let created = Event::BookCreated(BookEvent::new(Uuid::now_v7(), Utc::now(), book));
        let deleted = Event::deleted(crate::BookId(1));
        for event in [created, deleted] {
            let refused = WireFormat::Tutorial.encode(&event).unwrap_err();
            assert_eq!(refused.kind, event.kind());
            assert_eq!(refused.format, WireFormat::Tutorial);
        }
        let message = WireFormat::Tutorial.encode(&view).unwrap_err().to_string();
        assert!(
            message.contains("book.viewed") && message.contains("tutorial"),
            "{message}"
        );
    }

    #[test]
    fn searches_the_key_cannot_carry_are_refused() {
        // A query of only spaces (which no web service publishes) would be read as none.
        let blank = SearchEvent::new(Uuid::now_v7(), Utc::now(), None, " \u{3000} ", 0, vec![]);
        let refused = WireFormat::Tutorial
            .encode(&Event::BookSearched(blank))
            .unwrap_err();
        assert_eq!(refused.kind, BOOK_SEARCHED);
        assert_eq!(
            decode(Some(b" :"), b"[]", None),
            Err(DecodeError::EmptyQuery),
            "what it would have written"
        );
        // A user id holding a `:` would be read as part of the query.
        let colon_user = search(Some("a:b"), "Rust");
        assert!(
            WireFormat::Tutorial
                .encode(&Event::BookSearched(colon_user))
                .is_err()
        );
    }

    #[test]
    fn the_format_is_named_in_lowercase() {
        for format in WireFormat::ALL {
            let json = serde_json::to_string(&format).unwrap();
            assert_eq!(json, format!("\"{format}\""));
            assert_eq!(serde_json::from_str::<WireFormat>(&json).unwrap(), format);
        }
        assert_eq!(WireFormat::default(), WireFormat::V1);
        assert!(serde_json::from_str::<WireFormat>("\"v0\"").is_err());
    }
}
