use async_trait::async_trait;
use bookstore_domain::events::Event;
use bookstore_domain::{
    Book, BookId, BookQuery, BookRepository, ImportPlan, Imported, Isbn, NewBook, RepositoryError,
    SearchPage, Term,
};
use chrono::{DateTime, Utc};
use sqlx::mysql::{MySqlConnection, MySqlPool};
use sqlx::{Connection, MySql, QueryBuilder};

use crate::{DbDate, repo_error};

/// How many times an import tries a batch that meets another import's new ISBN.
const IMPORT_ATTEMPTS: u64 = 3;

/// Rows per multi-row INSERT, well inside the default `max_allowed_packet`.
const INSERT_CHUNK: usize = 500;

macro_rules! columns {
    () => {
        "id, title, author, published_at, description, created_at, isbn"
    };
}

/// The catalog in MySQL or MariaDB, searched through FULLTEXT indexes (see the migrations).
#[derive(Debug, Clone)]
pub struct MySqlBookRepository {
    pool: MySqlPool,
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

impl MySqlBookRepository {
    /// Runs the catalog's migrations on `pool` and returns the repository.
    pub async fn new(pool: MySqlPool) -> Result<Self, sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// One attempt of [`BookRepository::import_many`].
    async fn import_once(&self, books: &[NewBook]) -> Result<Vec<Imported>, RepositoryError> {
        // READ COMMITTED: the lookup below locks the books it finds and no gap of the ISBN
        // index, so that new books (from the API, or without an ISBN) never wait for an import.
        let mut conn = crate::read_committed(&self.pool).await?;
        let mut tx = Connection::begin(&mut *conn).await.map_err(repo_error)?;
        // The books the catalog already has under these ISBNs, locked until the commit.
        let isbns: Vec<&str> = books
            .iter()
            .filter_map(|b| b.isbn().map(Isbn::as_str))
            .collect();
        let mut stored = Vec::new();
        for chunk in isbns.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<MySql> = QueryBuilder::new(concat!(
                "SELECT ",
                columns!(),
                " FROM books WHERE isbn IN ("
            ));
            let mut list = q.separated(", ");
            for isbn in chunk {
                list.push_bind(*isbn);
            }
            list.push_unseparated(") FOR UPDATE");
            let rows: Vec<BookRow> = q
                .build_query_as()
                .fetch_all(&mut *tx)
                .await
                .map_err(repo_error)?;
            stored.extend(rows.into_iter().map(Book::from));
        }
        let plan = ImportPlan::new(books, &stored);
        let added = insert_many(&mut tx, &plan.to_create(books)).await?;
        let ids: Vec<BookId> = added.iter().map(|b| b.id).collect();
        let bookstore_domain::import::Finished {
            outcomes,
            replacements,
        } = plan
            .finish(&ids)
            .ok_or_else(|| RepositoryError::Internal("fewer books added than given".into()))?;
        for (id, i) in replacements {
            let book = update_one(&mut tx, id, &books[i])
                .await?
                .ok_or_else(|| RepositoryError::Internal("a locked book went missing".into()))?;
            write_outbox(&mut tx, &[Event::updated(&book)]).await?;
        }
        tx.commit().await.map_err(repo_error)?;
        Ok(outcomes)
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Writes the `book.created` events of books stored before the outbox existed (see migration
    /// 0003), a batch per transaction; returns how many. Safe to run from several processes at
    /// once: the shared cursor is read `FOR UPDATE` and moved in the same transaction.
    pub async fn backfill_outbox(&self) -> Result<u64, RepositoryError> {
        let mut written = 0;
        loop {
            let mut tx = self.pool.begin().await.map_err(repo_error)?;
            let Some((next, end)): Option<(i64, i64)> =
                sqlx::query_as("SELECT next_id, end_id FROM outbox_backfill FOR UPDATE")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(repo_error)?
            else {
                return Ok(written);
            };
            if next >= end {
                return Ok(written);
            }
            let rows: Vec<BookRow> = sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                // Locked like a write's book: a replace of one of these books waits for this
                // transaction, so its event comes after this one in the outbox and in the log
                // (the relay skips the rows of open transactions).
                " FROM books WHERE id >= ? AND id < ? ORDER BY id LIMIT ? LOCK IN SHARE MODE"
            ))
            .bind(next)
            .bind(end)
            .bind(u64::try_from(INSERT_CHUNK).unwrap_or(u64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(repo_error)?;
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
                .await
                .map_err(repo_error)?;
            tx.commit().await.map_err(repo_error)?;
            written += books.len() as u64;
        }
    }
}

/// The boolean-mode query for `terms`: every term required, as a word prefix (`+franken*`) or a
/// whole word (`+mary`). A whole word shorter than InnoDB's shortest indexed token (three
/// characters) is left out rather than required, as it could never match. Terms hold only letters
/// and digits, so none of them is an operator.
fn boolean_query(terms: &[Term]) -> String {
    terms
        .iter()
        .filter(|t| t.prefix || t.text.chars().count() >= 3)
        .map(|t| format!("+{}{}", t.text, if t.prefix { "*" } else { "" }))
        .collect::<Vec<_>>()
        .join(" ")
}

#[async_trait]
impl BookRepository for MySqlBookRepository {
    async fn search(&self, query: &BookQuery) -> Result<SearchPage, RepositoryError> {
        // A query that is an ISBN finds its book, if the catalog has it.
        if let Some(isbn) = Isbn::in_query(query.text()) {
            let row: Option<BookRow> =
                sqlx::query_as(concat!("SELECT ", columns!(), " FROM books WHERE isbn = ?"))
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
                " FROM books ORDER BY id LIMIT ? OFFSET ?"
            ))
            .bind(query.limit)
            .bind(query.offset)
            .fetch_all(&self.pool)
            .await
            .map_err(repo_error)?;
            let total = sqlx::query_scalar("SELECT COUNT(*) FROM books")
                .fetch_one(&self.pool)
                .await
                .map_err(repo_error)?;
            (rows, total)
        } else {
            let expr = boolean_query(&terms);
            // Relevance: a title match weighs more than an author match, more than the rest.
            // Each relevance is capped before it is weighed: just after MariaDB restarts, a
            // FULLTEXT index can report an infinite relevance, and `inf * 4` is an error
            // (1690, "DOUBLE value is out of range") where a search should just rank less well.
            // (The cap comes first: MariaDB keeps LEAST's first argument when it cannot compare,
            // so a NaN relevance is capped too.)
            let rows = sqlx::query_as(concat!(
                "SELECT ",
                columns!(),
                " FROM books WHERE MATCH (title, author, description) AGAINST (? IN BOOLEAN MODE) \
                 ORDER BY LEAST(1e300, MATCH (title) AGAINST (? IN BOOLEAN MODE)) * 4 \
                        + LEAST(1e300, MATCH (author) AGAINST (? IN BOOLEAN MODE)) * 2 \
                        + LEAST(1e300, MATCH (title, author, description) AGAINST (? IN BOOLEAN MODE)) \
                        DESC, id \
                 LIMIT ? OFFSET ?"
            ))
            .bind(&expr)
            .bind(&expr)
            .bind(&expr)
            .bind(&expr)
            .bind(query.limit)
            .bind(query.offset)
            .fetch_all(&self.pool)
            .await
            .map_err(repo_error)?;
            let total = sqlx::query_scalar(
                "SELECT COUNT(*) FROM books \
                 WHERE MATCH (title, author, description) AGAINST (? IN BOOLEAN MODE)",
            )
            .bind(&expr)
            .fetch_one(&self.pool)
            .await
            .map_err(repo_error)?;
            (rows, total)
        };
        Ok(SearchPage {
            books: rows.into_iter().map(Book::from).collect(),
            total: u64::try_from(total).unwrap_or(0),
            total_is_lower_bound: false,
        })
    }

