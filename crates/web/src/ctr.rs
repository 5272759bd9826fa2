//! Click-through rates, as Gorse measures its recommendations online: how many book links each
//! list showed (impressions) and how many book pages were opened from them, by source and by
//! reason. Both go to Prometheus (`bookstore_web_books_shown_total` and
//! `bookstore_web_books_opened_total`, summed across instances by whoever queries them) and to
//! this instance's own table, which `GET /stats` on the operations port reports.
//!
//! Label values are bounded: the source is a [`ViewSource`], the reason one of the known kinds
//! of [`bookstore_domain::recommend`] or `other`, or `none` for a link without one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use axum::Json;
use axum::extract::State;
use bookstore_domain::events::ViewSource;
use bookstore_domain::recommend::{
    KIND_AUTHOR, KIND_POPULAR, KIND_SEARCHED, KIND_SIMILAR, KIND_VIEWED,
};
use serde::Serialize;

use crate::WebState;

/// The reasons a link may carry, as labels.
const KINDS: [&str; 5] = [
    KIND_SEARCHED,
    KIND_VIEWED,
    KIND_AUTHOR,
    KIND_POPULAR,
    KIND_SIMILAR,
];
/// The label of a link without a reason.
pub const NO_REASON: &str = "none";
/// The label of a reason that is not a known kind.
pub const OTHER_REASON: &str = "other";

/// The bounded label of `reason`: a known kind, [`OTHER_REASON`] or [`NO_REASON`].
pub fn reason_label(reason: Option<&str>) -> &'static str {
    match reason {
        None => NO_REASON,
        Some(reason) => KINDS
            .into_iter()
            .find(|kind| *kind == reason)
            .unwrap_or(OTHER_REASON),
    }
}

/// Impressions and opened pages of one source and reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    shown: u64,
    opened: u64,
}

/// This instance's click-through counts since it started.
#[derive(Debug, Default)]
pub struct ClickThrough {
    counts: Mutex<HashMap<(ViewSource, &'static str), Counts>>,
}

impl ClickThrough {
    /// `n` links to books were rendered in the list `source`, for `reason`.
    pub fn shown(&self, source: ViewSource, reason: Option<&str>, n: usize) {
        if n == 0 {
            return;
        }
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let reason = reason_label(reason);
        metrics::counter!(
            "bookstore_web_books_shown_total",
            "source" => source.as_str(),
            "reason" => reason
        )
        .increment(n);
        self.add(source, reason, |c| c.shown = c.shown.saturating_add(n));
    }

    /// A book's page was opened from a link in `source`, for `reason`.
    pub fn opened(&self, source: ViewSource, reason: Option<&str>) {
        let reason = reason_label(reason);
        metrics::counter!(
            "bookstore_web_books_opened_total",
            "source" => source.as_str(),
            "reason" => reason
        )
        .increment(1);
        self.add(source, reason, |c| c.opened = c.opened.saturating_add(1));
    }

    fn add(&self, source: ViewSource, reason: &'static str, change: impl FnOnce(&mut Counts)) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(counts.entry((source, reason)).or_default());
    }

