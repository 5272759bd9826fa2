use async_trait::async_trait;
use bookstore_domain::events::Event;
use bookstore_domain::{
    Book, BookId, BookQuery, BookRepository, ImportPlan, Imported, Isbn, NewBook, RepositoryError,
    SearchPage, Term,
};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::{QueryBuilder, Sqlite};

use crate::{DbDate, repo_error};

/// Rows per multi-row INSERT; 5 bound values each stays far below SQLite's variable limit.
const INSERT_CHUNK: usize = 1_000;

/// The selected columns, as a macro so that every query stays one compile-time string.
macro_rules! columns {
    () => {
        "b.id, b.title, b.author, b.published_at, b.description, b.created_at, b.isbn"
    };
}

/// The catalog in SQLite, searched through the `books_fts` FTS5 index (see the migrations).
#[derive(Debug, Clone)]
pub struct SqliteBookRepository {
    pool: SqlitePool,
}

#[derive(sqlx::FromRow)]
struct BookRow {
    id: i64,
    title: String,
    author: String,
    published_at: DbDate,
    description: String,
    created_at: DateTime<Utc>,
    isbn: Option<String>,
}

#[derive(sqlx::FromRow)]
struct RankedRow {
    #[sqlx(flatten)]
    book: BookRow,
    total: i64,
}

impl From<BookRow> for Book {
    fn from(row: BookRow) -> Self {
        Book {
            isbn: row.isbn.as_deref().and_then(|i| Isbn::parse(i).ok()),
            id: BookId(row.id),
            title: row.title,
            author: row.author,
            published_at: row.published_at.0,
            description: row.description,
            created_at: row.created_at,
        }
    }
}

impl SqliteBookRepository {
    /// Runs the catalog's migrations on `pool` and returns the repository.
    pub async fn new(pool: SqlitePool) -> Result<Self, sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Writes the `book.created` events of books stored before the outbox existed (see migration
    /// 0003), a batch per transaction; returns how many. Safe to run from several processes at
    /// once: each batch moves the shared cursor in its own transaction.
    pub async fn backfill_outbox(&self) -> Result<u64, RepositoryError> {
        let mut written = 0;
        loop {
            let batch = crate::retry_busy(|| async {
                let mut tx = self.pool.begin().await?;
                // A write first, so that this transaction holds the write lock before it reads.
                sqlx::query("UPDATE outbox_backfill SET next_id = next_id")
                    .execute(&mut *tx)
                    .await?;
                let Some((next, end)): Option<(i64, i64)> =
                    sqlx::query_as("SELECT next_id, end_id FROM outbox_backfill")
                        .fetch_optional(&mut *tx)
                        .await?
                else {
                    return Ok(None);
                };
                if next >= end {
                    return Ok(None);
                }
                let rows: Vec<BookRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM books b WHERE b.id >= ? AND b.id < ? ORDER BY b.id LIMIT ?"
                ))
                .bind(next)
                .bind(end)
                .bind(i64::try_from(INSERT_CHUNK).unwrap_or(i64::MAX))
                .fetch_all(&mut *tx)
                .await?;
                let books: Vec<Book> = rows.into_iter().map(Book::from).collect();
                let next = books.last().map_or(end, |b| b.id.0 + 1);
                write_outbox(
                    &mut tx,
                    &books.iter().map(Event::created).collect::<Vec<_>>(),
                )
                .await?;
                sqlx::query("UPDATE outbox_backfill SET next_id = ?")
                    .bind(next)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some(books.len() as u64))
            })
            .await
            .map_err(repo_error)?;
            match batch {
                Some(n) => written += n,
                None => return Ok(written),
            }
        }
    }
}

