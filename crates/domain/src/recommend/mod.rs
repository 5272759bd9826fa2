//! Recommendations: the rules of the recommendation service, as pure functions over small,
//! bounded records. Stores load the records a batch needs ([`profile_needs`], then
//! [`query_needs`] → [`Prior`]), let [`apply`] compute their new values, and write [`Changes`]
//! back in one transaction; to answer, they load a reader's profile and the records around it
//! ([`Neighbourhood`]) and let [`blend`] rank them.
//!
//! **The records, and who owns them.** Every record is bounded, and every record a search
//! changes belongs to one partition of the search topic, so that the consumer owning the
//! partition is its only writer:
//!
//! - a **profile** per reader ([`Profile`], keyed by the reader, whose searches and views all go
//!   to one partition since the reader is the events' key): their strongest books, authors and
//!   queries, the books they were last shown and the books they last viewed, each list capped
//!   (`profile_*` settings);
//! - a **query record** per partition and normalized query ([`QueryRecord`]): the books the query
//!   showed, by rank weight, and the *related* queries, those searched by the same readers, each
//!   with how many readers searched both; capped at `books_per_query` and `related_per_query`;
//! - a **popularity list** per partition: the `popular_books` books shown (and viewed) most, by
//!   weight;
//! - a **co-view record** per partition and book ([`CoViews`]): the books viewed by the readers
//!   who viewed it, each with how many readers viewed both; capped at `similar_per_book`.
//!
//! Readers ask for the records of every partition and merge them ([`merge_queries`],
//! [`merge_popular`], [`merge_coviews`]): weights and counts add up. A search therefore changes
//! one profile, one or (the first time a reader searches a query) `1 + history_per_event` query
//! records, and one popularity list, whatever the history's length; a view one profile, one
//! popularity list and none or (the first time a reader views the book) `1 + history_per_event`
//! co-view records.
//!
//! **Forgetting.** A `reader.forgotten` event deletes the reader's profile (their books, authors,
//! queries, shown and viewed books); what their searches and views added to query records,
//! popularity lists and co-view records is anonymous and stays. A profile whose reader has not
//! searched or viewed for `profile_ttl` expires: a search or view after that starts a new one (by the events' times, so a replay gives the same), and stores
//! delete idle expired profiles in a background pass ([`RecommendSettings::expired_before`]).
//!
//! **Profile.** Each `book.searched` event of a known reader adds, for each of the first
//! `results_per_event` results (rank `r` in the whole result list, from 0, so page two starts
//! lower), weight `1 / log2(r + 2)` (1, 0.63, 0.5, …) to the book and to its author, and weight 1
//! to the normalized query; every result (up to [`MAX_SHOWN_PER_EVENT`]) joins the books shown to
//! them. Weights halve every `half_life` and are stored in log space relative to the epoch, like
//! the trend scores (`log = log2 Σ wᵢ·2^(tᵢ/half_life)`), so nothing is rewritten as time passes,
//! and comparing two stored weights compares their values at any time. A list over its cap drops
//! its weakest entry (ties: the greater key); the shown list keeps the books shown last.
//!
//! **Views** (`book.viewed`, a reader opened a book's page). A view by a known reader (user id as
//! for searches, [`view_user`]) adds [`VIEW_WEIGHT`] (3: three times being shown first, six
//! times being shown tenth) to the book, to its author and to the query of the search that last
//! showed it (the search led to the view) in the profile, decayed the same way, and the book
//! joins the viewed list (`profile_viewed`, the latest kept). Every view (anonymous ones too:
//! opening a book is interest, whoever did) adds the same weight to the book in the popularity
//! list of its partition. The first time a reader views a book (it is not in their viewed list),
//! it is counted with each of their last `history_per_event` viewed books that they viewed within
//! `coview_window` (an hour: one visit) before it, both ways: a co-view count is the number of
//! readers who viewed both books in one visit. (Counting views days apart mixed a reader's
//! unrelated interests: the benchmark's precision fell.)
//!
//! **Query records.** Every search (anonymous ones too) adds the same rank weights to the books of
//! its query's record and to the popularity list of its partition. The first time a reader
//! searches a query, it is related to each of the reader's `history_per_event` strongest queries
//! so far, both ways: a related count is the number of readers who searched both queries.
//!
//! **Ranking** (`GET /recommendations`). For the reader's [`INTEREST_QUERIES`] strongest queries
//! `q` (weight `w_q` relative to the strongest, `0 < w_q ≤ 1`), candidates are the books of `q`'s
//! record and of the records of `q`'s [`RELATED_PER_INTEREST`] most related queries; then the
//! books of their [`TOP_AUTHORS`] strongest authors, the books co-viewed with the
//! [`VIEWED_INTERESTS`] books they viewed last, and the most popular books. Books the reader was
//! shown or viewed are never candidates. For a candidate `c`:
//!
//! ```text
//! score(c) = Σ_q w_q · ( s(q, c) + 0.5 · Σ_q' r(q, q') · s(q', c) )   their searches and related ones
//!          + 1.0 · Σ_i v_i · m(b_i, c)         books co-viewed with the ones they viewed
//!          + 0.5 · a(author(c))               author affinity, relative to their top author
//!          + 0.1 · p(c)                       popularity, relative to the most popular candidate
//! ```
//!
//! where `s(q, c)` is `c`'s weight in `q`'s record relative to the record's strongest book,
//! `r(q, q')` the related count relative to `q`'s most related query, `b_i` the book they viewed
//! `i`-th last (from 0) with `v_i = 1 / log2(i + 2)`, and `m(b, c)` the co-view count of `c` in
//! `b`'s record relative to the record's largest. The reason names the largest term: "because you
//! looked at <title>" (the viewed book contributing most; kind [`KIND_VIEWED`]), "because you
//! searched for <q>" (the query contributing most; [`KIND_SEARCHED`]), "more by <author>"
//! ([`KIND_AUTHOR`]), or "popular with readers" ([`KIND_POPULAR`]); between searches and views
//! equal, the search. A reader with no history gets the popular books.
//!
//! **Similar books** (`GET /books/{id}/similar`, [`similar_books`]): the books of the book's
//! co-view records merged, the most readers first, kind [`KIND_SIMILAR`].
//!
//! **Stored versions.** Records are stored with a version byte ([`STORED_VERSION`]); version 2
//! (views) changed the profile, so a store of version 1 is emptied at open and rebuilt from the
//! log under a new consumer group name ([`positions_group`], [`needs_rebuild`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{BookViewedEvent, CatalogBook, CatalogChange, ResultBook, SearchEvent};
use crate::ports::Record;
use crate::trends::log2_add;

