//! The catalog's search read model: a tantivy index of the books, kept by each web instance in
//! its data directory and fed by the catalog topic's events. The catalog database stays the
//! system of record; search never reads it.
//!
//! The positions the index has read up to in the catalog topic are stored in the same commit as
//! the books (tantivy's commit payload), so a crash at any point neither loses nor doubles a
//! book, and an index without positions (new, or lost) is rebuilt from the topic's beginning.
//!
//! The web service opens it in `<data_dir>/search/index` and feeds it with a consumer of the
//! catalog topic (`crates/app/src/search.rs`); it searches it through the
//! [`bookstore_domain::BookSearch`] port that [`SearchIndex`] implements.

pub mod handler;
pub mod highlight;
pub mod query;

pub use handler::SearchIndex;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use bookstore_domain::events::CatalogBook;
use bookstore_domain::{
    Book, BookId, BookQuery, Highlights, Isbn, MAX_EXACT_TOTAL, Marked, Position, PublishedDate,
    SearchPage, Suggestion, SuggestionKind,
};
use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{AllQuery, EnableScoring, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};
use tantivy::{
    DocAddress, DocSet, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Searcher, TERMINATED,
    TantivyDocument, Term, doc,
};

/// Counts above this are reported as "at least" ([`Page::total_is_lower_bound`]).
pub const EXACT_COUNT_UP_TO: usize = MAX_EXACT_TOTAL as usize;

/// The analyzer of the text fields, by name (tantivy does not store analyzers in the index: it
/// is registered again at every open).
const FOLDED: &str = "folded";

/// How many of the best matches suggestions are taken from.
const SUGGEST_FROM: usize = 40;

/// The writer's memory budget (one indexing thread).
const WRITER_BYTES: usize = 50_000_000;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index directory: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("search index positions are unreadable: {0}")]
    Positions(#[from] serde_json::Error),
    #[error("search index worker: {0}")]
    Worker(String),
}

/// A change to the catalog, as its events say.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Created or replaced.
    Upsert(CatalogBook),
    Delete(i64),
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The books, best first, as the index holds them (the catalog database is not read).
    pub books: Vec<Book>,
    /// How many books match, at most [`EXACT_COUNT_UP_TO`].
    pub total: usize,
    /// Whether more than [`EXACT_COUNT_UP_TO`] match.
    pub total_is_lower_bound: bool,
}

impl Page {
    /// The books' ids, best first.
    pub fn ids(&self) -> Vec<i64> {
        self.books.iter().map(|b| b.id.0).collect()
    }
}

struct Fields {
    id: Field,
    title: Field,
    author: Field,
    description: Field,
    /// Stored only: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
    published_at: Field,
    /// Stored only: microseconds since the epoch (the precision the databases keep).
    created_at: Field,
    /// Its 13 digits, matched whole.
    isbn: Field,
    /// The title's and the author's words, indexed only: where words are corrected and completed.
    names: Field,
}

/// The positions as stored in a commit's payload.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Payload {
    /// "topic/partition" to the next offset to read.
    positions: BTreeMap<String, i64>,
}

pub struct BookIndex {
    index: Index,
    reader: IndexReader,
    /// One writer per index; searches never wait for it (they read the last reloaded commit).
    writer: Mutex<IndexWriter<TantivyDocument>>,
    fields: Fields,
    analyzer: TextAnalyzer,
}

