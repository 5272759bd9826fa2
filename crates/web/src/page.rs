//! `GET /`: the bookstore page.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use bookstore_domain::events::ViewSource;
use bookstore_domain::recommend::Recommendation;
use bookstore_domain::trends::{Trend, ViewedBook};
use bookstore_domain::{Book, BookQuery, Marked, RepositoryError};

use crate::WebState;
use crate::api::SNIPPET_CHARS;
use crate::error::error_chain;
use crate::forget;
use crate::highlight::html;
use crate::params::ListParams;
use crate::publish::publish_search;
use crate::visitor::Visitor;

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage<'a> {
    q: &'a str,
    books: Vec<Shown<'a>>,
    total: u64,
    /// Whether more than `total` books match (the index stops counting at 10,000).
    total_is_lower_bound: bool,
    /// 1-based position of the first and last book shown.
    first: u64,
    last: u64,
    prev_offset: Option<u64>,
    next_offset: Option<u64>,
    error: Option<String>,
    /// `None`: the trend service is not configured or did not answer; no section.
    trends: Option<&'a [Trend]>,
    /// The most viewed books now, under Trends (empty: no such list).
    viewed_books: &'a [ViewedBook],
    /// `None`: the recommendation service is not configured or did not answer; no section.
    recommendations: Option<&'a [Recommendation]>,
    /// How many readers must search a query before it shows under Trends.
    min_readers: u32,
    /// The token of the "Forget my history" form, for a visitor whose signed cookie came with the
    /// request; `None`: no form (a new visitor has no history yet).
    forget_token: Option<String>,
    /// `?forgotten=1`: the visitor has just asked to be forgotten; the page says so.
    forgotten: bool,
}

/// A book as the page shows it: title, author and description as HTML, escaped, the words that
/// matched the query marked (the description as a snippet around its first match).
struct Shown<'a> {
    book: &'a Book,
    /// Its position among all the results, from 0.
    rank: u64,
    title_html: String,
    author_html: String,
    description_html: String,
}

impl<'a> Shown<'a> {
    fn new(state: &WebState, q: &str, book: &'a Book, rank: u64) -> Self {
        if q.is_empty() {
            return Self {
                book,
                rank,
                title_html: html(&Marked::plain(&book.title)),
                author_html: html(&Marked::plain(&book.author)),
                description_html: html(&Marked::plain(&book.description)),
            };
        }
        let marked = state.search.highlight(q, book, SNIPPET_CHARS);
        Self {
            book,
            rank,
            title_html: html(&marked.title),
            author_html: html(&marked.author),
            description_html: html(&marked.description),
        }
    }
}

impl IndexPage<'_> {
    /// The number of matches as the page says it: "10,000+" when the index stopped counting.
    fn total_label(&self) -> String {
        if self.total_is_lower_bound {
            format!("{},{:03}+", self.total / 1000, self.total % 1000)
        } else {
            self.total.to_string()
        }
    }

    fn trends_empty_text(&self) -> String {
        trends_empty_text(self.min_readers)
    }
}

/// What the Trends panel says when nothing is trending (the live script says it too).
fn trends_empty_text(min_readers: u32) -> String {
    let mut text = "Nothing is trending yet.".to_owned();
    if min_readers > 1 {
        text.push_str(&format!(
            " A search shows here once people on {min_readers} different networks have made it."
        ));
    }
    text
}

/// Counts the book links the Trends panel and "Recommended for you" show, as impressions.
fn count_sidebar(
    state: &WebState,
    trends: Option<&[Trend]>,
    viewed_books: &[ViewedBook],
    recommendations: Option<&[Recommendation]>,
) {
    let ctr = &state.click_through;
    if let Some(trends) = trends {
        ctr.shown(
            ViewSource::Trends,
            None,
            trend_book_links(trends, viewed_books),
        );
    }
    for recommendation in recommendations.unwrap_or_default() {
        let kind = Some(recommendation.kind.as_str()).filter(|k| !k.is_empty());
        ctr.shown(ViewSource::Recommendation, kind, 1);
    }
}

/// Books of a trend the panel shows (`trends.html`, and `static/live.js`'s `TREND_BOOKS`).
pub(crate) const TREND_BOOKS_SHOWN: usize = 3;

/// The book links the Trends panel shows for these lists: up to [`TREND_BOOKS_SHOWN`] per trend,
/// and every most viewed book.
pub(crate) fn trend_book_links(trends: &[Trend], viewed_books: &[ViewedBook]) -> usize {
    trends
        .iter()
        .map(|t| t.books.len().min(TREND_BOOKS_SHOWN))
        .sum::<usize>()
        + viewed_books.len()
}

