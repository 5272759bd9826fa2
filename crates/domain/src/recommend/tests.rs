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
    };
    let changes = apply(settings, prior, records);
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
