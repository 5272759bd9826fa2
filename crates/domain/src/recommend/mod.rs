//! Recommendations: the rules of the recommendation service, as pure functions. Stores load what
//! a batch needs ([`needs`] → [`Prior`]), let [`apply`] compute every row it changes, and write
//! [`Changes`] back in one transaction; to answer, they load a user's neighbourhood
//! ([`Neighbourhood`]) and let [`blend`] rank it.
//!
//! **Profile.** Each `book.searched` event of a known user adds to their profile, for each of the
//! first `results_per_event` results (rank `r` in the whole result list, from 0, so page two
//! starts lower): weight `1 / log2(r + 2)` (1, 0.63, 0.5, …: top results count more) to the book
//! and to its author, and weight 1 to the normalized query. Every result (up to
//! [`MAX_SHOWN_PER_EVENT`]) is remembered as shown to the user, counted or not.
//! Weights halve every `half_life` and are stored in log space relative to the epoch, like the
//! trend scores (`log = log2 Σ wᵢ·2^(tᵢ/half_life)`), so nothing is rewritten as time passes.
//! Every search (anonymous ones too) adds the same book weights to the book's popularity.
//!
//! **Co-occurrence.** When a user is shown a book for the first time, it is paired with each
//! other book new to them in the same event and with their `history_per_event` strongest books
//! so far; each pair's count grows by one in both directions. A count is therefore the number of
//! users who were shown both books (within that window), and repeating a search adds nothing.
//! Each book keeps its `neighbours_per_book` strongest neighbours (ties: lower id first).
//!
//! **Ranking** (`GET /recommendations`). Candidates are the neighbours of the user's
//! [`INTEREST_BOOKS`] strongest books, the books of their [`TOP_AUTHORS`] strongest authors, and
//! the most popular books; books the user has been shown are never candidates. For a candidate
//! `c`:
//!
//! ```text
//! score(c) = Σ_b w_b · log2(1 + n(b, c))      co-occurrence: w_b = the user's weight of b,
//!                                             relative to their strongest book (0 < w_b ≤ 1)
//!          + 0.5 · a(author(c))               author affinity, relative to their top author
//!          + 0.1 · p(c)                       popularity, relative to the most popular candidate
//! ```
//!
//! The reason names the largest term: "because you searched for <the query that showed the book
//! contributing most>", "more by <author>", or "popular with readers". A user with no history
//! gets the popular books.

pub mod conformance;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{CatalogBook, CatalogChange, SearchEvent};
use crate::ports::Record;
use crate::trends::log2_add;

/// The user's strongest books whose neighbours are candidates.
pub const INTEREST_BOOKS: usize = 20;
/// The user's strongest authors whose books are candidates.
pub const TOP_AUTHORS: usize = 3;
/// Weight of author affinity and of popularity in the blend (co-occurrence weighs 1).
pub const AUTHOR_WEIGHT: f64 = 0.5;
pub const POPULAR_WEIGHT: f64 = 0.1;
/// Recommendations per answer by default, and at most.
pub const DEFAULT_RECOMMENDATIONS: usize = 10;
pub const MAX_RECOMMENDATIONS: usize = 50;

/// Results of one event remembered as shown to its user (the API's largest page).
pub const MAX_SHOWN_PER_EVENT: usize = 100;

/// Longest user id kept in a profile (longer ones count as anonymous), and the lengths at which
/// queries and author names are cut, so that every store can hold them.
pub const MAX_USER_CHARS: usize = 191;
pub const MAX_QUERY_CHARS: usize = 200;
pub const MAX_AUTHOR_CHARS: usize = 255;

/// The reason given for popular books.
pub const POPULAR_REASON: &str = "popular with readers";

/// The tunable bounds and decay of the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendSettings {
    /// Time for a weight to halve.
    pub half_life: Duration,
    /// Results of one event that count (the rest of a huge page is ignored).
    pub results_per_event: usize,
    /// A user's strongest books a newly shown book is paired with.
    pub history_per_event: usize,
    /// Co-occurrence neighbours kept per book.
    pub neighbours_per_book: usize,
}

