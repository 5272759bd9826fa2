//! Trends: what readers search for now. The rules every trend store follows (SQLite in Rust, Redis
//! in a Lua script), as pure functions, and an in-memory board that is the reference for them.
//!
//! **Score.** Each search adds weight 1 that halves every `half_life`. A trend's score at time
//! `now` is `Σ 2^-((now - tᵢ)/half_life)`. Stores keep `log_score = log2 Σ 2^(tᵢ/half_life)`, the
//! score relative to the Unix epoch in log space: a new search adds `tᵢ/half_life` to it in log
//! space ([`log2_add`]), no entry is ever rewritten as time passes, ranking by `log_score` is
//! ranking by the current score (every entry shares the reference time), and the current score is
//! `2^(log_score - now/half_life)` ([`score_at`]). Logs never overflow, so there is nothing to
//! rebase.
//!
//! **Caps.** Within each window of `user_window` (fixed windows, counted from the epoch), a
//! search for a query adds to its score only while its reader has made at most `user_cap` of
//! them and its origin at most `client_cap`; all of them add to its `count`. A reader is the
//! event's user, else its client; an origin is its client (a pseudonym of the network address),
//! else its user. So one person can neither flood a query nor, by collecting visitor ids, make
//! one network count for more than `client_cap`. A search with neither is not capped.
//!
//! **Public trends.** A trend is shown to the public (the page) only once `min_readers` distinct
//! origins have searched it: clients (network addresses, as pseudonyms), which a visitor cannot
//! multiply by collecting fresh visitor ids; users only for events that name no client. It stays
//! public until it is pruned. Until then the store remembers the origins that searched it (at
//! most `min_readers` per trend), and afterwards none.
//!
//! **Spellings.** At most [`SPELLINGS_PER_TREND`] spellings are counted per trend: a new one
//! replaces the least common (ties: the greatest in byte order), never the one shown.
//!
//! **Pruning.** After each batch, trends whose current score is below `min_score` are removed, and
//! only the best `max_trends` by score are kept (ties at the cut are kept). A pruned trend that
//! comes back starts again. Cap counters are kept for the newest window that has seen a search
//! and the two before it (event time, so a consumer catching up keeps capping).
//!
//! **Forgetting.** A `reader.forgotten` event for a user deletes everything kept about them, in
//! log order with the searches around it: their cap counters in every window kept, as reader and
//! as origin (the user is the origin of their searches without a client; counters of a client
//! they searched from stay), and their place among the origins of trends not public yet. Counts,
//! scores, spellings and books stay: they are the anonymous contribution to the trends. A search
//! of theirs after the event counts from zero again.
//!
//! **Viewed books.** Each `book.viewed` event adds weight 1 to its book's score, decayed like a
//! search (the same `half_life`, the same log space), and 1 to its all-time `views`; the title
//! and author shown are those of the latest view (event time, as a trend's books). The caps are
//! those of searches, per book instead of per query: within each window of `user_window`, a view
//! adds to the score only while its reader has viewed that book at most `user_cap` times and its
//! origin at most `client_cap` times; every view adds to `views`. Their counters are the same
//! [`CapKey`]s, the book standing for the query as [`VIEW_MARK`] and its id (which no normalized
//! query holds), so they are kept, pruned and forgotten (`reader.forgotten`) with the searches'
//! counters: a forgotten reader's views count from zero again, and the books' views and scores
//! stay. Books are pruned as trends are, separately from them: below `min_score` after each
//! batch, and all but the best `max_trends` (ties at the cut kept). Unlike queries, which are free
//! text, a viewed book is a catalog book, so there is no `min_readers` rule: every book kept is
//! shown. Ranked by score, then views, then id.
//!
//! Times count in milliseconds, as the stores keep them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{BookViewedEvent, Event, SearchEvent};

/// Books kept per trend (the results of its most recent search).
pub const BOOKS_PER_TREND: usize = 10;
/// Spellings counted per trend.
pub const SPELLINGS_PER_TREND: usize = 5;

/// The rules' parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendSettings {
    pub half_life: Duration,
    /// Searches per reader (user, else client), query and window that add to the score…
    pub user_cap: u32,
    /// …and per origin (client, else user): what one network can add, however many readers
    /// it shows.
    pub client_cap: u32,
    pub user_window: Duration,
    /// Trends whose current score falls below this are pruned.
    pub min_score: f64,
    /// At most this many trends are kept.
    pub max_trends: usize,
    /// Distinct readers who must have searched a trend before it is public.
    pub min_readers: u32,
}

impl Default for TrendSettings {
    fn default() -> Self {
        Self {
            half_life: Duration::from_secs(3600),
            user_cap: 3,
            client_cap: 10,
            user_window: Duration::from_secs(3600),
            min_score: 0.01,
            max_trends: 10_000,
            min_readers: 3,
        }
    }
}

impl TrendSettings {
    /// `t / half_life`: the log2 weight of a search at `t` relative to the epoch.
    pub fn log_weight(&self, t: DateTime<Utc>) -> f64 {
        seconds(t) / self.half_life.as_secs_f64().max(1e-3)
    }

    /// The current score of a trend whose stored value is `log_score`.
    pub fn score_at(&self, log_score: f64, now: DateTime<Utc>) -> f64 {
        (log_score - self.log_weight(now)).exp2()
    }