/// The reader's strongest queries whose records give candidates.
pub const INTEREST_QUERIES: usize = 8;
/// Related queries followed per interest query.
pub const RELATED_PER_INTEREST: usize = 4;
/// The reader's strongest authors whose books are candidates.
pub const TOP_AUTHORS: usize = 3;
/// Books of one author looked at (the first by id).
pub const AUTHOR_BOOKS: usize = 100;
/// Weight of related queries' books, of author affinity and of popularity in the blend (the
/// reader's own queries' books weigh 1).
pub const RELATED_WEIGHT: f64 = 0.5;
pub const AUTHOR_WEIGHT: f64 = 0.5;
pub const POPULAR_WEIGHT: f64 = 0.1;
/// The weight a view adds to the book and its author in the reader's profile: a book opened
/// counts three times as much as being shown first in a search (`1 / log2(r + 2)` at rank `r`,
/// so 1, 0.63, 0.5, …), decayed the same way.
pub const VIEW_WEIGHT: f64 = 3.0;
/// The reader's most recently viewed books whose co-view records give candidates.
pub const VIEWED_INTERESTS: usize = 8;
/// Weight of co-viewed books in the blend (the reader's own queries' books weigh 1).
pub const VIEWED_WEIGHT: f64 = 1.0;
/// The reason given on a book's "readers who looked at this also looked at" list.
pub const SIMILAR_REASON: &str = "readers who looked at this also looked at it";

/// Recommendations per answer by default, and at most.
pub const DEFAULT_RECOMMENDATIONS: usize = 10;
pub const MAX_RECOMMENDATIONS: usize = 50;

/// Results of one event remembered as shown to its reader (the API's largest page).
pub const MAX_SHOWN_PER_EVENT: usize = 100;

/// Longest user id kept in a profile (longer ones count as anonymous), and the lengths at which
/// queries and author names are cut, so that every store can hold them.
pub const MAX_USER_CHARS: usize = 191;
pub const MAX_QUERY_CHARS: usize = 200;
pub const MAX_AUTHOR_CHARS: usize = 255;

/// The kinds of reason ([`Recommendation::kind`]).
pub const KIND_SEARCHED: &str = "searched";
pub const KIND_VIEWED: &str = "viewed";
pub const KIND_AUTHOR: &str = "author";
pub const KIND_POPULAR: &str = "popular";
pub const KIND_SIMILAR: &str = "similar";

/// The reason given for popular books.
pub const POPULAR_REASON: &str = "popular with readers";

/// The consumer group under which a store keeps its positions for `group`: its own name for
/// these records, so that a store that held the records of earlier rules starts again from the
/// start of the log instead of resuming where those left off. `/profiles` was the group of the
/// records of [`STORED_VERSION`] 1 (before views; earlier still, tables no longer read:
/// `rec_user_books`, `rec_user_shown`, `rec_user_authors`, `rec_user_queries`,
/// `rec_cooccurrence`, `rec_popular`); `/views` is theirs since version 2. A store opening rows of
/// an older version deletes them ([`needs_rebuild`]) and, under the new group, rebuilds them
/// from the log (what the log still holds: searches older than its retention are gone).
pub fn positions_group(group: &str) -> String {
    format!("{group}/views")
}

/// Whether a store whose records were written by [`STORED_VERSION`] `stored` (`None`: no mark,
/// a store of version 1 or a new one) must delete its profiles, query records, popularity lists
/// and co-view records before use: they are rebuilt from the log under [`positions_group`]. The
/// catalog copy stays (its events are upserts and deletes, replayed harmlessly).
pub fn needs_rebuild(stored: Option<u8>) -> bool {
    stored != Some(STORED_VERSION)
}

/// The tunable bounds and decay of the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendSettings {
    /// Time for a weight to halve.
    pub half_life: Duration,
    /// Results of one event that count (the rest of a huge page is ignored).
    pub results_per_event: usize,
    /// A reader's strongest queries a query new to them is related to.
    pub history_per_event: usize,
    /// Books kept per query record.
    pub books_per_query: usize,
    /// Related queries kept per query record.
    pub related_per_query: usize,
    /// Books kept in each partition's popularity list.
    pub popular_books: usize,
    /// Books, authors and queries kept per profile, and books remembered as shown.
    pub profile_books: usize,
    pub profile_authors: usize,
    pub profile_queries: usize,
    pub profile_shown: usize,
    /// Books remembered as viewed per profile (never recommended to the reader).
    pub profile_viewed: usize,
    /// Co-viewed books kept per book record.
    pub similar_per_book: usize,
    /// Two views by one reader count as viewed together only this close in time (one visit).
    pub coview_window: Duration,
    /// A profile whose reader has not searched or viewed for this long is deleted.
    pub profile_ttl: Duration,
}

impl Default for RecommendSettings {
    fn default() -> Self {
        Self {
            half_life: Duration::from_secs(7 * 24 * 3600),
            results_per_event: 10,
            history_per_event: 10,
            books_per_query: 50,
            related_per_query: 20,
            popular_books: 1_000,
            profile_books: 200,
            profile_authors: 50,
            profile_queries: 50,
            profile_shown: 1_000,
            profile_viewed: 500,
            similar_per_book: 50,
            coview_window: Duration::from_secs(3600),
            profile_ttl: Duration::from_secs(180 * 24 * 3600),
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

    /// Profiles whose last search is older than this (Unix milliseconds) have expired.
    pub fn expired_before(&self, now: DateTime<Utc>) -> i64 {
        let ttl = i64::try_from(self.profile_ttl.as_millis()).unwrap_or(i64::MAX);
        now.timestamp_millis().saturating_sub(ttl)
    }

    fn half_life_secs(&self) -> f64 {
        self.half_life.as_secs_f64().max(1e-3)
    }
}

/// The weight of the result at `rank` (0 = first): `1 / log2(rank + 2)`.
pub fn rank_weight(rank: usize) -> f64 {
    1.0 / ((rank as f64) + 2.0).log2()
}

/// A reader's weight of one book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileBook {
    pub id: i64,
    pub log_weight: f64,
    /// The last search that showed it: the [`ProfileName::id`] of its query in the profile's
    /// queries (gone if the query was dropped from them since; [`NO_QUERY`] for a book only
    /// viewed).
    pub query: u32,
}

/// [`ProfileBook::query`] of a book the reader viewed without a search showing it.
pub const NO_QUERY: u32 = u32::MAX;

/// A reader's weight of an author or a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileName {
    /// For queries, a number the profile's books refer to (unique within the profile); 0 for
    /// authors.
    pub id: u32,
    pub name: String,
    pub log_weight: f64,
}

/// Everything the service holds about one reader, bounded by the `profile_*` settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Unix milliseconds of the reader's last search.
    pub last_at: i64,
    /// The [`ProfileName::id`] the next new query gets.
    pub next_query: u32,
    pub books: Vec<ProfileBook>,
    pub authors: Vec<ProfileName>,
    pub queries: Vec<ProfileName>,
    /// Books shown to the reader, each once, in the order they were last shown.
    pub shown: Vec<i64>,
    /// Books the reader viewed (opened), each once, in the order they were last viewed.
    pub viewed: Vec<ProfileView>,
}

/// A book a reader viewed, and when last (Unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileView {
    pub id: i64,
    pub at: i64,
}

impl Profile {
    /// The ids of the books viewed, the last viewed last.
    pub fn viewed_ids(&self) -> Vec<i64> {
        self.viewed.iter().map(|v| v.id).collect()
    }
}

/// One partition's record of one query: the books it showed and the queries related to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryRecord {
    /// `(book, log weight)`.
    pub books: Vec<(i64, f64)>,
    /// `(query, readers who searched both)`.
    pub related: Vec<(String, u64)>,
}

/// One partition's most shown books, `(book, log weight)`.
pub type PopularList = Vec<(i64, f64)>;

/// One partition's record of one book: the books viewed by the readers who viewed it, `(book,
/// readers who viewed both)`, capped at `similar_per_book`.
pub type CoViews = Vec<(i64, u64)>;