impl Default for RecommendSettings {
    fn default() -> Self {
        Self {
            half_life: Duration::from_secs(7 * 24 * 3600),
            results_per_event: 10,
            history_per_event: 20,
            neighbours_per_book: 50,
        }
    }
}

impl RecommendSettings {
    /// `log2(weight) + t / half_life`: a weight added at `t`, relative to the epoch.
    pub fn log_weight(&self, weight: f64, t: DateTime<Utc>) -> f64 {
        weight.log2() + t.timestamp_millis() as f64 / 1000.0 / self.half_life_secs()
    }

    /// The decayed value at `now` of a stored log weight.
    pub fn weight_at(&self, log: f64, now: DateTime<Utc>) -> f64 {
        (log - now.timestamp_millis() as f64 / 1000.0 / self.half_life_secs()).exp2()
    }

    fn half_life_secs(&self) -> f64 {
        self.half_life.as_secs_f64().max(1e-3)
    }
}

/// The weight of the result at `rank` (0 = first): `1 / log2(rank + 2)`.
pub fn rank_weight(rank: usize) -> f64 {
    1.0 / ((rank as f64) + 2.0).log2()
}

/// A user's weight of one book, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct UserBook {
    pub log_weight: f64,
    /// Unix milliseconds of the last search that showed it.
    pub last_at: i64,
    pub title: String,
    pub author: String,
    /// The normalized query of the last search that showed it.
    pub query: String,
}

/// A log weight and when it last grew.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weight {
    pub log_weight: f64,
    pub last_at: i64,
}

/// The rows a batch reads before it is applied, per user.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UserNeeds {
    pub books: BTreeSet<i64>,
    pub authors: BTreeSet<String>,
    pub queries: BTreeSet<String>,
}

/// The rows a batch reads before it is applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Needs {
    pub users: BTreeMap<String, UserNeeds>,
    pub popular: BTreeSet<i64>,
}

/// The results of `event` that count, first occurrence of each book only, each with its rank
/// in the whole result list (the event's offset plus its place on the page).
pub fn counted_results<'a>(
    settings: &RecommendSettings,
    event: &'a SearchEvent,
) -> impl Iterator<Item = (usize, &'a crate::events::ResultBook)> {
    let mut seen = HashSet::new();
    let offset = usize::try_from(event.offset).unwrap_or(usize::MAX);
    event
        .results
        .iter()
        .filter(move |b| seen.insert(b.id))
        .take(settings.results_per_event)
        .enumerate()
        .map(move |(i, b)| (offset.saturating_add(i), b))
}

/// The user whose profile `event` adds to: `None` for anonymous searches and ids too long to keep.
pub fn profile_user(event: &SearchEvent) -> Option<&String> {
    event
        .user_id
        .as_ref()
        .filter(|u| u.chars().count() <= MAX_USER_CHARS)
}

/// `text` cut to at most `max` characters, without trailing whitespace (which MySQL's PAD SPACE
/// collations would not tell apart).
pub fn cut(text: &str, max: usize) -> String {
    let text = match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    };
    text.trim_end().to_owned()
}

/// What the store must load before applying `records`.
pub fn needs(settings: &RecommendSettings, records: &[Record]) -> Needs {
    let mut needs = Needs::default();
    for event in records.iter().filter_map(|r| r.event.as_search()) {
        let user = profile_user(event).map(|u| {
            let user = needs.users.entry(u.clone()).or_default();
            user.queries
                .insert(cut(&event.query_normalized, MAX_QUERY_CHARS));
            user
        });
        let mut user = user;
        for (_, book) in counted_results(settings, event) {
            needs.popular.insert(book.id);
            if let Some(user) = user.as_deref_mut() {
                user.books.insert(book.id);
                user.authors.insert(cut(&book.author, MAX_AUTHOR_CHARS));
            }
        }
    }
    needs
}