    /// Trends whose `log_score` is below this are pruned at `now`.
    pub fn prune_below(&self, now: DateTime<Utc>) -> f64 {
        self.log_weight(now) + self.min_score.max(f64::MIN_POSITIVE).log2()
    }

    /// The fixed window a search at `t` falls in, for the per-user cap.
    pub fn window(&self, t: DateTime<Utc>) -> i64 {
        let window = self.user_window.as_millis().max(1) as i64;
        t.timestamp_millis().div_euclid(window)
    }

    /// Cap counters of windows below this are forgotten, given the newest window seen.
    pub fn oldest_cap_window(newest: i64) -> i64 {
        newest - 2
    }
}

/// `t` to the millisecond, as stored.
pub fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// The current score, finite whatever the input (a search dated far in the future cannot make
/// it infinite, which JSON cannot carry).
pub fn finite_score(log_score: f64, settings: &TrendSettings, now: DateTime<Utc>) -> f64 {
    if log_score.is_finite() {
        settings.score_at(log_score, now).min(f64::MAX)
    } else {
        0.0
    }
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// `log2(2^a + 2^b)`, without overflow.
pub fn log2_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp2().ln_1p() / std::f64::consts::LN_2
}

/// How a query is shown: as typed, trimmed, inner whitespace collapsed. The most common spelling
/// of a trend is the one shown.
pub fn spelling(query: &str) -> String {
    query.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A book as a trend shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrendBook {
    pub id: i64,
    pub title: String,
    pub author: String,
}

/// The books a search event makes a trend show.
pub fn trend_books(event: &SearchEvent) -> Vec<TrendBook> {
    event
        .results
        .iter()
        .take(BOOKS_PER_TREND)
        .map(|b| TrendBook {
            id: b.id,
            title: b.title.clone(),
            author: b.author.clone(),
        })
        .collect()
}

/// A trend as served by `GET /trends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// The most common spelling.
    pub query: String,
    pub query_normalized: String,
    /// All-time number of searches.
    pub count: u64,
    /// Time-decayed popularity now.
    pub score: f64,
    /// The results of the most recent search.
    pub books: Vec<TrendBook>,
    pub last_searched_at: DateTime<Utc>,
    /// Whether `min_readers` distinct origins (networks) have searched it, so that the page may show it.
    #[serde(default)]
    pub public: bool,
}

/// A book among the most viewed now, as served by `GET /trends/books`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewedBook {
    pub id: i64,
    pub title: String,
    pub author: String,
    /// All-time number of views.
    pub views: u64,
    /// Time-decayed views now (the same half-life as query trends).
    pub score: f64,
    pub last_viewed_at: DateTime<Utc>,
}

/// Who a list of trends is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Audience {
    /// The public page: only trends that enough distinct origins searched.
    #[default]
    Public,
    /// Internal callers: every trend kept.
    Everyone,
}

/// What `GET /trends` ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrendRanking {
    #[default]
    Score,
    Count,
}

/// The state of one trend, as the stores keep it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendState {
    pub log_score: f64,
    pub count: u64,
    pub display: String,
    pub spellings: BTreeMap<String, u64>,
    pub books: Vec<TrendBook>,
    pub last_searched_at: DateTime<Utc>,
    /// The distinct origins seen while the trend is not public yet (at most `min_readers`).
    pub readers: BTreeSet<String>,
    pub public: bool,
}

impl TrendState {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            log_score: f64::NEG_INFINITY,
            count: 0,
            display: String::new(),
            spellings: BTreeMap::new(),
            books: Vec::new(),
            last_searched_at: at,
            readers: BTreeSet::new(),
            public: false,
        }
    }

    /// One search of this trend. `scores`: whether it adds to the score (the per-reader cap).
    pub fn add(&mut self, settings: &TrendSettings, event: &SearchEvent, scores: bool) {
        self.count += 1;
        self.add_reader(settings, event.origin());
        let spelled = spelling(&event.query);
        let n = match self.spellings.get_mut(&spelled) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                while self.spellings.len() >= SPELLINGS_PER_TREND {
                    match least_common_spelling(&self.spellings, &self.display) {
                        Some(victim) => self.spellings.remove(&victim),
                        None => break,
                    };
                }
                self.spellings.insert(spelled.clone(), 1);
                1
            }
        };
        let shown = self.spellings.get(&self.display).copied().unwrap_or(0);
        if self.display.is_empty() || (n > shown && spelled != self.display) {
            self.display = spelled;
        }
        let at = to_millis(event.occurred_at);
        if self.count == 1 || at >= self.last_searched_at {
            self.last_searched_at = at;
            self.books = trend_books(event);
        }
        if scores {
            self.log_score = log2_add(self.log_score, settings.log_weight(event.occurred_at));
        }
    }

    /// Counts `reader` (an origin, see [`SearchEvent::origin`]) towards `min_readers`; the trend
    /// turns public when enough have searched it, and then forgets who they were.
    fn add_reader(&mut self, settings: &TrendSettings, reader: Option<&str>) {
        if self.public {
            return;
        }
        let wanted = settings.min_readers as usize;
        if let Some(reader) = reader {
            if self.readers.len() < wanted {
                self.readers.insert(reader.to_owned());
            }
        }
        if self.readers.len() >= wanted {
            self.public = true;
            self.readers.clear();
        }
    }

    /// Forgets `user` among the origins of this trend (`reader.forgotten`); whether it held them.
    pub fn forget(&mut self, user: &str) -> bool {
        self.readers.remove(user)
    }

    pub fn to_trend(
        &self,
        query_normalized: &str,
        settings: &TrendSettings,
        now: DateTime<Utc>,
    ) -> Trend {
        Trend {
            query: self.display.clone(),
            query_normalized: query_normalized.to_owned(),
            count: self.count,
            score: finite_score(self.log_score, settings, now),
            books: self.books.clone(),
            last_searched_at: self.last_searched_at,
            public: self.public,
        }
    }
}