impl BookIndex {
    /// Opens the index in `dir` (made if missing), or a new one in memory for `None`.
    pub fn open(dir: Option<&Path>) -> Result<Self, SearchError> {
        let (schema, fields) = schema();
        let index = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    tantivy::TantivyError::SystemError(format!("{}: {e}", dir.display()))
                })?;
                open_or_rebuild(dir, schema)?
            }
            None => Index::create_in_ram(schema),
        };
        let analyzer = folded();
        index.tokenizers().register(FOLDED, analyzer.clone());
        let writer = index.writer_with_num_threads(1, WRITER_BYTES)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            reader,
            writer: Mutex::new(writer),
            fields,
            analyzer,
        })
    }

    /// Where the index stands in the catalog topic, as its last commit says; empty for an index
    /// that must be built from the topic's beginning.
    pub fn positions(&self) -> Result<Vec<Position>, SearchError> {
        let payload: Payload = match self.index.load_metas()?.payload {
            Some(text) => serde_json::from_str(&text)?,
            None => Payload::default(),
        };
        Ok(payload
            .positions
            .into_iter()
            .filter_map(|(key, next_offset)| Position::from_key(&key, next_offset))
            .collect())
    }

    /// Applies `changes` and moves the stored positions to `positions`, in one commit; searches
    /// see the result once this returns.
    pub fn apply(&self, changes: &[Change], positions: &[Position]) -> Result<(), SearchError> {
        let mut writer = match self.writer.lock() {
            Ok(writer) => writer,
            Err(poisoned) => {
                // A batch panicked half-way: drop what it added before applying this one.
                let mut writer = poisoned.into_inner();
                if let Err(error) = writer.rollback() {
                    tracing::warn!(%error, "search index: cannot roll a failed batch back");
                }
                writer
            }
        };
        let applied = self.apply_with(&mut writer, changes, positions);
        if applied.is_err() {
            // Nothing of a failed batch may ride along with the next commit.
            if let Err(error) = writer.rollback() {
                tracing::warn!(%error, "search index: cannot roll a failed batch back");
            }
        }
        drop(writer);
        applied?;
        self.reader.reload()?;
        Ok(())
    }

    fn apply_with(
        &self,
        writer: &mut IndexWriter<TantivyDocument>,
        changes: &[Change],
        positions: &[Position],
    ) -> Result<(), SearchError> {
        for change in changes {
            match change {
                Change::Upsert(book) => {
                    writer.delete_term(id_term(&self.fields, book.id));
                    writer.add_document(self.document(book))?;
                }
                Change::Delete(id) => {
                    writer.delete_term(id_term(&self.fields, *id));
                }
            }
        }
        let mut payload: Payload = match self.index.load_metas()?.payload {
            Some(text) => serde_json::from_str(&text)?,
            None => Payload::default(),
        };
        for p in positions {
            payload
                .positions
                .insert(Position::key(&p.topic, p.partition), p.next_offset);
        }
        // A plain commit would store no payload and so forget the positions.
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(&serde_json::to_string(&payload)?);
        commit.commit()?;
        Ok(())
    }

    /// The byte ranges of `text` (a title, an author) that match the words of `typed`, corrected
    /// or completed ones too.
    pub fn marks(&self, typed: &str, text: &str) -> Vec<Range<usize>> {
        let mut analyzer = self.analyzer.clone();
        let words = query::words(&mut analyzer, typed);
        highlight::ranges(&mut analyzer, &words, text)
    }

    /// About `max_chars` characters of `text` (a description) around its first match of
    /// `typed`, and the matches in them.
    pub fn snippet(
        &self,
        typed: &str,
        text: &str,
        max_chars: usize,
    ) -> (String, Vec<Range<usize>>) {
        let mut analyzer = self.analyzer.clone();
        let words = query::words(&mut analyzer, typed);
        highlight::snippet(&mut analyzer, &words, text, max_chars)
    }

    /// Merges the index's segments into one: each search visits every segment (and walks each
    /// one's vocabulary for corrected and completed words), so a search of one segment is the
    /// fastest. Done once an index has caught up with the topic; the commits after it add small
    /// segments that tantivy's merge policy merges as they come. The positions stay as they are.
    pub fn merge_segments(&self) -> Result<(), SearchError> {
        // A segment in one of the merge policy's own merges cannot be merged again: try again
        // with the segments as they are then.
        let mut attempt = 0;
        loop {
            let ids = self.index.searchable_segment_ids()?;
            if ids.len() <= 1 {
                break;
            }
            // The writer is free while the merge runs: batches go on being applied.
            let merging = self
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .merge(&ids);
            match merging.wait() {
                Ok(_) => break,
                Err(tantivy::TantivyError::InvalidArgument(_)) if attempt < 20 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
                Err(error) => return Err(error.into()),
            }
        }
        self.reader.reload()?;
        Ok(())
    }

    /// How many segments the index's last commit has (each search visits every one).
    pub fn segments(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }

    /// How many books the index holds.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A page of the query's results: [`BookIndex::search`] for its words, or the whole catalog
    /// in id order ([`BookIndex::list`]) when it has none.
    pub fn page(&self, query: &BookQuery) -> Result<SearchPage, SearchError> {
        let offset = usize::try_from(query.offset).unwrap_or(usize::MAX);
        let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
        let mut analyzer = self.analyzer.clone();
        let page = if query::words(&mut analyzer, query.text()).is_empty() {
            self.list(offset, limit)?
        } else {
            self.search(query.text(), offset, limit)?
        };
        Ok(SearchPage {
            books: page.books,
            total: page.total as u64,
            total_is_lower_bound: page.total_is_lower_bound,
        })
    }

    /// Every book in id order: `limit` of them from `offset`, and the exact count.
    pub fn list(&self, offset: usize, limit: usize) -> Result<Page, SearchError> {
        let searcher = self.reader.searcher();
        let total = usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX);
        if offset >= total {
            return Ok(Page {
                books: Vec::new(),
                total,
                total_is_lower_bound: false,
            });
        }
        let hits = searcher.search(
            &AllQuery,
            &TopDocs::with_limit(limit.max(1))
                .and_offset(offset)
                .order_by_fast_field::<i64>("id", Order::Asc),
        )?;
        let mut books = Vec::with_capacity(hits.len());
        for (_id, address) in hits {
            let doc: TantivyDocument = searcher.doc(address)?;
            books.extend(self.book(&doc));
        }
        Ok(Page {
            books,
            total,
            total_is_lower_bound: false,
        })
    }

    /// `book`'s title and author with the words matching `typed` marked, and a snippet of its
    /// description around the first match.
    pub fn highlight(&self, typed: &str, book: &Book, snippet_chars: usize) -> Highlights {
        let mut analyzer = self.analyzer.clone();
        let words = query::words(&mut analyzer, typed);
        let whole = |text: &str, analyzer: &mut TextAnalyzer| Marked {
            text: text.to_owned(),
            marks: highlight::ranges(analyzer, &words, text),
            ..Marked::default()
        };
        let title = whole(&book.title, &mut analyzer);
        let author = whole(&book.author, &mut analyzer);
        let (part, marks) =
            highlight::snippet(&mut analyzer, &words, &book.description, snippet_chars);
        let description = Marked {
            cut_before: !book.description.starts_with(&part),
            cut_after: !book.description.ends_with(&part),
            text: part,
            marks,
        };
        Highlights {
            title,
            author,
            description,
        }
    }

    /// Up to `n` titles and authors of the best matches of `typed` (its last word read as a
    /// prefix), each once: a title or an author is offered when its own words match.
    pub fn suggest(&self, typed: &str, n: usize) -> Result<Vec<Suggestion>, SearchError> {
        // As typed so far: the last word is a prefix even after a space the reader left.
        let typed = typed.trim_end();
        let mut analyzer = self.analyzer.clone();
        let words = query::words(&mut analyzer, typed);
        if words.is_empty() || n == 0 {
            return Ok(Vec::new());
        }
        let page = self.search(typed, 0, SUGGEST_FROM)?;
        let mut found: Vec<Suggestion> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for book in &page.books {
            for (text, kind) in [
                (&book.title, SuggestionKind::Title),
                (&book.author, SuggestionKind::Author),
            ] {
                if highlight::ranges(&mut analyzer, &words, text).is_empty() {
                    continue;
                }
                if seen.insert(text.to_lowercase()) {
                    found.push(Suggestion {
                        text: text.clone(),
                        kind,
                    });
                }
            }
        }
        // Titles and authors matched by every word first (they complete the whole query).
        found.sort_by_key(|s| {
            let matched = words
                .iter()
                .filter(|w| {
                    !highlight::ranges(&mut analyzer, std::slice::from_ref(*w), &s.text).is_empty()
                })
                .count();
            std::cmp::Reverse(matched)
        });
        found.truncate(n);
        Ok(found)
    }

    /// The books matching `typed`, best first: `limit` of them from `offset`.
    pub fn search(&self, typed: &str, offset: usize, limit: usize) -> Result<Page, SearchError> {
        // A query that is an ISBN finds its book, if the index has it.
        if let Some(isbn) = Isbn::in_query(typed) {
            let query = TermQuery::new(
                Term::from_field_text(self.fields.isbn, isbn.as_str()),
                IndexRecordOption::Basic,
            );
            let searcher = self.reader.searcher();
            let hits = searcher.search(&query, &TopDocs::with_limit(1).order_by_score())?;
            if let Some((_, address)) = hits.first() {
                let doc: TantivyDocument = searcher.doc(*address)?;
                let books = if offset == 0 {
                    self.book(&doc).into_iter().collect()
                } else {
                    Vec::new()
                };
                return Ok(Page {
                    books,
                    total: 1,
                    total_is_lower_bound: false,
                });
            }
        }
        let mut analyzer = self.analyzer.clone();
        let words = query::words(&mut analyzer, typed);
        let fields = query::Fields {
            weighted: vec![
                (self.fields.title, 3.0),
                (self.fields.author, 2.0),
                (self.fields.description, 1.0),
            ],
            expanded: self.fields.names,
        };
        let Some(query) = query::build(&fields, &words) else {
            return Ok(Page {
                books: Vec::new(),
                total: 0,
                total_is_lower_bound: false,
            });
        };
        let searcher = self.reader.searcher();
        let offset = offset.min(EXACT_COUNT_UP_TO);
        let limit = limit.clamp(1, EXACT_COUNT_UP_TO);
        // A query of stop words only (`the`, `of the`) matches most of the catalog and its
        // words say nothing about relevance: its matches come in the index's order (about the
        // order the books were added), the first page found without scoring every match, so it
        // costs no more than a rare word.
        let addresses = if words.iter().all(query::is_stop) {
            first_matches(&searcher, query.as_ref(), offset, limit)?
        } else {
            searcher
                .search(
                    &query,
                    &TopDocs::with_limit(limit)
                        .and_offset(offset)
                        .order_by_score(),
                )?
                .into_iter()
                .map(|(_score, address)| address)
                .collect()
        };
        let total = count_up_to(&searcher, query.as_ref(), EXACT_COUNT_UP_TO)?;
        let mut books = Vec::with_capacity(addresses.len());
        for address in addresses {
            let doc: TantivyDocument = searcher.doc(address)?;
            books.extend(self.book(&doc));
        }
        Ok(Page {
            books,
            total: total.min(EXACT_COUNT_UP_TO),
            total_is_lower_bound: total > EXACT_COUNT_UP_TO,
        })
    }
}

