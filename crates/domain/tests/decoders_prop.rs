//! Property tests of the event decoders (`bookstore_domain::events::decode`): `book.searched`
//! version 0 (the tutorial's wire format: key `<query>[:<uid>]`, value a JSON array of books) and
//! version 1 (ours), and `book.created` version 1.
//!
//! - whatever the bytes (arbitrary bytes, arbitrary JSON, valid events mutated: fields removed,
//!   wrong types, huge strings and arrays, deep nesting, invalid UTF-8, odd keys and timestamps),
//!   decoding returns `Ok` or `Err` and never panics, and an event it accepts re-encodes to an
//!   event that decodes to the same;
//! - valid events round-trip: encode, then decode, gives the same event.
//!
//! The decoder reads the key, the value and the log timestamp only: the `type` and `version` Kafka
//! headers are informational (for routers and tools), so "odd header values" are odd keys and
//! timestamps here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bookstore_domain::events::{
    BookDeletedEvent, BookEvent, CatalogBook, DecodeError, Event, ResultBook, SearchEvent,
    clean_query, decode, normalize_query,
};
use chrono::{DateTime, NaiveDate, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the RFC 3339 range.
const MIN_SECS: i64 = -62_135_596_800;
const MAX_SECS: i64 = 253_402_300_799;

fn arb_datetime() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        // Around now, where real events are.
        (1_600_000_000i64..2_000_000_000, 0u32..1_000_000_000),
        // Anywhere RFC 3339 can write, with any precision.
        (MIN_SECS..=MAX_SECS, 0u32..1_000_000_000),
        (MIN_SECS..=MAX_SECS, Just(0u32)),
        (
            MIN_SECS..=MAX_SECS,
            (0u32..1000).prop_map(|ms| ms * 1_000_000)
        ),
    ]
    .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).expect("in range"))
}

fn arb_date() -> impl Strategy<Value = NaiveDate> {
    (1i32..=9999, 1u32..=366).prop_filter_map("a real day", |(y, d)| NaiveDate::from_yo_opt(y, d))
}

fn arb_uuid() -> impl Strategy<Value = Uuid> {
    prop_oneof![
        any::<u128>().prop_map(Uuid::from_u128),
        Just(Uuid::nil()),
        Just(Uuid::max()),
    ]
}

/// Text of every kind: plain words, any Unicode (control characters, newlines, quotes,
/// backslashes, surrogate-range escapes cannot occur in a `String`), and long.
fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9 ]{0,24}",
        4 => "(?s).{0,24}",
        1 => "[\"\\\\/\u{0}-\u{1f}\u{7f}\u{2028}\u{2029}\u{feff}]{0,16}",
        1 => "(?s).{200,600}",
    ]
}

/// A query whose cleaned and normalized form is not empty (an empty one is refused by design).
fn arb_query() -> impl Strategy<Value = String> {
    arb_text().prop_filter("normalizes to a word", |q| {
        !normalize_query(&clean_query(q)).is_empty()
    })
}

/// A user or client id as producers write them: at most 64 bytes, no control characters.
fn arb_id() -> impl Strategy<Value = String> {
    prop_oneof![
        arb_uuid().prop_map(|u| u.to_string()),
        "c-[0-9a-f]{16}",
        "[^:\\p{Cc}]{1,16}",
    ]
}

fn arb_result_book() -> impl Strategy<Value = ResultBook> {
    (
        any::<i64>(),
        arb_text(),
        arb_text(),
        proptest::option::of(arb_date()),
    )
        .prop_map(|(id, title, author, published_at)| ResultBook {
            id,
            title,
            author,
            published_at: published_at.map(Into::into),
        })
}

/// A valid version-1 search event as the web service would write it.
fn arb_search_v1() -> impl Strategy<Value = SearchEvent> {
    (
        arb_uuid(),
        arb_datetime(),
        proptest::option::of(arb_id()),
        proptest::option::of(arb_id()),
        arb_query(),
        any::<u64>(),
        prop::collection::vec(arb_result_book(), 0..12),
    )
        .prop_map(|(id, at, user, client, query, offset, results)| {
            SearchEvent::new(id, at, user, &query, offset, results).with_client(client)
        })
}