/// The spelling a new one replaces when a trend has [`SPELLINGS_PER_TREND`]: the least common,
/// ties broken towards the greatest in byte order; never `shown`.
pub fn least_common_spelling(spellings: &BTreeMap<String, u64>, shown: &str) -> Option<String> {
    spellings
        .iter()
        .filter(|(spelling, _)| spelling.as_str() != shown)
        .min_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(spelling, _)| spelling.clone())
}

/// The caps' counters: how many searches each (window, reader or origin, query) has made so
/// far. An origin's counter is keyed by [`ORIGIN_MARK`] and the origin.
pub type CapKey = (i64, String, String);

/// Starts the key of an origin's counter, so that it never meets a reader's (for an anonymous
/// search the reader and the origin are the same client); ids never hold control characters.
pub const ORIGIN_MARK: char = '\u{1}';

/// The counters a search adds to: its reader's (`user_cap`), and its origin's (`client_cap`).
pub fn cap_keys(settings: &TrendSettings, event: &SearchEvent) -> (Option<CapKey>, Option<CapKey>) {
    let window = settings.window(event.occurred_at);
    let key = |who: String| (window, who, event.query_normalized.clone());
    (
        event.reader().map(|r| key(r.to_owned())),
        event.origin().map(|o| key(format!("{ORIGIN_MARK}{o}"))),
    )
}

/// The counters of `user` (the `who` of their [`CapKey`]s): theirs as reader, and theirs as the
/// origin of their searches without a client. What `reader.forgotten` deletes, in every window.
pub fn cap_owners(user: &str) -> [String; 2] {
    [user.to_owned(), format!("{ORIGIN_MARK}{user}")]
}

/// Deletes every counter of `user` ([`cap_owners`]) from `caps`.
pub fn forget_caps(caps: &mut BTreeMap<CapKey, u32>, user: &str) {
    let owners = cap_owners(user);
    caps.retain(|(_, who, _), _| !owners.contains(who));
}

/// Whether `event` adds to its trend's score, given (and updating) the counters: only while its
/// reader is within `user_cap` and its origin within `client_cap` (a network cannot outweigh a
/// handful of readers however many visitor ids it collects).
pub fn passes_cap(
    settings: &TrendSettings,
    caps: &mut BTreeMap<CapKey, u32>,
    event: &SearchEvent,
) -> bool {
    let (reader, origin) = cap_keys(settings, event);
    count_caps(settings, caps, reader, origin)
}

/// Starts the subject of a view's counters (where a search's has its query): a view of book 7
/// is counted under `"\u{2}7"`, which no normalized query can be (normalization keeps no
/// control characters), so views and searches never share a counter.
pub const VIEW_MARK: char = '\u{2}';

/// The subject of the cap counters of views of `book_id`.
pub fn view_subject(book_id: i64) -> String {
    format!("{VIEW_MARK}{book_id}")
}

/// The counters a view adds to: its reader's (`user_cap`), and its origin's (`client_cap`), for
/// its book in its window.
pub fn view_cap_keys(
    settings: &TrendSettings,
    event: &BookViewedEvent,
) -> (Option<CapKey>, Option<CapKey>) {
    let window = settings.window(event.occurred_at);
    let subject = view_subject(event.book.id);
    let key = |who: String| (window, who, subject.clone());
    (
        event.reader().map(|r| key(r.to_owned())),
        event.origin().map(|o| key(format!("{ORIGIN_MARK}{o}"))),
    )
}

/// Whether `event` adds to its book's score, given (and updating) the counters: the search rule
/// ([`passes_cap`]) applied to the book.
pub fn view_passes_cap(
    settings: &TrendSettings,
    caps: &mut BTreeMap<CapKey, u32>,
    event: &BookViewedEvent,
) -> bool {
    let (reader, origin) = view_cap_keys(settings, event);
    count_caps(settings, caps, reader, origin)
}

/// Counts one event on its reader's and origin's counters; whether both are within their caps.
fn count_caps(
    settings: &TrendSettings,
    caps: &mut BTreeMap<CapKey, u32>,
    reader: Option<CapKey>,
    origin: Option<CapKey>,
) -> bool {
    let mut count = |key: Option<CapKey>, cap: u32| match key {
        Some(key) => {
            let n = caps.entry(key).or_default();
            *n += 1;
            *n <= cap
        }
        None => true,
    };
    let by_reader = count(reader, settings.user_cap);
    let by_origin = count(origin, settings.client_cap);
    by_reader && by_origin
}

/// Ranks trends: by score (then count), or by count (then score); ties by query.
pub fn rank(trends: &mut [Trend], by: TrendRanking) {
    trends.sort_by(|a, b| {
        let order = match by {
            TrendRanking::Score => b.score.total_cmp(&a.score).then(b.count.cmp(&a.count)),
            TrendRanking::Count => b.count.cmp(&a.count).then(b.score.total_cmp(&a.score)),
        };
        order.then_with(|| a.query_normalized.cmp(&b.query_normalized))
    });
}