/// The stored rows [`needs`] named (missing rows are absent), and each user's strongest books.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Prior {
    pub user_books: HashMap<(String, i64), UserBook>,
    /// Per user, their `history_per_event` strongest books `(id, log_weight)`, strongest first
    /// (ties: lower id first).
    pub top_books: HashMap<String, Vec<(i64, f64)>>,
    pub user_authors: HashMap<(String, String), f64>,
    pub user_queries: HashMap<(String, String), Weight>,
    pub popular: HashMap<i64, f64>,
}

/// Everything a batch writes: the new value of every row it touched, and co-occurrence
/// increments.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    pub user_books: BTreeMap<(String, i64), UserBook>,
    pub user_authors: BTreeMap<(String, String), f64>,
    pub user_queries: BTreeMap<(String, String), Weight>,
    pub popular: BTreeMap<i64, f64>,
    /// `(book, neighbour) → how much the pair's count grows`, both directions present.
    pub cooccurrence: BTreeMap<(i64, i64), u64>,
    /// Books whose neighbour lists grew and may need trimming.
    pub touched_books: BTreeSet<i64>,
    /// Catalog books created or replaced, the last event of a book winning.
    pub catalog: BTreeMap<i64, CatalogBook>,
    /// Catalog books deleted (and not created again later in the batch): stores remove them
    /// from their catalog copy, so they are never recommended again.
    pub deleted: BTreeSet<i64>,
    /// `(user, book)`: books shown to a user (stores keep each pair once).
    pub shown: BTreeSet<(String, i64)>,
}