fn arb_catalog_book() -> impl Strategy<Value = CatalogBook> {
    (
        any::<i64>(),
        arb_text(),
        arb_text(),
        arb_date(),
        arb_text(),
        arb_datetime(),
    )
        .prop_map(
            |(id, title, author, published_at, description, created_at)| CatalogBook {
                isbn: None,
                id,
                title,
                author,
                published_at: published_at.into(),
                description,
                created_at,
            },
        )
}

fn arb_created_v1() -> impl Strategy<Value = BookEvent> {
    (arb_uuid(), arb_datetime(), arb_catalog_book())
        .prop_map(|(id, at, book)| BookEvent::new(id, at, book))
}

/// A search in the tutorial's format: what its producer put in the key and the value.
#[derive(Debug, Clone)]
struct LegacySearch {
    query: String,
    /// Never empty, never contains `:`.
    user: Option<String>,
    /// An anonymous key with a trailing `:` (the tutorial's API searches).
    trailing_colon: bool,
    books: Vec<LegacyBook>,
}

#[derive(Debug, Clone)]
struct LegacyBook {
    id: i64,
    title: String,
    author: String,
    /// What the tutorial wrote: `YYYY-MM-DD`, a date-time, or nothing.
    published_at: Option<(NaiveDate, &'static str)>,
    description: Option<String>,
}

impl LegacySearch {
    fn key(&self) -> String {
        match &self.user {
            Some(user) => format!("{}:{user}", self.query),
            // A bare key must not contain `:`, or its last part would read as a user.
            None if self.trailing_colon || self.query.contains(':') => format!("{}:", self.query),
            None => self.query.clone(),
        }
    }

    fn value(&self) -> Value {
        Value::Array(
            self.books
                .iter()
                .map(|b| {
                    let mut book = json!({"id": b.id, "title": b.title, "author": b.author});
                    if let Some((date, suffix)) = &b.published_at {
                        book["published_at"] =
                            format!("{}{suffix}", date.format("%Y-%m-%d")).into();
                    }
                    if let Some(description) = &b.description {
                        book["description"] = description.clone().into();
                        book["created_at"] = "2024-05-01 10:00:00".into();
                    }
                    book
                })
                .collect(),
        )
    }

    /// The event a reader must make of it.
    fn expected(&self, timestamp: Option<DateTime<Utc>>) -> SearchEvent {
        SearchEvent {
            id: Uuid::nil(), // compared apart
            version: 0,
            occurred_at: timestamp.unwrap_or(DateTime::UNIX_EPOCH),
            user_id: self.user.clone(),
            client_id: None,
            query: clean_query(&self.query),
            query_normalized: normalize_query(&clean_query(&self.query)),
            offset: 0,
            results: self
                .books
                .iter()
                .map(|b| ResultBook {
                    id: b.id,
                    title: b.title.clone(),
                    author: b.author.clone(),
                    published_at: b.published_at.map(|(d, _)| d).map(Into::into),
                })
                .collect(),
            result_details: Vec::new(),
        }
    }
}

fn arb_legacy_book() -> impl Strategy<Value = LegacyBook> {
    (
        any::<i64>(),
        arb_text(),
        arb_text(),
        proptest::option::of((
            (1000i32..=9999, 1u32..=366)
                .prop_filter_map("a real day", |(y, d)| NaiveDate::from_yo_opt(y, d)),
            prop_oneof![Just(""), Just(" 00:00:00"), Just("T10:11:12Z")],
        )),
        proptest::option::of(arb_text()),
    )
        .prop_map(
            |(id, title, author, published_at, description)| LegacyBook {
                id,
                title,
                author,
                published_at,
                description,
            },
        )
}

fn arb_legacy() -> impl Strategy<Value = LegacySearch> {
    (
        arb_query(),
        proptest::option::of("[^:\\p{Cc}]{1,16}"),
        any::<bool>(),
        prop::collection::vec(arb_legacy_book(), 0..10),
    )
        .prop_map(|(query, user, trailing_colon, books)| LegacySearch {
            query,
            user,
            trailing_colon,
            books,
        })
}

/// Any JSON value, a few levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        arb_text().prop_map(Value::String),
        Just(json!("book.searched")),
        Just(json!("book.created")),
        Just(json!("1965-08-01")),
        Just(json!("2026-11-27T09:14:03.512Z")),
        Just(json!("0193a5f2-6c1e-7d3a-9b40-2f61c8e0a7b5")),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_field_name(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Field names the decoders look for, and others.
fn arb_field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "id", "type", "version", "occurred_at", "user_id", "query", "query_normalized",
            "offset", "results", "book", "title", "author", "published_at", "description",
            "created_at",
        ])
        .prop_map(str::to_owned),
        1 => arb_text(),
    ]
}