/// The state of one viewed book, as the stores keep it.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewedState {
    pub log_score: f64,
    pub views: u64,
    pub title: String,
    pub author: String,
    pub last_viewed_at: DateTime<Utc>,
}

impl ViewedState {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            log_score: f64::NEG_INFINITY,
            views: 0,
            title: String::new(),
            author: String::new(),
            last_viewed_at: at,
        }
    }

    /// One view of this book. `scores`: whether it adds to the score (the caps).
    pub fn add(&mut self, settings: &TrendSettings, event: &BookViewedEvent, scores: bool) {
        self.views += 1;
        let at = to_millis(event.occurred_at);
        if self.views == 1 || at >= self.last_viewed_at {
            self.last_viewed_at = at;
            self.title.clone_from(&event.book.title);
            self.author.clone_from(&event.book.author);
        }
        if scores {
            self.log_score = log2_add(self.log_score, settings.log_weight(event.occurred_at));
        }
    }

    pub fn to_viewed(&self, id: i64, settings: &TrendSettings, now: DateTime<Utc>) -> ViewedBook {
        ViewedBook {
            id,
            title: self.title.clone(),
            author: self.author.clone(),
            views: self.views,
            score: finite_score(self.log_score, settings, now),
            last_viewed_at: self.last_viewed_at,
        }
    }
}

/// Ranks viewed books: by score, then views, then id.
pub fn rank_viewed(books: &mut [ViewedBook]) {
    books.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.views.cmp(&a.views))
            .then(a.id.cmp(&b.id))
    });
}

/// The whole rule set in memory: the reference the stores are tested against.
#[derive(Debug, Default, Clone)]
pub struct TrendBoard {
    pub settings: TrendSettings,
    pub trends: BTreeMap<String, TrendState>,
    pub caps: BTreeMap<CapKey, u32>,
    /// Viewed books by id.
    pub viewed: BTreeMap<i64, ViewedState>,
}

impl TrendBoard {
    pub fn new(settings: TrendSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    pub fn apply(&mut self, event: &SearchEvent) {
        let scores = passes_cap(&self.settings, &mut self.caps, event);
        self.trends
            .entry(event.query_normalized.clone())
            .or_insert_with(|| TrendState::new(event.occurred_at))
            .add(&self.settings, event, scores);
    }

    /// One view of a book.
    pub fn apply_view(&mut self, event: &BookViewedEvent) {
        let scores = view_passes_cap(&self.settings, &mut self.caps, event);
        self.viewed
            .entry(event.book.id)
            .or_insert_with(|| ViewedState::new(event.occurred_at))
            .add(&self.settings, event, scores);
    }

    /// Applies one event of the search topic in log order: a search, a view, or a reader to
    /// forget; any other event changes nothing.
    pub fn apply_event(&mut self, event: &Event) {
        if let Some(search) = event.as_search() {
            self.apply(search);
        } else if let Some(view) = event.as_view() {
            self.apply_view(view);
        } else if let Some(forgotten) = event.as_forgotten() {
            self.forget(&forgotten.user_id);
        }
    }

    /// Forgets the reader `user` (`reader.forgotten`): their cap counters, as reader and as
    /// origin, in every window, and their place among the origins of trends not public yet.
    /// Counts and scores stay.
    pub fn forget(&mut self, user: &str) {
        forget_caps(&mut self.caps, user);
        for trend in self.trends.values_mut() {
            trend.forget(user);
        }
    }

    /// Whether anything kept is keyed by the reader `user`: a cap counter of theirs, or their
    /// place among a trend's origins.
    pub fn holds_reader(&self, user: &str) -> bool {
        let owners = cap_owners(user);
        self.caps.keys().any(|(_, who, _)| owners.contains(who))
            || self.trends.values().any(|t| t.readers.contains(user))
    }

    /// Removes what has decayed below `min_score` at `now`, then all but the best `max_trends`.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        let below = self.settings.prune_below(now);
        self.trends.retain(|_, t| t.log_score >= below);
        if self.trends.len() > self.settings.max_trends {
            let mut scores: Vec<f64> = self.trends.values().map(|t| t.log_score).collect();
            scores.sort_by(|a, b| b.total_cmp(a));
            let keep_from = scores[self.settings.max_trends - 1];
            self.trends.retain(|_, t| t.log_score >= keep_from);
        }
        self.viewed.retain(|_, b| b.log_score >= below);
        if self.viewed.len() > self.settings.max_trends {
            let mut scores: Vec<f64> = self.viewed.values().map(|b| b.log_score).collect();
            scores.sort_by(|a, b| b.total_cmp(a));
            let keep_from = scores[self.settings.max_trends - 1];
            self.viewed.retain(|_, b| b.log_score >= keep_from);
        }
        if let Some(newest) = self.caps.keys().map(|(window, _, _)| *window).max() {
            let oldest = TrendSettings::oldest_cap_window(newest);
            self.caps.retain(|(window, _, _), _| *window >= oldest);
        }
    }

    /// The best `n` viewed books at `now`.
    pub fn viewed_books(&self, n: usize, now: DateTime<Utc>) -> Vec<ViewedBook> {
        let mut all: Vec<ViewedBook> = self
            .viewed
            .iter()
            .map(|(id, b)| b.to_viewed(*id, &self.settings, now))
            .collect();
        rank_viewed(&mut all);
        all.truncate(n);
        all
    }