/// The FTS5 query for `terms`: every term quoted, as a prefix (`"franken"*`) or a whole word
/// (`"s"`), all required. Terms hold only letters and digits, and quoting makes FTS5 read each one
/// as a plain string, never as syntax.
fn fts_match(terms: &[Term]) -> String {
    terms
        .iter()
        .map(|t| {
            let star = if t.prefix { "*" } else { "" };
            format!("\"{}\"{star}", t.text.replace('"', "\"\""))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl BookRepository for SqliteBookRepository {
    async fn search(&self, query: &BookQuery) -> Result<SearchPage, RepositoryError> {
        // A query that is an ISBN finds its book, if the catalog has it.
        if let Some(isbn) = Isbn::in_query(query.text()) {
            let row: Option<BookRow> = sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM books b WHERE b.isbn = ?1"
            ))
            .bind(isbn.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(repo_error)?;
            if let Some(row) = row {
                return Ok(SearchPage::isbn_match(Book::from(row), query.offset));
            }
        }
        let terms = query.terms();
        let (rows, total): (Vec<BookRow>, i64) = if terms.is_empty() {
            let rows = sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM books b ORDER BY b.id LIMIT ?1 OFFSET ?2"
            ))
            .bind(i64::from(query.limit))
            .bind(to_i64(query.offset))
            .fetch_all(&self.pool)
            .await
            .map_err(repo_error)?;
            let total = sqlx::query_scalar("SELECT count(*) FROM books")
                .fetch_one(&self.pool)
                .await
                .map_err(repo_error)?;
            (rows, total)
        } else {
            // One pass over the index gives the page and, through the window function, the
            // number of matches: merging the terms' doclists is most of a search's cost.
            let expr = fts_match(&terms);
            let rows: Vec<RankedRow> = sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                ", m.total FROM (SELECT rowid AS id, rank, count(*) OVER () AS total \
                 FROM books_fts WHERE books_fts MATCH ?1 ORDER BY rank LIMIT ?2 OFFSET ?3) AS m \
                 JOIN books b ON b.id = m.id ORDER BY m.rank"
            ))
            .bind(&expr)
            .bind(i64::from(query.limit))
            .bind(to_i64(query.offset))
            .fetch_all(&self.pool)
            .await
            .map_err(repo_error)?;
            let total = match rows.first() {
                Some(row) => row.total,
                // A page past the end has no row to carry the total.
                None => {
                    sqlx::query_scalar("SELECT count(*) FROM books_fts WHERE books_fts MATCH ?1")
                        .bind(&expr)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(repo_error)?
                }
            };
            (rows.into_iter().map(|r| r.book).collect(), total)
        };
        Ok(SearchPage {
            books: rows.into_iter().map(Book::from).collect(),
            total: u64::try_from(total).unwrap_or(0),
            total_is_lower_bound: false,
        })
    }

    async fn get(&self, id: BookId) -> Result<Option<Book>, RepositoryError> {
        let row: Option<BookRow> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM books b WHERE b.id = ?1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(repo_error)?;
        Ok(row.map(Book::from))
    }

    async fn create(&self, book: &NewBook) -> Result<Book, RepositoryError> {
        // The book and its `book.created` event in the outbox, in one transaction.
        crate::retry_busy(|| async {
            let mut tx = self.pool.begin().await?;
            let book = insert_one(&mut tx, book).await?;
            write_outbox(&mut tx, &[Event::created(&book)]).await?;
            tx.commit().await?;
            Ok(book)
        })
        .await
        .map_err(repo_error)
    }

    async fn create_many(&self, books: &[NewBook]) -> Result<u64, RepositoryError> {
        crate::retry_busy(|| async {
            let mut tx = self.pool.begin().await?;
            let stored = insert_many(&mut tx, &books.iter().collect::<Vec<_>>()).await?;
            tx.commit().await?;
            Ok(stored.len() as u64)
        })
        .await
        .map_err(repo_error)
    }

    async fn import_many(&self, books: &[NewBook]) -> Result<Vec<Imported>, RepositoryError> {
        crate::retry_busy(|| async {
            let mut tx = self.pool.begin().await?;
            // The books the catalog already has under these ISBNs.
            let isbns: Vec<&str> = books
                .iter()
                .filter_map(|b| b.isbn().map(Isbn::as_str))
                .collect();
            let mut stored = Vec::new();
            for chunk in isbns.chunks(INSERT_CHUNK) {
                let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM books b WHERE b.isbn IN ("
                ));
                let mut list = q.separated(", ");
                for isbn in chunk {
                    list.push_bind(*isbn);
                }
                list.push_unseparated(")");
                let rows: Vec<BookRow> = q.build_query_as().fetch_all(&mut *tx).await?;
                stored.extend(rows.into_iter().map(Book::from));
            }
            let plan = ImportPlan::new(books, &stored);
            let added = insert_many(&mut tx, &plan.to_create(books)).await?;
            let ids: Vec<BookId> = added.iter().map(|b| b.id).collect();
            let bookstore_domain::import::Finished {
                outcomes,
                replacements,
            } = plan.finish(&ids).ok_or_else(|| {
                sqlx::Error::Protocol("fewer books added than the import planned".to_owned())
            })?;
            for (id, i) in replacements {
                let book = update_one(&mut tx, id, &books[i]).await?.ok_or_else(|| {
                    sqlx::Error::Protocol(format!("book {id} went missing during the import"))
                })?;
                write_outbox(&mut tx, &[Event::updated(&book)]).await?;
            }
            tx.commit().await?;
            Ok(outcomes)
        })
        .await
        .map_err(repo_error)
    }

    async fn update(&self, id: BookId, book: &NewBook) -> Result<Option<Book>, RepositoryError> {
        // The book and its `book.updated` event in the outbox, in one transaction.
        crate::retry_busy(|| async {
            let mut tx = self.pool.begin().await?;
            let Some(book) = update_one(&mut tx, id, book).await? else {
                return Ok(None);
            };
            write_outbox(&mut tx, &[Event::updated(&book)]).await?;
            tx.commit().await?;
            Ok(Some(book))
        })
        .await
        .map_err(repo_error)
    }

    async fn delete(&self, id: BookId) -> Result<bool, RepositoryError> {
        // The delete and its `book.deleted` event in the outbox, in one transaction.
        crate::retry_busy(|| async {
            let mut tx = self.pool.begin().await?;
            let deleted = sqlx::query("DELETE FROM books WHERE id = ?1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(false);
            }
            write_outbox(&mut tx, &[Event::deleted(id)]).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
        .map_err(repo_error)
    }

    async fn count(&self) -> Result<u64, RepositoryError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM books")
            .fetch_one(&self.pool)
            .await
            .map_err(repo_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(repo_error)?;
        Ok(())
    }
}

/// Adds one book, in the caller's transaction.
async fn insert_one(conn: &mut SqliteConnection, book: &NewBook) -> Result<Book, sqlx::Error> {
    let row: BookRow = sqlx::query_as(
        "INSERT INTO books (title, author, published_at, description, isbn) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         RETURNING id, title, author, published_at, description, created_at, isbn",
    )
    .bind(book.title())
    .bind(book.author())
    .bind(book.published_at().to_string())
    .bind(book.description())
    .bind(book.isbn().map(Isbn::as_str))
    .fetch_one(conn)
    .await?;
    Ok(Book::from(row))
}

/// Adds `books` in multi-row statements with their `book.created` events, in the caller's
/// transaction; returns them stored, in order.
async fn insert_many(
    conn: &mut SqliteConnection,
    books: &[&NewBook],
) -> Result<Vec<Book>, sqlx::Error> {
    let mut stored = Vec::with_capacity(books.len());
    for chunk in books.chunks(INSERT_CHUNK) {
        let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO books (title, author, published_at, description, isbn) ",
        );
        insert.push_values(chunk, |mut row, book| {
            row.push_bind(book.title())
                .push_bind(book.author())
                .push_bind(book.published_at().to_string())
                .push_bind(book.description())
                .push_bind(book.isbn().map(Isbn::as_str));
        });
        insert.push(" RETURNING id, title, author, published_at, description, created_at, isbn");
        let mut rows: Vec<BookRow> = insert.build_query_as().fetch_all(&mut *conn).await?;
        // RETURNING gives no order; ids follow the VALUES list (AUTOINCREMENT).
        rows.sort_unstable_by_key(|row| row.id);
        if rows.len() != chunk.len() {
            return Err(sqlx::Error::Protocol(format!(
                "inserted {} books but {} came back",
                chunk.len(),
                rows.len()
            )));
        }
        let books: Vec<Book> = rows.into_iter().map(Book::from).collect();
        write_outbox(conn, &books.iter().map(Event::created).collect::<Vec<_>>()).await?;
        stored.extend(books);
    }
    Ok(stored)
}

