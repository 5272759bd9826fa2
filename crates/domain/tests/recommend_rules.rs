//! The recommendation rules (`bookstore_domain::recommend`) through their public API: a search
//! or a view builds a profile, query records and co-view records within their bounds; applying
//! events batch by batch, loading only what the needs name as a store does, equals applying them
//! in one go; partitions merge by adding up; the blend ranks and gives its reasons; records
//! survive their encoding. The fixtures are those of the stores' conformance check
//! (`bookstore_testkit::conformance::recommend`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use bookstore_domain::Record;
use bookstore_domain::events::Event;
use bookstore_domain::recommend::*;
use bookstore_testkit::conformance::recommend::{
    self as conformance, book, search, settings, view,
};
use chrono::{DateTime, Duration, Utc};

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

/// Applies `records` batch by batch as a store does: loading only what the needs name.
fn apply_in(settings: &RecommendSettings, store: &mut Snapshot, records: &[Record]) {
    let users = profile_needs(records);
    let profiles: HashMap<String, Profile> = store
        .profiles
        .iter()
        .filter(|(u, _)| users.contains(u))
        .cloned()
        .collect();
    let wanted = query_needs(settings, records, &profiles);
    let partitions = popular_needs(records);
    let books = coview_needs(settings, records, &profiles);
    let prior = Prior {
        profiles,
        queries: store
            .queries
            .iter()
            .filter(|(k, _)| wanted.contains(k))
            .cloned()
            .collect(),
        popular: store
            .popular
            .iter()
            .filter(|(p, _)| partitions.contains(p))
            .cloned()
            .collect(),
        coviews: store
            .coviews
            .iter()
            .filter(|(k, _)| books.contains(k))
            .cloned()
            .collect(),
    };
    let changes = apply(settings, prior, records);
    // As stores do: the forgotten profiles go first, then the new values are written.
    for user in changes.forgotten {
        store.profiles.retain(|(u, _)| *u != user);
    }
    for (user, profile) in changes.profiles {
        store.profiles.retain(|(u, _)| *u != user);
        store.profiles.push((user, profile));
    }
    for (key, record) in changes.queries {
        store.queries.retain(|(k, _)| *k != key);
        store.queries.push((key, record));
    }
    for (p, list) in changes.popular {
        store.popular.retain(|(q, _)| *q != p);
        store.popular.push((p, list));
    }
    for (key, record) in changes.coviews {
        store.coviews.retain(|(k, _)| *k != key);
        store.coviews.push((key, record));
    }
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
fn a_search_builds_the_profile_and_relates_new_queries_once() {
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
    let profile = &changes.profiles["u"];
    assert_eq!(profile.books.len(), 8);
    assert_eq!(profile.queries.len(), 2);
    assert_eq!(profile.authors.len(), 2);
    assert_eq!(profile.shown.len(), 8);
    assert_eq!(
        changes.popular[&0].len(),
        s.popular_books,
        "anonymous searches count as popularity, within the cap"
    );
    // "bronte" is related to "austen" both ways, once: the repeated search adds nothing.
    let austen = &changes.queries[&(0, "austen".to_owned())];
    let bronte = &changes.queries[&(0, "bronte".to_owned())];
    assert_eq!(austen.related, vec![("bronte".to_owned(), 1)]);
    assert_eq!(bronte.related, vec![("austen".to_owned(), 1)]);
    assert_eq!(bronte.books.len(), 4);
    let herbert = &changes.queries[&(0, "herbert".to_owned())];
    assert!(
        herbert.related.is_empty(),
        "anonymous searches relate nothing"
    );
    assert_eq!(changes.profiles.len(), 1);
}

#[test]
fn applying_in_batches_equals_applying_in_one_go() {
    let s = settings();
    let events: Vec<Event> = (0..40)
        .map(|i| {
            let user = ["a", "b", "c"].get(i % 4).copied();
            search(user, (i * 7 + i / 3) % 4, base(), i as i64)
        })
        .collect();
    let all = records(events);
    let expected = conformance::reference(&s, &all);
    for size in [1, 3, 7, 40] {
        let mut store = Snapshot::default();
        for chunk in all.chunks(size) {
            apply_in(&s, &mut store, chunk);
        }
        assert_eq!(store.difference(&expected), None, "batches of {size}");
    }
}

#[test]
fn records_are_bounded_and_survive_their_encoding() {
    let s = settings();
    let changes = apply(
        &s,
        Prior::default(),
        &records(
            (0..30)
                .map(|i| search(Some("u"), i % 4, base(), i as i64))
                .collect(),
        ),
    );
    let profile = &changes.profiles["u"];
    assert!(profile.queries.len() <= s.profile_queries);
    assert_eq!(
        Profile::from_bytes(&profile.to_bytes()),
        Ok(profile.clone())
    );
    let record = &changes.queries[&(0, "austen".to_owned())];
    assert_eq!(
        QueryRecord::from_bytes(&record.to_bytes()),
        Ok(record.clone())
    );
    assert!(Profile::from_bytes(b"\xff\xff\xff").is_err());
}

#[test]
fn partitions_merge_by_adding_up() {
    let a = QueryRecord {
        books: vec![(1, 0.0), (2, -1.0)],
        related: vec![("x".into(), 2)],
    };
    let b = QueryRecord {
        books: vec![(2, -1.0)],
        related: vec![("x".into(), 1), ("y".into(), 5)],
    };
    let merged = merge_queries([("q".to_owned(), a), ("q".to_owned(), b)]);
    let q = &merged["q"];
    assert_eq!(q.books.len(), 2);
    let two = q.books.iter().find(|(id, _)| *id == 2).unwrap().1;
    assert!((two - 0.0).abs() < 1e-12, "2^-1 + 2^-1 = 2^0");
    let mut related = q.related.clone();
    related.sort();
    assert_eq!(related, vec![("x".into(), 3), ("y".into(), 5)]);
    let popular = merge_popular([vec![(1, 0.0), (2, 1.0)], vec![(1, 0.0), (3, -5.0)]], 2);
    assert_eq!(popular, vec![(1, 1.0), (2, 1.0)]);
}

#[test]
fn the_blend_ranks_searches_then_authors_then_popularity() {
    let s = settings();
    let feed = records(vec![
        search(Some("b"), 0, base(), 0),
        search(Some("b"), 1, base(), 1),
        search(Some("a"), 0, base(), 2),
        search(None, 3, base(), 3),
    ]);
    let changes = apply(&s, Prior::default(), &feed);
    let profile = changes.profiles["a"].clone();
    let records: HashMap<String, QueryRecord> = merge_queries(
        changes
            .queries
            .iter()
            .map(|((_, q), r)| (q.clone(), r.clone())),
    );
    let hood = Neighbourhood {
        profile: profile.clone(),
        queries: records,
        author_books: vec![1, 2, 3, 4],
        popular: merge_popular(changes.popular.values().cloned(), 100),
        coviews: HashMap::new(),
    };
    let catalog: HashMap<i64, CatalogEntry> = (1..=16)
        .map(|i| {
            let b = book(i);
            (
                i,
                CatalogEntry {
                    id: i,
                    title: b.title,
                    author: b.author,
                },
            )
        })
        .collect();
    let ranked = blend(&profile, shortlist(&hood, 10), &catalog, 10);
    assert!(!ranked.is_empty());
    assert!(
        ranked.iter().all(|r| r.id > 4),
        "shown books never come back"
    );
    assert!(ranked[0].id >= 5 && ranked[0].id <= 8, "{ranked:?}");
    assert_eq!(ranked[0].reason, "because you searched for austen");
    assert!(ranked.iter().any(|r| r.reason == POPULAR_REASON));
    assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score));
    // A reader without history gets the popular books.
    let fresh = Neighbourhood {
        popular: hood.popular.clone(),
        ..Neighbourhood::default()
    };
    let popular = blend(&Profile::default(), shortlist(&fresh, 3), &catalog, 3);
    assert_eq!(popular.len(), 3);
    assert!(popular.iter().all(|r| r.reason == POPULAR_REASON));
}