    /// The trend of `query_normalized`, if kept.
    pub fn trend(&self, query_normalized: &str, now: DateTime<Utc>) -> Option<Trend> {
        self.trends
            .get(query_normalized)
            .map(|t| t.to_trend(query_normalized, &self.settings, now))
    }

    pub fn top(
        &self,
        n: usize,
        by: TrendRanking,
        audience: Audience,
        now: DateTime<Utc>,
    ) -> Vec<Trend> {
        let mut all: Vec<Trend> = self
            .trends
            .iter()
            .filter(|(_, t)| audience == Audience::Everyone || t.public)
            .map(|(q, t)| t.to_trend(q, &self.settings, now))
            .collect();
        rank(&mut all, by);
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::ResultBook;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .unwrap_or_default()
    }

    fn search(user: Option<&str>, query: &str, t: DateTime<Utc>) -> SearchEvent {
        let book = ResultBook {
            id: 1,
            title: format!("About {query}"),
            author: "A".into(),
            published_at: None,
        };
        SearchEvent::new(
            uuid::Uuid::nil(),
            t,
            user.map(str::to_owned),
            query,
            0,
            vec![book],
        )
    }

    fn settings() -> TrendSettings {
        TrendSettings {
            user_cap: 1000,
            ..TrendSettings::default()
        }
    }

    #[test]
    fn a_search_halves_in_weight_every_half_life() {
        let s = settings();
        let log = s.log_weight(at(0));
        assert!((s.score_at(log, at(0)) - 1.0).abs() < 1e-9);
        assert!((s.score_at(log, at(3600)) - 0.5).abs() < 1e-9);
        assert!((s.score_at(log, at(7200)) - 0.25).abs() < 1e-9);
        // A day later a search weighs 2^-24 of a fresh one.
        assert!(s.score_at(log, at(86_400)) < 1e-7);
    }

    #[test]
    fn log_scores_add_like_scores() {
        let s = settings();
        let two_now = log2_add(s.log_weight(at(0)), s.log_weight(at(0)));
        assert!((s.score_at(two_now, at(0)) - 2.0).abs() < 1e-9);
        let old_and_new = log2_add(s.log_weight(at(-3600)), s.log_weight(at(0)));
        assert!((s.score_at(old_and_new, at(0)) - 1.5).abs() < 1e-9);
        assert_eq!(log2_add(f64::NEG_INFINITY, 3.0), 3.0);
        // Far apart values neither overflow nor lose the larger one.
        assert!((log2_add(1e6, 0.0) - 1e6).abs() < 1e-9);
    }

    #[test]
    fn a_recent_search_outranks_many_old_ones() {
        let mut board = TrendBoard::new(settings());
        for _ in 0..100 {
            board.apply(&search(None, "old news", at(-86_400)));
        }
        board.apply(&search(None, "fresh", at(-60)));
        let top = board.top(10, TrendRanking::Score, Audience::Everyone, at(0));
        assert_eq!(top[0].query, "fresh");
        assert_eq!(top[1].query, "old news");
        let by_count = board.top(10, TrendRanking::Count, Audience::Everyone, at(0));
        assert_eq!(by_count[0].query, "old news");
        assert_eq!(by_count[0].count, 100);
    }

    #[test]
    fn one_user_cannot_flood_a_query_within_a_window() {
        let mut board = TrendBoard::new(TrendSettings {
            user_cap: 3,
            ..TrendSettings::default()
        });
        for i in 0..50 {
            board.apply(&search(Some("flooder"), "my book", at(i)));
        }
        for (i, user) in ["a", "b", "c", "d"].iter().enumerate() {
            board.apply(&search(Some(user), "real trend", at(i as i64)));
        }
        let top = board.top(10, TrendRanking::Score, Audience::Everyone, at(60));
        assert_eq!(top[0].query, "real trend");
        assert_eq!(top[1].query, "my book");
        assert_eq!(top[1].count, 50, "every search is counted");
        assert!(
            (top[1].score - 3.0).abs() < 0.05,
            "only 3 add to the score: {}",
            top[1].score
        );
        // The next window the user counts again.
        board.apply(&search(Some("flooder"), "my book", at(3600 * 2)));
        let top = board.top(10, TrendRanking::Count, Audience::Everyone, at(3600 * 2));
        assert_eq!(top[0].count, 51);
        // Anonymous searches are not capped.
        for i in 0..10 {
            board.apply(&search(None, "anon", at(3600 * 2 + i)));
        }
        let top = board.top(
            1,
            TrendRanking::Score,
            Audience::Everyone,
            at(3600 * 2 + 10),
        );
        assert_eq!(top[0].query, "anon");
    }

    #[test]
    fn decayed_trends_are_pruned_and_the_number_kept_is_capped() {
        let mut board = TrendBoard::new(TrendSettings {
            min_score: 0.01,
            max_trends: 3,
            ..settings()
        });
        board.apply(&search(None, "ancient", at(-8 * 3600))); // 2^-8 < 0.01
        board.apply(&search(None, "recent", at(-6 * 3600))); // 2^-6 > 0.01
        board.prune(at(0));
        assert_eq!(board.trends.keys().collect::<Vec<_>>(), ["recent"]);
        for (i, q) in ["a", "b", "c", "d"].iter().enumerate() {
            board.apply(&search(None, q, at(i as i64)));
        }
        board.prune(at(10));
        let kept: Vec<&String> = board.trends.keys().collect();
        assert_eq!(kept, ["b", "c", "d"], "the three best scores");
    }

