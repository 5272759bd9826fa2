use chrono::{DateTime, Duration, Utc};

use super::conformance::{book, search, settings};
use super::*;
use crate::events::Event;

fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn records(events: Vec<Event>) -> Vec<Record> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Record {
            topic: "t".into(),
            partition: 0,
            offset: i as i64,
            event,
        })
        .collect()
}

#[test]
fn top_results_weigh_more_and_weights_decay() {
    assert_eq!(rank_weight(0), 1.0);
    assert!(rank_weight(1) < 1.0 && rank_weight(1) > rank_weight(2));
    let s = RecommendSettings::default();
    let t = base();
    let log = s.log_weight(1.0, t);
    assert!((s.weight_at(log, t) - 1.0).abs() < 1e-9);
    let later = t + Duration::from_std(s.half_life).unwrap();
    assert!((s.weight_at(log, later) - 0.5).abs() < 1e-9);
}

#[test]
fn a_search_builds_the_profile_and_pairs_new_books_once() {
    let s = settings();
    let changes = apply(
        &s,
        Prior::default(),
        &records(vec![
            search(Some("u"), 0, base(), 0),
            search(Some("u"), 1, base(), 1),
            search(Some("u"), 1, base(), 2),
            search(None, 2, base(), 3),
        ]),
    );
    assert_eq!(changes.user_books.len(), 8);
    assert_eq!(changes.user_queries.len(), 2);
    assert_eq!(changes.user_authors.len(), 2);
    assert_eq!(
        changes.popular.len(),
        12,
        "anonymous searches count as popularity"
    );
    // Austen books pair with each other (4·3) and with each Brontë book both ways (2·4·4); the
    // Brontë books pair with each other (4·3). The repeated search adds nothing.
    assert_eq!(changes.cooccurrence.len(), 12 + 32 + 12);
    assert!(changes.cooccurrence.values().all(|n| *n == 1));
    let first = &changes.user_books[&("u".to_owned(), 1)];
    let fourth = &changes.user_books[&("u".to_owned(), 4)];
    assert!(
        first.log_weight > fourth.log_weight,
        "rank 0 weighs more than rank 3"
    );
    assert_eq!(first.query, "austen");
}

#[test]
fn applying_in_batches_equals_applying_in_one_go() {
    let s = settings();
    let events: Vec<Event> = (0..12)
        .map(|i| search(Some(["x", "y", "z"][i % 3]), i % 4, base(), i as i64))
        .collect();
    let all = records(events);
    let whole = Snapshot::from(apply(&s, Prior::default(), &all));

    // The same events in two batches, the second reading what the first wrote.
    let first = apply(&s, Prior::default(), &all[..5]);
    let mut prior = Prior::default();
    for ((u, b), row) in &first.user_books {
        prior.user_books.insert((u.clone(), *b), row.clone());
    }
    for ((u, a), w) in &first.user_authors {
        prior.user_authors.insert((u.clone(), a.clone()), *w);
    }
    for ((u, q), w) in &first.user_queries {
        prior.user_queries.insert((u.clone(), q.clone()), *w);
    }
    prior
        .popular
        .extend(first.popular.iter().map(|(b, w)| (*b, *w)));
    for user in ["x", "y", "z"] {
        let mut top: Vec<(i64, f64)> = first
            .user_books
            .iter()
            .filter(|((u, _), _)| u == user)
            .map(|((_, b), row)| (*b, row.log_weight))
            .collect();
        top.sort_by(by_strength);
        top.truncate(s.history_per_event);
        prior.top_books.insert(user.to_owned(), top);
    }
    let second = apply(&s, prior, &all[5..]);
    let mut merged = first.clone();
    merged.user_books.extend(second.user_books);
    merged.user_authors.extend(second.user_authors);
    merged.user_queries.extend(second.user_queries);
    merged.popular.extend(second.popular);
    merged.shown.extend(second.shown);
    for (pair, n) in second.cooccurrence {
        *merged.cooccurrence.entry(pair).or_default() += n;
    }
    assert_eq!(Snapshot::from(merged).difference(&whole), None);
}

#[test]
fn the_blend_ranks_co_occurrence_then_authors_then_popularity() {
    let entry = |id: i64| {
        let b = book(id);
        (
            id,
            (
                CatalogEntry {
                    id,
                    title: b.title,
                    author: b.author,
                },
                Some(0.0),
            ),
        )
    };
    let hood = Neighbourhood {
        interests: vec![InterestBook {
            id: 1,
            log_weight: 10.0,
            query: "austen".into(),
        }],
        neighbours: vec![(1, 5, 3), (1, 2, 9)],
        authors: vec![("Jane Austen".into(), 10.0)],
        author_books: vec![3],
        popular: vec![13],
        shown: [2].into_iter().collect(),
        catalog: [entry(2), entry(3), entry(5), entry(13)]
            .into_iter()
            .collect(),
    };
    let ranked = blend(&hood, 10);
    let ids: Vec<i64> = ranked.iter().map(|r| r.id).collect();
    assert_eq!(ids, [5, 3, 13], "shown book 2 left out: {ranked:?}");
    assert_eq!(ranked[0].reason, "because you searched for austen");
    assert_eq!(ranked[1].reason, "more by Jane Austen");
    assert_eq!(ranked[2].reason, POPULAR_REASON);
    assert_eq!(blend(&hood, 1).len(), 1);
    assert!(blend(&Neighbourhood::default(), 10).is_empty());
}

#[test]
fn trimming_keeps_the_strongest_neighbours_lower_ids_first() {
    let dropped = trim_neighbours(vec![(9, 1), (3, 5), (4, 1), (2, 1)], 2);
    assert_eq!(dropped, [4, 9]);
    assert!(trim_neighbours(vec![(1, 1)], 5).is_empty());
}