/// The bookstore page: search box, results, Trends and "Recommended for you".
#[utoipa::path(get, path = "/", tag = "page", summary = "The bookstore page (HTML); a search publishes a book.searched event",
    params(
        ("q" = Option<String>, Query, description = "Search words"),
        ("o" = Option<u64>, Query, description = "Offset of the first book"),
        ("forgotten" = Option<String>, Query, description = "1: the page says that the visitor's history is being forgotten (where `POST /forget` leads)"),
    ),
    responses(
        (status = 200, description = "The page", content_type = "text/html"),
        (status = 400, description = "Bad parameters: the page with the message", content_type = "text/html"),
    ))]
pub async fn index(
    State(state): State<WebState>,
    visitor: Visitor,
    params: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let forgotten = params
        .as_ref()
        .is_ok_and(|Query(params)| params.get("forgotten").is_some_and(|f| f == "1"));
    let forget_token = visitor
        .user_id()
        .map(|uid| state.visitors.form_token(forget::PURPOSE, uid));
    let params = match params {
        Ok(Query(params)) => {
            ListParams::parse(&params).map_err(|fields| format!("Invalid address: {fields}."))
        }
        Err(err) => Err(format!("Invalid address: {}.", err.body_text())),
    };
    let params = match params {
        Ok(params) => params,
        Err(message) => return render(StatusCode::BAD_REQUEST, &error_page("", message)),
    };
    let page_size = state.page_size.max(1);
    let query = BookQuery::new(&params.q, params.offset, page_size);
    // The catalog and the trend and recommendation services at the same time: the page waits
    // for the slowest, and each service call is bounded by its own timeout.
    let trends = async {
        match &state.trends {
            Some(remote) => remote.get().await,
            None => None,
        }
    };
    let uid = visitor.uid.to_string();
    let recommendations = async {
        match &state.recommendations {
            Some(remote) => remote.get(&uid).await,
            None => None,
        }
    };
    let viewed_books = async {
        match &state.trends {
            Some(remote) => remote.viewed_books().await,
            None => None,
        }
    };
    let (searched, trends, viewed_books, recommendations) = tokio::join!(
        state.search.search(&query),
        trends,
        viewed_books,
        recommendations
    );
    let trends = trends.as_deref().map(Vec::as_slice);
    let viewed_books = viewed_books.as_deref().map_or(&[][..], Vec::as_slice);
    let recommendations = recommendations.as_deref().map(Vec::as_slice);
    count_sidebar(&state, trends, viewed_books, recommendations);
    match searched {
        Ok(page) => {
            if publish_search(&state, &visitor, query.text(), params.offset, &page.books) {
                state.expect_new_answers();
            }
            let shown = page.books.len() as u64;
            state
                .click_through
                .shown(ViewSource::Search, None, page.books.len());
            let view = IndexPage {
                q: query.text(),
                books: page
                    .books
                    .iter()
                    .zip(params.offset..)
                    .map(|(book, rank)| Shown::new(&state, query.text(), book, rank))
                    .collect(),
                total: page.total,
                total_is_lower_bound: page.total_is_lower_bound,
                first: params.offset.saturating_add(1),
                last: params.offset.saturating_add(shown),
                prev_offset: (params.offset > 0)
                    .then(|| params.offset.saturating_sub(u64::from(page_size))),
                next_offset: Some(params.offset.saturating_add(u64::from(page_size)))
                    .filter(|next| *next < page.total),
                error: None,
                trends,
                viewed_books,
                recommendations,
                min_readers: state.trend_min_readers,
                forget_token,
                forgotten,
            };
            render(StatusCode::OK, &view)
        }
        Err(err) => {
            let status = match err {
                RepositoryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                RepositoryError::Conflict(_) | RepositoryError::Internal(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            };
            tracing::warn!(error = %error_chain(&err), "the page could not search the catalog");
            let message = "The catalog is unavailable right now. Please try again in a moment.";
            render(
                status,
                &IndexPage {
                    trends,
                    viewed_books,
                    recommendations,
                    min_readers: state.trend_min_readers,
                    forget_token,
                    forgotten,
                    ..error_page(query.text(), message.to_owned())
                },
            )
        }
    }
}

fn error_page(q: &str, message: String) -> IndexPage<'_> {
    IndexPage {
        q,
        books: Vec::new(),
        total: 0,
        total_is_lower_bound: false,
        first: 0,
        last: 0,
        prev_offset: None,
        next_offset: None,
        error: Some(message),
        trends: None,
        viewed_books: &[],
        recommendations: None,
        min_readers: 0,
        forget_token: None,
        forgotten: false,
    }
}

pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "the page template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}