/// The version of the stored encoding, its first byte: a later version of these records reads
/// this one (or knows it cannot) instead of misreading it. Version 2 added the viewed books to
/// profiles, and co-view records.
pub const STORED_VERSION: u8 = 2;

/// The stored encoding of records (compact, not meant for humans; stores keep it in a blob): a
/// version byte, then the record in postcard.
pub trait Stored: Serialize + for<'de> Deserialize<'de> + Sized {
    fn to_bytes(&self) -> Vec<u8> {
        // Serializing these plain structs into a Vec cannot fail (postcard fails only on types
        // it cannot represent, or on a full fixed buffer).
        postcard::to_extend(self, vec![STORED_VERSION]).unwrap_or_default()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&STORED_VERSION, record)) => postcard::from_bytes(record)
                .map_err(|e| format!("a stored record does not decode: {e}")),
            Some((version, _)) => Err(format!(
                "a stored record is of version {version}, this build reads version {STORED_VERSION}"
            )),
            None => Err("a stored record is empty".to_owned()),
        }
    }
}

impl Stored for Profile {}
impl Stored for QueryRecord {}
impl Stored for PopularList {}
impl Stored for CoViews {}

/// The results of `event` that count, first occurrence of each book only, each with its rank
/// in the whole result list (the event's offset plus its place on the page).
pub fn counted_results<'a>(
    settings: &RecommendSettings,
    event: &'a SearchEvent,
) -> impl Iterator<Item = (usize, &'a ResultBook)> {
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

/// The reader whose profile `event` adds to: `None` for anonymous searches and ids too long to keep.
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

/// The reader whose profile a view adds to, as [`profile_user`].
pub fn view_user(event: &BookViewedEvent) -> Option<&String> {
    event
        .user_id
        .as_ref()
        .filter(|u| u.chars().count() <= MAX_USER_CHARS)
}

fn query_of(event: &SearchEvent) -> String {
    cut(&event.query_normalized, MAX_QUERY_CHARS)
}

/// The profiles a batch reads: its readers (who searched or viewed).
pub fn profile_needs(records: &[Record]) -> BTreeSet<String> {
    let searchers = records
        .iter()
        .filter_map(|r| r.event.as_search())
        .filter_map(profile_user);
    let viewers = records
        .iter()
        .filter_map(|r| r.event.as_view())
        .filter_map(view_user);
    searchers.chain(viewers).cloned().collect()
}

/// The co-view records a batch reads, `(partition, book)`, once its readers' profiles are
/// loaded: the books known readers viewed, and each such reader's last `history_per_event`
/// viewed books (those a book new to them is counted with). Books viewed earlier in the batch
/// are among the first, so this covers every record [`apply`] may change.
pub fn coview_needs(
    settings: &RecommendSettings,
    records: &[Record],
    profiles: &HashMap<String, Profile>,
) -> BTreeSet<(i32, i64)> {
    let mut needs = BTreeSet::new();
    for record in records {
        let Some(event) = record.event.as_view() else {
            continue;
        };
        let Some(user) = view_user(event) else {
            continue;
        };
        needs.insert((record.partition, event.book.id));
        if let Some(profile) = profiles.get(user) {
            for book in last_viewed(profile, settings.history_per_event) {
                needs.insert((record.partition, book));
            }
        }
    }
    needs
}

/// The `n` books `profile` viewed last, the latest first.
fn last_viewed(profile: &Profile, n: usize) -> impl Iterator<Item = i64> + '_ {
    profile.viewed.iter().rev().take(n).map(|v| v.id)
}

/// The query records a batch reads, `(partition, query)`, once its readers' profiles are loaded:
/// its queries, its readers' strongest queries (the ones a new query may be related to), and the
/// queries that showed the books its readers view (a view may make them strongest).
pub fn query_needs(
    settings: &RecommendSettings,
    records: &[Record],
    profiles: &HashMap<String, Profile>,
) -> BTreeSet<(i32, String)> {
    let mut needs = BTreeSet::new();
    for record in records {
        // A view adds weight to the query that showed its book, which may lift that query among
        // the reader's strongest (those a later search of the batch is related to).
        if let Some(event) = record.event.as_view() {
            let profile = view_user(event).and_then(|u| profiles.get(u));
            if let Some((profile, book)) =
                profile.and_then(|p| Some((p, p.books.iter().find(|b| b.id == event.book.id)?)))
                && let Some(query) = profile.queries.iter().find(|q| q.id == book.query)
            {
                needs.insert((record.partition, query.name.clone()));
            }
            continue;
        }
        let Some(event) = record.event.as_search() else {
            continue;
        };
        needs.insert((record.partition, query_of(event)));
        if let Some(profile) = profile_user(event).and_then(|u| profiles.get(u)) {
            for q in strongest(&profile.queries, settings.history_per_event) {
                needs.insert((record.partition, q.name.clone()));
            }
        }
    }
    needs
}

/// The partitions whose popularity lists a batch reads (searches and views add to them).
pub fn popular_needs(records: &[Record]) -> BTreeSet<i32> {
    records
        .iter()
        .filter(|r| r.event.as_search().is_some() || r.event.as_view().is_some())
        .map(|r| r.partition)
        .collect()
}

/// The stored records the needs named (missing ones are absent: they start empty).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Prior {
    pub profiles: HashMap<String, Profile>,
    pub queries: HashMap<(i32, String), QueryRecord>,
    pub popular: HashMap<i32, PopularList>,
    pub coviews: HashMap<(i32, i64), CoViews>,
}

/// Everything a batch writes: the new value of every record it changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    pub profiles: BTreeMap<String, Profile>,
    pub queries: BTreeMap<(i32, String), QueryRecord>,
    pub popular: BTreeMap<i32, PopularList>,
    pub coviews: BTreeMap<(i32, i64), CoViews>,
    /// Catalog books created or replaced, the last event of a book winning.
    pub catalog: BTreeMap<i64, CatalogBook>,
    /// Catalog books deleted (and not created again later in the batch): stores remove them
    /// from their catalog copy, so they are never recommended again.
    pub deleted: BTreeSet<i64>,
    /// Readers forgotten (`reader.forgotten`): stores delete their profiles first, then write
    /// [`Changes::profiles`], which holds a reader only if they searched or viewed again
    /// afterwards.
    pub forgotten: BTreeSet<String>,
}

/// `n` entries of `names`, strongest first (ties: lower name first).
fn strongest(names: &[ProfileName], n: usize) -> Vec<&ProfileName> {
    let mut sorted: Vec<&ProfileName> = names.iter().collect();
    sorted.sort_by(|a, b| {
        b.log_weight
            .total_cmp(&a.log_weight)
            .then(a.name.cmp(&b.name))
    });
    sorted.truncate(n);
    sorted
}

/// Removes the weakest entries of `list` while it holds more than `cap`, `weaker(a, b)` telling
/// whether `a` is weaker than `b`; one scan per entry removed, so a long list at its cap costs
/// no sort. The order of the others changes, the same way whenever the same entries are added.
fn drop_weakest<T>(list: &mut Vec<T>, cap: usize, weaker: impl Fn(&T, &T) -> bool) {
    while list.len() > cap {
        let mut weakest = 0;
        for (i, entry) in list.iter().enumerate().skip(1) {
            if weaker(entry, &list[weakest]) {
                weakest = i;
            }
        }
        list.swap_remove(weakest);
    }
}