/// Orders a user's books: strongest first, ties by lower id.
fn by_strength(a: &(i64, f64), b: &(i64, f64)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Applies `records` in order to `prior` and returns every change.
pub fn apply(settings: &RecommendSettings, mut prior: Prior, records: &[Record]) -> Changes {
    let mut changes = Changes::default();
    for record in records {
        match record.event.catalog_change() {
            Some(CatalogChange::Upsert(book)) => {
                let mut book = book.clone();
                book.author = cut(&book.author, MAX_AUTHOR_CHARS);
                changes.deleted.remove(&book.id);
                changes.catalog.insert(book.id, book);
            }
            Some(CatalogChange::Delete(id)) => {
                changes.catalog.remove(&id);
                changes.deleted.insert(id);
            }
            None => {
                if let Some(event) = record.event.as_search() {
                    apply_search(settings, &mut prior, &mut changes, event);
                }
            }
        }
    }
    changes
}

fn apply_search(
    settings: &RecommendSettings,
    prior: &mut Prior,
    changes: &mut Changes,
    event: &SearchEvent,
) {
    let at = event.occurred_at.timestamp_millis();
    let counted: Vec<(usize, &crate::events::ResultBook)> =
        counted_results(settings, event).collect();
    for (rank, book) in &counted {
        let w = settings.log_weight(rank_weight(*rank), event.occurred_at);
        let old = prior
            .popular
            .get(&book.id)
            .copied()
            .unwrap_or(f64::NEG_INFINITY);
        let new = log2_add(old, w);
        prior.popular.insert(book.id, new);
        changes.popular.insert(book.id, new);
    }
    let Some(user) = profile_user(event) else {
        return;
    };
    let mut seen = HashSet::new();
    for book in event
        .results
        .iter()
        .filter(|b| seen.insert(b.id))
        .take(MAX_SHOWN_PER_EVENT)
    {
        changes.shown.insert((user.clone(), book.id));
    }
    let query_text = cut(&event.query_normalized, MAX_QUERY_CHARS);

    let query_key = (user.clone(), query_text.clone());
    let old = prior.user_queries.get(&query_key).copied();
    let query = Weight {
        log_weight: log2_add(
            old.map_or(f64::NEG_INFINITY, |o| o.log_weight),
            settings.log_weight(1.0, event.occurred_at),
        ),
        last_at: old.map_or(at, |o| o.last_at.max(at)),
    };
    prior.user_queries.insert(query_key.clone(), query);
    changes.user_queries.insert(query_key, query);

    // The user's strongest books before this event, and the books new to them in it.
    let top = prior.top_books.entry(user.clone()).or_default();
    let before: Vec<i64> = top.iter().map(|(id, _)| *id).collect();
    let new_books: Vec<i64> = counted
        .iter()
        .map(|(_, b)| b.id)
        .filter(|id| !prior.user_books.contains_key(&(user.clone(), *id)))
        .collect();
    for (i, s) in new_books.iter().enumerate() {
        let partners = before.iter().chain(&new_books[i + 1..]);
        for p in partners {
            if p == s {
                continue;
            }
            *changes.cooccurrence.entry((*s, *p)).or_default() += 1;
            *changes.cooccurrence.entry((*p, *s)).or_default() += 1;
            changes.touched_books.insert(*s);
            changes.touched_books.insert(*p);
        }
    }

    for (rank, book) in &counted {
        let w = settings.log_weight(rank_weight(*rank), event.occurred_at);
        let key = (user.clone(), book.id);
        let old = prior.user_books.get(&key);
        let row = UserBook {
            log_weight: log2_add(old.map_or(f64::NEG_INFINITY, |o| o.log_weight), w),
            last_at: old.map_or(at, |o| o.last_at.max(at)),
            title: book.title.clone(),
            author: cut(&book.author, MAX_AUTHOR_CHARS),
            query: query_text.clone(),
        };
        match top.iter_mut().find(|(id, _)| *id == book.id) {
            Some(entry) => entry.1 = row.log_weight,
            None => top.push((book.id, row.log_weight)),
        }
        prior.user_books.insert(key.clone(), row.clone());
        changes.user_books.insert(key, row);

        let author_key = (user.clone(), cut(&book.author, MAX_AUTHOR_CHARS));
        let author = log2_add(
            prior
                .user_authors
                .get(&author_key)
                .copied()
                .unwrap_or(f64::NEG_INFINITY),
            w,
        );
        prior.user_authors.insert(author_key.clone(), author);
        changes.user_authors.insert(author_key, author);
    }
    top.sort_by(by_strength);
    top.truncate(settings.history_per_event);
}

/// Which neighbours of a book to drop: all but the `keep` strongest `(neighbour, count)` pairs,
/// ties by lower id first. Stores apply the same cut in SQL.
pub fn trim_neighbours(mut neighbours: Vec<(i64, u64)>, keep: usize) -> Vec<i64> {
    neighbours.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    neighbours
        .into_iter()
        .skip(keep)
        .map(|(id, _)| id)
        .collect()
}

/// A book the service can recommend, from its catalog copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub id: i64,
    pub title: String,
    pub author: String,
}

/// One of the user's strongest books.
#[derive(Debug, Clone, PartialEq)]
pub struct InterestBook {
    pub id: i64,
    pub log_weight: f64,
    pub query: String,
}

/// What [`blend`] ranks: a user's interests and the candidates around them, as loaded.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Neighbourhood {
    /// The user's [`INTEREST_BOOKS`] strongest books, strongest first.
    pub interests: Vec<InterestBook>,
    /// `(interest book, neighbour, count)` for the interests' neighbours.
    pub neighbours: Vec<(i64, i64, u64)>,
    /// The user's [`TOP_AUTHORS`] strongest authors and their log weights.
    pub authors: Vec<(String, f64)>,
    /// Books of those authors the user has not been shown.
    pub author_books: Vec<i64>,
    /// The most popular books the user has not been shown.
    pub popular: Vec<i64>,
    /// Candidates the user has already been shown.
    pub shown: HashSet<i64>,
    /// Catalog entries and popularity log weights (if any) of the candidates; a candidate
    /// missing here is not in the catalog copy (yet) and is left out.
    pub catalog: HashMap<i64, (CatalogEntry, Option<f64>)>,
}