    /// The table: a row per source and reason seen, in order, and the totals.
    pub fn report(&self) -> ClickThroughReport {
        let counts: BTreeMap<(ViewSource, &'static str), Counts> = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(key, counts)| (*key, *counts))
            .collect();
        let mut total = Counts::default();
        let rows = counts
            .into_iter()
            .map(|((source, reason), counts)| {
                total.shown = total.shown.saturating_add(counts.shown);
                total.opened = total.opened.saturating_add(counts.opened);
                ClickThroughRow {
                    source: source.as_str(),
                    reason,
                    shown: counts.shown,
                    opened: counts.opened,
                    rate: rate(counts),
                }
            })
            .collect();
        ClickThroughReport {
            rows,
            total: ClickThroughTotal {
                shown: total.shown,
                opened: total.opened,
                rate: rate(total),
            },
        }
    }
}

/// `opened / shown`, or `None` when nothing was shown (a page opened from a link another
/// instance rendered, or a typed address).
fn rate(counts: Counts) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    (counts.shown > 0).then(|| counts.opened as f64 / counts.shown as f64)
}

/// `GET /stats`'s answer.
#[derive(Debug, Serialize)]
pub struct ClickThroughReport {
    pub rows: Vec<ClickThroughRow>,
    pub total: ClickThroughTotal,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ClickThroughRow {
    pub source: &'static str,
    pub reason: &'static str,
    pub shown: u64,
    pub opened: u64,
    /// `opened / shown`; `null` when nothing was shown.
    pub rate: Option<f64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ClickThroughTotal {
    pub shown: u64,
    pub opened: u64,
    pub rate: Option<f64>,
}

/// `GET /stats` on the operations port: this instance's click-through table.
#[utoipa::path(get, path = "/stats", tag = "operations",
    summary = "Click-through rates of this instance since it started, by source and reason",
    responses(
        (status = 200, description = "`{rows: [{source, reason, shown, opened, rate}], total: {shown, opened, rate}}`: `shown` counts the book links the page rendered in a list (search results, Trends, recommendations, similar books), `opened` the book pages opened from such a link (`?from=&reason=`), `rate` is `opened / shown` (`null` when nothing was shown). Per instance: Prometheus sums `bookstore_web_books_shown_total` and `bookstore_web_books_opened_total` across instances."),
    ))]
pub async fn stats(State(state): State<WebState>) -> Json<ClickThroughReport> {
    Json(state.click_through.report())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_known_kinds_other_or_none() {
        assert_eq!(reason_label(None), "none");
        assert_eq!(reason_label(Some("searched")), "searched");
        assert_eq!(reason_label(Some("similar")), "similar");
        assert_eq!(reason_label(Some("Searched")), "other");
        assert_eq!(reason_label(Some("")), "other");
        assert_eq!(reason_label(Some(&"x".repeat(1000))), "other");
    }

    #[test]
    fn the_table_adds_up_by_source_and_reason() {
        let ctr = ClickThrough::default();
        ctr.shown(ViewSource::Recommendation, Some("searched"), 4);
        ctr.shown(ViewSource::Recommendation, Some("popular"), 1);
        ctr.shown(ViewSource::Search, None, 5);
        ctr.shown(ViewSource::Search, None, 0);
        ctr.opened(ViewSource::Recommendation, Some("searched"));
        ctr.opened(ViewSource::Search, Some("made-up"));
        ctr.opened(ViewSource::Direct, None);
        let report = ctr.report();
        let row = |source: &str, reason: &str| {
            report
                .rows
                .iter()
                .find(|r| r.source == source && r.reason == reason)
                .unwrap_or_else(|| panic!("no row {source}/{reason}: {report:?}"))
        };
        let searched = row("recommendation", "searched");
        assert_eq!((searched.shown, searched.opened), (4, 1));
        assert_eq!(searched.rate, Some(0.25));
        assert_eq!(row("recommendation", "popular").rate, Some(0.0));
        assert_eq!(row("search", "none").shown, 5);
        let other = row("search", "other");
        assert_eq!((other.shown, other.opened, other.rate), (0, 1, None));
        assert_eq!(row("direct", "none").opened, 1);
        assert_eq!(report.rows.len(), 5);
        assert_eq!(
            report.total,
            ClickThroughTotal {
                shown: 10,
                opened: 3,
                rate: Some(0.3),
            }
        );
        // The rows come in order: by source, then reason.
        let keys: Vec<(&str, &str)> = report.rows.iter().map(|r| (r.source, r.reason)).collect();
        assert_eq!(
            keys,
            [
                ("search", "none"),
                ("search", "other"),
                ("recommendation", "popular"),
                ("recommendation", "searched"),
                ("direct", "none"),
            ]
        );
    }
}
