//! What a search asks for, and how a query is cut into the words that a full-text index matches.

use crate::book::Book;

/// Longest query, in characters, that a search takes into account; the rest is ignored.
pub const MAX_QUERY_CHARS: usize = 200;
/// At most this many words of a query are matched.
pub const MAX_QUERY_TERMS: usize = 12;

/// One word to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// Lower-case letters and digits only.
    pub text: String,
    /// Match every word that starts with `text`, or only the word itself. Only the last word of a
    /// query is a prefix (the reader may still be typing it); the words before it are complete.
    pub prefix: bool,
}

/// Words so common that they narrow nothing and only cost time; they are left out of a query
/// that has other words.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "as", "at", "by", "for", "from", "in", "into", "is", "it", "of", "on", "or",
    "s", "the", "to", "with",
];

/// Whether `word` (lower case) is one of the words so common that a search leaves them out of a
/// query that has other words.
pub fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.contains(&word)
}

/// A page of books for a query (or of the whole catalog when the query is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookQuery {
    text: String,
    pub offset: u64,
    pub limit: u32,
}

impl BookQuery {
    pub fn new(text: &str, offset: u64, limit: u32) -> Self {
        let text = clean_query(text);
        Self {
            text,
            offset,
            limit,
        }
    }

    /// The query as typed, cleaned by [`clean_query`]: what the search matched, and what its
    /// event and trend carry.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The words to match; empty means "list the catalog".
    pub fn terms(&self) -> Vec<Term> {
        let mut words = search_terms(&self.text);
        if words.iter().any(|w| !STOP_WORDS.contains(&w.as_str())) {
            words.retain(|w| !STOP_WORDS.contains(&w.as_str()));
        }
        let last = words.len().saturating_sub(1);
        words
            .into_iter()
            .enumerate()
            .map(|(i, text)| Term {
                prefix: i == last,
                text,
            })
            .collect()
    }
}

/// The text of a query as every part of the system keeps it: control characters and bidi
/// overrides become spaces (they could hide or reorder text on the page that shows trends),
/// the ends are trimmed, and only the first [`MAX_QUERY_CHARS`] characters are kept. The search,
/// the search event and the trend all use this text, so none of them holds more.
pub fn clean_query(raw: &str) -> String {
    let mut text: String = raw
        .trim_start_matches(|c: char| c.is_whitespace() || is_unsafe_in_text(c))
        .chars()
        .take(MAX_QUERY_CHARS)
        .map(|c| if is_unsafe_in_text(c) { ' ' } else { c })
        .collect();
    let end = text.trim_end().len();
    text.truncate(end);
    text
}

/// Characters no query keeps: control characters (`\0`, escapes, newlines and tabs too) and the
/// bidi embedding, override and isolate controls (U+202A to U+202E, U+2066 to U+2069).
pub fn is_unsafe_in_text(c: char) -> bool {
    c.is_control() || crate::book::is_bidi_control(c)
}

/// One page of results and the number of books that match in all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchPage {
    pub books: Vec<Book>,
    /// How many books match; a lower bound when `total_is_lower_bound`.
    pub total: u64,
    /// Whether more books than `total` match: the search index stops counting at 10,000
    /// ([`MAX_EXACT_TOTAL`]) rather than visit every match.
    pub total_is_lower_bound: bool,
}

impl SearchPage {
    /// The page of a query that is the ISBN of `book`: the book alone on the first page (at
    /// `offset` 0), nothing on a later one, one match in all.
    pub fn isbn_match(book: Book, offset: u64) -> Self {
        Self {
            books: if offset == 0 { vec![book] } else { Vec::new() },
            total: 1,
            total_is_lower_bound: false,
        }
    }
}

/// A text shown to a reader with the parts that matched their query: byte ranges of `text`, in
/// order, not overlapping, on character boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Marked {
    pub text: String,
    pub marks: Vec<std::ops::Range<usize>>,
    /// Whether `text` is a part of a longer text cut before it, and after it.
    pub cut_before: bool,
    pub cut_after: bool,
}

impl Marked {
    /// The text with no marks.
    pub fn plain(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            ..Self::default()
        }
    }

    /// The text and its marks in turn: `(part, marked)`; parts of the text outside it are
    /// dropped if the ranges are not valid for it.
    pub fn parts(&self) -> Vec<(&str, bool)> {
        let mut parts = Vec::new();
        let mut at = 0;
        for mark in &self.marks {
            let (Some(before), Some(marked)) = (
                self.text.get(at..mark.start),
                self.text.get(mark.start..mark.end),
            ) else {
                continue;
            };
            if !before.is_empty() {
                parts.push((before, false));
            }
            parts.push((marked, true));
            at = mark.end;
        }
        if let Some(rest) = self.text.get(at..) {
            if !rest.is_empty() {
                parts.push((rest, false));
            }
        }
        parts
    }
}

