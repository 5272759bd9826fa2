//! The recommendation store on SQLite (the embedded default) or MySQL/MariaDB: the records of
//! `bookstore_domain::recommend` (profiles, query records, popularity lists, co-view records),
//! each one row with its record encoded in a blob, read and rewritten per batch in one
//! transaction together with the consumed positions.
//!
//! The store is written once, generic over a [`Dialect`]: the SQL both databases understand alike
//! is here, each one's own statements are its dialect's constants, and the dialect's [`Locking`]
//! (one writer at a time in SQLite, row locks in InnoDB) decides the few steps that differ: how a
//! batch reads its profiles, how expiry deletes, how the format is checked at open. Every
//! statement is static; lists of keys are bound one by one through [`QueryBuilder`]. `rec_format`
//! holds the [`STORED_VERSION`] of the rows: a store of an older version has its records deleted
//! at open, to be rebuilt from the log ([`needs_rebuild`]).

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use bookstore_domain::recommend::{
    CatalogEntry, Changes, CoViews, Interests, PopularList, Prior, Profile, QueryRecord,
    RecommendSettings, RecommendStats, Recommendation, RecordReader, STORED_VERSION, SimilarBooks,
    Snapshot, Stored, answer, apply, byte_chunks, coview_needs, merge_coviews, merge_queries,
    needs_rebuild, popular_needs, positions_group, profile_needs, query_needs, read_interests,
    similar_books,
};
use bookstore_domain::{
    Batch, EventHandler, HandlerError, Position, RecommendStore, RepositoryError,
};
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{
    ColumnIndex, Connection, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder,
    Row, Type, query::Query,
};

