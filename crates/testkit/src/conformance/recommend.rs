//! The check every recommendation store passes: fed catalog, search and view events batch by
//! batch, it holds what [`apply`] computes from the same events in one go,
//! recommends what the rules say (discovery through other users, no book already shown or
//! viewed, co-viewed books, popular books for a new user), answers "readers who looked at this
//! also looked at", follows the catalog's updates and deletes, keeps its bounds, forgets, and
//! refuses a batch whose start is not its stored position. For the stores' tests; it panics on
//! the first difference.

use bookstore_domain::events::{
    BookDeletedEvent, BookEvent, BookViewedEvent, CatalogBook, Event, ReaderForgottenEvent,
    ResultBook, SearchEvent, ViewSource,
};
use bookstore_domain::recommend::{
    CatalogEntry, Changes, KIND_SIMILAR, KIND_VIEWED, MAX_SHOWN_PER_EVENT, POPULAR_REASON, Prior,
    QueryRecord, RecommendSettings, Recommendation, SIMILAR_REASON, SimilarBooks, Snapshot, apply,
};
use bookstore_domain::{Batch, EventHandler, HandlerError, PositionUpdate, RecommendStore, Record};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// The settings the check runs with: small bounds, so that they bite.
pub fn settings() -> RecommendSettings {
    RecommendSettings {
        results_per_event: 5,
        history_per_event: 2,
        books_per_query: 4,
        related_per_query: 2,
        popular_books: 10,
        profile_books: 12,
        profile_authors: 4,
        profile_queries: 3,
        profile_shown: 50,
        profile_viewed: 6,
        similar_per_book: 3,
        ..RecommendSettings::default()
    }
}

const AUTHORS: [&str; 4] = [
    "Jane Austen",
    "Charlotte Brontë",
    "Frank Herbert",
    "J. R. R. Tolkien",
];
const QUERIES: [&str; 4] = ["austen", "bronte", "herbert", "tolkien"];

/// Book `i` of the catalog: four books by each of the four authors (ids 1..=16), author
/// `(i - 1) / 4`.
pub fn book(i: i64) -> CatalogBook {
    let author = AUTHORS[((i - 1) / 4) as usize % 4];
    CatalogBook {
        isbn: None,
        id: i,
        title: format!("Book {i} by {author}"),
        author: author.to_owned(),
        published_at: chrono::NaiveDate::from_ymd_opt(1850, 1, 1)
            .unwrap_or_default()
            .into(),
        description: String::new(),
        created_at: DateTime::UNIX_EPOCH,
    }
}

fn created(i: i64) -> Event {
    Event::BookCreated(BookEvent::new(
        Uuid::from_u128(i as u128),
        DateTime::UNIX_EPOCH,
        book(i),
    ))
}

/// A search by `user` for author `a`'s books (all four), `minutes` after `base`.
pub fn search(user: Option<&str>, a: usize, base: DateTime<Utc>, minutes: i64) -> Event {
    let results = (1..=4)
        .map(|k| {
            let b = book((a as i64) * 4 + k);
            ResultBook {
                id: b.id,
                title: b.title,
                author: b.author,
                published_at: Some(b.published_at),
            }
        })
        .collect();
    Event::BookSearched(SearchEvent::new(
        Uuid::now_v7(),
        base + Duration::minutes(minutes),
        user.map(str::to_owned),
        QUERIES[a],
        0,
        results,
    ))
}

/// A view of book `id` (of [`book`]'s catalog, or any other id) by `user`, `minutes` after
/// `base`, opened from a search's results at rank 0.
pub fn view(user: Option<&str>, id: i64, base: DateTime<Utc>, minutes: i64) -> Event {
    let b = book(id);
    let mut event = BookViewedEvent::now(
        user.map(str::to_owned),
        None,
        ResultBook {
            id,
            title: b.title,
            author: b.author,
            published_at: Some(b.published_at),
        },
        ViewSource::Search,
        Some(0),
        None,
    );
    event.occurred_at = base + Duration::minutes(minutes);
    Event::BookViewed(event)
}