/// Adds `log` to `key`'s weight in `list`, then drops the weakest entries over `cap` (ties: the
/// greater key).
fn add_weight<K: Ord + Clone>(list: &mut Vec<(K, f64)>, key: &K, log: f64, cap: usize) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = log2_add(entry.1, log),
        None => list.push((key.clone(), log)),
    }
    drop_weakest(list, cap, |a, b| a.1 < b.1 || (a.1 == b.1 && a.0 > b.0));
}

/// Adds `log` to `name`'s entry in `list` (a new entry gets the id `new_id`), then drops the
/// weakest over `cap`; returns the entry's id.
fn add_name(list: &mut Vec<ProfileName>, name: &str, log: f64, new_id: u32, cap: usize) -> u32 {
    let id = match list.iter_mut().find(|n| n.name == name) {
        Some(entry) => {
            entry.log_weight = log2_add(entry.log_weight, log);
            entry.id
        }
        None => {
            list.push(ProfileName {
                id: new_id,
                name: name.to_owned(),
                log_weight: log,
            });
            new_id
        }
    };
    drop_weakest(list, cap, |a, b| {
        a.log_weight < b.log_weight || (a.log_weight == b.log_weight && a.name > b.name)
    });
    id
}

/// Adds one reader to the related count of `other` in `record`, then drops the weakest over `cap`.
fn relate(record: &mut QueryRecord, other: &str, cap: usize) {
    match record.related.iter_mut().find(|(q, _)| q == other) {
        Some(entry) => entry.1 += 1,
        None => record.related.push((other.to_owned(), 1)),
    }
    drop_weakest(&mut record.related, cap, |a, b| {
        a.1 < b.1 || (a.1 == b.1 && a.0 > b.0)
    });
}

/// Adds one reader to the co-view count of `other` in `record`, then drops the weakest over
/// `cap` (ties: the greater book).
fn count_coview(record: &mut CoViews, other: i64, cap: usize) {
    match record.iter_mut().find(|(b, _)| *b == other) {
        Some(entry) => entry.1 += 1,
        None => record.push((other, 1)),
    }
    drop_weakest(record, cap, |a, b| a.1 < b.1 || (a.1 == b.1 && a.0 > b.0));
}

/// Applies `records` in order to `prior` and returns every record they changed.
pub fn apply(settings: &RecommendSettings, mut prior: Prior, records: &[Record]) -> Changes {
    let mut changes = Changes::default();
    let mut profiles = BTreeSet::new();
    let mut queries = BTreeSet::new();
    let mut popular = BTreeSet::new();
    let mut coviews = BTreeSet::new();
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
                if let Some(forgotten) = record.event.as_forgotten() {
                    prior.profiles.remove(&forgotten.user_id);
                    profiles.remove(&forgotten.user_id);
                    changes.forgotten.insert(forgotten.user_id.clone());
                } else if let Some(event) = record.event.as_search() {
                    let partition = record.partition;
                    apply_search(settings, &mut prior, partition, event, &mut queries);
                    popular.insert(partition);
                    if let Some(user) = profile_user(event) {
                        profiles.insert(user.clone());
                    }
                } else if let Some(event) = record.event.as_view() {
                    let partition = record.partition;
                    apply_view(settings, &mut prior, partition, event, &mut coviews);
                    popular.insert(partition);
                    if let Some(user) = view_user(event) {
                        profiles.insert(user.clone());
                    }
                }
            }
        }
    }
    for user in profiles {
        if let Some(profile) = prior.profiles.remove(&user) {
            changes.profiles.insert(user, profile);
        }
    }
    for key in queries {
        if let Some(record) = prior.queries.remove(&key) {
            changes.queries.insert(key, record);
        }
    }
    for partition in popular {
        if let Some(list) = prior.popular.remove(&partition) {
            changes.popular.insert(partition, list);
        }
    }
    for key in coviews {
        if let Some(record) = prior.coviews.remove(&key) {
            changes.coviews.insert(key, record);
        }
    }
    changes
}

/// The profile of `user` in `prior`, started afresh if it expired before `at` (Unix ms), its
/// last activity moved to `at`.
fn active_profile<'a>(
    settings: &RecommendSettings,
    profiles: &'a mut HashMap<String, Profile>,
    user: &str,
    at: i64,
) -> &'a mut Profile {
    let profile = profiles.entry(user.to_owned()).or_default();
    // A reader back after `profile_ttl` starts afresh: their old profile has expired (stores also
    // delete idle expired profiles in the background).
    let ttl = i64::try_from(settings.profile_ttl.as_millis()).unwrap_or(i64::MAX);
    if profile.last_at > 0 && at.saturating_sub(profile.last_at) > ttl {
        *profile = Profile::default();
    }
    profile.last_at = profile.last_at.max(at);
    profile
}

/// A view: [`VIEW_WEIGHT`] to the partition's popularity (anonymous views too: opening a book
/// is interest in it, whoever did); for a known reader, the same weight to the book, its author
/// and the query of the search that last showed it in their profile, and, the first time they
/// view the book, a co-view count between it and each of their last `history_per_event` viewed
/// books viewed within `coview_window` before, both ways.
fn apply_view(
    settings: &RecommendSettings,
    prior: &mut Prior,
    partition: i32,
    event: &BookViewedEvent,
    touched: &mut BTreeSet<(i32, i64)>,
) {
    let book = event.book.id;
    let log = settings.log_weight(VIEW_WEIGHT, event.occurred_at);
    add_weight(
        prior.popular.entry(partition).or_default(),
        &book,
        log,
        settings.popular_books,
    );
    let Some(user) = view_user(event) else {
        return;
    };
    let at = event.occurred_at.timestamp_millis();
    let profile = active_profile(settings, &mut prior.profiles, user, at);
    match profile.books.iter_mut().find(|b| b.id == book) {
        Some(entry) => entry.log_weight = log2_add(entry.log_weight, log),
        None => profile.books.push(ProfileBook {
            id: book,
            log_weight: log,
            query: NO_QUERY,
        }),
    }
    drop_weakest(&mut profile.books, settings.profile_books, |a, b| {
        a.log_weight < b.log_weight || (a.log_weight == b.log_weight && a.id > b.id)
    });
    let author = cut(&event.book.author, MAX_AUTHOR_CHARS);
    add_name(
        &mut profile.authors,
        &author,
        log,
        0,
        settings.profile_authors,
    );
    // The search that showed the book led to a view: its query was what the reader wanted.
    let shown_by = profile.books.iter().find(|b| b.id == book).map(|b| b.query);
    if let Some(query) = shown_by.and_then(|id| {
        profile
            .queries
            .iter_mut()
            .find(|q| q.id == id && id != NO_QUERY)
    }) {
        query.log_weight = log2_add(query.log_weight, log);
    }

    let first_time = !profile.viewed.iter().any(|v| v.id == book);
    let window = i64::try_from(settings.coview_window.as_millis()).unwrap_or(i64::MAX);
    let partners: Vec<i64> = if first_time {
        profile
            .viewed
            .iter()
            .rev()
            .take(settings.history_per_event)
            .filter(|v| at.saturating_sub(v.at) <= window)
            .map(|v| v.id)
            .collect()
    } else {
        Vec::new()
    };
    if let Some(i) = profile.viewed.iter().position(|v| v.id == book) {
        profile.viewed.remove(i);
    }
    profile.viewed.push(ProfileView { id: book, at });
    let over = profile.viewed.len().saturating_sub(settings.profile_viewed);
    profile.viewed.drain(..over);

    for partner in partners {
        let theirs = (partition, partner);
        count_coview(
            prior.coviews.entry(theirs).or_default(),
            book,
            settings.similar_per_book,
        );
        touched.insert(theirs);
        let own = (partition, book);
        count_coview(
            prior.coviews.entry(own).or_default(),
            partner,
            settings.similar_per_book,
        );
        touched.insert(own);
    }
}

