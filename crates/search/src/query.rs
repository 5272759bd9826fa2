//! From what a reader typed to a tantivy query: the same matching and ranking everywhere.
//!
//! - Words are cut and folded by the index's own analyzer (case and accents do not matter).
//! - Each word may have typos, like Meilisearch's defaults: none under 5 letters, one from 5 to
//!   8, two from 9 on. A word matched exactly ranks above the same word corrected.
//! - The last word is also a prefix (search as you type), from 2 letters on.
//! - A book must match every word, in its title, author or description; the title weighs most.

use bookstore_domain::search::is_stop_word;
use tantivy::Term;
use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, DisjunctionMaxQuery, FuzzyTermQuery, Occur, Query,
    TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;

/// Typos a word of `chars` characters may have (Meilisearch's defaults).
pub fn typos_allowed(chars: usize) -> u8 {
    match chars {
        0..=4 => 0,
        5..=8 => 1,
        _ => 2,
    }
}

/// The shortest last word read as a prefix: one letter would match most of the catalog.
pub const MIN_PREFIX_CHARS: usize = 2;

/// Words longer than this are not words (the analyzer drops them too).
pub const MAX_WORD_CHARS: usize = 40;

/// At most this many words of a query are matched; the rest are ignored.
pub const MAX_WORDS: usize = 10;

/// What one word of the query is matched as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// Folded: lower case, no accents.
    pub text: String,
    /// Typos it may have.
    pub typos: u8,
    /// Whether longer words starting with it match too (the last word, as it is being typed).
    pub prefix: bool,
}

/// The words of `typed`, folded by `analyzer` (the index's), at most [`MAX_WORDS`].
pub fn words(analyzer: &mut TextAnalyzer, typed: &str) -> Vec<Word> {
    let mut texts = Vec::new();
    let mut stream = analyzer.token_stream(typed);
    while let Some(token) = stream.next() {
        if texts.len() == MAX_WORDS {
            break;
        }
        texts.push(token.text.clone());
    }
    // Words so common that they narrow nothing (`the`, `of`) are left out of a query that has
    // others, as the catalog database's search does.
    if texts.iter().any(|t| !is_stop_word(t)) {
        texts.retain(|t| !is_stop_word(t));
    }
    let only_stop_words = texts.iter().all(|t| is_stop_word(t));
    // The last word is a prefix only when the reader may still be typing it.
    let ends_in_word = typed.chars().last().is_some_and(char::is_alphanumeric);
    let last = texts.len().saturating_sub(1);
    texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let chars = text.chars().count();
            Word {
                typos: if only_stop_words {
                    0
                } else {
                    typos_allowed(chars)
                },
                prefix: !only_stop_words && i == last && ends_in_word && chars >= MIN_PREFIX_CHARS,
                text,
            }
        })
        .collect()
}

/// Whether `word` is a stop word (`the`, `of`): left out of a query with other words; a query of
/// stop words only matches them exactly, neither corrected nor completed.
pub fn is_stop(word: &Word) -> bool {
    is_stop_word(&word.text)
}

/// The fields a word is looked for in, and how much a match in each weighs.
pub struct Fields {
    pub weighted: Vec<(Field, f32)>,
    /// Where a word may also be corrected or completed: the titles' and authors' words together
    /// in one field (short texts whose words a reader types from memory), so that each word of a
    /// query walks one vocabulary once. Descriptions match only the word itself: expanding a word
    /// over vocabularies is most of a search's cost.
    pub expanded: Field,
}

/// Above any BM25 score of one word: a book with more words matched exactly ranks first.
const EXACT_BONUS: f32 = 100.0;

/// What a corrected or completed match scores, as a share of an exact title match's weight.
const EXPANDED_SCORE: f32 = 0.5;

/// The query for `words` (None when there is no word: the caller lists the catalog instead).
pub fn build(fields: &Fields, words: &[Word]) -> Option<Box<dyn Query>> {
    if words.is_empty() {
        return None;
    }
    let clauses = words
        .iter()
        .map(|word| (Occur::Must, word_query(fields, word)))
        .collect();
    Some(Box::new(BooleanQuery::new(clauses)))
}

/// One word in any of the fields: the best field's BM25 counts (with a little of the others);
/// a corrected or completed word scores a constant below that, and an exact match anywhere gets
/// a bonus above any corrected one.
fn word_query(fields: &Fields, word: &Word) -> Box<dyn Query> {
    let mut per_field: Vec<Box<dyn Query>> = Vec::new();
    let mut exact_anywhere: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for &(field, weight) in &fields.weighted {
        let exact: Box<dyn Query> = Box::new(TermQuery::new(
            Term::from_field_text(field, &word.text),
            IndexRecordOption::WithFreqs,
        ));
        exact_anywhere.push((Occur::Should, exact.box_clone()));
        per_field.push(Box::new(BoostQuery::new(exact, weight)));
    }
    let mut options: Vec<(Occur, Box<dyn Query>)> = vec![(
        Occur::Should,
        Box::new(DisjunctionMaxQuery::with_tie_breaker(per_field, 0.1)),
    )];
    // One automaton per word: the last word as a prefix (with its typos), another word with its
    // typos; a short word that is not the last has none.
    let names = Term::from_field_text(fields.expanded, &word.text);
    let expanded: Option<Box<dyn Query>> = if word.prefix {
        Some(Box::new(FuzzyTermQuery::new_prefix(
            names, word.typos, true,
        )))
    } else if word.typos > 0 {
        Some(Box::new(FuzzyTermQuery::new(names, word.typos, true)))
    } else {
        None
    };
    if let Some(expanded) = expanded {
        options.push((
            Occur::Should,
            Box::new(BoostQuery::new(expanded, EXPANDED_SCORE)),
        ));
    }
    let bonus: Box<dyn Query> = Box::new(ConstScoreQuery::new(
        Box::new(BooleanQuery::new(exact_anywhere)),
        EXACT_BONUS,
    ));
    Box::new(BooleanQuery::new(vec![
        (Occur::Must, Box::new(BooleanQuery::new(options))),
        (Occur::Should, bonus),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_grow_with_the_word() {
        assert_eq!(typos_allowed(4), 0);
        assert_eq!(typos_allowed(5), 1);
        assert_eq!(typos_allowed(8), 1);
        assert_eq!(typos_allowed(9), 2);
    }
}