#[test]
fn statements_are_cut_by_rows_and_by_bytes() {
    let rows = [10, 10, 10, 50, 10, 200, 10];
    let cut = byte_chunks(&rows, 3, 60, |r| *r as usize);
    let sizes: Vec<Vec<i32>> = cut.iter().map(|c| c.to_vec()).collect();
    assert_eq!(
        sizes,
        vec![vec![10, 10, 10], vec![50, 10], vec![200], vec![10]]
    );
    assert!(byte_chunks(&[] as &[i32], 3, 60, |r| *r as usize).is_empty());
}

fn catalog() -> HashMap<i64, CatalogEntry> {
    (1..=16)
        .map(|i| {
            let b = book(i);
            (
                i,
                CatalogEntry {
                    id: i,
                    title: b.title,
                    author: b.author,
                },
            )
        })
        .collect()
}

#[test]
fn a_view_weighs_more_than_being_shown_first() {
    let s = settings();
    let changes = apply(
        &s,
        Prior::default(),
        &records(vec![
            search(Some("u"), 0, base(), 0),
            view(Some("u"), 2, base(), 0),
        ]),
    );
    let profile = &changes.profiles["u"];
    let weight = |id: i64| {
        let b = profile.books.iter().find(|b| b.id == id).unwrap();
        s.weight_at(b.log_weight, base())
    };
    // Book 1 was shown first (weight 1); book 2 shown second (1 / log2 3) and opened (3).
    assert!((weight(1) - 1.0).abs() < 1e-9);
    assert!((weight(2) - (rank_weight(1) + VIEW_WEIGHT)).abs() < 1e-9);
    let austen = &profile.authors[0];
    assert!(
        (s.weight_at(austen.log_weight, base())
            - ((0..4).map(rank_weight).sum::<f64>() + VIEW_WEIGHT))
            .abs()
            < 1e-9
    );
    assert_eq!(profile.viewed_ids(), vec![2]);
    // The search that showed book 2 led to the view: its query gains the view's weight.
    assert!(
        (s.weight_at(profile.queries[0].log_weight, base()) - (1.0 + VIEW_WEIGHT)).abs() < 1e-9
    );
    let popular = &changes.popular[&0];
    let two = popular.iter().find(|b| b.0 == 2).unwrap().1;
    assert!((s.weight_at(two, base()) - (rank_weight(1) + VIEW_WEIGHT)).abs() < 1e-9);
}