fn apply_search(
    settings: &RecommendSettings,
    prior: &mut Prior,
    partition: i32,
    event: &SearchEvent,
    touched: &mut BTreeSet<(i32, String)>,
) {
    let at = event.occurred_at.timestamp_millis();
    let query = query_of(event);
    let counted: Vec<(f64, &ResultBook)> = counted_results(settings, event)
        .map(|(rank, book)| {
            (
                settings.log_weight(rank_weight(rank), event.occurred_at),
                book,
            )
        })
        .collect();

    let popular = prior.popular.entry(partition).or_default();
    let key = (partition, query.clone());
    let record = prior.queries.entry(key.clone()).or_default();
    for (log, book) in &counted {
        add_weight(popular, &book.id, *log, settings.popular_books);
        add_weight(&mut record.books, &book.id, *log, settings.books_per_query);
    }
    touched.insert(key);

    let Some(user) = profile_user(event) else {
        return;
    };
    let profile = active_profile(settings, &mut prior.profiles, user, at);

    // A query new to the reader is related to their strongest queries so far, both ways.
    if !profile.queries.iter().any(|q| q.name == query) {
        let partners: Vec<String> = strongest(&profile.queries, settings.history_per_event)
            .into_iter()
            .map(|q| q.name.clone())
            .collect();
        for partner in partners {
            let theirs = (partition, partner.clone());
            relate(
                prior.queries.entry(theirs.clone()).or_default(),
                &query,
                settings.related_per_query,
            );
            touched.insert(theirs);
            if let Some(own) = prior.queries.get_mut(&(partition, query.clone())) {
                relate(own, &partner, settings.related_per_query);
            }
        }
    }
    let log_one = settings.log_weight(1.0, event.occurred_at);
    let query_id = add_name(
        &mut profile.queries,
        &query,
        log_one,
        profile.next_query,
        settings.profile_queries,
    );
    if query_id == profile.next_query {
        profile.next_query = profile.next_query.wrapping_add(1);
    }

    for (log, book) in &counted {
        match profile.books.iter_mut().find(|b| b.id == book.id) {
            Some(entry) => {
                entry.log_weight = log2_add(entry.log_weight, *log);
                entry.query = query_id;
            }
            None => profile.books.push(ProfileBook {
                id: book.id,
                log_weight: *log,
                query: query_id,
            }),
        }
        let author = cut(&book.author, MAX_AUTHOR_CHARS);
        add_name(
            &mut profile.authors,
            &author,
            *log,
            0,
            settings.profile_authors,
        );
    }
    drop_weakest(&mut profile.books, settings.profile_books, |a, b| {
        a.log_weight < b.log_weight || (a.log_weight == b.log_weight && a.id > b.id)
    });

    let mut seen = HashSet::new();
    for book in event
        .results
        .iter()
        .filter(|b| seen.insert(b.id))
        .take(MAX_SHOWN_PER_EVENT)
    {
        if let Some(at) = profile.shown.iter().position(|id| *id == book.id) {
            profile.shown.remove(at);
        }
        profile.shown.push(book.id);
    }
    let over = profile.shown.len().saturating_sub(settings.profile_shown);
    profile.shown.drain(..over);
}

/// Query records of every partition merged into one per query: book weights and related counts
/// add up.
pub fn merge_queries(
    records: impl IntoIterator<Item = (String, QueryRecord)>,
) -> HashMap<String, QueryRecord> {
    let mut merged: HashMap<String, QueryRecord> = HashMap::new();
    for (query, record) in records {
        let into = merged.entry(query).or_default();
        for (book, log) in record.books {
            add_weight(&mut into.books, &book, log, usize::MAX);
        }
        for (other, n) in record.related {
            match into.related.iter_mut().find(|(q, _)| *q == other) {
                Some(entry) => entry.1 += n,
                None => into.related.push((other, n)),
            }
        }
    }
    merged
}

/// Popularity lists of every partition merged: the `n` books with the greatest summed weight,
/// strongest first (ties: lower id first).
pub fn merge_popular(lists: impl IntoIterator<Item = PopularList>, n: usize) -> PopularList {
    let mut sums: HashMap<i64, f64> = HashMap::new();
    for (book, log) in lists.into_iter().flatten() {
        let sum = sums.entry(book).or_insert(f64::NEG_INFINITY);
        *sum = log2_add(*sum, log);
    }
    let mut merged: PopularList = sums.into_iter().collect();
    merged.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    merged.truncate(n);
    merged
}

/// Co-view records of every partition merged into one per book: counts add up.
pub fn merge_coviews(records: impl IntoIterator<Item = (i64, CoViews)>) -> HashMap<i64, CoViews> {
    let mut merged: HashMap<i64, CoViews> = HashMap::new();
    for (book, record) in records {
        let into = merged.entry(book).or_default();
        for (other, n) in record {
            match into.iter_mut().find(|(b, _)| *b == other) {
                Some(entry) => entry.1 += n,
                None => into.push((other, n)),
            }
        }
    }
    merged
}

/// The viewed books of `profile` whose co-view records give candidates: the
/// [`VIEWED_INTERESTS`] it viewed last, the latest first.
pub fn viewed_interests(profile: &Profile) -> Vec<i64> {
    last_viewed(profile, VIEWED_INTERESTS).collect()
}

/// The `n` books most co-viewed with `book` in its merged record (not itself), strongest first
/// (ties: lower id first).
pub fn most_coviewed(record: &CoViews, book: i64, n: usize) -> Vec<(i64, u64)> {
    let mut sorted: Vec<(i64, u64)> = record.iter().copied().filter(|b| b.0 != book).collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    sorted.truncate(n);
    sorted
}

/// The interest queries of `profile`, strongest first, and the related queries to follow from
/// them once their records are loaded: what a store loads to answer.
pub fn interest_queries(profile: &Profile) -> Vec<String> {
    strongest(&profile.queries, INTEREST_QUERIES)
        .into_iter()
        .map(|q| q.name.clone())
        .collect()
}

/// The related queries [`blend`] follows from the interest queries' merged records.
pub fn related_queries(
    interests: &[String],
    records: &HashMap<String, QueryRecord>,
) -> Vec<String> {
    let mut related = BTreeSet::new();
    for q in interests {
        if let Some(record) = records.get(q) {
            for (other, _) in most_related(record) {
                if !records.contains_key(other) {
                    related.insert(other.clone());
                }
            }
        }
    }
    related.into_iter().collect()
}

