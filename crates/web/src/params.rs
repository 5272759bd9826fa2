//! Query-string parameters shared by the page and the API, with clear messages for bad values.

use std::collections::HashMap;

use bookstore_domain::FieldErrors;
use bookstore_domain::events::ViewSource;

use crate::ctr::{NO_REASON, OTHER_REASON, reason_label};

/// `q`, `o`, `limit` and `highlight` of a book listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    pub q: String,
    pub offset: u64,
    pub limit: Option<u32>,
    /// `highlight=1`: each book of the API's answer also carries its matched words marked.
    pub highlight: bool,
}

impl ListParams {
    /// Reads the listing parameters; unknown parameters are ignored.
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let offset = match params.get("o").map(|o| o.trim()) {
            None | Some("") => 0,
            Some(raw) => parse_saturating(raw).unwrap_or_else(|| {
                errors.add("o", "must be a non-negative integer");
                0
            }),
        };
        let limit = match params.get("limit").map(|l| l.trim()) {
            None | Some("") => None,
            Some(raw) => match parse_saturating(raw) {
                Some(0) | None => {
                    errors.add("limit", "must be a positive integer");
                    None
                }
                Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX).min(crate::MAX_LIMIT)),
            },
        };
        let highlight = match params.get("highlight").map(|h| h.trim()) {
            None | Some("" | "0" | "false") => false,
            Some("1" | "true") => true,
            Some(_) => {
                errors.add("highlight", "must be 1 or 0 (true or false)");
                false
            }
        };
        if errors.is_empty() {
            Ok(Self {
                q: params.get("q").cloned().unwrap_or_default(),
                offset,
                limit,
                highlight,
            })
        } else {
            Err(errors)
        }
    }
}

/// Where the link a reader followed to a book's page was: `from`, `rank` and `reason` of
/// `/books/{id}?from=<source>&rank=<i>&reason=<kind>`. Never an error: a link is only a hint,
/// and a page must open whatever an old or hand-made link says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewParams {
    pub source: ViewSource,
    /// Its position in the list, from 0.
    pub rank: Option<u32>,
    /// A known kind of reason ([`crate::ctr::reason_label`]); others are dropped.
    pub reason: Option<String>,
}

impl ViewParams {
    /// A missing or unknown `from` is [`ViewSource::Direct`], with no rank and no reason; a rank
    /// that is not a number or is past what an event carries
    /// ([`bookstore_domain::events::MAX_VIEW_RANK`]), or a reason that is not a known kind, is
    /// left out.
    pub fn parse(params: &HashMap<String, String>) -> Self {
        let Some(source) = params
            .get("from")
            .and_then(|from| ViewSource::parse(from.trim()))
            .filter(|source| *source != ViewSource::Direct)
        else {
            return Self {
                source: ViewSource::Direct,
                rank: None,
                reason: None,
            };
        };
        let rank = params
            .get("rank")
            .map(|rank| rank.trim())
            .filter(|rank| !rank.is_empty() && rank.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|rank| rank.parse().ok())
            // Past what an event may carry, a rank would make the event invalid (dead-lettered).
            .filter(|rank| *rank <= bookstore_domain::events::MAX_VIEW_RANK);
        let reason = params
            .get("reason")
            .map(|reason| reason_label(Some(reason.trim())))
            .filter(|label| *label != OTHER_REASON && *label != NO_REASON)
            .map(str::to_owned);
        Self {
            source,
            rank,
            reason,
        }
    }
}

/// A decimal number of digits only; one too large for `u64` saturates.
fn parse_saturating(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(raw.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<ListParams, FieldErrors> {
        ListParams::parse(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn defaults_and_caps() {
        assert_eq!(
            parse(&[]).unwrap(),
            ListParams {
                q: String::new(),
                offset: 0,
                limit: None,
                highlight: false,
            }
        );
        assert_eq!(parse(&[("limit", "1000")]).unwrap().limit, Some(100));
        assert_eq!(
            parse(&[("limit", "99999999999999999999")]).unwrap().limit,
            Some(100)
        );
        assert_eq!(
            parse(&[("o", "99999999999999999999")]).unwrap().offset,
            u64::MAX
        );
        assert_eq!(parse(&[("o", "20"), ("q", "x")]).unwrap().offset, 20);
        assert!(parse(&[("highlight", "1")]).unwrap().highlight);
        assert!(!parse(&[("highlight", "0")]).unwrap().highlight);
    }

    fn view(pairs: &[(&str, &str)]) -> ViewParams {
        ViewParams::parse(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_link_names_its_list_rank_and_reason() {
        assert_eq!(
            view(&[
                ("from", "recommendation"),
                ("rank", "2"),
                ("reason", "author")
            ]),
            ViewParams {
                source: ViewSource::Recommendation,
                rank: Some(2),
                reason: Some("author".to_owned()),
            }
        );
        assert_eq!(
            view(&[("from", "search"), ("rank", "0")]),
            ViewParams {
                source: ViewSource::Search,
                rank: Some(0),
                reason: None,
            }
        );
        let trends = view(&[("from", "trends"), ("rank", "4294967296"), ("reason", "x")]);
        assert_eq!(
            (trends.source, trends.rank, trends.reason),
            (ViewSource::Trends, None, None),
            "a rank past u32 and an unknown reason are dropped"
        );
        assert_eq!(
            view(&[("from", "search"), ("rank", "10000")]).rank,
            Some(10_000)
        );
        for rank in ["-1", "one", "1.5", "+1", "", "10001", "99999"] {
            assert_eq!(
                view(&[("from", "similar"), ("rank", rank)]).rank,
                None,
                "{rank:?}"
            );
        }
    }

    #[test]
    fn a_missing_or_unknown_source_is_direct_without_rank_or_reason() {
        let direct = ViewParams {
            source: ViewSource::Direct,
            rank: None,
            reason: None,
        };
        assert_eq!(view(&[]), direct);
        for from in ["", "Search", "email", "direct", "search\0"] {
            assert_eq!(
                view(&[("from", from), ("rank", "3"), ("reason", "searched")]),
                direct,
                "{from:?}"
            );
        }
    }

    #[test]
    fn bad_numbers_are_named() {
        for (key, value) in [
            ("o", "-1"),
            ("o", "ten"),
            ("o", "1.5"),
            ("o", "+1"),
            ("limit", "0"),
            ("limit", "-3"),
            ("highlight", "yes"),
        ] {
            let err = parse(&[(key, value)]).unwrap_err();
            assert!(err.get(key).is_some(), "{key}={value}");
        }
    }
}