impl Neighbourhood {
    /// Every candidate id, for loading the catalog entries.
    pub fn candidates(&self) -> BTreeSet<i64> {
        self.neighbours
            .iter()
            .map(|(_, c, _)| *c)
            .chain(self.author_books.iter().copied())
            .chain(self.popular.iter().copied())
            .collect()
    }
}

/// A recommended book and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub id: i64,
    pub title: String,
    pub author: String,
    pub score: f64,
    pub reason: String,
}

/// Ranks the candidates of `hood` (see the module's documentation) and returns the best `n`.
pub fn blend(hood: &Neighbourhood, n: usize) -> Vec<Recommendation> {
    let interest_top = hood
        .interests
        .iter()
        .map(|b| b.log_weight)
        .fold(f64::NEG_INFINITY, f64::max);
    let interests: HashMap<i64, (&InterestBook, f64)> = hood
        .interests
        .iter()
        .map(|b| (b.id, (b, (b.log_weight - interest_top).exp2())))
        .collect();
    let interest_ids: HashSet<i64> = interests.keys().copied().collect();
    let author_top = hood
        .authors
        .iter()
        .map(|a| a.1)
        .fold(f64::NEG_INFINITY, f64::max);
    let authors: HashMap<&str, f64> = hood
        .authors
        .iter()
        .map(|(a, log)| (a.as_str(), (log - author_top).exp2()))
        .collect();

    // Co-occurrence: the sum over interests, and the interest contributing most.
    let mut cooccurrence: HashMap<i64, (f64, f64, &str)> = HashMap::new();
    for (b, c, count) in &hood.neighbours {
        let Some((interest, w)) = interests.get(b) else {
            continue;
        };
        let part = w * (1.0 + *count as f64).log2();
        let entry = cooccurrence.entry(*c).or_insert((0.0, 0.0, ""));
        entry.0 += part;
        if part > entry.1 || (part == entry.1 && interest.query.as_str() < entry.2) {
            entry.1 = part;
            entry.2 = interest.query.as_str();
        }
    }
    let candidates: Vec<i64> = hood
        .candidates()
        .into_iter()
        .filter(|c| !hood.shown.contains(c) && !interest_ids.contains(c))
        .collect();
    let popular_top = candidates
        .iter()
        .filter_map(|c| hood.catalog.get(c).and_then(|(_, p)| *p))
        .fold(f64::NEG_INFINITY, f64::max);

    let mut ranked: Vec<Recommendation> = candidates
        .into_iter()
        .filter_map(|c| {
            let (entry, popularity) = hood.catalog.get(&c)?;
            let (co, _, query) = cooccurrence.get(&c).copied().unwrap_or((0.0, 0.0, ""));
            let author = AUTHOR_WEIGHT * authors.get(entry.author.as_str()).copied().unwrap_or(0.0);
            let popular = POPULAR_WEIGHT * popularity.map_or(0.0, |p| (p - popular_top).exp2());
            let reason = if co > 0.0 && co >= author && co >= popular {
                format!("because you searched for {query}")
            } else if author > 0.0 && author >= popular {
                format!("more by {}", entry.author)
            } else {
                POPULAR_REASON.to_owned()
            };
            Some(Recommendation {
                id: c,
                title: entry.title.clone(),
                author: entry.author.clone(),
                score: co + author + popular,
                reason,
            })
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    ranked.truncate(n);
    ranked
}

/// A user's profile as `GET /interests` shows it: decayed weights at the time asked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interests {
    pub uid: String,
    /// The books shown to the user, strongest first (the tutorial's interests).
    pub books: Vec<InterestEntry>,
    pub authors: Vec<WeightedName>,
    pub queries: Vec<WeightedName>,
}

/// A book of a user's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterestEntry {
    pub id: i64,
    pub title: String,
    pub author: String,
    pub score: f64,
    /// The normalized query of the last search that showed it.
    pub query: String,
}