fn most_related(record: &QueryRecord) -> Vec<&(String, u64)> {
    let mut related: Vec<&(String, u64)> = record.related.iter().collect();
    related.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    related.truncate(RELATED_PER_INTEREST);
    related
}

/// A book the service can recommend, from its catalog copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub id: i64,
    pub title: String,
    pub author: String,
}

/// What [`blend`] ranks: a reader's profile and the records around it, as loaded.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Neighbourhood {
    pub profile: Profile,
    /// Merged records of the interest queries and of the related queries.
    pub queries: HashMap<String, QueryRecord>,
    /// Books of the reader's [`TOP_AUTHORS`] strongest authors.
    pub author_books: Vec<i64>,
    /// Merged popularity, strongest first.
    pub popular: PopularList,
    /// Merged co-view records of the reader's [`viewed_interests`].
    pub coviews: HashMap<i64, CoViews>,
}

/// A candidate's score so far, before the catalog is consulted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidate {
    pub id: i64,
    /// The co-search part of the score, and the query contributing most to it.
    pub searched: f64,
    pub best: f64,
    pub query: String,
    pub popular: f64,
    /// The co-view part of the score, and the viewed book contributing most to it.
    pub viewed: f64,
    pub viewed_best: f64,
    pub viewed_from: i64,
}

impl Neighbourhood {
    /// Candidates neither shown to the reader nor viewed by them, with their search, co-view and
    /// popularity parts, best first: the store loads the catalog entries of the first few and
    /// lets [`blend`] finish.
    pub fn candidates(&self) -> Vec<Candidate> {
        let shown: HashSet<i64> = self
            .profile
            .shown
            .iter()
            .copied()
            .chain(self.profile.viewed.iter().map(|v| v.id))
            .collect();
        let interests = interest_queries(&self.profile);
        let top = self
            .profile
            .queries
            .iter()
            .map(|q| q.log_weight)
            .fold(f64::NEG_INFINITY, f64::max);
        let weight_of = |q: &str| {
            self.profile
                .queries
                .iter()
                .find(|p| p.name == q)
                .map_or(0.0, |p| (p.log_weight - top).exp2())
        };
        let mut found: HashMap<i64, Candidate> = HashMap::new();
        let add = |found: &mut HashMap<i64, Candidate>, book: i64, part: f64, query: &str| {
            if shown.contains(&book) || part <= 0.0 {
                return;
            }
            let c = found.entry(book).or_insert_with(|| Candidate {
                id: book,
                ..Candidate::default()
            });
            c.searched += part;
            if part > c.best || (part == c.best && query < c.query.as_str()) {
                c.best = part;
                c.query = query.to_owned();
            }
        };
        let relative = |record: &QueryRecord| {
            let top = record
                .books
                .iter()
                .map(|b| b.1)
                .fold(f64::NEG_INFINITY, f64::max);
            record
                .books
                .iter()
                .map(move |(b, log)| (*b, (log - top).exp2()))
                .collect::<Vec<_>>()
        };
        for q in &interests {
            let w = weight_of(q);
            let Some(record) = self.queries.get(q) else {
                continue;
            };
            for (book, s) in relative(record) {
                add(&mut found, book, w * s, q);
            }
            let related = most_related(record);
            let most = related.first().map_or(1, |r| r.1).max(1) as f64;
            for (other, n) in related {
                let Some(theirs) = self.queries.get(other) else {
                    continue;
                };
                let r = *n as f64 / most;
                for (book, s) in relative(theirs) {
                    add(&mut found, book, w * RELATED_WEIGHT * r * s, q);
                }
            }
        }
        for (i, viewed) in viewed_interests(&self.profile).into_iter().enumerate() {
            let Some(record) = self.coviews.get(&viewed) else {
                continue;
            };
            let w = VIEWED_WEIGHT * rank_weight(i);
            let most = record.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
            for (book, n) in record {
                if shown.contains(book) || *book == viewed {
                    continue;
                }
                let part = w * (*n as f64) / most;
                let c = found.entry(*book).or_insert_with(|| Candidate {
                    id: *book,
                    ..Candidate::default()
                });
                c.viewed += part;
                if part > c.viewed_best {
                    c.viewed_best = part;
                    c.viewed_from = viewed;
                }
            }
        }
        for book in &self.author_books {
            if !shown.contains(book) {
                found.entry(*book).or_insert_with(|| Candidate {
                    id: *book,
                    ..Candidate::default()
                });
            }
        }
        let popular_top = self
            .popular
            .iter()
            .filter(|(b, _)| !shown.contains(b))
            .map(|p| p.1)
            .fold(f64::NEG_INFINITY, f64::max);
        for (book, log) in &self.popular {
            if shown.contains(book) {
                continue;
            }
            found
                .entry(*book)
                .or_insert_with(|| Candidate {
                    id: *book,
                    ..Candidate::default()
                })
                .popular = POPULAR_WEIGHT * (log - popular_top).exp2();
        }
        let mut candidates: Vec<Candidate> = found.into_values().collect();
        candidates.sort_by(|a, b| {
            (b.searched + b.viewed + b.popular)
                .total_cmp(&(a.searched + a.viewed + a.popular))
                .then(a.id.cmp(&b.id))
        });
        candidates
    }
}

/// A recommended book and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub id: i64,
    pub title: String,
    pub author: String,
    pub score: f64,
    /// Why, in words for the reader.
    pub reason: String,
    /// Why, as a kind for click-through rates: `searched`, `viewed`, `author`, `popular`, or
    /// `similar` (for a book's "readers who looked at this also looked at").
    #[serde(default)]
    pub kind: String,
}

/// Candidates whose catalog entries the store loads for `n` recommendations: the best by search
/// and popularity, and every book of the reader's strongest authors (author affinity may lift
/// them).
pub fn shortlist(hood: &Neighbourhood, n: usize) -> Vec<Candidate> {
    let authors: HashSet<i64> = hood.author_books.iter().copied().collect();
    let limit = n.saturating_mul(3).saturating_add(30);
    hood.candidates()
        .into_iter()
        .enumerate()
        .filter(|(i, c)| *i < limit || authors.contains(&c.id))
        .map(|(_, c)| c)
        .collect()
}