/// One database's side of [`SqlRecommendations`]: its statements where they differ from the
/// other's, as constants, how it keeps writers apart, and its adapter's consumer positions and
/// error mapping.
///
/// The store also needs sqlx's traits for the database's connections, arguments and rows and for
/// the column types it stores ([`Column`]). Rust carries with a trait only the bounds on `Self`
/// and its associated types, not these, so each generic impl of the store states them in its
/// `where` clause; SQLite and MySQL meet them all.
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx driver.
    type Db: Database;

    /// The tables, created if missing.
    const SCHEMA: &'static [&'static str];
    /// How writers are kept apart, and the statements that depend on it.
    const LOCKING: Locking;
    /// Reads the version the store's rows are of: `rec_format`'s row 0, none when missing.
    const READ_FORMAT: &'static str;
    /// Marks the store as of the version bound (`rec_format`'s row 0).
    const WRITE_FORMAT: &'static str;
    /// Whether a batch reads its query and co-view records one partition at a time, one
    /// `part = ? AND key IN (…)` for each partition's run of keys, rather than as row values,
    /// `(key, part) IN ((?, ?), …)`.
    const READ_BY_PARTITION: bool;
    /// Appended to a multi-row insert into `rec_books (id, title, author)`: a book stored already
    /// takes the new title and author.
    const UPDATE_BOOKS: &'static str;
    /// Appended to a multi-row insert into `rec_profiles (user_id, last_at, record)`: a profile
    /// stored already takes the new `last_at` and record.
    const UPDATE_PROFILES: &'static str;
    /// Appended to a multi-row insert into `rec_queries (query, part, record)`: a record stored
    /// already is replaced.
    const UPDATE_QUERIES: &'static str;
    /// Appended to a multi-row insert into `rec_coviews (book, part, record)`: a record stored
    /// already is replaced.
    const UPDATE_COVIEWS: &'static str;
    /// Writes a partition's popularity list (`part`, `record` bound), replacing the stored one.
    const UPSERT_POPULAR: &'static str;

    /// `query.build()`: the statement a [`QueryBuilder`] built, its arguments' lifetime shortened
    /// to the borrow's. Generic code cannot call `build()` and run the result: behind
    /// `Database::Arguments` the lifetime is invariant, so the builder would still be borrowed
    /// when dropped; each driver's own arguments type shortens.
    fn build<'b, 'q: 'b>(
        query: &'b mut QueryBuilder<'q, Self::Db>,
    ) -> Query<'b, Self::Db, <Self::Db as Database>::Arguments<'b>>;

    /// The text in column `index` of `row`. (MySQL flags a text column of a binary collation
    /// BINARY, which sqlx's checked decoding refuses as a `String`: its dialect reads unchecked.)
    fn text(row: &<Self::Db as Database>::Row, index: usize) -> Result<String, sqlx::Error>;

    /// How many rows a statement changed.
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;

    /// Creates the consumer positions table if it is missing.
    fn create_positions(
        pool: &Pool<Self::Db>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// The consumer positions stored for `group`.
    fn positions(
        pool: &Pool<Self::Db>,
        group: &str,
    ) -> impl Future<Output = Result<Vec<Position>, HandlerError>> + Send;

    /// Moves the positions of `batch` inside the caller's transaction, checking each against its
    /// `from`: the first statement of a batch's transaction.
    fn advance(
        conn: &mut <Self::Db as Database>::Connection,
        batch: &Batch,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Sorts an error met applying a batch into "retry later" and "this batch can never be
    /// applied".
    fn handler_error(err: sqlx::Error) -> HandlerError;

    /// An error met reading (or expiring) as the ports report it.
    fn repo_error(err: sqlx::Error) -> RepositoryError;
}

/// How a database keeps concurrent writers apart, with the statements only that way needs.
#[derive(Debug, Clone, Copy)]
pub enum Locking {
    /// One writer at a time (SQLite): a transaction's first write locks the whole database until
    /// it ends, and a batch's first statement is its position check, a write. A batch reads and
    /// writes alone, so its reads lock nothing.
    Database {
        /// Deletes the profiles last active before a time (bound first), the oldest first and at
        /// most a number of them (bound second), in one statement.
        expire: &'static str,
    },
    /// Row locks (InnoDB): several consumer instances apply batches at once, each of the
    /// partitions it owns. Query records, popularity lists and co-view records are keyed by
    /// partition, and a reader's searches and views all go to one partition, so no two instances
    /// rewrite the same row: the lock on a partition's position row (taken first, by the
    /// position check) is the only one a batch waits for. Profiles are still read locked, in
    /// sorted order, for the rare reader whose searches moved partition (the topic's partitions
    /// were added to).
    ///
    /// Expiry finds the expired readers without locking, then deletes them by primary key in key
    /// order, as batches lock profiles, with `last_at` checked again: a batch that rewrote a
    /// profile meanwhile (a reader back just now) keeps it, and no index is locked in the other
    /// order than a batch's.
    Rows {
        /// Run on a batch's connection before its transaction begins, for that transaction: no
        /// row is read to be summed with another instance's, so READ COMMITTED, without the gap
        /// locks of REPEATABLE READ.
        isolation: &'static str,
        /// Creates `rec_format`'s row 0 if it is missing (a store without it is of version 1, or
        /// new), before the transaction that checks the format reads it locked
        /// ([`Dialect::READ_FORMAT`]), so that instances starting together rebuild once.
        add_format: &'static str,
        /// The head of a multi-row insert into `rec_profiles (user_id, last_at, record)` that
        /// keeps the rows stored already: an empty profile for each reader of a batch, before
        /// their profiles are read.
        add_missing_profiles: &'static str,
        /// Appended to the read of a batch's profiles (`… WHERE user_id IN (…)`): in key order,
        /// locked until the batch ends.
        lock_profiles: &'static str,
    },
}

/// A Rust type the store keeps in a column of `DB`: bound in statements and read from rows.
pub trait Column<DB: Database>:
    Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Send
{
}

impl<DB: Database, T> Column<DB> for T where
    T: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Send
{
}

// The driver's types, for the `where` clauses (see [`Dialect`]).
type Conn<D> = <<D as Dialect>::Db as Database>::Connection;
type DbRow<D> = <<D as Dialect>::Db as Database>::Row;
type Args<'q, D> = <<D as Dialect>::Db as Database>::Arguments<'q>;

/// What a rebuild deletes: every record but the catalog copy.
const REBUILD: [&str; 4] = [
    "DELETE FROM rec_profiles",
    "DELETE FROM rec_queries",
    "DELETE FROM rec_popular_lists",
    "DELETE FROM rec_coviews",
];

/// Rows per multi-row statement: well under SQLite's limit of bound variables and MySQL's 65,535
/// placeholders, and within MySQL's default `max_allowed_packet` for records of a few kilobytes.
const CHUNK: usize = 500;
/// Bytes of records per multi-row statement, about (a profile can reach tens of kilobytes).
const CHUNK_BYTES: usize = 4 << 20;

/// Recommendations in a SQL database: SQLite (`<data_dir>/recommend.db` by default) or MySQL or
/// MariaDB, as `D` says.
pub struct SqlRecommendations<D: Dialect> {
    pool: Pool<D::Db>,
    settings: RecommendSettings,
}

/// A stored record that does not decode: the store is damaged, the batch waits.
fn undecodable(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

fn decode<T: Stored>(bytes: &[u8]) -> Result<T, sqlx::Error> {
    T::from_bytes(bytes).map_err(undecodable)
}

impl<D: Dialect> SqlRecommendations<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    usize: ColumnIndex<DbRow<D>>,
    i32: Column<D::Db>,
    i64: Column<D::Db>,
    String: Column<D::Db>,
    Vec<u8>: Column<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
{
    pub async fn new(pool: Pool<D::Db>, settings: RecommendSettings) -> Result<Self, sqlx::Error> {
        for statement in D::SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        D::create_positions(&pool).await?;
        Self::rebuild_if_older(&pool).await?;
        Ok(Self { pool, settings })
    }

    /// Deletes the records of an older [`STORED_VERSION`] (see [`needs_rebuild`]) and marks the
    /// store as of this one, in one transaction (with row locks, on the mark's row created first
    /// and read locked: see [`Locking::Rows`]).
    async fn rebuild_if_older(pool: &Pool<D::Db>) -> Result<(), sqlx::Error> {
        if let Locking::Rows { add_format, .. } = D::LOCKING {
            sqlx::query(add_format).execute(pool).await?;
        }
        let mut tx = pool.begin().await?;
        let stored: Option<i64> = sqlx::query_scalar(D::READ_FORMAT)
            .fetch_optional(&mut *tx)
            .await?;
        if needs_rebuild(stored.and_then(|v| u8::try_from(v).ok())) {
            for statement in REBUILD {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            sqlx::query(D::WRITE_FORMAT)
                .bind(i64::from(STORED_VERSION))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Reads what a batch needs, inside its transaction.
    async fn load(
        conn: &mut Conn<D>,
        settings: &RecommendSettings,
        batch: &Batch,
    ) -> Result<Prior, sqlx::Error> {
        let mut prior = Prior::default();
        let users: Vec<String> = profile_needs(&batch.records).into_iter().collect();
        if let Locking::Rows {
            add_missing_profiles,
            ..
        } = D::LOCKING
        {
            // An empty row for each reader not stored yet, first, so that the locking read below
            // locks a row for every reader of the batch: under READ COMMITTED it would lock
            // nothing for a missing one, and two members starting the same reader's profile at
            // once (their searches on two partitions: tutorial-format events keyed by query, or
            // partitions added to the topic) would each write theirs over the other's. The batch
            // then writes or deletes every such row.
            let empty = Profile::default().to_bytes();
            for chunk in users.chunks(CHUNK) {
                let mut q = QueryBuilder::<D::Db>::new(add_missing_profiles);
                q.push_values(chunk, |mut row, user| {
                    row.push_bind(user).push_bind(0i64).push_bind(&empty);
                });
                D::build(&mut q).execute(&mut *conn).await?;
            }
        }
        for chunk in users.chunks(CHUNK) {
            let mut q = QueryBuilder::<D::Db>::new(
                "SELECT user_id, record FROM rec_profiles WHERE user_id IN (",
            );
            push_list(&mut q, chunk.iter().cloned());
            if let Locking::Rows { lock_profiles, .. } = D::LOCKING {
                q.push(lock_profiles);
            }
            for row in D::build(&mut q).fetch_all(&mut *conn).await? {
                let record: Vec<u8> = row.try_get(1)?;
                prior.profiles.insert(D::text(&row, 0)?, decode(&record)?);
            }
        }
        let wanted = query_needs(settings, &batch.records, &prior.profiles);
        if D::READ_BY_PARTITION {
            // Sorted by partition, then query: one statement per partition's run of queries.
            let wanted: Vec<(i32, String)> = wanted.into_iter().collect();
            for same_part in wanted.chunk_by(|a, b| a.0 == b.0) {
                let part = same_part[0].0;
                for chunk in same_part.chunks(CHUNK) {
                    let mut q = QueryBuilder::<D::Db>::new(
                        "SELECT query, record FROM rec_queries WHERE part = ",
                    );
                    q.push_bind(part).push(" AND query IN (");
                    push_list(&mut q, chunk.iter().map(|(_, query)| query.clone()));
                    for row in D::build(&mut q).fetch_all(&mut *conn).await? {
                        let record: Vec<u8> = row.try_get(1)?;
                        prior
                            .queries
                            .insert((part, D::text(&row, 0)?), decode(&record)?);
                    }
                }
            }
        } else {
            let keys: Vec<&(i32, String)> = wanted.iter().collect();
            for chunk in keys.chunks(CHUNK) {
                let mut q = QueryBuilder::<D::Db>::new(
                    "SELECT part, query, record FROM rec_queries WHERE (query, part) IN (",
                );
                let mut list = q.separated(", ");
                for (part, query) in chunk {
                    list.push("(")
                        .push_bind_unseparated((*query).clone())
                        .push_unseparated(", ")
                        .push_bind_unseparated(*part)
                        .push_unseparated(")");
                }
                list.push_unseparated(")");
                for row in D::build(&mut q).fetch_all(&mut *conn).await? {
                    let record: Vec<u8> = row.try_get(2)?;
                    prior
                        .queries
                        .insert((row.try_get(0)?, D::text(&row, 1)?), decode(&record)?);
                }
            }
        }
        for part in popular_needs(&batch.records) {
            let record: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT record FROM rec_popular_lists WHERE part = ?")
                    .bind(part)
                    .fetch_optional(&mut *conn)
                    .await?;
            if let Some(record) = record {
                prior.popular.insert(part, decode(&record)?);
            }
        }
        let wanted = coview_needs(settings, &batch.records, &prior.profiles);
        if D::READ_BY_PARTITION {
            // Sorted by partition, then book: one statement per partition's run of books.
            let wanted: Vec<(i32, i64)> = wanted.into_iter().collect();
            for same_part in wanted.chunk_by(|a, b| a.0 == b.0) {
                let part = same_part[0].0;
                for chunk in same_part.chunks(CHUNK) {
                    let mut q = QueryBuilder::<D::Db>::new(
                        "SELECT book, record FROM rec_coviews WHERE part = ",
                    );
                    q.push_bind(part).push(" AND book IN (");
                    push_list(&mut q, chunk.iter().map(|(_, book)| *book));
                    for row in D::build(&mut q).fetch_all(&mut *conn).await? {
                        let record: Vec<u8> = row.try_get(1)?;
                        prior
                            .coviews
                            .insert((part, row.try_get(0)?), decode(&record)?);
                    }
                }
            }
        } else {
            let keys: Vec<&(i32, i64)> = wanted.iter().collect();
            for chunk in keys.chunks(CHUNK) {
                let mut q = QueryBuilder::<D::Db>::new(
                    "SELECT part, book, record FROM rec_coviews WHERE (book, part) IN (",
                );
                let mut list = q.separated(", ");
                for (part, book) in chunk {
                    list.push("(")
                        .push_bind_unseparated(*book)
                        .push_unseparated(", ")
                        .push_bind_unseparated(*part)
                        .push_unseparated(")");
                }
                list.push_unseparated(")");
                for row in D::build(&mut q).fetch_all(&mut *conn).await? {
                    let record: Vec<u8> = row.try_get(2)?;
                    prior
                        .coviews
                        .insert((row.try_get(0)?, row.try_get(1)?), decode(&record)?);
                }
            }
        }
        Ok(prior)
    }

    /// Writes a batch's changes, inside its transaction, each table in key order.
    async fn write(conn: &mut Conn<D>, changes: &Changes) -> Result<(), sqlx::Error> {
        let catalog: Vec<_> = changes.catalog.values().collect();
        for chunk in catalog.chunks(CHUNK) {
            let mut q = QueryBuilder::<D::Db>::new("INSERT INTO rec_books (id, title, author) ");
            q.push_values(chunk, |mut row, book| {
                row.push_bind(book.id)
                    .push_bind(&book.title)
                    .push_bind(&book.author);
            });
            q.push(D::UPDATE_BOOKS);
            D::build(&mut q).execute(&mut *conn).await?;
        }
        let deleted: Vec<i64> = changes.deleted.iter().copied().collect();
        for chunk in deleted.chunks(CHUNK) {
            let mut q = QueryBuilder::<D::Db>::new("DELETE FROM rec_books WHERE id IN (");
            push_list(&mut q, chunk.iter().copied());
            D::build(&mut q).execute(&mut *conn).await?;
        }
        let forgotten: Vec<&String> = changes.forgotten.iter().collect();
        for chunk in forgotten.chunks(CHUNK) {
            let mut q = QueryBuilder::<D::Db>::new("DELETE FROM rec_profiles WHERE user_id IN (");
            push_list(&mut q, chunk.iter().copied());
            D::build(&mut q).execute(&mut *conn).await?;
        }
        let profiles: Vec<(&String, i64, Vec<u8>)> = changes
            .profiles
            .iter()
            .map(|(u, p)| (u, p.last_at, p.to_bytes()))
            .collect();
        for chunk in byte_chunks(&profiles, CHUNK, CHUNK_BYTES, |(u, _, r)| u.len() + r.len()) {
            let mut q =
                QueryBuilder::<D::Db>::new("INSERT INTO rec_profiles (user_id, last_at, record) ");
            q.push_values(chunk, |mut row, (user, last_at, record)| {
                row.push_bind(*user).push_bind(*last_at).push_bind(record);
            });
            q.push(D::UPDATE_PROFILES);
            D::build(&mut q).execute(&mut *conn).await?;
        }
        let queries: Vec<(&(i32, String), Vec<u8>)> = changes
            .queries
            .iter()
            .map(|(k, r)| (k, r.to_bytes()))
            .collect();
        for chunk in byte_chunks(&queries, CHUNK, CHUNK_BYTES, |((_, q), r)| {
            q.len() + r.len()
        }) {
            let mut q =
                QueryBuilder::<D::Db>::new("INSERT INTO rec_queries (query, part, record) ");
            q.push_values(chunk, |mut row, ((part, query), record)| {
                row.push_bind(query).push_bind(*part).push_bind(record);
            });
            q.push(D::UPDATE_QUERIES);
            D::build(&mut q).execute(&mut *conn).await?;
        }
        for (part, list) in &changes.popular {
            sqlx::query(D::UPSERT_POPULAR)
                .bind(part)
                .bind(list.to_bytes())
                .execute(&mut *conn)
                .await?;
        }
        let coviews: Vec<(&(i32, i64), Vec<u8>)> = changes
            .coviews
            .iter()
            .map(|(k, r)| (k, r.to_bytes()))
            .collect();
        for chunk in byte_chunks(&coviews, CHUNK, CHUNK_BYTES, |(_, r)| r.len()) {
            let mut q = QueryBuilder::<D::Db>::new("INSERT INTO rec_coviews (book, part, record) ");
            q.push_values(chunk, |mut row, ((part, book), record)| {
                row.push_bind(*book).push_bind(*part).push_bind(record);
            });
            q.push(D::UPDATE_COVIEWS);
            D::build(&mut q).execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Expiry with row locks ([`Locking::Rows`]): the expired readers are found without locking,
    /// then deleted by primary key in key order, as batches lock profiles, with `last_at` checked
    /// again.
    async fn expire_by_key(&self, before: i64, limit: usize) -> Result<u64, RepositoryError> {
        let mut conn = self.pool.acquire().await.map_err(D::repo_error)?;
        let mut users: Vec<String> = sqlx::query(
            "SELECT user_id FROM rec_profiles WHERE last_at < ? ORDER BY last_at LIMIT ?",
        )
        .bind(before)
        .bind(self::limit(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(D::repo_error)?
        .iter()
        .map(|row| D::text(row, 0))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(D::repo_error)?;
        users.sort();
        let mut deleted = 0;
        for chunk in users.chunks(CHUNK) {
            let mut q = QueryBuilder::<D::Db>::new("DELETE FROM rec_profiles WHERE user_id IN (");
            push_list(&mut q, chunk.iter().cloned());
            q.push(" AND last_at < ").push_bind(before);
            let done = D::build(&mut q)
                .execute(&mut *conn)
                .await
                .map_err(D::repo_error)?;
            deleted += D::rows_affected(&done);
        }
        Ok(deleted)
    }

    /// The store's reads, on a pooled connection.
    async fn reader(&self) -> Result<Reader<D>, RepositoryError> {
        let conn = self.pool.acquire().await.map_err(D::repo_error)?;
        Ok(Reader(conn, PhantomData))
    }
}

/// The store's reads for [`answer`] and [`read_interests`], on one pooled connection.
struct Reader<D: Dialect>(PoolConnection<D::Db>, PhantomData<D>);

#[async_trait]
impl<D: Dialect> RecordReader for Reader<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    usize: ColumnIndex<DbRow<D>>,
    i32: Column<D::Db>,
    i64: Column<D::Db>,
    String: Column<D::Db>,
    Vec<u8>: Column<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
{
    type Error = sqlx::Error;

    async fn profile(&mut self, user: &str) -> Result<Option<Profile>, Self::Error> {
        let record: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT record FROM rec_profiles WHERE user_id = ?")
                .bind(user)
                .fetch_optional(&mut *self.0)
                .await?;
        record.map(|r| decode(&r)).transpose()
    }

    /// The merged records of `queries` over every partition.
    async fn query_records(
        &mut self,
        queries: &[String],
    ) -> Result<HashMap<String, QueryRecord>, Self::Error> {
        let mut rows = Vec::new();
        for chunk in queries.chunks(CHUNK) {
            let mut q = QueryBuilder::<D::Db>::new(
                "SELECT query, record FROM rec_queries WHERE query IN (",
            );
            push_list(&mut q, chunk.iter().cloned());
            for row in D::build(&mut q).fetch_all(&mut *self.0).await? {
                let record: Vec<u8> = row.try_get(1)?;
                rows.push((D::text(&row, 0)?, decode::<QueryRecord>(&record)?));
            }
        }
        Ok(merge_queries(rows))
    }

    async fn catalog(&mut self, ids: &[i64]) -> Result<HashMap<i64, CatalogEntry>, Self::Error> {
        let mut catalog = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let mut q =
                QueryBuilder::<D::Db>::new("SELECT id, title, author FROM rec_books WHERE id IN (");
            push_list(&mut q, chunk.iter().copied());
            for row in D::build(&mut q).fetch_all(&mut *self.0).await? {
                let id: i64 = row.try_get(0)?;
                catalog.insert(
                    id,
                    CatalogEntry {
                        id,
                        title: D::text(&row, 1)?,
                        author: D::text(&row, 2)?,
                    },
                );
            }
        }
        Ok(catalog)
    }

    async fn author_books(&mut self, author: &str, limit: usize) -> Result<Vec<i64>, Self::Error> {
        sqlx::query_scalar("SELECT id FROM rec_books WHERE author = ? ORDER BY id LIMIT ?")
            .bind(author)
            .bind(self::limit(limit))
            .fetch_all(&mut *self.0)
            .await
    }

    async fn popular_lists(&mut self) -> Result<Vec<PopularList>, Self::Error> {
        let lists: Vec<Vec<u8>> = sqlx::query_scalar("SELECT record FROM rec_popular_lists")
            .fetch_all(&mut *self.0)
            .await?;
        lists.iter().map(|r| decode::<PopularList>(r)).collect()
    }

    /// The merged co-view records of `books` over every partition.
    async fn coviews(&mut self, books: &[i64]) -> Result<HashMap<i64, CoViews>, Self::Error> {
        let mut rows = Vec::new();
        for chunk in books.chunks(CHUNK) {
            let mut q =
                QueryBuilder::<D::Db>::new("SELECT book, record FROM rec_coviews WHERE book IN (");
            push_list(&mut q, chunk.iter().copied());
            for row in D::build(&mut q).fetch_all(&mut *self.0).await? {
                let record: Vec<u8> = row.try_get(1)?;
                rows.push((row.try_get::<i64, _>(0)?, decode::<CoViews>(&record)?));
            }
        }
        Ok(merge_coviews(rows))
    }
}

/// Appends `a, b, c)` with each value bound.
fn push_list<'a, DB, T>(q: &mut QueryBuilder<'a, DB>, values: impl Iterator<Item = T>)
where
    DB: Database,
    T: 'a + Send + Encode<'a, DB> + Type<DB>,
{
    let mut list = q.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    list.push_unseparated(")");
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[async_trait]
impl<D: Dialect> EventHandler for SqlRecommendations<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    usize: ColumnIndex<DbRow<D>>,
    i32: Column<D::Db>,
    i64: Column<D::Db>,
    String: Column<D::Db>,
    Vec<u8>: Column<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
{
    fn name(&self) -> &str {
        "recommend"
    }

    async fn positions(&self, group: &str) -> Result<Vec<Position>, HandlerError> {
        D::positions(&self.pool, &positions_group(group)).await
    }

    async fn apply(&self, batch: &Batch) -> Result<(), HandlerError> {
        let mut conn = self.pool.acquire().await.map_err(D::handler_error)?;
        if let Locking::Rows { isolation, .. } = D::LOCKING {
            // This applies to the next transaction only.
            (&mut *conn)
                .execute(isolation)
                .await
                .map_err(D::handler_error)?;
        }
        let mut tx = Connection::begin(&mut *conn)
            .await
            .map_err(D::handler_error)?;
        let moves = Batch {
            group: positions_group(&batch.group),
            records: Vec::new(),
            positions: batch.positions.clone(),
        };
        D::advance(&mut tx, &moves).await?;
        let prior = Self::load(&mut tx, &self.settings, batch)
            .await
            .map_err(D::handler_error)?;
        let changes = apply(&self.settings, prior, &batch.records);
        Self::write(&mut tx, &changes)
            .await
            .map_err(D::handler_error)?;
        tx.commit().await.map_err(D::handler_error)
    }
}

#[async_trait]
impl<D: Dialect> RecommendStore for SqlRecommendations<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    usize: ColumnIndex<DbRow<D>>,
    i32: Column<D::Db>,
    i64: Column<D::Db>,
    String: Column<D::Db>,
    Vec<u8>: Column<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
{
    async fn recommend(
        &self,
        user: &str,
        n: usize,
    ) -> Result<Vec<Recommendation>, RepositoryError> {
        answer(&mut self.reader().await?, user, n)
            .await
            .map_err(D::repo_error)
    }

    async fn interests(
        &self,
        user: &str,
        n: usize,
        now: DateTime<Utc>,
    ) -> Result<Interests, RepositoryError> {
        read_interests(&mut self.reader().await?, &self.settings, user, n, now)
            .await
            .map_err(D::repo_error)
    }

    async fn catalog_book(&self, id: i64) -> Result<Option<CatalogEntry>, RepositoryError> {
        let mut found = self
            .reader()
            .await?
            .catalog(&[id])
            .await
            .map_err(D::repo_error)?;
        Ok(found.remove(&id))
    }

    async fn stats(&self) -> Result<RecommendStats, RepositoryError> {
        let (books, users, queries): (i64, i64, i64) = sqlx::query_as(concat!(
            "SELECT (SELECT COUNT(*) FROM rec_books), (SELECT COUNT(*) FROM rec_profiles), ",
            "(SELECT COUNT(*) FROM rec_queries)"
        ))
        .fetch_one(&self.pool)
        .await
        .map_err(D::repo_error)?;
        Ok(RecommendStats {
            catalog_books: count(books),
            users: count(users),
            query_records: count(queries),
        })
    }

    async fn expire(&self, before: i64, limit: usize) -> Result<u64, RepositoryError> {
        match D::LOCKING {
            Locking::Database { expire } => {
                let done = sqlx::query(expire)
                    .bind(before)
                    .bind(self::limit(limit))
                    .execute(&self.pool)
                    .await
                    .map_err(D::repo_error)?;
                Ok(D::rows_affected(&done))
            }
            Locking::Rows { .. } => self.expire_by_key(before, limit).await,
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, RepositoryError> {
        let mut conn = self.pool.acquire().await.map_err(D::repo_error)?;
        let read = async {
            let catalog = sqlx::query("SELECT id, title, author FROM rec_books")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    Ok(CatalogEntry {
                        id: row.try_get(0)?,
                        title: D::text(row, 1)?,
                        author: D::text(row, 2)?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?;
            let profiles = sqlx::query("SELECT user_id, record FROM rec_profiles")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    let record: Vec<u8> = row.try_get(1)?;
                    Ok((D::text(row, 0)?, decode(&record)?))
                })
                .collect::<Result<_, sqlx::Error>>()?;
            let queries = sqlx::query("SELECT part, query, record FROM rec_queries")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    let record: Vec<u8> = row.try_get(2)?;
                    Ok(((row.try_get(0)?, D::text(row, 1)?), decode(&record)?))
                })
                .collect::<Result<_, sqlx::Error>>()?;
            let popular = sqlx::query("SELECT part, record FROM rec_popular_lists")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    let record: Vec<u8> = row.try_get(1)?;
                    Ok((row.try_get(0)?, decode(&record)?))
                })
                .collect::<Result<_, sqlx::Error>>()?;
            let coviews = sqlx::query("SELECT part, book, record FROM rec_coviews")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| {
                    let record: Vec<u8> = row.try_get(2)?;
                    Ok(((row.try_get(0)?, row.try_get(1)?), decode(&record)?))
                })
                .collect::<Result<_, sqlx::Error>>()?;
            Ok::<_, sqlx::Error>(Snapshot {
                catalog,
                profiles,
                queries,
                popular,
                coviews,
            })
        };
        Ok(read.await.map_err(D::repo_error)?.sorted())
    }

    async fn ping(&self) -> Result<(), RepositoryError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(D::repo_error)?;
        Ok(())
    }
}

#[async_trait]
impl<D: Dialect> SimilarBooks for SqlRecommendations<D>
where
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    usize: ColumnIndex<DbRow<D>>,
    i32: Column<D::Db>,
    i64: Column<D::Db>,
    String: Column<D::Db>,
    Vec<u8>: Column<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
{
    async fn similar(&self, book: i64, n: usize) -> Result<Vec<Recommendation>, RepositoryError> {
        similar_books(&mut self.reader().await?, book, n)
            .await
            .map_err(D::repo_error)
    }
}