/// An object that looks like an event envelope, with any mix of fields.
fn arb_envelope_like() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just(json!("book.searched")),
            Just(json!("book.created")),
            Just(json!("book.sold")),
            Just(json!("")),
            Just(json!("BOOK.SEARCHED")),
            arb_json(),
        ],
        prop_oneof![
            Just(json!(1)),
            Just(json!(0)),
            Just(json!(2)),
            Just(json!(-1)),
            Just(json!(1.0)),
            Just(json!("1")),
            Just(json!(u64::from(u32::MAX) + 1)),
            Just(json!(u64::MAX)),
            Just(Value::Null),
            arb_json(),
        ],
        prop::collection::vec((arb_field_name(), arb_json()), 0..10),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(kind, version, fields, with_kind, with_version)| {
            let mut object = Map::new();
            for (name, value) in fields {
                object.insert(name, value);
            }
            if with_kind {
                object.insert("type".into(), kind);
            }
            if with_version {
                object.insert("version".into(), version);
            }
            Value::Object(object)
        })
}

/// The Kafka key: none, any bytes, UTF-8 text with colons, huge.
fn arb_key() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Some),
        arb_text().prop_map(|t| Some(t.into_bytes())),
        "[a-z :]{0,20}".prop_map(|t| Some(t.into_bytes())),
        prop::sample::select(vec![
            "",
            ":",
            "::",
            " :u",
            "q:",
            ":u",
            "\u{3000}:u",
            "q:\u{0}"
        ])
        .prop_map(|t| Some(t.as_bytes().to_vec())),
        (1usize..200_000).prop_map(|n| Some("k".repeat(n).into_bytes())),
        (1usize..20_000)
            .prop_map(|n| Some(format!("{}:{}", "q".repeat(n), ":".repeat(n)).into_bytes())),
        // Not UTF-8.
        prop::collection::vec(0x80u8..=0xff, 1..8).prop_map(Some),
    ]
}

/// The log timestamp: none, or any instant chrono can hold.
fn arb_timestamp() -> impl Strategy<Value = Option<DateTime<Utc>>> {
    prop_oneof![
        Just(None),
        any::<i64>().prop_map(DateTime::from_timestamp_millis),
        Just(Some(DateTime::<Utc>::MIN_UTC)),
        Just(Some(DateTime::<Utc>::MAX_UTC)),
        arb_datetime().prop_map(Some),
    ]
}

// ---------------------------------------------------------------------------------------------
// Mutations of valid events
// ---------------------------------------------------------------------------------------------