    #[test]
    fn the_most_common_spelling_is_shown_and_the_latest_books() {
        let mut board = TrendBoard::new(settings());
        let mut e = search(None, "  Rust  ", at(0));
        e.query_normalized = "rust".into();
        board.apply(&e);
        board.apply(&search(None, "rust", at(1)));
        board.apply(&search(None, "rust", at(2)));
        let mut late = search(None, "RUST", at(3));
        late.results[0].title = "Latest".into();
        board.apply(&late);
        // An older event arriving late does not replace the books.
        board.apply(&search(None, "RUST", at(-100)));
        let top = board.top(1, TrendRanking::Score, Audience::Everyone, at(4));
        assert_eq!(top[0].query, "rust");
        assert_eq!(top[0].count, 5);
        assert_eq!(top[0].books[0].title, "Latest");
        assert_eq!(top[0].last_searched_at, at(3));
    }

    #[test]
    fn a_consumer_catching_up_keeps_capping() {
        let mut board = TrendBoard::new(TrendSettings {
            user_cap: 3,
            ..TrendSettings::default()
        });
        // Six searches at 09:10 applied at 12:30, in two batches with pruning between.
        for i in 0..3 {
            board.apply(&search(Some("u"), "x", at(i)));
        }
        board.prune(at(3 * 3600 + 1200));
        for i in 3..6 {
            board.apply(&search(Some("u"), "x", at(i)));
        }
        let top = board.top(1, TrendRanking::Count, Audience::Everyone, at(6));
        assert_eq!(top[0].count, 6);
        assert!((top[0].score - 3.0).abs() < 0.01, "{}", top[0].score);
        // Counters three windows older than the newest search are forgotten.
        board.apply(&search(Some("v"), "y", at(3 * 3600 + 60)));
        board.prune(at(3 * 3600 + 61));
        assert!(
            board
                .caps
                .keys()
                .all(|(_, who, _)| who.trim_start_matches(ORIGIN_MARK) == "v")
        );
    }

    #[test]
    fn times_count_in_milliseconds() {
        let mut board = TrendBoard::new(settings());
        let mut first = search(None, "q", at(0) + chrono::Duration::microseconds(700));
        first.results[0].title = "First".into();
        board.apply(&first);
        // Later in the log, earlier within the same millisecond: the same time, so it wins.
        board.apply(&search(
            None,
            "q",
            at(0) + chrono::Duration::microseconds(300),
        ));
        let top = board.top(1, TrendRanking::Count, Audience::Everyone, at(1));
        assert_eq!(top[0].last_searched_at, at(0));
        assert_eq!(top[0].books[0].title, "About q");
        // A search dated far in the future keeps the score finite.
        board.apply(&search(None, "future", at(1_000_000_000_000)));
        assert!(
            board.top(1, TrendRanking::Score, Audience::Everyone, at(0))[0]
                .score
                .is_finite()
        );
    }

    fn from_client(client: &str, query: &str, t: DateTime<Utc>) -> SearchEvent {
        search(None, query, t).with_client(Some(client.to_owned()))
    }

    #[test]
    fn a_trend_is_public_once_enough_distinct_readers_searched_it() {
        let mut board = TrendBoard::new(TrendSettings {
            min_readers: 3,
            ..TrendSettings::default()
        });
        // One person: forty searches with forty made-up ids are anonymous to the web service,
        // which sends them from one client; and the same reader again and again.
        for i in 0..40 {
            board.apply(&from_client("c-evil", "FREE BOOKS at evil.example", at(i)));
            board.apply(&search(Some("me"), "my own name", at(i)));
        }
        let public = board.top(10, TrendRanking::Score, Audience::Public, at(60));
        assert!(public.is_empty(), "{public:?}");
        let everyone = board.top(10, TrendRanking::Score, Audience::Everyone, at(60));
        assert_eq!(everyone.len(), 2);
        assert!(everyone.iter().all(|t| !t.public));
        let evil = everyone
            .iter()
            .find(|t| t.count == 40 && t.query.starts_with("FREE"));
        assert!(
            evil.is_some_and(|t| (t.score - 3.0).abs() < 0.05),
            "one client counts user_cap times: {everyone:?}"
        );
        // Three readers (two users and one anonymous client) make a trend public, for good.
        board.apply(&search(Some("a"), "dune", at(61)));
        board.apply(&search(Some("a"), "dune", at(62)));
        board.apply(&from_client("c-1", "dune", at(63)));
        assert!(
            board
                .top(10, TrendRanking::Score, Audience::Public, at(64))
                .is_empty()
        );
        board.apply(&search(Some("b"), "Dune", at(64)));
        let public = board.top(10, TrendRanking::Score, Audience::Public, at(65));
        assert_eq!(public.len(), 1);
        assert_eq!(
            (public[0].query_normalized.as_str(), public[0].count),
            ("dune", 4)
        );
        assert!(public[0].public);
        assert!(
            board.trends["dune"].readers.is_empty(),
            "who searched is forgotten"
        );
        // Visitor ids collected by one client are one origin: the query stays private.
        for user in ["minted-1", "minted-2", "minted-3", "minted-4"] {
            board.apply(&search(Some(user), "spam", at(66)).with_client(Some("c-evil".into())));
        }
        assert!(!board.trends["spam"].public, "one network is one origin");
        assert_eq!(board.trends["spam"].readers.len(), 1);
        // Events without user or client (the tutorial's anonymous format) count no reader.
        for i in 0..5 {
            board.apply(&search(None, "anonymous", at(70 + i)));
        }
        assert!(!board.trends["anonymous"].public);
        assert!(board.trends.values().all(|t| t.readers.len() <= 3));
    }

