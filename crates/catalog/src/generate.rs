//! A synthetic catalog for benchmarks: plausible titles, authors, dates and descriptions built from
//! word lists, the same books for the same seed. The word lists are data, one word a line, in
//! `src/words/`.

use std::io::Write;
use std::sync::LazyLock;

use chrono::NaiveDate;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::read::Format;

/// A generated book, as written to a catalog file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeneratedBook {
    pub title: String,
    pub author: String,
    pub published_at: NaiveDate,
    pub description: String,
}

/// An endless, deterministic stream of generated books.
pub struct Generator {
    rng: ChaCha8Rng,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn pick(&mut self, words: fn(&'static Words) -> &'static [&'static str]) -> &'static str {
        words(&WORDS).choose(&mut self.rng).copied().unwrap_or("")
    }

    /// A name such as "Eleanor Ashbury": a first name and a surname made of two syllables, which
    /// gives tens of thousands of distinct authors.
    pub fn author(&mut self) -> String {
        let first = self.pick(|w| &w.first_names);
        let head = self.pick(|w| &w.surname_heads);
        let tail = self.pick(|w| &w.surname_tails);
        format!("{first} {head}{tail}")
    }

    /// A place such as "Ravenshaven" or "Calder Vale" (a capitalised tail is a word of its own).
    pub fn place(&mut self) -> String {
        let head = self.pick(|w| &w.place_heads);
        let tail = self.pick(|w| &w.place_tails);
        if tail.starts_with(char::is_uppercase) {
            format!("{head} {tail}")
        } else {
            format!("{head}{tail}")
        }
    }

    pub fn title(&mut self) -> String {
        let adj = capitalize(self.pick(|w| &w.adjectives));
        let noun = capitalize(self.pick(|w| &w.nouns));
        let other = capitalize(self.pick(|w| &w.nouns));
        let place = self.place();
        let person = capitalize(self.pick(|w| &w.occupations));
        let first = self.pick(|w| &w.first_names);
        let theme = capitalize(self.pick(|w| &w.themes));
        match self.rng.random_range(0..12) {
            0 => format!("The {adj} {noun}"),
            1 => format!("The {noun} of {place}"),
            2 => format!("{noun} and {other}"),
            3 => format!("The {person}'s {noun}"),
            4 => format!("{first} and the {adj} {noun}"),
            5 => format!("A {noun} in {place}"),
            6 => format!("{adj} {}", capitalize(&plural(&noun.to_lowercase()))),
            7 => format!("The Last {person} of {place}"),
            8 => format!("{theme} at {place}"),
            9 => format!("The {noun} {person}"),
            10 => format!("{first}'s {adj} {noun}"),
            _ => format!("Of {theme} and {other}"),
        }
    }

    pub fn description(&mut self) -> String {
        let person = self.pick(|w| &w.occupations);
        let adj = self.pick(|w| &w.adjectives);
        let adj2 = self.pick(|w| &w.adjectives);
        let place = self.place();
        let verb = self.pick(|w| &w.verbs);
        let noun = self.pick(|w| &w.nouns);
        let noun2 = self.pick(|w| &w.nouns);
        let theme = self.pick(|w| &w.themes);
        let theme2 = self.pick(|w| &w.themes);
        let other = self.pick(|w| &w.occupations);
        let first = match self.rng.random_range(0..8) {
            0 => format!("A {adj} {person} from {place} {verb} a {adj2} {noun}."),
            1 => format!(
                "In {place}, a {person} {verb} the {noun} that {adj} families have guarded for generations."
            ),
            2 => format!(
                "When a {adj} {noun} arrives in {place}, a young {person} {verb} everything they believed."
            ),
            3 => format!("Set in {place}, this {adj} tale follows a {person} who {verb} a {noun}."),
            4 => format!(
                "Nobody in {place} expects the {person} to notice the {adj} {noun}, least of all the {other}."
            ),
            5 => format!(
                "After years abroad, a {person} returns to {place} and {verb} a {adj2} {noun}."
            ),
            6 => format!(
                "The {other} and the {person} of {place} share one {adj} {noun} and a grudge."
            ),
            _ => format!(
                "Told in letters, this novel of {place} shows a {person} who {verb} the {noun}."
            ),
        };
        let second = match self.rng.random_range(0..8) {
            0 => format!("A story of {theme} and {theme2}, told with {adj2} wit."),
            1 => format!("Between the {noun2} and the {noun}, {theme} has its price."),
            2 => format!("It is a {adj2} meditation on {theme}."),
            3 => format!("The {noun2} will test their {theme} to the end."),
            4 => format!("What begins with {theme} ends in {theme2}."),
            5 => format!("A {adj2} comedy of {theme}, with a {noun2} at its heart."),
            6 => format!("Readers will remember its {adj2} {noun2} long after the last page."),
            _ => format!("Few books weigh {theme} against {theme2} with so {adj2} a hand."),
        };
        format!("{first} {second}")
    }

    pub fn published_at(&mut self) -> NaiveDate {
        let year = self.rng.random_range(1600..=2024);
        let day = self.rng.random_range(1..=365);
        NaiveDate::from_yo_opt(year, day).unwrap_or(NaiveDate::MIN)
    }

    pub fn book(&mut self) -> GeneratedBook {
        GeneratedBook {
            title: self.title(),
            author: self.author(),
            published_at: self.published_at(),
            description: self.description(),
        }
    }
}

impl Iterator for Generator {
    type Item = GeneratedBook;
    fn next(&mut self) -> Option<GeneratedBook> {
        Some(self.book())
    }
}

/// The word lists, read once from the data files compiled into the crate.
struct Words {
    first_names: Vec<&'static str>,
    surname_heads: Vec<&'static str>,
    surname_tails: Vec<&'static str>,
    adjectives: Vec<&'static str>,
    /// Singular nouns; those whose plural is not made by [`plural`]'s rules are written
    /// `singular plural` in the file, and listed in `irregular_plurals`.
    nouns: Vec<&'static str>,
    irregular_plurals: Vec<(&'static str, &'static str)>,
    place_heads: Vec<&'static str>,
    place_tails: Vec<&'static str>,
    occupations: Vec<&'static str>,
    verbs: Vec<&'static str>,
    themes: Vec<&'static str>,
}

/// The non-empty lines of a word list.
fn lines(text: &'static str) -> Vec<&'static str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

static WORDS: LazyLock<Words> = LazyLock::new(|| {
    let noun_lines = lines(include_str!("words/nouns.txt"));
    let nouns = noun_lines
        .iter()
        .map(|l| l.split_once(' ').map_or(*l, |(singular, _)| singular))
        .collect();
    let irregular_plurals = noun_lines
        .iter()
        .filter_map(|l| l.split_once(' '))
        .collect();
    Words {
        first_names: lines(include_str!("words/first_names.txt")),
        surname_heads: lines(include_str!("words/surname_heads.txt")),
        surname_tails: lines(include_str!("words/surname_tails.txt")),
        adjectives: lines(include_str!("words/adjectives.txt")),
        nouns,
        irregular_plurals,
        place_heads: lines(include_str!("words/place_heads.txt")),
        place_tails: lines(include_str!("words/place_tails.txt")),
        occupations: lines(include_str!("words/occupations.txt")),
        verbs: lines(include_str!("words/verbs.txt")),
        themes: lines(include_str!("words/themes.txt")),
    }
});

/// The plural of a lowercase singular noun: an irregular one from the list, else English's rules
/// for `-s`, `-x`, `-z`, `-ch`, `-sh` (`-es`) and a consonant then `-y` (`-ies`).
fn plural(noun: &str) -> String {
    if let Some((_, plural)) = WORDS.irregular_plurals.iter().find(|(s, _)| *s == noun) {
        return (*plural).to_owned();
    }
    let consonant_y = noun
        .strip_suffix('y')
        .filter(|stem| stem.ends_with(|c: char| !"aeiou".contains(c)) && !stem.is_empty());
    if let Some(stem) = consonant_y {
        format!("{stem}ies")
    } else if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|end| noun.ends_with(end))
    {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Writes `count` generated books for `seed` to `out` in `format`.
pub fn write(out: impl Write, format: Format, count: u64, seed: u64) -> std::io::Result<()> {
    let books = Generator::new(seed).take(usize::try_from(count).unwrap_or(usize::MAX));
    match format {
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            for book in books {
                csv.serialize(book)?;
            }
            csv.flush()
        }
        Format::Jsonl => {
            let mut out = std::io::BufWriter::new(out);
            for book in books {
                serde_json::to_writer(&mut out, &book)?;
                out.write_all(b"\n")?;
            }
            out.flush()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::read;

    #[test]
    fn plurals_follow_english() {
        for (singular, expected) in [
            ("wolf", "wolves"),
            ("wharf", "wharves"),
            ("coachman", "coachmen"),
            ("chess", "chesses"),
            ("compass", "compasses"),
            ("torch", "torches"),
            ("marsh", "marshes"),
            ("waltz", "waltzes"),
            ("city", "cities"),
            ("ivy", "ivies"),
            ("key", "keys"),
            ("cliff", "cliffs"),
            ("lantern", "lanterns"),
        ] {
            assert_eq!(plural(singular), expected, "{singular}");
        }
    }

    #[test]
    fn every_word_list_is_read_and_holds_words() {
        let w = &*WORDS;
        for (name, list) in [
            ("first_names", &w.first_names),
            ("surname_heads", &w.surname_heads),
            ("surname_tails", &w.surname_tails),
            ("adjectives", &w.adjectives),
            ("nouns", &w.nouns),
            ("place_heads", &w.place_heads),
            ("place_tails", &w.place_tails),
            ("occupations", &w.occupations),
            ("verbs", &w.verbs),
            ("themes", &w.themes),
        ] {
            assert!(list.len() >= 30, "{name}: {} words", list.len());
            assert!(list.iter().all(|word| !word.contains('\t')), "{name}");
        }
        assert_eq!(w.nouns.len(), 293);
        assert!(w.nouns.iter().all(|n| !n.contains(' ')));
        assert_eq!(w.irregular_plurals.len(), 3);
    }

    #[test]
    fn the_same_seed_gives_the_same_books() {
        let a: Vec<_> = Generator::new(7).take(50).collect();
        let b: Vec<_> = Generator::new(7).take(50).collect();
        let c: Vec<_> = Generator::new(8).take(50).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn generated_files_import_without_rejections_in_both_formats() {
        for format in [Format::Csv, Format::Jsonl] {
            let mut out = Vec::new();
            write(&mut out, format, 500, 1).unwrap();
            let rows: Vec<_> = read(std::io::Cursor::new(out), format)
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(rows.len(), 500);
            assert!(rows.iter().all(Result::is_ok), "{format:?}");
        }
    }
}