/// What to do to one spot of a valid event.
#[derive(Debug, Clone)]
enum Mutation {
    /// Remove the field (or the array element) there.
    Remove,
    /// Put another value there: usually of the wrong type.
    Replace(Value),
    /// A string of this many characters.
    HugeString(usize, char),
    /// An array of this many elements, each a copy of the value that was there.
    HugeArray(usize),
    /// This many nested arrays (or objects), closed or not.
    Deep {
        depth: usize,
        objects: bool,
        closed: bool,
    },
    /// A number JSON can write but these types cannot hold.
    OddNumber(&'static str),
    /// The field written twice, the second time with this value.
    Duplicate(Value),
    /// A field no decoder knows, added to the object there (must change nothing).
    Unknown(String, Value),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::Remove),
        4 => arb_json().prop_map(Mutation::Replace),
        1 => (1usize..300_000, prop::sample::select(vec!['x', 'é', '東', '"', '\\', '\u{0}', ' ']))
            .prop_map(|(n, c)| Mutation::HugeString(n, c)),
        1 => (1usize..20_000).prop_map(Mutation::HugeArray),
        1 => (1usize..100_000, any::<bool>(), any::<bool>()).prop_map(|(depth, objects, closed)| {
            Mutation::Deep { depth, objects, closed }
        }),
        2 => prop::sample::select(vec![
            "-1", "-0", "0.5", "1e3", "1e400", "-1e400", "18446744073709551616",
            "-9223372036854775809", "4294967296", "99999999999999999999999999999999", "1E-7",
        ])
        .prop_map(Mutation::OddNumber),
        1 => arb_json().prop_map(Mutation::Duplicate),
        2 => (arb_text().prop_filter("a new name", |n| !KNOWN.contains(&n.as_str())), arb_json())
            .prop_map(|(name, value)| Mutation::Unknown(name, value)),
    ]
}

const KNOWN: &[&str] = &[
    "id",
    "type",
    "version",
    "occurred_at",
    "user_id",
    "query",
    "query_normalized",
    "offset",
    "results",
    "book",
    "title",
    "author",
    "published_at",
    "description",
    "created_at",
];

/// A spot in a JSON value: object keys and array indexes from the root.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn spots(value: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                here.push(Step::Key(k.clone()));
                spots(v, here, out);
                here.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                here.push(Step::Index(i));
                spots(v, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn get_mut<'a>(value: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(value, |v, step| match step {
        Step::Key(k) => &mut v[k.as_str()],
        Step::Index(i) => &mut v[*i],
    })
}

/// Placeholder replaced in the encoded bytes, for what a `Value` cannot hold (or should not: a
/// `Value` nested 100,000 deep would overflow the stack when dropped).
const SPLICE: &str = "\u{1}SPLICE\u{1}";

/// Applies `mutation` at the spot `at` picks; returns the bytes, and whether the event must
/// still decode to the same.
fn mutate(valid: &Value, mutation: &Mutation, at: Index) -> (Vec<u8>, bool) {
    let mut all = Vec::new();
    spots(valid, &mut Vec::new(), &mut all);
    let path = at.get(&all).clone();
    let mut value = valid.clone();
    let mut splice: Option<Vec<u8>> = None;
    let mut unchanged = false;
    match mutation {
        Mutation::Remove => match path.split_last() {
            None => value = Value::Null,
            Some((last, parent)) => match (get_mut(&mut value, parent), last) {
                (Value::Object(map), Step::Key(k)) => {
                    map.remove(k);
                }
                (Value::Array(items), Step::Index(i)) => {
                    items.remove(*i);
                }
                _ => unreachable!("a spot is a child of its parent"),
            },
        },
        Mutation::Replace(other) => *get_mut(&mut value, &path) = other.clone(),
        Mutation::HugeString(n, c) => {
            *get_mut(&mut value, &path) = Value::String(std::iter::repeat_n(*c, *n).collect());
        }
        Mutation::HugeArray(n) => {
            let spot = get_mut(&mut value, &path);
            *spot = Value::Array(vec![spot.clone(); *n]);
        }
        Mutation::Deep {
            depth,
            objects,
            closed,
        } => {
            let (open, close): (&[u8], &[u8]) = if *objects {
                (b"{\"a\":", b"}")
            } else {
                (b"[", b"]")
            };
            let mut bytes = open.repeat(*depth);
            bytes.extend_from_slice(b"1");
            if *closed {
                bytes.extend_from_slice(&close.repeat(*depth));
            }
            splice = Some(bytes);
        }
        Mutation::OddNumber(number) => splice = Some(number.as_bytes().to_vec()),
        Mutation::Duplicate(second) => {
            if let Some((Step::Key(k), parent)) = path.split_last() {
                // `{"k": <first>, ...}` becomes `{"k": <first>, ..., "k": <second>}`.
                if let Value::Object(map) = get_mut(&mut value, parent) {
                    map.insert(SPLICE.to_owned(), Value::Null);
                    let mut dup = serde_json::to_vec(&Value::String(k.clone())).unwrap();
                    dup.push(b':');
                    dup.extend(serde_json::to_vec(second).unwrap());
                    let mut encoded = serde_json::to_vec(&value).unwrap();
                    let placeholder = format!("{}:null", serde_json::to_string(SPLICE).unwrap());
                    encoded = replace_once(&encoded, placeholder.as_bytes(), &dup);
                    return (encoded, false);
                }
            }
            *get_mut(&mut value, &path) = second.clone();
        }
        Mutation::Unknown(name, extra) => {
            if let Value::Object(map) = get_mut(&mut value, &path) {
                map.insert(name.clone(), extra.clone());
                unchanged = true;
            }
        }
    }
    if let Some(bytes) = splice {
        *get_mut(&mut value, &path) = Value::String(SPLICE.to_owned());
        let encoded = serde_json::to_vec(&value).unwrap();
        let placeholder = serde_json::to_vec(&Value::String(SPLICE.to_owned())).unwrap();
        return (replace_once(&encoded, &placeholder, &bytes), false);
    }
    (serde_json::to_vec(&value).unwrap(), unchanged)
}