    #[test]
    fn a_forgotten_reader_is_deleted_and_their_later_searches_count_afresh() {
        use crate::events::ReaderForgottenEvent;
        let mut board = TrendBoard::new(TrendSettings {
            user_cap: 2,
            client_cap: 3,
            min_readers: 2,
            ..TrendSettings::default()
        });
        let forget = Event::ReaderForgotten(ReaderForgottenEvent::now("me"));
        let searched = |e: SearchEvent| Event::BookSearched(e);
        // Searches in two windows, without a client (the user is their origin) and from one.
        board.apply_event(&searched(search(Some("me"), "my name", at(-3600))));
        for i in 0..3 {
            board.apply_event(&searched(search(Some("me"), "my name", at(i))));
        }
        board.apply_event(&searched(
            search(Some("me"), "shared", at(5)).with_client(Some("c-home".into())),
        ));
        assert!(board.holds_reader("me"));
        assert!(board.trends["my name"].readers.contains("me"));
        let before = board.top(10, TrendRanking::Score, Audience::Everyone, at(10));

        board.apply_event(&forget);
        assert!(!board.holds_reader("me"), "{:?}", board.caps);
        let after = board.top(10, TrendRanking::Score, Audience::Everyone, at(10));
        assert_eq!(before, after, "counts and scores stay");
        // The client's counter stays: of three more searches from it, two score (client_cap).
        assert!(board.caps.keys().any(|(_, who, _)| who == "\u{1}c-home"));
        for user in ["you", "they", "them"] {
            board.apply_event(&searched(
                search(Some(user), "shared", at(6)).with_client(Some("c-home".into())),
            ));
        }
        let shared = board.trend("shared", at(7)).map(|t| t.score).unwrap_or(0.0);
        assert!((shared - 3.0).abs() < 0.01, "{shared}");
        // Later searches count from zero: both score (the cap is 2), and the trend needs two
        // origins again, the forgotten one no longer among them.
        let score = |board: &TrendBoard| board.trend("my name", at(20)).map(|t| t.score);
        let was = score(&board).unwrap_or(0.0);
        board.apply_event(&searched(search(Some("me"), "my name", at(20))));
        board.apply_event(&searched(search(Some("me"), "my name", at(20))));
        let now = score(&board).unwrap_or(0.0);
        assert!((now - was - 2.0).abs() < 0.01, "{was} then {now}");
        assert!(board.holds_reader("me"));
        board.apply_event(&forget);
        board.apply_event(&searched(from_client("c-other", "my name", at(21))));
        assert!(!board.trends["my name"].public, "one origin is left");
        assert_eq!(board.trends["my name"].count, 7);
        assert_eq!(board.trends["shared"].count, 4);
    }

    #[test]
    fn one_network_adds_at_most_client_cap_however_many_readers_it_shows() {
        let mut board = TrendBoard::new(TrendSettings {
            user_cap: 3,
            client_cap: 10,
            ..TrendSettings::default()
        });
        // Forty visitor ids from one network, three searches each.
        for reader in 0..40 {
            for i in 0..3 {
                let event = search(Some(&format!("id-{reader}")), "pump", at(i));
                board.apply(&event.with_client(Some("c-one".into())));
            }
        }
        let top = board.top(1, TrendRanking::Score, Audience::Everyone, at(10));
        assert_eq!(top[0].count, 120);
        assert!((top[0].score - 10.0).abs() < 0.05, "{}", top[0].score);
        // Another network adds its own share.
        for i in 0..3 {
            let event = search(Some("someone"), "pump", at(i));
            board.apply(&event.with_client(Some("c-two".into())));
        }
        let top = board.top(1, TrendRanking::Score, Audience::Everyone, at(10));
        assert!((top[0].score - 13.0).abs() < 0.05, "{}", top[0].score);
    }