/// Replaces book `id`'s fields, in the caller's transaction; `None` when there is no such book.
async fn update_one(
    conn: &mut SqliteConnection,
    id: BookId,
    book: &NewBook,
) -> Result<Option<Book>, sqlx::Error> {
    let row: Option<BookRow> = sqlx::query_as(
        "UPDATE books SET title = ?1, author = ?2, published_at = ?3, description = ?4, \
         isbn = ?6 WHERE id = ?5 \
         RETURNING id, title, author, published_at, description, created_at, isbn",
    )
    .bind(book.title())
    .bind(book.author())
    .bind(book.published_at().to_string())
    .bind(book.description())
    .bind(id.0)
    .bind(book.isbn().map(Isbn::as_str))
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Book::from))
}

/// Writes catalog events to the outbox, in the caller's transaction.
async fn write_outbox(conn: &mut SqliteConnection, events: &[Event]) -> Result<(), sqlx::Error> {
    for chunk in events.chunks(INSERT_CHUNK) {
        let mut insert: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO outbox (event_type, event_key, payload) ");
        insert.push_values(chunk, |mut row, event| {
            row.push_bind(event.kind())
                .push_bind(event.key().into_owned())
                .push_bind(event.to_json());
        });
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bookstore_domain::NewBookInput;
    use bookstore_domain::events::{Event, decode};

    use super::*;

    fn book(title: &str) -> NewBook {
        NewBook::parse(NewBookInput {
            isbn: None,
            title: Some(title.into()),
            author: Some("Jane Austen".into()),
            published_at: Some("1815-12-23".into()),
            description: None,
        })
        .unwrap()
    }

    async fn outbox(repo: &SqliteBookRepository) -> Vec<(String, Event)> {
        let rows: Vec<(String, String, Vec<u8>)> =
            sqlx::query_as("SELECT event_type, event_key, payload FROM outbox ORDER BY id")
                .fetch_all(repo.pool())
                .await
                .unwrap();
        rows.into_iter()
            .map(|(kind, key, payload)| {
                let event = decode(Some(key.as_bytes()), &payload, None).unwrap();
                assert_eq!(kind, event.kind());
                (key, event)
            })
            .collect()
    }

    #[tokio::test]
    async fn books_stored_before_the_outbox_get_their_events_once() {
        // A catalog from before the outbox: only the first migration, and books in it.
        let pool = crate::connect("sqlite::memory:", 1).await.unwrap();
        let mut first = sqlx::migrate!("./migrations");
        first.migrations = first
            .migrations
            .iter()
            .filter(|m| m.version == 1)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        first.run(&pool).await.unwrap();
        for i in 0..2_500 {
            sqlx::query(
                "INSERT INTO books (title, author, published_at, description) VALUES (?, 'A', '1900-01-01', '')",
            )
            .bind(format!("Old {i}"))
            .execute(&pool)
            .await
            .unwrap();
        }

        // The upgrade: the outbox migrations, then the backfill, in batches, in id order.
        let repo = SqliteBookRepository::new(pool).await.unwrap();
        assert_eq!(repo.backfill_outbox().await.unwrap(), 2_500);
        assert_eq!(repo.backfill_outbox().await.unwrap(), 0, "once");
        repo.create(&book("New")).await.unwrap();
        assert_eq!(
            repo.backfill_outbox().await.unwrap(),
            0,
            "new books have theirs"
        );
        let events = outbox(&repo).await;
        let keys: Vec<i64> = events.iter().map(|(k, _)| k.parse().unwrap()).collect();
        assert_eq!(keys, (1..=2_501).collect::<Vec<i64>>());
        match &events[0].1 {
            Event::BookCreated(e) => assert_eq!(e.book.title, "Old 0"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_new_catalog_has_nothing_to_backfill() {
        let repo = SqliteBookRepository::new(crate::connect("sqlite::memory:", 1).await.unwrap())
            .await
            .unwrap();
        repo.create(&book("Emma")).await.unwrap();
        assert_eq!(repo.backfill_outbox().await.unwrap(), 0);
        assert_eq!(outbox(&repo).await.len(), 1);
    }

    #[tokio::test]
    async fn every_stored_book_has_its_event_in_the_outbox() {
        let repo = SqliteBookRepository::new(crate::connect("sqlite::memory:", 1).await.unwrap())
            .await
            .unwrap();
        let emma = repo.create(&book("Emma")).await.unwrap();
        let many: Vec<NewBook> = (0..2_500).map(|i| book(&format!("Volume {i}"))).collect();
        assert_eq!(repo.create_many(&many).await.unwrap(), 2_500);
        let events = outbox(&repo).await;
        assert_eq!(events.len(), 2_501);
        let (key, Event::BookCreated(first)) = &events[0] else {
            panic!("{:?}", events[0])
        };
        assert_eq!(key, &emma.id.0.to_string());
        assert_eq!(
            first.book,
            bookstore_domain::events::CatalogBook::from(&emma)
        );
        let (_, Event::BookCreated(last)) = &events[2_500] else {
            panic!()
        };
        assert_eq!(last.book.title, "Volume 2499");
    }

    #[tokio::test]
    async fn updates_and_deletes_write_their_events_in_the_same_transaction() {
        let repo = SqliteBookRepository::new(crate::connect("sqlite::memory:", 1).await.unwrap())
            .await
            .unwrap();
        let emma = repo.create(&book("Emma")).await.unwrap();
        let replaced = repo
            .update(emma.id, &book("Emma, Revised"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (replaced.id, replaced.created_at),
            (emma.id, emma.created_at)
        );
        assert_eq!(replaced.title, "Emma, Revised");
        assert_eq!(repo.get(emma.id).await.unwrap(), Some(replaced.clone()));
        let found = repo.search(&BookQuery::new("revised", 0, 5)).await.unwrap();
        assert_eq!(
            found.books,
            vec![replaced.clone()],
            "the full-text index follows"
        );
        assert!(repo.delete(emma.id).await.unwrap());
        assert_eq!(repo.get(emma.id).await.unwrap(), None);
        assert_eq!(
            repo.search(&BookQuery::new("emma", 0, 5))
                .await
                .unwrap()
                .total,
            0
        );
        // No such book: nothing changes, no event.
        assert!(!repo.delete(emma.id).await.unwrap());
        assert_eq!(repo.update(emma.id, &book("Ghost")).await.unwrap(), None);
        assert_eq!(
            repo.update(BookId(999), &book("Ghost")).await.unwrap(),
            None
        );

        let events = outbox(&repo).await;
        assert_eq!(events.len(), 3, "{events:?}");
        let key = emma.id.0.to_string();
        assert!(events.iter().all(|(k, _)| *k == key));
        assert!(
            matches!(&events[1].1, Event::BookUpdated(e) if e.book == bookstore_domain::events::CatalogBook::from(&replaced))
        );
        assert!(matches!(&events[2].1, Event::BookDeleted(e) if e.book_id == emma.id.0));
    }

    fn with_isbn(title: &str, isbn: &str) -> NewBook {
        NewBook::parse(NewBookInput {
            title: Some(title.into()),
            author: Some("Jane Austen".into()),
            published_at: Some("1815-12-23".into()),
            description: None,
            isbn: Some(isbn.into()),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn imports_match_books_by_isbn() {
        let repo = SqliteBookRepository::new(crate::connect("sqlite::memory:", 1).await.unwrap())
            .await
            .unwrap();
        let file = vec![
            with_isbn("Pride and Prejudice", "0-14-143951-3"),
            book("No ISBN"),
            with_isbn("Persuasion", "9780141439686"),
            // The same ISBN again in one batch: the book added just before is replaced.
            with_isbn("Pride and Prejudice, 2nd ed.", "9780141439518"),
        ];
        let first = repo.import_many(&file).await.unwrap();
        let [
            Imported::Created(pride),
            Imported::Created(_),
            Imported::Created(persuasion),
            Imported::Updated(again),
        ] = first[..]
        else {
            panic!("{first:?}")
        };
        assert_eq!(again, pride);
        assert_eq!(repo.count().await.unwrap(), 3);
        // The same file again: books with an ISBN are matched, never added twice.
        let second = repo.import_many(&file).await.unwrap();
        assert!(
            matches!(second[0], Imported::Updated(id) if id == pride),
            "{second:?}"
        );
        assert!(
            matches!(second[1], Imported::Created(_)),
            "no ISBN: {second:?}"
        );
        assert_eq!(second[2], Imported::Unchanged(persuasion));
        assert_eq!(second[3], Imported::Updated(pride));
        assert_eq!(repo.count().await.unwrap(), 4);
        let stored = repo.get(pride).await.unwrap().unwrap();
        assert_eq!(stored.title, "Pride and Prejudice, 2nd ed.");
        // Events: a creation per added book, an update per changed one, none when unchanged.
        let kinds: Vec<&str> = outbox(&repo).await.iter().map(|(_, e)| e.kind()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "book.created").count(), 4);
        assert_eq!(kinds.iter().filter(|k| **k == "book.updated").count(), 3);
        // Outside an import, an ISBN another book has is a conflict, and nothing is written.
        let taken = repo.create(&with_isbn("Copy", "9780141439686")).await;
        assert!(
            matches!(taken, Err(RepositoryError::Conflict(_))),
            "{taken:?}"
        );
        let taken = repo
            .update(pride, &with_isbn("Copy", "9780141439686"))
            .await;
        assert!(
            matches!(taken, Err(RepositoryError::Conflict(_))),
            "{taken:?}"
        );
        assert_eq!(outbox(&repo).await.len(), 7);
    }

    #[tokio::test]
    async fn a_failed_transaction_leaves_no_event() {
        let repo = SqliteBookRepository::new(crate::connect("sqlite::memory:", 1).await.unwrap())
            .await
            .unwrap();
        sqlx::query("CREATE TRIGGER boom BEFORE INSERT ON books WHEN new.title = 'Boom' BEGIN SELECT RAISE(ABORT, 'boom'); END")
            .execute(repo.pool())
            .await
            .unwrap();
        let books = vec![book("Fine"), book("Boom")];
        assert!(repo.create_many(&books).await.is_err());
        assert!(repo.create(&book("Boom")).await.is_err());
        assert_eq!(repo.count().await.unwrap(), 0);
        assert!(outbox(&repo).await.is_empty());
        // An update the database refuses writes no event either.
        let fine = repo.create(&book("Fine")).await.unwrap();
        sqlx::query("CREATE TRIGGER boom_update BEFORE UPDATE ON books WHEN new.title = 'Boom' BEGIN SELECT RAISE(ABORT, 'boom'); END")
            .execute(repo.pool())
            .await
            .unwrap();
        assert!(repo.update(fine.id, &book("Boom")).await.is_err());
        assert_eq!(repo.get(fine.id).await.unwrap(), Some(fine));
        assert_eq!(outbox(&repo).await.len(), 1);
    }

    #[test]
    fn every_term_is_a_quoted_prefix() {
        let terms = BookQuery::new("Mary Shelley's Franken", 0, 5).terms();
        assert_eq!(fts_match(&terms), r#""mary" "shelley" "franken"*"#);
    }
}