fn replace_once(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let at = haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the placeholder is in the encoding");
    let mut out = haystack[..at].to_vec();
    out.extend_from_slice(with);
    out.extend_from_slice(&haystack[at + needle.len()..]);
    out
}

/// What may happen to the encoded bytes afterwards.
#[derive(Debug, Clone)]
enum ByteDamage {
    None,
    /// Cut after this fraction (per mille) of the bytes.
    Truncate(u16),
    /// Set the byte there to one that is never valid UTF-8 (or starts a broken sequence).
    InvalidUtf8(Index, u8),
    /// Leading and trailing whitespace, a byte-order mark, or trailing garbage.
    Wrap(&'static str, &'static str),
}

fn arb_damage() -> impl Strategy<Value = ByteDamage> {
    prop_oneof![
        6 => Just(ByteDamage::None),
        1 => (0u16..1000).prop_map(ByteDamage::Truncate),
        1 => (any::<Index>(), prop::sample::select(vec![0xff, 0xfe, 0xc0, 0xc3, 0xe2, 0xf0, 0x80]))
            .prop_map(|(i, b)| ByteDamage::InvalidUtf8(i, b)),
        1 => prop::sample::select(vec![
            (" \n\t", " \r\n"),
            ("\u{feff}", ""),
            ("", "x"),
            ("", ","),
            ("", "{}"),
            ("", "\u{0}"),
        ])
        .prop_map(|(a, b)| ByteDamage::Wrap(a, b)),
    ]
}