struct Feed {
    group: String,
    next: i64,
    all: Vec<Record>,
}

impl Feed {
    fn batch(&mut self, events: Vec<Event>) -> Batch {
        let from = (self.next > 0).then_some(self.next);
        let records: Vec<Record> = events
            .into_iter()
            .map(|event| {
                let record = Record {
                    topic: "check".into(),
                    partition: 0,
                    offset: self.next,
                    event,
                };
                self.next += 1;
                record
            })
            .collect();
        self.all.extend(records.iter().cloned());
        Batch {
            group: self.group.clone(),
            records,
            positions: vec![PositionUpdate {
                topic: "check".into(),
                partition: 0,
                from,
                to: self.next,
            }],
        }
    }
}

/// What the store should hold: every event applied in one go to an empty store.
pub fn reference(settings: &RecommendSettings, records: &[Record]) -> Snapshot {
    snapshot_of(apply(settings, Prior::default(), records))
}

/// What a store holds after writing `changes` to an empty store.
fn snapshot_of(changes: Changes) -> Snapshot {
    Snapshot {
        catalog: changes
            .catalog
            .into_values()
            .map(|b| CatalogEntry {
                id: b.id,
                title: b.title,
                author: b.author,
            })
            .collect(),
        profiles: changes.profiles.into_iter().collect(),
        queries: changes.queries.into_iter().collect(),
        popular: changes.popular.into_iter().collect(),
        coviews: changes.coviews.into_iter().collect(),
    }
    .sorted()
}

