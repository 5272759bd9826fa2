//! `GET /books/{id}`: a book's own page. Opening it publishes `book.viewed` with the list the
//! link was in (`?from=&rank=&reason=`), and counts it for the click-through rates.

use std::collections::HashMap;

use askama::Template;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use bookstore_domain::recommend::Recommendation;
use bookstore_domain::{Book, BookId, BookQuery};

use crate::WebState;
use crate::error::error_chain;
use crate::forget;
use crate::page::render;
use crate::params::ViewParams;
use crate::publish::publish_view;
use crate::remote::PAGE_SIMILAR;
use crate::visitor::Visitor;

/// Books shown under "More by <author>".
const BY_AUTHOR: usize = 5;
/// Search results looked through for them: the author's name also matches other books (in
/// titles and descriptions), which are skipped.
const BY_AUTHOR_CANDIDATES: u32 = 30;

#[derive(Template)]
#[template(path = "book.html")]
struct BookPage<'a> {
    /// The search box's text: empty on a book's page.
    q: &'a str,
    book: &'a Book,
    /// `None`: the recommendation service is not configured or did not answer; no section.
    similar: Option<&'a [Recommendation]>,
    /// `None`: the search index did not answer; no section.
    by_author: Option<Vec<Book>>,
    forget_token: Option<String>,
}

/// A page that only says something: no such book, or the catalog is down.
#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    q: &'a str,
    title: &'a str,
    message: &'a str,
    forget_token: Option<String>,
}

/// A book's page: its details, "Readers who looked at this also looked at" and "More by" its
/// author.
#[utoipa::path(get, path = "/books/{id}", tag = "page",
    summary = "A book's page (HTML); publishes a book.viewed event",
    params(
        ("id" = String, Path, description = "The book's id, a positive integer"),
        ("from" = Option<String>, Query, description = "The list the link was in: search, trends, recommendation, similar or direct (the default; an unknown value counts as direct)"),
        ("rank" = Option<u32>, Query, description = "The book's position in that list, from 0 (ignored unless a number)"),
        ("reason" = Option<String>, Query, description = "For a recommendation, the kind of its reason: searched, viewed, author, popular or similar (others are ignored)"),
    ),
    responses(
        (status = 200, description = "The page", content_type = "text/html"),
        (status = 404, description = "No such book (or an id that is not a positive integer): a page saying so", content_type = "text/html"),
        (status = 503, description = "The catalog database is unavailable: a page saying so", content_type = "text/html"),
    ))]
pub async fn book(
    State(state): State<WebState>,
    visitor: Visitor,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let forget_token = visitor
        .user_id()
        .map(|uid| state.visitors.form_token(forget::PURPOSE, uid));
    let Some(id) = id
        .ok()
        .and_then(|Path(id)| id.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .map(BookId)
    else {
        return not_found(forget_token);
    };
    // A query string that cannot be read is a link without its hints, not an error.
    let link = ViewParams::parse(&params.map(|Query(p)| p).unwrap_or_default());
    let book = match state.books.get(id).await {
        Ok(Some(book)) => book,
        Ok(None) => return not_found(forget_token),
        Err(err) => {
            tracing::warn!(error = %error_chain(&err), "the book page could not read the catalog");
            return render(
                StatusCode::SERVICE_UNAVAILABLE,
                &MessagePage {
                    q: "",
                    title: "The catalog is unavailable",
                    message: "The catalog is unavailable right now. Please try again in a moment.",
                    forget_token,
                },
            );
        }
    };
    publish_view(
        &state,
        &visitor,
        &book,
        link.source,
        link.rank,
        link.reason.clone(),
    );
    // The next pages should soon show it: "similar" books and the most viewed ones.
    state.expect_new_answers();
    state
        .click_through
        .opened(link.source, link.reason.as_deref());
    // The recommendation service and the search index at the same time, each bounded.
    let similar = async {
        match &state.recommendations {
            Some(remote) => remote.similar(book.id).await,
            None => None,
        }
    };
    let (similar, by_author) = tokio::join!(similar, by_author(&state, &book));
    let similar = similar.as_deref().map(|s| &s[..s.len().min(PAGE_SIMILAR)]);
    if let Some(similar) = similar {
        state.click_through.shown(
            bookstore_domain::events::ViewSource::Similar,
            None,
            similar.len(),
        );
    }
    render(
        StatusCode::OK,
        &BookPage {
            q: "",
            book: &book,
            similar,
            by_author,
            forget_token,
        },
    )
}

/// Other books by `book`'s author, from the search index; `None` when it failed.
async fn by_author(state: &WebState, book: &Book) -> Option<Vec<Book>> {
    let query = BookQuery::new(&book.author, 0, BY_AUTHOR_CANDIDATES);
    match state.search.search(&query).await {
        Ok(page) => {
            let author = book.author.to_lowercase();
            Some(
                page.books
                    .into_iter()
                    .filter(|other| other.id != book.id && other.author.to_lowercase() == author)
                    .take(BY_AUTHOR)
                    .collect(),
            )
        }
        Err(err) => {
            tracing::warn!(error = %error_chain(&err), "the book page could not search the author's books");
            None
        }
    }
}

fn not_found(forget_token: Option<String>) -> Response {
    render(
        StatusCode::NOT_FOUND,
        &MessagePage {
            q: "",
            title: "Book not found",
            message: "The catalog has no such book. It may have been removed, or the address may be mistyped.",
            forget_token,
        },
    )
}