fn damage(mut bytes: Vec<u8>, damage: &ByteDamage) -> (Vec<u8>, bool) {
    match damage {
        ByteDamage::None => (bytes, false),
        ByteDamage::Truncate(per_mille) => {
            bytes.truncate(bytes.len() * usize::from(*per_mille) / 1000);
            (bytes, true)
        }
        ByteDamage::InvalidUtf8(at, byte) => {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] = *byte;
            }
            (bytes, true)
        }
        ByteDamage::Wrap(before, after) => {
            let mut out = before.as_bytes().to_vec();
            out.extend_from_slice(&bytes);
            out.extend_from_slice(after.as_bytes());
            (out, true)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// Decodes (a panic fails the case, with its minimal input); an accepted event must survive
/// being written again and read back.
fn decode_checked(
    key: Option<&[u8]>,
    value: &[u8],
    timestamp: Option<DateTime<Utc>>,
) -> Result<Result<Event, DecodeError>, TestCaseError> {
    let decoded = decode(key, value, timestamp);
    if let Ok(event) = &decoded {
        check_reencodes(event)?;
    }
    Ok(decoded)
}

/// What a reader accepted is a valid event: its version-1 encoding decodes to the same event.
fn check_reencodes(event: &Event) -> Result<(), TestCaseError> {
    let again = decode(Some(event.key().as_bytes()), &event.to_json(), None);
    let mut expected = event.clone();
    if let Event::BookSearched(search) = &mut expected {
        // A version-0 event is written again as version 1.
        search.version = 1;
    }
    prop_assert_eq!(again, Ok(expected), "an accepted event does not re-encode");
    Ok(())
}

fn deep(depth: usize, open: &str, close: &str) -> Vec<u8> {
    let mut out = open.repeat(depth);
    out.push('1');
    out.push_str(&close.repeat(depth));
    out.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(
        key in arb_key(),
        value in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            // Bytes that start like each version.
            prop::collection::vec(any::<u8>(), 0..256).prop_map(|mut v| { v.insert(0, b'{'); v }),
            prop::collection::vec(any::<u8>(), 0..256).prop_map(|mut v| { v.insert(0, b'['); v }),
            "(?s).{0,64}".prop_map(String::into_bytes),
            "[\\[\\]{}\",:0-9a-z \\\\]{0,64}".prop_map(String::into_bytes),
        ],
        timestamp in arb_timestamp(),
    ) {
        let _accepted_or_refused = decode_checked(key.as_deref(), &value, timestamp)?;
    }

    #[test]
    fn arbitrary_json_never_panics(
        key in arb_key(),
        value in prop_oneof![
            arb_json(),
            arb_envelope_like(),
            prop::collection::vec(arb_envelope_like(), 0..4).prop_map(Value::Array),
            prop::collection::vec(arb_json(), 0..6).prop_map(Value::Array),
        ],
        pretty in any::<bool>(),
        timestamp in arb_timestamp(),
    ) {
        let bytes = if pretty {
            serde_json::to_vec_pretty(&value).unwrap()
        } else {
            serde_json::to_vec(&value).unwrap()
        };
        let _accepted_or_refused = decode_checked(key.as_deref(), &bytes, timestamp)?;
    }

    #[test]
    fn search_v1_round_trips(event in arb_search_v1(), timestamp in arb_timestamp()) {
        // The log timestamp is ignored: a version-1 event carries its own time.
        let decoded = decode(Some(event.key().as_bytes()), &event.to_json(), timestamp);
        prop_assert_eq!(decoded, Ok(Event::BookSearched(event.clone())));
        // Any key, or none: a version-1 reader takes nothing from the key.
        let decoded = decode(None, &event.to_json(), None);
        prop_assert_eq!(decoded, Ok(Event::BookSearched(event)));
    }

    #[test]
    fn book_created_v1_round_trips(event in arb_created_v1(), key in arb_key()) {
        let decoded = decode(Some(event.key().as_bytes()), &event.to_json(), None);
        prop_assert_eq!(&decoded, &Ok(Event::BookCreated(event.clone())));
        // The key comes from `book.id`, never from the message key.
        prop_assert_eq!(decode(key.as_deref(), &event.to_json(), None), decoded);
    }

    #[test]
    fn book_updated_and_deleted_v1_round_trip(event in arb_created_v1(), book_id in any::<i64>()) {
        let updated = Event::BookUpdated(event);
        prop_assert_eq!(decode(None, &updated.to_json(), None), Ok(updated.clone()));
        let deleted = Event::BookDeleted(BookDeletedEvent::new(Uuid::now_v7(), chrono::Utc::now(), book_id));
        prop_assert_eq!(decode(None, &deleted.to_json(), None), Ok(deleted.clone()));
        prop_assert_eq!(deleted.key(), book_id.to_string());
    }

    #[test]
    fn search_v0_is_read_as_the_tutorial_wrote_it(
        search in arb_legacy(),
        timestamp in arb_timestamp(),
        pretty in any::<bool>(),
    ) {
        let key = search.key();
        let value = if pretty {
            serde_json::to_vec_pretty(&search.value()).unwrap()
        } else {
            serde_json::to_vec(&search.value()).unwrap()
        };
        let decoded = decode(Some(key.as_bytes()), &value, timestamp);
        let Ok(Event::BookSearched(event)) = decoded else {
            return Err(TestCaseError::fail(format!("key {key:?}: {decoded:?}")));
        };
        // The same message always gets the same name-based id, whatever its timestamp.
        let again = decode(Some(key.as_bytes()), &value, None).unwrap();
        prop_assert_eq!(again.as_search().map(|e| e.id), Some(event.id));
        prop_assert_eq!(event.id.get_version_num(), 5);
        let expected = search.expected(timestamp);
        prop_assert_eq!(SearchEvent { id: Uuid::nil(), ..event.clone() }, expected);
        check_reencodes(&Event::BookSearched(event))?;
    }
}

