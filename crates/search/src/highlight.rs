//! Which words of a shown text matched the query: the same rules as the search (folded words,
//! the typos a word may have, the last word as a prefix), so a corrected match is marked too.
//! tantivy's snippets mark only exact terms, so the marking is done here, from the analyzer's
//! token offsets.

use std::ops::Range;

use tantivy::tokenizer::TextAnalyzer;

use crate::query::Word;

/// The byte ranges of `text` whose words match one of `words`, in order.
pub fn ranges(analyzer: &mut TextAnalyzer, words: &[Word], text: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(token) = stream.next() {
        if words.iter().any(|word| matches(word, &token.text)) {
            found.push(token.offset_from..token.offset_to);
        }
    }
    found
}

/// A part of `text` of at most about `max_chars` characters around its first match (its start
/// when nothing matched), and the matches within it, relative to the part.
pub fn snippet(
    analyzer: &mut TextAnalyzer,
    words: &[Word],
    text: &str,
    max_chars: usize,
) -> (String, Vec<Range<usize>>) {
    let all = ranges(analyzer, words, text);
    // Start a little before the first match, at a character boundary.
    let first = all.first().map_or(0, |r| r.start);
    let lead = max_chars / 4;
    let start = text[..first]
        .char_indices()
        .rev()
        .nth(lead)
        .map_or(0, |(i, _)| i);
    let end = text[start..]
        .char_indices()
        .nth(max_chars)
        .map_or(text.len(), |(i, _)| start + i);
    let part = text[start..end].to_owned();
    let inside = all
        .into_iter()
        .filter(|r| r.start >= start && r.end <= end)
        .map(|r| r.start - start..r.end - start)
        .collect();
    (part, inside)
}

/// Whether a folded `token` of the text is `word`, within its typos, or (the last word) starts
/// with it within its typos.
fn matches(word: &Word, token: &str) -> bool {
    let max = usize::from(word.typos);
    if distance(&word.text, token, max).is_some() {
        return true;
    }
    if word.prefix {
        let wanted = word.text.chars().count();
        // The token's beginning, as long as the word give or take the typos allowed.
        let chars: Vec<char> = token.chars().collect();
        let lo = wanted.saturating_sub(max);
        let hi = (wanted + max).min(chars.len());
        return (lo.max(1)..=hi).any(|n| {
            let head: String = chars[..n].iter().collect();
            distance(&word.text, &head, max).is_some()
        });
    }
    false
}

/// The edit distance of `a` and `b` (insertions, deletions, substitutions, and a swap of two
/// neighbours counting one), if it is at most `max`.
fn distance(a: &str, b: &str, max: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let width = b.len() + 1;
    let mut rows = vec![vec![0usize; width]; a.len() + 1];
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        rows[i][0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    let d = rows[a.len()][b.len()];
    (d <= max).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, typos: u8, prefix: bool) -> Word {
        Word {
            text: text.to_owned(),
            typos,
            prefix,
        }
    }

    fn marked(words: &[Word], text: &str) -> Vec<String> {
        let mut analyzer = crate::folded();
        ranges(&mut analyzer, words, text)
            .into_iter()
            .map(|r| text[r].to_owned())
            .collect()
    }

    #[test]
    fn distances_count_swaps_as_one() {
        assert_eq!(distance("frankenstien", "frankenstein", 2), Some(1));
        assert_eq!(distance("dikens", "dickens", 1), Some(1));
        assert_eq!(distance("emna", "emma", 0), None);
        assert_eq!(distance("abc", "abcdef", 2), None);
    }

    #[test]
    fn exact_corrected_and_completed_words_are_marked_in_the_text_as_written() {
        let words = [word("bronte", 1, false), word("jan", 0, true)];
        assert_eq!(
            marked(&words, "Jane Eyre, by Charlotte Brontë (Brontes)"),
            ["Jane", "Brontë", "Brontes"]
        );
        assert!(marked(&[word("emma", 0, false)], "Emmanuel").is_empty());
    }

    #[test]
    fn a_snippet_is_cut_around_the_first_match_at_character_boundaries() {
        let mut analyzer = crate::folded();
        let text = format!("{}Darcy {}", "é ".repeat(60), "x ".repeat(60));
        let (part, marks) = snippet(&mut analyzer, &[word("darcy", 1, false)], &text, 40);
        assert!(part.chars().count() <= 40, "{part}");
        assert_eq!(marks.len(), 1);
        assert_eq!(&part[marks[0].clone()], "Darcy");
    }
}