/// Runs the check on an empty `store` created with [`settings`].
pub async fn check_store<S: RecommendStore + SimilarBooks + EventHandler>(store: &S) {
    let settings = settings();
    let base = DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    let mut feed = Feed {
        group: "check".into(),
        next: 0,
        all: Vec::new(),
    };

    // The catalog, then searches: reader A likes Austen; B likes Austen and the Brontës; many
    // anonymous readers look for Tolkien, so Tolkien is popular.
    let catalog = feed.batch((1..=16).map(created).collect());
    store.apply(&catalog).await.expect("the catalog applies");
    let first = feed.batch(vec![
        search(Some("a"), 0, base, 0),
        search(Some("b"), 0, base, 1),
        search(None, 3, base, 2),
        search(None, 3, base, 2),
        search(None, 3, base, 3),
    ]);
    store.apply(&first).await.expect("the first searches apply");
    let second = feed.batch(vec![
        search(Some("b"), 1, base, 4),
        // Repeating a search adds weight but no co-occurrence.
        search(Some("b"), 1, base, 5),
        search(None, 3, base, 6),
        search(None, 3, base, 7),
        search(None, 3, base, 7),
    ]);
    store
        .apply(&second)
        .await
        .expect("the second searches apply");

    // A replayed batch is refused and changes nothing.
    let before = store.snapshot().await.expect("snapshot");
    match store.apply(&second).await {
        Err(HandlerError::StalePosition(_)) => {}
        other => panic!("a replayed batch must be refused as stale, got {other:?}"),
    }
    let after = store.snapshot().await.expect("snapshot");
    assert_eq!(
        before.difference(&after),
        None,
        "a refused batch changed the store"
    );

    let expected = reference(&settings, &feed.all);
    assert_eq!(
        after.difference(&expected),
        None,
        "the store differs from the rules applied in one go"
    );
    let books_of = |author: usize| ((author as i64) * 4 + 1)..=((author as i64) * 4 + 4);

    // Discovery: A was shown Austen only; B's searches connect Austen to the Brontës.
    let for_a = store.recommend("a", 10).await.expect("recommend a");
    assert!(!for_a.is_empty(), "A gets recommendations");
    assert!(
        for_a.iter().all(|r| !books_of(0).contains(&r.id)),
        "A is never recommended a book already shown: {for_a:?}"
    );
    let bronte = for_a
        .iter()
        .find(|r| books_of(1).contains(&r.id))
        .unwrap_or_else(|| panic!("A is recommended a Brontë book: {for_a:?}"));
    assert_eq!(bronte.reason, "because you searched for austen");
    assert_eq!(bronte.author, "Charlotte Brontë");
    assert!(
        for_a.windows(2).all(|w| w[0].score >= w[1].score),
        "best first: {for_a:?}"
    );
    let top_bronte = for_a.iter().position(|r| books_of(1).contains(&r.id));
    let top_tolkien = for_a.iter().position(|r| books_of(3).contains(&r.id));
    if let (Some(b), Some(t)) = (top_bronte, top_tolkien) {
        assert!(b < t, "co-occurrence outranks mere popularity: {for_a:?}");
    }

    // A new reader gets the popular books.
    let fresh = store.recommend("nobody", 3).await.expect("recommend new");
    assert_eq!(fresh.len(), 3, "{fresh:?}");
    assert!(
        fresh
            .iter()
            .all(|r| books_of(3).contains(&r.id) && r.reason == POPULAR_REASON),
        "a new reader gets Tolkien, the popular books: {fresh:?}"
    );

    // B has been shown Austen and the Brontës: only other books.
    let for_b = store.recommend("b", 50).await.expect("recommend b");
    assert!(
        for_b
            .iter()
            .all(|r| !books_of(0).contains(&r.id) && !books_of(1).contains(&r.id)),
        "{for_b:?}"
    );

    let interests = store
        .interests("b", 10, base + Duration::minutes(10))
        .await
        .expect("interests");
    assert_eq!(interests.uid, "b");
    assert_eq!(interests.books.len(), 8, "{interests:?}");
    assert_eq!(interests.queries[0].name, "bronte", "searched twice");
    assert_eq!(interests.authors[0].name, "Charlotte Brontë");
    assert!(interests.books.windows(2).all(|w| w[0].score >= w[1].score));
    assert_eq!(
        store
            .catalog_book(5)
            .await
            .expect("catalog")
            .map(|b| b.author),
        Some("Charlotte Brontë".to_owned())
    );
    assert_eq!(store.catalog_book(99).await.expect("catalog"), None);
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.catalog_books, stats.users), (16, 2));

    // The catalog changes: the Brontë book A is recommended gets a new title, and a popular
    // Tolkien book is deleted. Recommendations show the new title and never the deleted book.
    let renamed_id = bronte.id;
    let deleted_id = fresh[0].id;
    let mut renamed = book(renamed_id);
    renamed.title = "A New Title".to_owned();
    let changes = feed.batch(vec![
        Event::BookUpdated(BookEvent::new(Uuid::now_v7(), base, renamed)),
        Event::BookDeleted(BookDeletedEvent::new(Uuid::now_v7(), base, deleted_id)),
    ]);
    store
        .apply(&changes)
        .await
        .expect("the catalog's changes apply");
    let for_a = store.recommend("a", 50).await.expect("recommend a");
    let shown = for_a.iter().find(|r| r.id == renamed_id);
    assert_eq!(
        shown.map(|r| r.title.as_str()),
        Some("A New Title"),
        "the new title is recommended: {for_a:?}"
    );
    for user in ["a", "b", "nobody"] {
        let recommended = store.recommend(user, 50).await.expect("recommend");
        assert!(
            recommended.iter().all(|r| r.id != deleted_id),
            "book {deleted_id} was deleted, yet recommended to {user}: {recommended:?}"
        );
    }
    assert_eq!(store.catalog_book(deleted_id).await.expect("catalog"), None);
    assert_eq!(
        store
            .catalog_book(renamed_id)
            .await
            .expect("catalog")
            .map(|b| b.title),
        Some("A New Title".to_owned())
    );
    assert_eq!(store.stats().await.expect("stats").catalog_books, 15);
    let after = store.snapshot().await.expect("snapshot");
    assert_eq!(
        after.difference(&reference(&settings, &feed.all)),
        None,
        "after the catalog's changes, the store differs from the rules applied in one go"
    );

    // Bounds: four events with three hundred results each count `results_per_event` of them,
    // remember at most `profile_shown` books as shown (the latest), and every list stays within
    // its cap, in profiles, query records and popularity lists alike.
    let huge: Vec<ResultBook> = (1000..1300)
        .map(|id| ResultBook {
            id,
            title: format!("Filler {id}"),
            author: format!("Author {}", id % 7),
            published_at: None,
        })
        .collect();
    let many = (0..4)
        .map(|i| {
            Event::BookSearched(SearchEvent::new(
                Uuid::now_v7(),
                base + Duration::minutes(20 + i),
                Some("heavy".into()),
                &format!("everything {i}"),
                0,
                huge[(i as usize) * 5..].to_vec(),
            ))
        })
        .collect();
    let heavy = feed.batch(many);
    store.apply(&heavy).await.expect("the heavy searches apply");
    let snapshot = store.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.difference(&reference(&settings, &feed.all)),
        None,
        "after the heavy searches, the store differs from the rules applied in one go"
    );
    let profile = &snapshot
        .profiles
        .iter()
        .find(|(u, _)| u == "heavy")
        .expect("the heavy reader has a profile")
        .1;
    // Each event counts its first five results (1000–1004, 1005–1009, …): 20 books, capped.
    assert_eq!(profile.books.len(), settings.profile_books, "{profile:?}");
    assert_eq!(profile.queries.len(), settings.profile_queries);
    assert_eq!(profile.authors.len(), settings.profile_authors);
    let expected_shown: Vec<i64> = {
        // Each event shows its first MAX_SHOWN_PER_EVENT results, so 1000..1115 in that order
        // over the four: the latest `profile_shown` of them, oldest first.
        let all: Vec<i64> = (1000..1015 + MAX_SHOWN_PER_EVENT as i64).collect();
        all[all.len() - settings.profile_shown..].to_vec()
    };
    assert_eq!(
        profile.shown, expected_shown,
        "the latest books shown are remembered, oldest first, up to profile_shown"
    );
    for ((_, query), record) in &snapshot.queries {
        assert!(record.books.len() <= settings.books_per_query, "{query}");
        assert!(
            record.related.len() <= settings.related_per_query,
            "{query}"
        );
    }
    assert!(
        snapshot
            .queries
            .iter()
            .any(|(_, r)| r.books.len() == settings.books_per_query),
        "some query record is full"
    );
    for (_, list) in &snapshot.popular {
        assert!(list.len() <= settings.popular_books);
    }
    // A reader shown the whole catalog in one long page (more results than count) is
    // recommended nothing: every book was shown.
    let everything: Vec<ResultBook> = (1..=16)
        .map(|i| {
            let b = book(i);
            ResultBook {
                id: b.id,
                title: b.title,
                author: b.author,
                published_at: None,
            }
        })
        .collect();
    let wide = feed.batch(vec![Event::BookSearched(SearchEvent::new(
        Uuid::now_v7(),
        base + Duration::minutes(30),
        Some("wide".into()),
        "books",
        0,
        everything,
    ))]);
    store.apply(&wide).await.expect("the long page applies");
    let for_wide = store.recommend("wide", 50).await.expect("recommend wide");
    assert!(for_wide.is_empty(), "{for_wide:?}");

    // Forgetting: B searches, is forgotten, and searches again in one batch; "heavy" is
    // forgotten alone. Only B's last search is left of them; the query records keep what their
    // searches added.
    let heavy_records = |snapshot: &Snapshot| -> Vec<((i32, String), QueryRecord)> {
        snapshot
            .queries
            .iter()
            .filter(|((_, q), _)| q.starts_with("everything"))
            .cloned()
            .collect()
    };
    let before_forgetting = heavy_records(&store.snapshot().await.expect("snapshot"));
    assert_eq!(before_forgetting.len(), 4);
    let forget = |user: &str| {
        Event::ReaderForgotten(ReaderForgottenEvent::new(
            Uuid::now_v7(),
            base + Duration::minutes(40),
            user.to_owned(),
        ))
    };
    let forgetting = feed.batch(vec![
        search(Some("b"), 2, base, 39),
        forget("b"),
        forget("heavy"),
        search(Some("b"), 3, base, 41),
        forget("nobody ever seen"),
    ]);
    store
        .apply(&forgetting)
        .await
        .expect("the forgetting applies");
    let snapshot = store.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.difference(&reference(&settings, &feed.all)),
        None,
        "after forgetting, the store differs from the rules applied in one go"
    );
    assert!(snapshot.profiles.iter().all(|(u, _)| u != "heavy"));
    let b = store
        .interests("b", 10, base + Duration::minutes(50))
        .await
        .expect("interests");
    let queries: Vec<&str> = b.queries.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(
        queries,
        ["tolkien"],
        "only the search after the forget is left"
    );
    assert_eq!(b.books.len(), 4);
    let heavy = store
        .interests("heavy", 10, base + Duration::minutes(50))
        .await
        .expect("interests");
    assert!(heavy.books.is_empty() && heavy.queries.is_empty() && heavy.authors.is_empty());
    assert_eq!(
        heavy_records(&snapshot),
        before_forgetting,
        "the forgotten reader's searches stay in the query records, anonymous"
    );

    check_views(store, &settings, &mut feed, base).await;

    // Expiry: profiles whose last search is older than the cut go; the others stay.
    let cut = (base + Duration::minutes(3)).timestamp_millis();
    let users_before = store.stats().await.expect("stats").users;
    assert_eq!(store.expire(cut, 1_000).await.expect("expire"), 1, "only A");
    assert_eq!(store.expire(cut, 1_000).await.expect("expire"), 0);
    assert_eq!(store.stats().await.expect("stats").users, users_before - 1);
    let a = store.interests("a", 10, base).await.expect("interests");
    assert!(a.books.is_empty(), "A's profile expired: {a:?}");
}