#[test]
fn first_views_count_co_views_both_ways_and_anonymous_views_only_popularity() {
    let s = settings();
    let changes = apply(
        &s,
        Prior::default(),
        &records(vec![
            view(Some("u"), 1, base(), 0),
            view(Some("u"), 2, base(), 1),
            view(Some("u"), 1, base(), 2),
            view(Some("u"), 3, base(), 3),
            view(Some("u"), 4, base(), 4),
            view(None, 5, base(), 5),
            view(None, 4, base(), 6),
        ]),
    );
    let record = |b: i64| {
        let mut r = changes.coviews.get(&(0, b)).cloned().unwrap_or_default();
        r.sort();
        r
    };
    // 1 again counts nothing; 3 counts with the last two viewed (1, 2); 4 with 3 and 1.
    assert_eq!(record(1), vec![(2, 1), (3, 1), (4, 1)]);
    assert_eq!(record(2), vec![(1, 1), (3, 1)]);
    assert_eq!(record(3), vec![(1, 1), (2, 1), (4, 1)]);
    assert_eq!(record(4), vec![(1, 1), (3, 1)]);
    assert!(record(5).is_empty(), "anonymous views relate nothing");
    assert_eq!(changes.profiles["u"].viewed_ids(), vec![2, 1, 3, 4]);
    assert!(changes.popular[&0].iter().any(|b| b.0 == 5));
    let coviews = &changes.coviews[&(0, 1)];
    assert_eq!(
        CoViews::from_bytes(&coviews.to_bytes()),
        Ok(coviews.clone())
    );
}

#[test]
fn co_view_records_merge_and_rank_by_readers() {
    let merged = merge_coviews([
        (1, vec![(2, 1), (3, 4)]),
        (1, vec![(2, 5)]),
        (7, vec![(1, 1)]),
    ]);
    assert_eq!(most_coviewed(&merged[&1], 1, 10), vec![(2, 6), (3, 4)]);
    assert_eq!(most_coviewed(&merged[&1], 1, 1), vec![(2, 6)]);
    assert_eq!(most_coviewed(&vec![(1, 9), (4, 2)], 1, 10), vec![(4, 2)]);
}

#[test]
fn viewed_books_are_never_recommended_and_co_views_give_reasons() {
    let s = settings();
    // V looks at 9 and 10, W at 9, 10 and 11: 11 is co-viewed with both of V's books.
    let changes = apply(
        &s,
        Prior::default(),
        &records(vec![
            view(Some("v"), 9, base(), 0),
            view(Some("v"), 10, base(), 1),
            view(Some("w"), 9, base(), 2),
            view(Some("w"), 10, base(), 3),
            view(Some("w"), 11, base(), 4),
            search(None, 2, base(), 5),
        ]),
    );
    let profile = changes.profiles["v"].clone();
    let coviews = merge_coviews(changes.coviews.iter().map(|((_, b), r)| (*b, r.clone())));
    let hood = Neighbourhood {
        profile: profile.clone(),
        author_books: vec![9, 10, 11, 12],
        popular: merge_popular(changes.popular.values().cloned(), 100),
        coviews,
        ..Neighbourhood::default()
    };
    let ranked = blend(&profile, shortlist(&hood, 10), &catalog(), 10);
    assert!(ranked.iter().all(|r| r.id != 9 && r.id != 10), "{ranked:?}");
    assert_eq!(ranked[0].id, 11, "{ranked:?}");
    assert_eq!(ranked[0].kind, KIND_VIEWED);
    assert_eq!(
        ranked[0].reason,
        format!("because you looked at {}", book(10).title)
    );
    let twelve = ranked
        .iter()
        .find(|r| r.id == 12)
        .expect("12, by the author");
    assert_eq!(twelve.kind, KIND_AUTHOR);
}