/// A book's title, author and description with the words that matched a query marked (the
/// description as a short snippet around its first match).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Highlights {
    pub title: Marked,
    pub author: Marked,
    pub description: Marked,
}

/// What a search box offers while a reader types.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Suggestion {
    /// The completion, as it would be searched.
    pub text: String,
    pub kind: SuggestionKind,
}

/// Where a [`Suggestion`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SuggestionKind {
    /// A book's title that matches what was typed.
    Title,
    /// An author whose name matches.
    Author,
    /// A query readers search for now (from the trend service).
    Popular,
}

/// At most this many suggestions are offered.
pub const MAX_SUGGESTIONS: usize = 8;

/// Totals up to this are exact; above it a search says "at least" this many.
pub const MAX_EXACT_TOTAL: u64 = 10_000;

/// Cuts a query into lower-case words of letters and digits. Everything else (quotes, `*`, `-`,
/// `:`, parentheses, operators of any index syntax) separates words and is dropped, so no query can
/// inject syntax into a full-text index. Adapters match every word as a prefix.
pub fn search_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in query
        .chars()
        .take(MAX_QUERY_CHARS)
        .collect::<String>()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_lowercase();
        if !terms.contains(&word) {
            terms.push(word);
        }
        if terms.len() == MAX_QUERY_TERMS {
            break;
        }
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_text_comes_apart_in_turns() {
        let marked = Marked {
            text: "Frankenstein; or, The Modern Prometheus".to_owned(),
            marks: vec![0..12, 22..28],
            ..Marked::default()
        };
        assert_eq!(
            marked.parts(),
            [
                ("Frankenstein", true),
                ("; or, The ", false),
                ("Modern", true),
                (" Prometheus", false)
            ]
        );
        // A range that is not the text's is left out, never a panic.
        let bad = Marked {
            text: "é".to_owned(),
            marks: vec![1..2, 0..40],
            ..Marked::default()
        };
        assert_eq!(bad.parts(), [("é", false)]);
    }

    #[test]
    fn words_are_lowercased_and_split_on_anything_else() {
        assert_eq!(
            search_terms(r#"  "Pride" AND (prejudice)* -jane:austen "#),
            vec!["pride", "and", "prejudice", "jane", "austen"]
        );
    }

    #[test]
    fn accents_and_other_scripts_are_kept_as_letters() {
        assert_eq!(
            search_terms("Brontë Émile 東京"),
            vec!["brontë", "émile", "東京"]
        );
    }

    #[test]
    fn operators_alone_give_no_terms() {
        assert!(search_terms(r#" "*" - : () ^ ~ + "#).is_empty());
        assert!(search_terms("").is_empty());
    }

    #[test]
    fn repeated_words_count_once_and_terms_are_bounded() {
        assert_eq!(search_terms("rust Rust RUST"), vec!["rust"]);
        let many: String = (0..50).map(|i| format!("w{i} ")).collect();
        assert_eq!(search_terms(&many).len(), MAX_QUERY_TERMS);
    }

    fn shape(q: &str) -> Vec<(String, bool)> {
        BookQuery::new(q, 0, 5)
            .terms()
            .into_iter()
            .map(|t| (t.text, t.prefix))
            .collect()
    }

    #[test]
    fn the_last_word_is_a_prefix_and_stop_words_are_dropped() {
        let expected = vec![("printer".to_owned(), false), ("legacy".to_owned(), true)];
        assert_eq!(shape("The Printer's Legacy"), expected);
        assert_eq!(shape("franken"), vec![("franken".to_owned(), true)]);
        assert_eq!(
            shape("the and"),
            vec![("the".to_owned(), false), ("and".to_owned(), true)],
            "a query of stop words only keeps them"
        );
    }

    #[test]
    fn queries_are_trimmed_and_bounded() {
        let q = BookQuery::new(&format!("  {}  ", "a".repeat(500)), 0, 5);
        assert_eq!(q.text().len(), MAX_QUERY_CHARS);
        // Counted in characters, and cut before the trailing space is trimmed.
        let q = BookQuery::new(&format!("{} b", "é".repeat(MAX_QUERY_CHARS - 1)), 0, 5);
        assert_eq!(q.text().chars().count(), MAX_QUERY_CHARS - 1);
        assert_eq!(clean_query(&"x".repeat(60_000)).len(), MAX_QUERY_CHARS);
    }

    #[test]
    fn control_and_bidi_characters_become_spaces() {
        assert_eq!(clean_query("\u{0}a\u{1b}[31mb\tc\n"), "a [31mb c");
        assert_eq!(clean_query("x\u{202e}evil\u{2066}y"), "x evil y");
        assert_eq!(clean_query("\u{202e}\u{0} austen \u{7f}"), "austen");
        assert_eq!(clean_query("Brontë 東京"), "Brontë 東京");
    }
}