impl BookIndex {
    fn document(&self, book: &CatalogBook) -> TantivyDocument {
        let f = &self.fields;
        let mut doc = doc!(
            f.id => book.id,
            f.title => book.title.as_str(),
            f.author => book.author.as_str(),
            f.description => book.description.as_str(),
            f.published_at => book.published_at.to_string(),
            f.created_at => book.created_at.timestamp_micros(),
            f.names => format!("{}\n{}", book.title, book.author),
        );
        if let Some(isbn) = &book.isbn {
            doc.add_text(f.isbn, isbn);
        }
        doc
    }

    /// The book a stored document holds; `None` for a document this version cannot read.
    fn book(&self, doc: &TantivyDocument) -> Option<Book> {
        let f = &self.fields;
        let text = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        Some(Book {
            id: BookId(doc.get_first(f.id)?.as_i64()?),
            title: text(f.title)?,
            author: text(f.author)?,
            published_at: PublishedDate::parse(&text(f.published_at)?)?,
            description: text(f.description).unwrap_or_default(),
            created_at: chrono::DateTime::from_timestamp_micros(
                doc.get_first(f.created_at)?.as_i64()?,
            )?,
            isbn: text(f.isbn).and_then(|i| Isbn::parse(&i).ok()),
        })
    }
}