#[test]
fn views_in_batches_equal_views_in_one_go() {
    let s = settings();
    let events: Vec<Event> = (0..60)
        .map(|i| {
            let user = ["a", "b", "c"].get(i % 4).copied();
            match i % 5 {
                0 | 1 => search(user, (i * 7 + i / 3) % 4, base(), i as i64),
                2 if i % 15 == 2 => {
                    Event::ReaderForgotten(bookstore_domain::events::ReaderForgottenEvent::new(
                        uuid::Uuid::now_v7(),
                        base() + Duration::minutes(i as i64),
                        "b".to_owned(),
                    ))
                }
                _ => view(user, ((i * 11) % 16 + 1) as i64, base(), i as i64),
            }
        })
        .collect();
    let all = records(events);
    let expected = conformance::reference(&s, &all);
    assert!(!expected.coviews.is_empty());
    for size in [1, 2, 7, 60] {
        let mut store = Snapshot::default();
        for chunk in all.chunks(size) {
            apply_in(&s, &mut store, chunk);
        }
        assert_eq!(store.difference(&expected), None, "batches of {size}");
    }
}

#[test]
fn an_older_store_is_rebuilt() {
    assert!(needs_rebuild(None));
    assert!(needs_rebuild(Some(1)));
    assert!(!needs_rebuild(Some(STORED_VERSION)));
    let old = [&[1u8][..], &Profile::default().to_bytes()[1..]].concat();
    assert!(Profile::from_bytes(&old).unwrap_err().contains("version 1"));
    assert_ne!(positions_group("g"), "g/profiles");
}

#[test]
fn views_count_together_within_one_visit_only() {
    let s = settings();
    // 1 and 2 an hour apart at most: together; 3 two hours after 2: alone.
    let changes = apply(
        &s,
        Prior::default(),
        &records(vec![
            view(Some("u"), 1, base(), 0),
            view(Some("u"), 2, base(), 60),
            view(Some("u"), 3, base(), 180),
        ]),
    );
    assert_eq!(changes.coviews[&(0, 1)], vec![(2, 1)]);
    assert_eq!(changes.coviews[&(0, 2)], vec![(1, 1)]);
    assert!(!changes.coviews.contains_key(&(0, 3)));
    assert_eq!(changes.profiles["u"].viewed_ids(), vec![1, 2, 3]);
}

#[test]
fn a_view_lifting_a_weak_query_loads_its_record() {
    let s = settings();
    // Austen is U's weakest query (the oldest); viewing an Austen book makes it the strongest, so
    // the new query of the same batch is related to it: its stored record must be read.
    let all = records(vec![
        search(Some("u"), 0, base(), 0),
        search(Some("u"), 1, base(), 1),
        search(Some("u"), 2, base(), 2),
        view(Some("u"), 1, base(), 3),
        search(Some("u"), 3, base(), 4),
    ]);
    let expected = conformance::reference(&s, &all);
    let mut store = Snapshot::default();
    apply_in(&s, &mut store, &all[..3]);
    apply_in(&s, &mut store, &all[3..]);
    assert_eq!(store.difference(&expected), None);
    let related = |query: &str| {
        expected
            .queries
            .iter()
            .find(|((_, q), _)| q == query)
            .map(|(_, r)| r.related.clone())
            .unwrap()
    };
    // Without the view, Tolkien would be related to the two latest queries, Herbert and Brontë.
    let mut tolkien = related("tolkien");
    tolkien.sort();
    assert_eq!(tolkien, vec![("austen".into(), 1), ("herbert".into(), 1)]);
    let austen = expected
        .queries
        .iter()
        .find(|((_, q), _)| q == "austen")
        .unwrap();
    assert_eq!(austen.1.books.len(), 4, "Austen's record kept its books");
}