/// Views: weights, co-view counts (bounded, first views only), viewed books never recommended,
/// "readers who looked at this also looked at", and forgetting; times from `base + 42 min`, so
/// that the expiry check after it still finds A alone expired.
async fn check_views<S: RecommendStore + SimilarBooks + EventHandler>(
    store: &S,
    settings: &RecommendSettings,
    feed: &mut Feed,
    base: DateTime<Utc>,
) {
    // V1 and V2 both open Herbert's books 9 and 10 (V2 opens 9 twice: once counts); V2 also
    // opens 11. Anonymous views count as popularity only.
    let views = feed.batch(vec![
        view(Some("v1"), 9, base, 42),
        view(Some("v1"), 10, base, 43),
        view(Some("v2"), 9, base, 44),
        view(None, 9, base, 44),
        view(Some("v2"), 9, base, 45),
        view(Some("v2"), 10, base, 46),
    ]);
    store.apply(&views).await.expect("the views apply");
    let more = feed.batch(vec![view(Some("v2"), 11, base, 47)]);
    store.apply(&more).await.expect("more views apply");
    let snapshot = store.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.difference(&reference(settings, &feed.all)),
        None,
        "after the views, the store differs from the rules applied in one go"
    );
    let profile = |name: &str| {
        snapshot
            .profiles
            .iter()
            .find(|(u, _)| u == name)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("{name} has a profile"))
    };
    let v2 = profile("v2");
    assert_eq!(
        v2.viewed_ids(),
        vec![9, 10, 11],
        "each once, the last viewed last"
    );
    assert!(v2.queries.is_empty() && v2.shown.is_empty(), "{v2:?}");
    let nine = v2.books.iter().find(|b| b.id == 9).expect("book 9");
    let ten = v2.books.iter().find(|b| b.id == 10).expect("book 10");
    assert!(
        (nine.log_weight - ten.log_weight - 1.0).abs() < 0.01,
        "two views of 9 weigh twice one view of 10: {v2:?}"
    );

    // "Readers who looked at this": 9 and 10 were viewed together by two readers, 11 with
    // 9 and 10 by one.
    let similar = store.similar(9, 10).await.expect("similar");
    let ids: Vec<(i64, f64)> = similar.iter().map(|r| (r.id, r.score)).collect();
    assert_eq!(ids, vec![(10, 2.0), (11, 1.0)], "{similar:?}");
    assert!(
        similar
            .iter()
            .all(|r| r.kind == KIND_SIMILAR && r.reason == SIMILAR_REASON)
    );
    assert_eq!(similar[0].title, book(10).title);
    assert_eq!(store.similar(9, 1).await.expect("similar").len(), 1);
    assert!(store.similar(1, 10).await.expect("similar").is_empty());
    assert!(store.similar(12_345, 10).await.expect("similar").is_empty());

    // V1 is recommended 11 first, because V2 looked at it too; never 9 or 10, which V1 opened.
    let for_v1 = store.recommend("v1", 50).await.expect("recommend v1");
    assert!(
        for_v1.iter().all(|r| r.id != 9 && r.id != 10),
        "viewed books are never recommended: {for_v1:?}"
    );
    let eleven = for_v1
        .first()
        .unwrap_or_else(|| panic!("v1 is recommended books: {for_v1:?}"));
    assert_eq!(eleven.id, 11, "the co-viewed book first: {for_v1:?}");
    assert_eq!(eleven.kind, KIND_VIEWED, "{for_v1:?}");
    assert_eq!(
        eleven.reason, "because you looked at Book 10 by Frank Herbert",
        "the latest viewed book counts most"
    );

    // Bounds: a reader viewing many books keeps `profile_viewed` of them (the latest), each
    // co-view record at most `similar_per_book` books (4 is counted with 2, 3, 5 and 6: 6 goes),
    // and a view counts with the reader's last `history_per_event` books only.
    let many = feed.batch((1..=8).map(|i| view(Some("v3"), i, base, 48 + i)).collect());
    store.apply(&many).await.expect("many views apply");
    let snapshot = store.snapshot().await.expect("snapshot");
    assert_eq!(
        snapshot.difference(&reference(settings, &feed.all)),
        None,
        "after many views, the store differs from the rules applied in one go"
    );
    let v3 = snapshot
        .profiles
        .iter()
        .find(|(u, _)| u == "v3")
        .map(|(_, p)| p.clone())
        .expect("v3 has a profile");
    let latest: Vec<i64> = (3..=8).collect();
    assert_eq!(v3.viewed_ids(), latest);
    for (_, record) in &snapshot.coviews {
        assert!(record.len() <= settings.similar_per_book, "{record:?}");
    }
    let ids = |list: Vec<Recommendation>| list.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.similar(1, 50).await.expect("similar")),
        vec![2, 3],
        "1 counts with the next `history_per_event` (2) books only"
    );
    assert_eq!(
        ids(store.similar(4, 50).await.expect("similar")),
        vec![2, 3, 5]
    );

    // Forgetting V2 deletes their viewed books with the profile; the co-view counts stay,
    // anonymous.
    let forget = feed.batch(vec![Event::ReaderForgotten(ReaderForgottenEvent::new(
        Uuid::now_v7(),
        base + Duration::minutes(60),
        "v2".to_owned(),
    ))]);
    store.apply(&forget).await.expect("the forget applies");
    let snapshot = store.snapshot().await.expect("snapshot");
    assert!(snapshot.profiles.iter().all(|(u, _)| u != "v2"));
    assert_eq!(
        snapshot.difference(&reference(settings, &feed.all)),
        None,
        "after forgetting a viewer, the store differs from the rules applied in one go"
    );
    assert_eq!(store.similar(9, 10).await.expect("similar").len(), 2);
}