proptest! {
    // Big inputs (up to a few hundred KB each): fewer cases.
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn mutated_search_v1_never_panics(
        event in arb_search_v1(),
        mutation in arb_mutation(),
        at in any::<Index>(),
        bytes_damage in arb_damage(),
        key in prop_oneof![3 => Just(None), 1 => arb_key()],
    ) {
        let valid: Value = serde_json::from_slice(&event.to_json()).unwrap();
        let (bytes, unchanged) = mutate(&valid, &mutation, at);
        let (bytes, damaged) = damage(bytes, &bytes_damage);
        let key = key.unwrap_or_else(|| event.key().as_bytes().to_vec());
        let decoded = decode_checked(Some(&key), &bytes, None)?;
        if unchanged && !damaged {
            prop_assert_eq!(decoded, Ok(Event::BookSearched(event)), "an unknown field changed the event");
        }
    }

    #[test]
    fn mutated_book_created_v1_never_panics(
        event in arb_created_v1(),
        mutation in arb_mutation(),
        at in any::<Index>(),
        bytes_damage in arb_damage(),
        key in arb_key(),
    ) {
        let valid: Value = serde_json::from_slice(&event.to_json()).unwrap();
        let (bytes, unchanged) = mutate(&valid, &mutation, at);
        let (bytes, damaged) = damage(bytes, &bytes_damage);
        let decoded = decode_checked(key.as_deref(), &bytes, None)?;
        if unchanged && !damaged {
            prop_assert_eq!(decoded, Ok(Event::BookCreated(event)), "an unknown field changed the event");
        }
    }

    #[test]
    fn mutated_search_v0_never_panics(
        search in arb_legacy(),
        mutation in arb_mutation(),
        at in any::<Index>(),
        bytes_damage in arb_damage(),
        key in prop_oneof![3 => Just(None), 1 => arb_key()],
        timestamp in arb_timestamp(),
    ) {
        let valid = search.value();
        let (bytes, unchanged) = mutate(&valid, &mutation, at);
        let (bytes, damaged) = damage(bytes, &bytes_damage);
        let key = key.unwrap_or_else(|| search.key().into_bytes());
        let decoded = decode_checked(Some(&key), &bytes, timestamp)?;
        if unchanged && !damaged && key == search.key().as_bytes() {
            let Ok(Event::BookSearched(event)) = decoded else {
                return Err(TestCaseError::fail(format!("an unknown field broke it: {decoded:?}")));
            };
            let expected = search.expected(timestamp);
            prop_assert_eq!(SearchEvent { id: Uuid::nil(), ..event }, expected);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Nesting far past any parser's recursion limit, at the top and inside an event, in both
    /// versions' shapes: an error, never a stack overflow.
    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow(
        depth in 1usize..200_000,
        shape in 0usize..4,
        key in arb_key(),
    ) {
        let value = match shape {
            0 => deep(depth, "[", "]"),
            1 => deep(depth, "{\"type\":", "}"),
            2 => {
                let mut v = br#"{"type":"book.searched","version":1,"results":"#.to_vec();
                v.extend(deep(depth, "[", "]"));
                v.push(b'}');
                v
            }
            _ => {
                let mut v = b"[{\"id\":1,\"title\":".to_vec();
                v.extend(deep(depth, "{\"a\":", "}"));
                v.extend_from_slice(b"}]");
                v
            }
        };
        let decoded = decode_checked(key.as_deref(), &value, None)?;
        if depth > 200 {
            prop_assert!(decoded.is_err(), "{} levels accepted", depth);
        }
    }
}