/// The index in `dir`, or a new one when there is none, or when the one there was made with
/// another schema (an older version of this crate): a read model is rebuilt from its log, never
/// migrated.
fn open_or_rebuild(dir: &Path, schema: Schema) -> Result<Index, SearchError> {
    match Index::open_or_create(MmapDirectory::open(dir)?, schema.clone()) {
        Ok(index) => Ok(index),
        Err(tantivy::TantivyError::SchemaError(reason)) => {
            tracing::warn!(
                dir = %dir.display(),
                %reason,
                "the search index has another schema: it is deleted and built again from the catalog topic"
            );
            std::fs::remove_dir_all(dir).map_err(|e| {
                tantivy::TantivyError::SystemError(format!("{}: {e}", dir.display()))
            })?;
            std::fs::create_dir_all(dir).map_err(|e| {
                tantivy::TantivyError::SystemError(format!("{}: {e}", dir.display()))
            })?;
            Ok(Index::create(
                MmapDirectory::open(dir)?,
                schema,
                tantivy::IndexSettings::default(),
            )?)
        }
        Err(error) => Err(error.into()),
    }
}

/// The live documents matching `query` from the `offset`-th to the `offset + limit`-th, in the
/// index's order, unscored: it stops there.
fn first_matches(
    searcher: &Searcher,
    query: &dyn Query,
    offset: usize,
    limit: usize,
) -> Result<Vec<DocAddress>, SearchError> {
    let weight = query.weight(EnableScoring::disabled_from_searcher(searcher))?;
    let mut seen = 0;
    let mut found = Vec::with_capacity(limit);
    for (ord, segment) in searcher.segment_readers().iter().enumerate() {
        let alive = segment.alive_bitset();
        let mut scorer = weight.scorer(segment, 1.0)?;
        let mut doc = scorer.doc();
        while doc != TERMINATED {
            if alive.is_none_or(|alive| alive.is_alive(doc)) {
                if seen >= offset {
                    found.push(DocAddress::new(u32::try_from(ord).unwrap_or(u32::MAX), doc));
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
                seen += 1;
            }
            doc = scorer.advance();
        }
    }
    Ok(found)
}

/// How many live documents match `query`, counted up to `limit` + 1 and no further: a query
/// matching most of the catalog costs no more to count than one matching 10,001 books.
fn count_up_to(searcher: &Searcher, query: &dyn Query, limit: usize) -> Result<usize, SearchError> {
    let weight = query.weight(EnableScoring::disabled_from_searcher(searcher))?;
    let mut total = 0;
    for segment in searcher.segment_readers() {
        let alive = segment.alive_bitset();
        let mut scorer = weight.scorer(segment, 1.0)?;
        let mut doc = scorer.doc();
        while doc != TERMINATED {
            if alive.is_none_or(|alive| alive.is_alive(doc)) {
                total += 1;
                if total > limit {
                    return Ok(total);
                }
            }
            doc = scorer.advance();
        }
    }
    Ok(total)
}

fn id_term(fields: &Fields, id: i64) -> Term {
    Term::from_field_i64(fields.id, id)
}

/// Words split on what is not a letter or digit, lower case, without accents.
fn folded() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(query::MAX_WORD_CHARS))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(FOLDED)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let text = text.set_stored();
    let fields = Fields {
        id: builder.add_i64_field("id", INDEXED | STORED | FAST),
        title: builder.add_text_field("title", text.clone()),
        author: builder.add_text_field("author", text.clone()),
        description: builder.add_text_field("description", text),
        published_at: builder.add_text_field("published_at", STORED),
        created_at: builder.add_i64_field("created_at", STORED),
        isbn: builder.add_text_field("isbn", STRING | STORED),
        names: builder.add_text_field(
            "names",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(FOLDED)
                    .set_index_option(IndexRecordOption::Basic),
            ),
        ),
    };
    (builder.build(), fields)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn book(id: i64, title: &str, author: &str, description: &str) -> Change {
        Change::Upsert(CatalogBook {
            id,
            title: title.to_owned(),
            author: author.to_owned(),
            published_at: chrono::NaiveDate::from_ymd_opt(1900, 1, 1).unwrap().into(),
            description: description.to_owned(),
            created_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            isbn: None,
        })
    }

    fn catalog() -> Vec<Change> {
        vec![
            book(
                1,
                "Frankenstein",
                "Mary Shelley",
                "A scientist makes a creature.",
            ),
            book(
                2,
                "Great Expectations",
                "Charles Dickens",
                "Pip, an orphan.",
            ),
            book(
                3,
                "Jane Eyre",
                "Charlotte Brontë",
                "A governess at Thornfield.",
            ),
            book(
                4,
                "Pride and Prejudice",
                "Jane Austen",
                "Elizabeth Bennet and Darcy.",
            ),
            book(5, "Emma", "Jane Austen", "A matchmaker."),
            book(
                6,
                "The Pickwick Papers",
                "Charles Dickens",
                "A club travels.",
            ),
        ]
    }

    fn position(next_offset: i64) -> Vec<Position> {
        vec![Position {
            topic: "catalog".into(),
            partition: 0,
            next_offset,
        }]
    }

    fn index() -> BookIndex {
        let index = BookIndex::open(None).unwrap();
        index.apply(&catalog(), &position(6)).unwrap();
        index
    }

    fn ids(index: &BookIndex, typed: &str) -> Vec<i64> {
        index.search(typed, 0, 10).unwrap().ids()
    }

    #[test]
    fn typos_are_forgiven_by_word_length() {
        let index = index();
        assert_eq!(ids(&index, "frankenstien"), [1]);
        let mut dickens = ids(&index, "dikens ");
        dickens.sort_unstable();
        assert_eq!(dickens, [2, 6]);
        // Four letters: no typo allowed.
        assert!(ids(&index, "emna ").is_empty());
    }

    #[test]
    fn case_and_accents_do_not_matter() {
        let index = index();
        assert_eq!(ids(&index, "BRONTE"), [3]);
        assert_eq!(ids(&index, "brontë"), [3]);
    }

    #[test]
    fn the_last_word_is_a_prefix_while_it_is_typed() {
        let index = index();
        assert_eq!(ids(&index, "pride and prej"), [4]);
        // Not once the reader typed a space after it.
        assert!(ids(&index, "pride and prej ").is_empty());
        // One letter is no prefix.
        assert!(ids(&index, "p").is_empty());
    }

    #[test]
    fn every_word_must_match() {
        let index = index();
        assert_eq!(ids(&index, "jane austen emma"), [5]);
        let both = ids(&index, "austen");
        assert_eq!(both.len(), 2);
    }

    #[test]
    fn an_exact_match_ranks_above_a_corrected_one() {
        let index = index();
        // "pickwick" exactly, and "pickwich" one typo away.
        index
            .apply(&[book(7, "Pickwich", "Someone", "")], &position(7))
            .unwrap();
        assert_eq!(ids(&index, "pickwick ")[0], 6);
        assert_eq!(ids(&index, "pickwich ")[0], 7);
    }

    #[test]
    fn updates_replace_and_deletes_remove() {
        let index = index();
        index
            .apply(
                &[
                    book(5, "Emma (revised)", "Jane Austen", ""),
                    Change::Delete(1),
                ],
                &position(8),
            )
            .unwrap();
        assert_eq!(ids(&index, "revised "), [5]);
        assert!(ids(&index, "frankenstein").is_empty());
        assert_eq!(index.search("austen", 0, 10).unwrap().total, 2);
    }

    #[test]
    fn positions_are_stored_with_the_books_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = BookIndex::open(Some(dir.path())).unwrap();
            assert!(
                index.positions().unwrap().is_empty(),
                "a new index has none"
            );
            index.apply(&catalog(), &position(6)).unwrap();
        }
        let index = BookIndex::open(Some(dir.path())).unwrap();
        assert_eq!(index.positions().unwrap(), position(6));
        assert_eq!(ids(&index, "frankenstein"), [1]);
    }

    #[test]
    fn whole_books_come_back_and_an_isbn_finds_its_book() {
        let index = index();
        let mut emma = match book(5, "Emma", "Jane Austen", "A matchmaker.") {
            Change::Upsert(book) => book,
            Change::Delete(_) => unreachable!(),
        };
        emma.isbn = Some("9780141439587".to_owned());
        index
            .apply(&[Change::Upsert(emma.clone())], &position(7))
            .unwrap();
        let page = index.search("emma", 0, 10).unwrap();
        let found = &page.books[0];
        assert_eq!(bookstore_domain::events::CatalogBook::from(found), emma);
        for typed in ["978-0-14-143958-7", "0141439580"] {
            assert_eq!(index.search(typed, 0, 10).unwrap().ids(), [5], "{typed}");
        }
    }

    #[test]
    fn suggestions_complete_titles_and_authors() {
        let index = index();
        let texts = |typed: &str| -> Vec<(String, SuggestionKind)> {
            index
                .suggest(typed, 8)
                .unwrap()
                .into_iter()
                .map(|s| (s.text, s.kind))
                .collect()
        };
        assert_eq!(
            texts("franken"),
            [("Frankenstein".to_owned(), SuggestionKind::Title)]
        );
        let dick = texts("dick");
        assert_eq!(
            dick[0],
            ("Charles Dickens".to_owned(), SuggestionKind::Author),
            "{dick:?}"
        );
        assert_eq!(dick.len(), 1, "each author once: {dick:?}");
        // With a typo, and every word matched first.
        let pride = texts("prejudise pri");
        assert_eq!(pride[0].0, "Pride and Prejudice", "{pride:?}");
        assert!(texts("").is_empty());
        assert!(index.suggest("jane", 1).unwrap().len() == 1);
    }

    #[test]
    fn stop_words_alone_match_exactly_in_the_index_order() {
        let index = index();
        // "a" is in four descriptions: every one, in id order.
        let page = index.search("a", 0, 10).unwrap();
        assert_eq!(page.ids(), [1, 3, 5, 6]);
        assert_eq!(page.total, 4);
        // With other words, a stop word is left out: "the pickwick" is "pickwick".
        assert_eq!(ids(&index, "the pickwick"), [6]);
        // Not completed: "an" is not a prefix of "and" (Pride and Prejudice).
        assert_eq!(ids(&index, "an"), [2]);
    }

    #[test]
    fn counts_stop_at_the_bound() {
        let index = BookIndex::open(None).unwrap();
        let many: Vec<Change> = (0..(EXACT_COUNT_UP_TO as i64 + 5))
            .map(|i| book(i, "Common Title", "Author", ""))
            .collect();
        index.apply(&many, &position(1)).unwrap();
        let page = index.search("common ", 0, 10).unwrap();
        assert_eq!(page.books.len(), 10);
        assert_eq!(page.total, EXACT_COUNT_UP_TO);
        assert!(page.total_is_lower_bound);
    }
}