    async fn get(&self, id: BookId) -> Result<Option<Book>, RepositoryError> {
        let row: Option<BookRow> =
            sqlx::query_as(concat!("SELECT ", columns!(), " FROM books WHERE id = ?"))
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(repo_error)?;
        Ok(row.map(Book::from))
    }

    async fn create(&self, book: &NewBook) -> Result<Book, RepositoryError> {
        let mut tx = self.pool.begin().await.map_err(repo_error)?;
        let book = insert_one(&mut tx, book).await?;
        // Its `book.created` event goes to the outbox in the same transaction.
        write_outbox(&mut tx, &[Event::created(&book)]).await?;
        tx.commit().await.map_err(repo_error)?;
        Ok(book)
    }

    async fn create_many(&self, books: &[NewBook]) -> Result<u64, RepositoryError> {
        let mut tx = self.pool.begin().await.map_err(repo_error)?;
        let stored = insert_many(&mut tx, &books.iter().collect::<Vec<_>>()).await?;
        tx.commit().await.map_err(repo_error)?;
        Ok(stored.len() as u64)
    }

    async fn import_many(&self, books: &[NewBook]) -> Result<Vec<Imported>, RepositoryError> {
        // Two imports adding the same new ISBN at once: the second one's insert waits for the
        // first and then finds the ISBN taken (or is a deadlock's victim). Planned again, its
        // batch replaces or keeps that book instead.
        let mut attempt = 1;
        loop {
            match self.import_once(books).await {
                // At once: the other import has committed by the time this one is told.
                Err(RepositoryError::Conflict(_) | RepositoryError::Unavailable(_))
                    if attempt < IMPORT_ATTEMPTS =>
                {
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    async fn update(&self, id: BookId, book: &NewBook) -> Result<Option<Book>, RepositoryError> {
        let mut tx = self.pool.begin().await.map_err(repo_error)?;
        let Some(book) = update_one(&mut tx, id, book).await? else {
            return Ok(None);
        };
        // Its `book.updated` event goes to the outbox in the same transaction.
        write_outbox(&mut tx, &[Event::updated(&book)]).await?;
        tx.commit().await.map_err(repo_error)?;
        Ok(Some(book))
    }

    async fn delete(&self, id: BookId) -> Result<bool, RepositoryError> {
        let mut tx = self.pool.begin().await.map_err(repo_error)?;
        let deleted = sqlx::query("DELETE FROM books WHERE id = ?")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(repo_error)?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        // Its `book.deleted` event goes to the outbox in the same transaction.
        write_outbox(&mut tx, &[Event::deleted(id)]).await?;
        tx.commit().await.map_err(repo_error)?;
        Ok(true)
    }

    async fn count(&self) -> Result<u64, RepositoryError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM books")
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
async fn insert_one(conn: &mut MySqlConnection, book: &NewBook) -> Result<Book, RepositoryError> {
    let id = sqlx::query(
        "INSERT INTO books (title, author, published_at, description, isbn) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(book.title())
    .bind(book.author())
    .bind(book.published_at().to_string())
    .bind(book.description())
    .bind(book.isbn().map(Isbn::as_str))
    .execute(&mut *conn)
    .await
    .map_err(repo_error)?
    .last_insert_id();
    let row: BookRow = sqlx::query_as(concat!("SELECT ", columns!(), " FROM books WHERE id = ?"))
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .map_err(repo_error)?;
    Ok(Book::from(row))
}

/// Adds `books` in multi-row statements with their `book.created` events, in the caller's
/// transaction; returns them stored, in order.
async fn insert_many(
    conn: &mut MySqlConnection,
    books: &[&NewBook],
) -> Result<Vec<Book>, RepositoryError> {
    if books.is_empty() {
        return Ok(Vec::new());
    }
    let step: u64 = sqlx::query_scalar("SELECT @@SESSION.auto_increment_increment")
        .fetch_one(&mut *conn)
        .await
        .map_err(repo_error)?;
    let step = step.max(1);
    let mut stored = Vec::with_capacity(books.len());
    for chunk in books.chunks(INSERT_CHUNK) {
        let mut insert: QueryBuilder<MySql> = QueryBuilder::new(
            "INSERT INTO books (title, author, published_at, description, isbn) ",
        );
        insert.push_values(chunk, |mut row, book| {
            row.push_bind(book.title())
                .push_bind(book.author())
                .push_bind(book.published_at().to_string())
                .push_bind(book.description())
                .push_bind(book.isbn().map(Isbn::as_str));
        });
        let done = insert
            .build()
            .execute(&mut *conn)
            .await
            .map_err(repo_error)?;
        // One multi-row INSERT takes its ids in one block from LAST_INSERT_ID(), spaced by
        // auto_increment_increment (more than 1 on some multi-primary set-ups); read the rows
        // back to write their events to the outbox in the same transaction.
        let first = done.last_insert_id();
        let count = done.rows_affected();
        let mut select: QueryBuilder<MySql> =
            QueryBuilder::new(concat!("SELECT ", columns!(), " FROM books WHERE id IN ("));
        let mut ids = select.separated(", ");
        for k in 0..count {
            ids.push_bind(first + k * step);
        }
        select.push(") ORDER BY id");
        let rows: Vec<BookRow> = select
            .build_query_as()
            .fetch_all(&mut *conn)
            .await
            .map_err(repo_error)?;
        let books: Vec<Book> = rows.into_iter().map(Book::from).collect();
        if books.len() as u64 != count {
            return Err(RepositoryError::Internal(
                format!("inserted {count} books but read back {}", books.len()).into(),
            ));
        }
        write_outbox(conn, &books.iter().map(Event::created).collect::<Vec<_>>()).await?;
        stored.extend(books);
    }
    Ok(stored)
}

/// Replaces book `id`'s fields, in the caller's transaction; `None` when there is no such book.
async fn update_one(
    conn: &mut MySqlConnection,
    id: BookId,
    book: &NewBook,
) -> Result<Option<Book>, RepositoryError> {
    // The row is locked first, so that "no such book" and the update see the same row (MySQL
    // counts only changed rows as affected).
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM books WHERE id = ? FOR UPDATE")
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(repo_error)?;
    if exists.is_none() {
        return Ok(None);
    }
    sqlx::query(
        "UPDATE books SET title = ?, author = ?, published_at = ?, description = ?, isbn = ? \
         WHERE id = ?",
    )
    .bind(book.title())
    .bind(book.author())
    .bind(book.published_at().to_string())
    .bind(book.description())
    .bind(book.isbn().map(Isbn::as_str))
    .bind(id.0)
    .execute(&mut *conn)
    .await
    .map_err(repo_error)?;
    let row: BookRow = sqlx::query_as(concat!("SELECT ", columns!(), " FROM books WHERE id = ?"))
        .bind(id.0)
        .fetch_one(&mut *conn)
        .await
        .map_err(repo_error)?;
    Ok(Some(Book::from(row)))
}

/// Writes catalog events to the outbox, in the caller's transaction.
async fn write_outbox(conn: &mut MySqlConnection, events: &[Event]) -> Result<(), RepositoryError> {
    for chunk in events.chunks(INSERT_CHUNK) {
        let mut insert: QueryBuilder<MySql> =
            QueryBuilder::new("INSERT INTO outbox (event_type, event_key, payload) ");
        insert.push_values(chunk, |mut row, event| {
            row.push_bind(event.kind())
                .push_bind(event.key().into_owned())
                .push_bind(event.to_json());
        });
        insert
            .build()
            .execute(&mut *conn)
            .await
            .map_err(repo_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_term_is_a_required_prefix() {
        let terms = BookQuery::new("Mary ab Franken", 0, 5).terms();
        assert_eq!(boolean_query(&terms), "+mary +franken*");
    }
}