/// Ranks `shortlist` (see the module's documentation) with the catalog entries the store found
/// (a candidate missing from `catalog` is not in the catalog copy and is left out; the viewed
/// books a reason names are looked up there too) and returns the best `n`.
pub fn blend(
    profile: &Profile,
    shortlist: Vec<Candidate>,
    catalog: &HashMap<i64, CatalogEntry>,
    n: usize,
) -> Vec<Recommendation> {
    let top_authors = strongest(&profile.authors, TOP_AUTHORS);
    let author_top = top_authors
        .first()
        .map_or(f64::NEG_INFINITY, |a| a.log_weight);
    let authors: HashMap<&str, f64> = top_authors
        .iter()
        .map(|a| (a.name.as_str(), (a.log_weight - author_top).exp2()))
        .collect();
    let mut ranked: Vec<Recommendation> = shortlist
        .into_iter()
        .filter_map(|c| {
            let entry = catalog.get(&c.id)?;
            let author = AUTHOR_WEIGHT * authors.get(entry.author.as_str()).copied().unwrap_or(0.0);
            let largest = c.searched.max(c.viewed).max(author).max(c.popular);
            let (reason, kind) = if c.viewed > 0.0 && c.viewed >= largest && c.viewed > c.searched {
                let title = catalog
                    .get(&c.viewed_from)
                    .map_or("a book you opened", |v| v.title.as_str());
                (format!("because you looked at {title}"), KIND_VIEWED)
            } else if c.searched > 0.0 && c.searched >= author && c.searched >= c.popular {
                (
                    format!("because you searched for {}", c.query),
                    KIND_SEARCHED,
                )
            } else if author > 0.0 && author >= c.popular {
                (format!("more by {}", entry.author), KIND_AUTHOR)
            } else {
                (POPULAR_REASON.to_owned(), KIND_POPULAR)
            };
            Some(Recommendation {
                id: c.id,
                title: entry.title.clone(),
                author: entry.author.clone(),
                score: c.searched + c.viewed + author + c.popular,
                reason,
                kind: kind.to_owned(),
            })
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    ranked.truncate(n);
    ranked
}

/// The strongest authors of `profile` whose books a store looks up for [`Neighbourhood`].
pub fn top_authors(profile: &Profile) -> Vec<String> {
    strongest(&profile.authors, TOP_AUTHORS)
        .into_iter()
        .map(|a| a.name.clone())
        .collect()
}

/// What a store reads to answer a reader: its records, by key. [`answer`] and [`read_interests`]
/// do the rest, the same for every store.
#[async_trait::async_trait]
pub trait RecordReader: Send {
    type Error: Send;

    /// `user`'s profile, if the store has one.
    async fn profile(&mut self, user: &str) -> Result<Option<Profile>, Self::Error>;
    /// The records of `queries`, every partition's merged ([`merge_queries`]).
    async fn query_records(
        &mut self,
        queries: &[String],
    ) -> Result<HashMap<String, QueryRecord>, Self::Error>;
    /// The first `limit` books of `author` in the catalog copy, by id.
    async fn author_books(&mut self, author: &str, limit: usize) -> Result<Vec<i64>, Self::Error>;
    /// Every partition's popularity list.
    async fn popular_lists(&mut self) -> Result<Vec<PopularList>, Self::Error>;
    /// The co-view records of `books`, every partition's merged ([`merge_coviews`]).
    async fn coviews(&mut self, books: &[i64]) -> Result<HashMap<i64, CoViews>, Self::Error>;
    /// The catalog entries of `ids` the catalog copy has.
    async fn catalog(&mut self, ids: &[i64]) -> Result<HashMap<i64, CatalogEntry>, Self::Error>;
}

/// The best `n` books for `user` ([`blend`]), from what `reader` reads: their profile, the
/// records of their strongest queries and of the queries related to those, the co-view records
/// of the books they viewed last, their strongest authors' books, the popularity lists, and the
/// catalog entries of the shortlist and of those viewed books (for the reasons).
pub async fn answer<R: RecordReader + ?Sized>(
    reader: &mut R,
    user: &str,
    n: usize,
) -> Result<Vec<Recommendation>, R::Error> {
    let profile = reader.profile(user).await?.unwrap_or_default();
    let interests = interest_queries(&profile);
    let mut queries = reader.query_records(&interests).await?;
    let related = related_queries(&interests, &queries);
    if !related.is_empty() {
        let more = reader.query_records(&related).await?;
        queries.extend(more);
    }
    let mut author_books = Vec::new();
    for author in top_authors(&profile) {
        author_books.extend(reader.author_books(&author, AUTHOR_BOOKS).await?);
    }
    let popular = merge_popular(
        reader.popular_lists().await?,
        n.saturating_add(profile.shown.len())
            .saturating_add(profile.viewed.len())
            .saturating_add(10),
    );
    let viewed = viewed_interests(&profile);
    let coviews = if viewed.is_empty() {
        HashMap::new()
    } else {
        reader.coviews(&viewed).await?
    };
    let hood = Neighbourhood {
        profile,
        queries,
        author_books,
        popular,
        coviews,
    };
    let shortlist = shortlist(&hood, n);
    let mut ids: Vec<i64> = shortlist.iter().map(|c| c.id).collect();
    ids.extend(viewed);
    let catalog = reader.catalog(&ids).await?;
    Ok(blend(&hood.profile, shortlist, &catalog, n))
}

/// The `n` books most viewed by the readers who viewed `book` (`GET /books/{id}/similar`),
/// strongest first, from every partition's co-view records merged, with their catalog entries
/// (books the catalog copy no longer has are left out); the score is the number of readers who
/// viewed both. Empty for a book nobody viewed, or unknown.
pub async fn similar_books<R: RecordReader + ?Sized>(
    reader: &mut R,
    book: i64,
    n: usize,
) -> Result<Vec<Recommendation>, R::Error> {
    let merged = reader.coviews(&[book]).await?;
    let Some(record) = merged.get(&book) else {
        return Ok(Vec::new());
    };
    // A few more than `n`, in case the catalog copy lost some.
    let best = most_coviewed(record, book, n.saturating_add(10));
    let ids: Vec<i64> = best.iter().map(|b| b.0).collect();
    let catalog = reader.catalog(&ids).await?;
    Ok(best
        .into_iter()
        .filter_map(|(id, count)| {
            let entry = catalog.get(&id)?;
            Some(Recommendation {
                id,
                title: entry.title.clone(),
                author: entry.author.clone(),
                score: count as f64,
                reason: SIMILAR_REASON.to_owned(),
                kind: KIND_SIMILAR.to_owned(),
            })
        })
        .take(n)
        .collect())
}

/// The "readers who looked at this also looked at" reads of a recommendation store (a trait of
/// its own beside [`crate::RecommendStore`], which the other services' tests fake).
#[async_trait::async_trait]
pub trait SimilarBooks: Send + Sync + 'static {
    /// [`similar_books`] of `book`.
    async fn similar(
        &self,
        book: i64,
        n: usize,
    ) -> Result<Vec<Recommendation>, crate::RepositoryError>;
}

/// `user`'s profile as `GET /interests` shows it ([`interests`]), from what `reader` reads.
pub async fn read_interests<R: RecordReader + ?Sized>(
    reader: &mut R,
    settings: &RecommendSettings,
    user: &str,
    n: usize,
    now: DateTime<Utc>,
) -> Result<Interests, R::Error> {
    let profile = reader.profile(user).await?.unwrap_or_default();
    let ids: Vec<i64> = interest_books(&profile, n).iter().map(|b| b.id).collect();
    let catalog = reader.catalog(&ids).await?;
    Ok(interests(settings, user, &profile, &catalog, n, now))
}

/// A reader's profile as `GET /interests` shows it: decayed weights at the time asked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interests {
    pub uid: String,
    /// The books shown to the reader, strongest first (the tutorial's interests).
    pub books: Vec<InterestEntry>,
    pub authors: Vec<WeightedName>,
    pub queries: Vec<WeightedName>,
}

/// A book of a reader's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterestEntry {
    pub id: i64,
    pub title: String,
    pub author: String,
    pub score: f64,
    /// The normalized query of the last search that showed it.
    pub query: String,
}

/// An author or a query of a reader's profile, with its decayed weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedName {
    pub name: String,
    pub score: f64,
}