    #[test]
    fn a_handful_of_spellings_is_kept_per_trend() {
        let mut board = TrendBoard::new(settings());
        for _ in 0..3 {
            board.apply(&search(None, "pride", at(0)));
        }
        // Three hundred searches in random case: one trend, a bounded number of spellings.
        let mut seed = 7u64;
        for i in 0..300 {
            let spelled: String = "prejudice"
                .chars()
                .map(|c| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    if seed >> 63 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            board.apply(&search(None, &format!("pride {spelled}"), at(i)));
        }
        assert_eq!(board.trends["pride"].spellings.len(), 1);
        let mixed = &board.trends["pride prejudice"];
        assert_eq!(mixed.count, 300);
        assert!(
            mixed.spellings.len() <= SPELLINGS_PER_TREND,
            "{:?}",
            mixed.spellings
        );
        assert!(mixed.spellings.contains_key(&mixed.display));
        // The most common spelling still wins once it leads.
        for i in 0..5 {
            board.apply(&search(None, "Pride Prejudice", at(400 + i)));
        }
        assert_eq!(board.trends["pride prejudice"].display, "Pride Prejudice");
        let mut spellings = BTreeMap::from([
            ("a".to_owned(), 2),
            ("b".to_owned(), 1),
            ("c".to_owned(), 1),
        ]);
        assert_eq!(least_common_spelling(&spellings, "a").as_deref(), Some("c"));
        assert_eq!(least_common_spelling(&spellings, "c").as_deref(), Some("b"));
        spellings.retain(|k, _| k == "a");
        assert_eq!(least_common_spelling(&spellings, "a"), None);
    }

    fn view(user: Option<&str>, client: Option<&str>, id: i64, t: DateTime<Utc>) -> Event {
        let mut event = crate::events::BookViewedEvent::now(
            user.map(str::to_owned),
            client.map(str::to_owned),
            ResultBook {
                id,
                title: format!("Book {id}"),
                author: "A".into(),
                published_at: None,
            },
            crate::events::ViewSource::Direct,
            None,
            None,
        );
        event.occurred_at = t;
        Event::BookViewed(event)
    }

    #[test]
    fn views_decay_like_searches_and_rank_books() {
        let mut board = TrendBoard::new(settings());
        for i in 0..10 {
            board.apply_event(&view(None, None, 1, at(-7200 + i)));
        }
        board.apply_event(&view(None, None, 2, at(-60)));
        board.apply_event(&view(None, None, 2, at(-60)));
        board.apply_event(&view(None, None, 3, at(0)));
        let top = board.viewed_books(10, at(0));
        let ids: Vec<i64> = top.iter().map(|b| b.id).collect();
        assert_eq!(ids, [1, 2, 3], "2.5 (ten views two hours ago), 2, then 1");
        assert!((top[0].score - 2.5).abs() < 0.01, "{}", top[0].score);
        assert_eq!(top[0].views, 10);
        assert_eq!(top[2].last_viewed_at, at(0));
        assert_eq!(board.viewed_books(1, at(0)).len(), 1);
        // Searches are not views, and views make no trend.
        assert!(board.trends.is_empty());
    }

    #[test]
    fn one_reader_or_network_cannot_flood_a_book() {
        let mut board = TrendBoard::new(TrendSettings {
            user_cap: 3,
            client_cap: 5,
            ..TrendSettings::default()
        });
        for i in 0..50 {
            board.apply_event(&view(Some("flooder"), None, 1, at(i)));
        }
        for reader in 0..20 {
            let reader = format!("id-{reader}");
            board.apply_event(&view(Some(&reader), Some("c-one"), 2, at(0)));
        }
        let top = board.viewed_books(10, at(0));
        let book = |id: i64| top.iter().find(|b| b.id == id).cloned();
        assert!(book(1).is_some_and(|b| b.views == 50 && (b.score - 3.0).abs() < 0.05));
        assert!(book(2).is_some_and(|b| b.views == 20 && (b.score - 5.0).abs() < 0.05));
        // A search of the same reader has its own counter: views and searches never share one.
        board.apply(&search(Some("flooder"), "1", at(60)));
        assert!((board.trend("1", at(60)).map_or(0.0, |t| t.score) - 1.0).abs() < 0.01);
        assert!(board.caps.contains_key(&(
            board.settings.window(at(0)),
            "flooder".into(),
            view_subject(1)
        )));
    }

    #[test]
    fn viewed_books_are_pruned_and_a_forgotten_reader_views_afresh() {
        let mut board = TrendBoard::new(TrendSettings {
            user_cap: 2,
            max_trends: 2,
            ..TrendSettings::default()
        });
        board.apply_event(&view(None, None, 9, at(-8 * 3600)));
        for id in 1..4 {
            board.apply_event(&view(None, None, id, at(id)));
        }
        board.prune(at(10));
        assert_eq!(board.viewed.keys().copied().collect::<Vec<_>>(), [2, 3]);
        // The latest view names the book; an older one arriving late does not.
        let mut late = view(None, None, 3, at(-100));
        if let Event::BookViewed(e) = &mut late {
            e.book.title = "Old title".into();
        }
        board.apply_event(&late);
        assert_eq!(board.viewed[&3].title, "Book 3");
        // Forgetting deletes the reader's view counters; their views stay.
        for _ in 0..3 {
            board.apply_event(&view(Some("me"), None, 2, at(20)));
        }
        assert!(board.holds_reader("me"));
        let before = board.viewed_books(10, at(30));
        board.apply_event(&Event::ReaderForgotten(
            crate::events::ReaderForgottenEvent::now("me"),
        ));
        assert!(!board.holds_reader("me"));
        assert_eq!(before, board.viewed_books(10, at(30)));
        board.apply_event(&view(Some("me"), None, 2, at(21)));
        let after = board.viewed_books(10, at(30));
        assert!(
            (after[0].score - before[0].score - 1.0).abs() < 0.01,
            "counts afresh"
        );
    }

    #[test]
    fn normalization_makes_one_trend() {
        let mut board = TrendBoard::new(settings());
        for q in [
            "Rust",
            "rust",
            " rust ",
            "ＲＵＳＴ",
            "RUST\tlang",
            "rust  lang",
        ] {
            board.apply(&search(None, q, at(0)));
        }
        let top = board.top(10, TrendRanking::Count, Audience::Everyone, at(0));
        assert_eq!(top.len(), 2);
        assert_eq!(
            (top[0].query_normalized.as_str(), top[0].count),
            ("rust", 4)
        );
        assert_eq!(
            (top[1].query_normalized.as_str(), top[1].count),
            ("rust lang", 2)
        );
    }
}