/// An author or a query of a user's profile, with its decayed weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedName {
    pub name: String,
    pub score: f64,
}

/// Everything a store holds, in a canonical order: what tests compare between a store fed through
/// crashes and one fed by a clean replay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub catalog: Vec<CatalogEntry>,
    /// `(user, book, log_weight, last_at)`.
    pub user_books: Vec<(String, i64, f64, i64)>,
    pub user_authors: Vec<(String, String, f64)>,
    pub user_queries: Vec<(String, String, f64, i64)>,
    pub popular: Vec<(i64, f64)>,
    /// `(book, neighbour, count)`.
    pub cooccurrence: Vec<(i64, i64, u64)>,
    /// `(user, book)` pairs shown.
    pub shown: Vec<(String, i64)>,
}

impl Snapshot {
    /// Sorts every list, so that two snapshots compare by content.
    pub fn sorted(mut self) -> Self {
        self.catalog.sort_by_key(|b| b.id);
        self.user_books
            .sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        self.user_authors
            .sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        self.user_queries
            .sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        self.popular.sort_by_key(|p| p.0);
        self.cooccurrence.sort_by_key(|c| (c.0, c.1));
        self.shown.sort();
        self
    }

    /// Where `self` and `other` differ, allowing weights to differ by rounding (events of
    /// different partitions may be added in another order); `None` when they are the same.
    pub fn difference(&self, other: &Snapshot) -> Option<String> {
        fn close(a: f64, b: f64) -> bool {
            (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
        }
        let (a, b) = (self.clone().sorted(), other.clone().sorted());
        if a.catalog != b.catalog {
            return Some(format!(
                "catalogs differ: {} vs {} books",
                a.catalog.len(),
                b.catalog.len()
            ));
        }
        if a.cooccurrence != b.cooccurrence {
            let first = a
                .cooccurrence
                .iter()
                .zip(&b.cooccurrence)
                .find(|(x, y)| x != y);
            return Some(format!(
                "co-occurrence differs ({} vs {} pairs), first at {first:?}",
                a.cooccurrence.len(),
                b.cooccurrence.len()
            ));
        }
        let books_same = a.user_books.len() == b.user_books.len()
            && a.user_books
                .iter()
                .zip(&b.user_books)
                .all(|(x, y)| x.0 == y.0 && x.1 == y.1 && x.3 == y.3 && close(x.2, y.2));
        if !books_same {
            return Some(format!(
                "user books differ: {} vs {} rows",
                a.user_books.len(),
                b.user_books.len()
            ));
        }
        let authors_same = a.user_authors.len() == b.user_authors.len()
            && a.user_authors
                .iter()
                .zip(&b.user_authors)
                .all(|(x, y)| x.0 == y.0 && x.1 == y.1 && close(x.2, y.2));
        if !authors_same {
            return Some("user authors differ".to_owned());
        }
        let queries_same = a.user_queries.len() == b.user_queries.len()
            && a.user_queries
                .iter()
                .zip(&b.user_queries)
                .all(|(x, y)| x.0 == y.0 && x.1 == y.1 && x.3 == y.3 && close(x.2, y.2));
        if !queries_same {
            return Some("user queries differ".to_owned());
        }
        let popular_same = a.popular.len() == b.popular.len()
            && a.popular
                .iter()
                .zip(&b.popular)
                .all(|(x, y)| x.0 == y.0 && close(x.1, y.1));
        if !popular_same {
            return Some("popularity differs".to_owned());
        }
        if a.shown != b.shown {
            return Some(format!(
                "shown books differ: {} vs {} pairs",
                a.shown.len(),
                b.shown.len()
            ));
        }
        None
    }
}

/// Counts of what a store holds, for `GET /stats` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecommendStats {
    pub catalog_books: u64,
    pub users: u64,
    /// Exact on SQLite; the table statistics' estimate on MySQL.
    pub cooccurrence_pairs: u64,
}

#[cfg(test)]
mod tests;