/// The books of `profile` a store looks up in its catalog copy for [`interests`], strongest
/// first.
pub fn interest_books(profile: &Profile, n: usize) -> Vec<&ProfileBook> {
    let mut books: Vec<&ProfileBook> = profile.books.iter().collect();
    books.sort_by(|a, b| b.log_weight.total_cmp(&a.log_weight).then(a.id.cmp(&b.id)));
    books.truncate(n);
    books
}

/// `user`'s profile as `GET /interests` shows it, with titles and authors from `catalog` (empty
/// for a book the catalog copy no longer has).
pub fn interests(
    settings: &RecommendSettings,
    user: &str,
    profile: &Profile,
    catalog: &HashMap<i64, CatalogEntry>,
    n: usize,
    now: DateTime<Utc>,
) -> Interests {
    let weighted = |names: &[ProfileName]| {
        strongest(names, n)
            .into_iter()
            .map(|a| WeightedName {
                name: a.name.clone(),
                score: settings.weight_at(a.log_weight, now),
            })
            .collect()
    };
    Interests {
        uid: user.to_owned(),
        books: interest_books(profile, n)
            .into_iter()
            .map(|b| {
                let entry = catalog.get(&b.id);
                InterestEntry {
                    id: b.id,
                    title: entry.map(|e| e.title.clone()).unwrap_or_default(),
                    author: entry.map(|e| e.author.clone()).unwrap_or_default(),
                    score: settings.weight_at(b.log_weight, now),
                    query: profile
                        .queries
                        .iter()
                        .find(|q| q.id == b.query)
                        .map(|q| q.name.clone())
                        .unwrap_or_default(),
                }
            })
            .collect(),
        authors: weighted(&profile.authors),
        queries: weighted(&profile.queries),
    }
}

/// Everything a store holds, in a canonical order: what tests compare between a store fed through
/// crashes and one fed by a clean replay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub catalog: Vec<CatalogEntry>,
    pub profiles: Vec<(String, Profile)>,
    pub queries: Vec<((i32, String), QueryRecord)>,
    pub popular: Vec<(i32, PopularList)>,
    pub coviews: Vec<((i32, i64), CoViews)>,
}

impl Snapshot {
    /// Sorts every list, so that two snapshots compare by content.
    pub fn sorted(mut self) -> Self {
        self.catalog.sort_by_key(|b| b.id);
        self.profiles.sort_by(|a, b| a.0.cmp(&b.0));
        self.queries.sort_by(|a, b| a.0.cmp(&b.0));
        self.popular.sort_by_key(|p| p.0);
        self.coviews.sort_by_key(|c| c.0);
        self
    }

    /// Where `self` and `other` differ; `None` when they hold the same. Catalogs and profiles
    /// compare exactly (a reader's searches are all applied in order, by one partition's
    /// consumer). Query records and popularity lists compare merged over the partitions (what
    /// readers see), weights allowing for rounding: so a store fed by a topic of several
    /// partitions compares with the rules applied in one go, as long as no per-partition bound
    /// bit (each partition bounds its own lists).
    pub fn difference(&self, other: &Snapshot) -> Option<String> {
        let (a, b) = (self.clone().sorted(), other.clone().sorted());
        if a.catalog != b.catalog {
            return Some(format!(
                "catalogs differ: {} vs {} books",
                a.catalog.len(),
                b.catalog.len()
            ));
        }
        if a.profiles != b.profiles {
            let first = a.profiles.iter().zip(&b.profiles).find(|(x, y)| x != y);
            return Some(format!(
                "profiles differ ({} vs {}), first at {first:?}",
                a.profiles.len(),
                b.profiles.len()
            ));
        }
        let (qa, qb) = (a.merged_queries(), b.merged_queries());
        if qa.len() != qb.len() {
            return Some(format!(
                "query records differ: {} vs {} queries",
                qa.len(),
                qb.len()
            ));
        }
        for ((query, (books_a, related_a)), (other_query, (books_b, related_b))) in
            qa.iter().zip(&qb)
        {
            if query != other_query || related_a != related_b || !close_weights(books_a, books_b) {
                return Some(format!(
                    "query records differ at {query:?}: books {books_a:?} related {related_a:?} \
                     vs {other_query:?}: books {books_b:?} related {related_b:?}"
                ));
            }
        }
        if !close_weights(&a.merged_popular(), &b.merged_popular()) {
            return Some("popularity differs".to_owned());
        }
        let (ca, cb) = (a.merged_coviews(), b.merged_coviews());
        if ca != cb {
            return Some(format!("co-view records differ: {ca:?} vs {cb:?}"));
        }
        None
    }

    /// Co-view records merged over the partitions, each sorted by book.
    fn merged_coviews(&self) -> BTreeMap<i64, BTreeMap<i64, u64>> {
        let mut merged: BTreeMap<i64, BTreeMap<i64, u64>> = BTreeMap::new();
        for ((_, book), record) in &self.coviews {
            let into = merged.entry(*book).or_default();
            for (other, n) in record {
                *into.entry(*other).or_default() += n;
            }
        }
        merged
    }

    /// Query records merged over the partitions: per query, book weights and related counts.
    #[allow(clippy::type_complexity)]
    fn merged_queries(&self) -> BTreeMap<String, (BTreeMap<i64, f64>, BTreeMap<String, u64>)> {
        let mut merged: BTreeMap<String, (BTreeMap<i64, f64>, BTreeMap<String, u64>)> =
            BTreeMap::new();
        for ((_, query), record) in &self.queries {
            let (books, related) = merged.entry(query.clone()).or_default();
            for (book, log) in &record.books {
                let sum = books.entry(*book).or_insert(f64::NEG_INFINITY);
                *sum = log2_add(*sum, *log);
            }
            for (other, n) in &record.related {
                *related.entry(other.clone()).or_default() += n;
            }
        }
        merged
    }

    fn merged_popular(&self) -> BTreeMap<i64, f64> {
        let mut merged = BTreeMap::new();
        for (book, log) in self.popular.iter().flat_map(|(_, list)| list) {
            let sum = merged.entry(*book).or_insert(f64::NEG_INFINITY);
            *sum = log2_add(*sum, *log);
        }
        merged
    }
}

/// Whether two maps of log weights hold the same keys with weights equal up to rounding.
fn close_weights(a: &BTreeMap<i64, f64>, b: &BTreeMap<i64, f64>) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, wa), (kb, wb))| {
            ka == kb && (wa - wb).abs() <= 1e-9 * wa.abs().max(wb.abs()).max(1.0)
        })
}

/// `rows` cut into runs of at most `max_rows` rows and about `max_bytes` bytes (`bytes` of each;
/// a row larger than `max_bytes` is a run of its own): multi-row statements that stay within a
/// server's packet limit whatever the records hold.
pub fn byte_chunks<T>(
    rows: &[T],
    max_rows: usize,
    max_bytes: usize,
    bytes: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let row_bytes = bytes(row);
        if i > start && (i - start >= max_rows || size + row_bytes > max_bytes) {
            chunks.push(&rows[start..i]);
            (start, size) = (i, 0);
        }
        size += row_bytes;
    }
    if start < rows.len() {
        chunks.push(&rows[start..]);
    }
    chunks
}

/// Counts of what a store holds, for `GET /stats` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecommendStats {
    pub catalog_books: u64,
    /// Readers with a profile.
    pub users: u64,
    /// Query records, one per query and partition.
    pub query_records: u64,
}
