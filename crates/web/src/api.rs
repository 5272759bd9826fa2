//! `/api/books`: list and search, read one, create, replace and delete one. `/api/readers/{uid}`:
//! forget a reader.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bookstore_domain::search::clean_query;
use bookstore_domain::trends::Trend;
use bookstore_domain::{
    Book, BookId, BookQuery, FieldErrors, MAX_SUGGESTIONS, NewBook, NewBookInput, Suggestion,
    SuggestionKind,
};
use secrecy::ExposeSecret;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::params::ListParams;
use crate::publish::{invalid_reader_id, publish_forgotten, publish_search};
use crate::visitor::Visitor;
use crate::{MAX_BODY_BYTES, WebState};

/// `GET /api/books?q=&o=&limit=`: a plain JSON array of books, best match first, with the number
/// of matching books in `X-Total-Count`.
#[utoipa::path(get, path = "/api/books", tag = "books",
    summary = "Search or list books; publishes a book.searched event",
    params(
        ("q" = Option<String>, Query, description = "Search words (title, author, description); empty lists every book"),
        ("o" = Option<u64>, Query, description = "Offset of the first book"),
        ("limit" = Option<u32>, Query, description = "Books per page, 1 to 100 (default web.page_size)"),
        ("highlight" = Option<String>, Query, description = "1: each book also has `highlight` {title, author, description}: HTML, escaped, the matched words (corrected and completed ones too) in `<mark>`, the description as a snippet around its first match"),
    ),
    responses(
        (status = 200, description = "JSON array of books `{id, title, author, description}`, best match first; `X-Total-Count` has the number of matches, exact up to 10,000; beyond it says 10000 and `X-Total-Count-Lower-Bound: true` is set"),
        (status = 400, description = "Bad parameters", body = bookstore_http::ErrorBody),
        (status = 503, description = "The search index is unavailable", body = bookstore_http::ErrorBody),
    ))]
pub async fn list_books(
    State(state): State<WebState>,
    visitor: Visitor,
    params: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|err| ApiError::BadRequest(err.body_text()))?;
    let params = ListParams::parse(&params).map_err(bad_params)?;
    let query = BookQuery::new(
        &params.q,
        params.offset,
        params.limit.unwrap_or(state.page_size),
    );
    let page = state.search.search(&query).await?;
    // An API call names its user only through a signed `uid` cookie it sent.
    if publish_search(&state, &visitor, query.text(), params.offset, &page.books) {
        state.expect_new_answers();
    }
    let mut response = if params.highlight {
        Json(highlighted(&state, query.text(), page.books)).into_response()
    } else {
        Json(page.books).into_response()
    };
    let headers = response.headers_mut();
    headers.insert("x-total-count", HeaderValue::from(page.total));
    if page.total_is_lower_bound {
        headers.insert(
            "x-total-count-lower-bound",
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// How long a description snippet is, in characters.
pub(crate) const SNIPPET_CHARS: usize = 160;

/// The books with a `highlight` object each: `title`, `author` and a `description` snippet as
/// HTML, escaped, the words that matched `q` in `<mark>`.
fn highlighted(state: &WebState, q: &str, books: Vec<Book>) -> Vec<Value> {
    books
        .into_iter()
        .map(|book| {
            let marked = state.search.highlight(q, &book, SNIPPET_CHARS);
            let mut value = serde_json::to_value(&book).unwrap_or(Value::Null);
            if let Value::Object(fields) = &mut value {
                fields.insert(
                    "highlight".to_owned(),
                    serde_json::json!({
                        "title": crate::highlight::html(&marked.title),
                        "author": crate::highlight::html(&marked.author),
                        "description": crate::highlight::html(&marked.description),
                    }),
                );
            }
            value
        })
        .collect()
}

/// `GET /api/suggest?q=`: what the search box offers while a reader types.
#[utoipa::path(get, path = "/api/suggest", tag = "books",
    summary = "Completions for a search box: titles and authors from the search index, popular queries from the trend service",
    params(
        ("q" = Option<String>, Query, description = "What the reader typed so far; the last word is read as a prefix"),
    ),
    responses(
        (status = 200, description = "JSON array of up to 8 `{text, kind}`, best first; `kind` is `popular` (a query readers search now, from the trend service, when it answers within web.remote_timeout_ms), `title` or `author`; empty for an empty `q`. Publishes no event."),
        (status = 400, description = "Bad parameters", body = bookstore_http::ErrorBody),
        (status = 503, description = "The search index is unavailable", body = bookstore_http::ErrorBody),
    ))]
pub async fn suggest(
    State(state): State<WebState>,
    params: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Suggestion>>, ApiError> {
    let Query(params) = params.map_err(|err| ApiError::BadRequest(err.body_text()))?;
    let typed = clean_query(params.get("q").map_or("", String::as_str));
    if typed.is_empty() {
        return Ok(Json(Vec::new()));
    }
    let trends = async {
        match &state.trends {
            Some(remote) => remote.get().await,
            None => None,
        }
    };
    let (found, trends) = tokio::join!(state.search.suggest(&typed, MAX_SUGGESTIONS), trends);
    let mut suggestions = popular(&typed, trends.as_deref().map_or(&[], Vec::as_slice));
    for s in found? {
        if suggestions.len() == MAX_SUGGESTIONS {
            break;
        }
        if !suggestions
            .iter()
            .any(|p| p.text.to_lowercase() == s.text.to_lowercase())
        {
            suggestions.push(s);
        }
    }
    Ok(Json(suggestions))
}

/// At most this many popular queries lead the suggestions.
const MAX_POPULAR: usize = 3;

/// The public trends (already most popular first) whose query starts with what was typed, or has
/// a word that does.
fn popular(typed: &str, trends: &[Trend]) -> Vec<Suggestion> {
    let typed = typed.to_lowercase();
    trends
        .iter()
        .filter(|t| t.public)
        .filter(|t| {
            let query = t.query.to_lowercase();
            query != typed
                && (query.starts_with(&typed)
                    || query
                        .split_whitespace()
                        .any(|word| word.starts_with(typed.as_str())))
        })
        .take(MAX_POPULAR)
        .map(|t| Suggestion {
            text: t.query.clone(),
            kind: SuggestionKind::Popular,
        })
        .collect()
}

fn bad_params(fields: FieldErrors) -> ApiError {
    ApiError::BadRequest(format!("invalid query parameters: {fields}"))
}

/// `GET /api/books/{id}`.
#[utoipa::path(get, path = "/api/books/{id}", tag = "books", summary = "One book",
    params(("id" = i64, Path, description = "The book's id, a positive integer")),
    responses(
        (status = 200, description = "The book `{id, title, author, description}`"),
        (status = 400, description = "The id is not a positive integer", body = bookstore_http::ErrorBody),
        (status = 404, description = "No such book", body = bookstore_http::ErrorBody),
        (status = 503, description = "The database is unavailable", body = bookstore_http::ErrorBody),
    ))]
pub async fn get_book(
    State(state): State<WebState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Book>, ApiError> {
    let id = book_id(id)?;
    state
        .books
        .get(id)
        .await?
        .map(Json)
        .ok_or_else(|| no_such_book(id))
}

/// The `{id}` of a book's path: a positive integer.
fn book_id(
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<BookId, ApiError> {
    let Path(id) = id.map_err(|err| ApiError::BadRequest(err.body_text()))?;
    id.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .map(BookId)
        .ok_or_else(|| {
            ApiError::BadRequest(format!("book id must be a positive integer, got {id:?}"))
        })
}

fn no_such_book(id: BookId) -> ApiError {
    ApiError::NotFound(format!("no book with id {id}"))
}

/// `POST /api/books` with `Authorization: Bearer <web.admin_token>` and a JSON book.
#[utoipa::path(post, path = "/api/books", tag = "books",
    summary = "Add a book (needs web.admin_token); publishes a book.created event through the outbox",
    request_body(content_type = "application/json", description = "`{title, author, published_at, description, isbn}`, all strings; `description` and `isbn` (ISBN-10 or ISBN-13) optional"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The stored book, with its id"),
        (status = 400, description = "The body is not a JSON object", body = bookstore_http::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = bookstore_http::ErrorBody),
        (status = 403, description = "Writes are disabled (no web.admin_token)", body = bookstore_http::ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = bookstore_http::ErrorBody),
        (status = 409, description = "Another book has this ISBN", body = bookstore_http::ErrorBody),
        (status = 415, description = "The body is not JSON", body = bookstore_http::ErrorBody),
        (status = 422, description = "Fields break the rules; `fields` says which", body = bookstore_http::ErrorBody),
        (status = 503, description = "The database is unavailable", body = bookstore_http::ErrorBody),
    ))]
pub async fn create_book(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Book>), ApiError> {
    authorize(&state, &headers)?;
    let book = read_book(&headers, body).await?;
    let created = state.books.create(&book).await?;
    tracing::info!(book.id = %created.id, "book created");
    Ok((StatusCode::CREATED, Json(created)))
}

/// `PUT /api/books/{id}` with `Authorization: Bearer <web.admin_token>` and a JSON book.
#[utoipa::path(put, path = "/api/books/{id}", tag = "books",
    summary = "Replace a book (needs web.admin_token); publishes a book.updated event through the outbox",
    params(("id" = i64, Path, description = "The book's id, a positive integer")),
    request_body(content_type = "application/json", description = "`{title, author, published_at, description, isbn}`, all strings, the same rules as for a new book"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The stored book: the new fields, its id and its creation time"),
        (status = 400, description = "The id is not a positive integer, or the body is not a JSON object", body = bookstore_http::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = bookstore_http::ErrorBody),
        (status = 403, description = "Writes are disabled (no web.admin_token)", body = bookstore_http::ErrorBody),
        (status = 404, description = "No such book", body = bookstore_http::ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = bookstore_http::ErrorBody),
        (status = 409, description = "Another book has this ISBN", body = bookstore_http::ErrorBody),
        (status = 415, description = "The body is not JSON", body = bookstore_http::ErrorBody),
        (status = 422, description = "Fields break the rules; `fields` says which", body = bookstore_http::ErrorBody),
        (status = 503, description = "The database is unavailable", body = bookstore_http::ErrorBody),
    ))]
pub async fn replace_book(
    State(state): State<WebState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Book>, ApiError> {
    authorize(&state, &headers)?;
    let id = book_id(id)?;
    let book = read_book(&headers, body).await?;
    let replaced = state
        .books
        .update(id, &book)
        .await?
        .ok_or_else(|| no_such_book(id))?;
    tracing::info!(book.id = %id, "book replaced");
    Ok(Json(replaced))
}

/// `DELETE /api/books/{id}` with `Authorization: Bearer <web.admin_token>`.
#[utoipa::path(delete, path = "/api/books/{id}", tag = "books",
    summary = "Delete a book (needs web.admin_token); publishes a book.deleted event through the outbox",
    params(("id" = i64, Path, description = "The book's id, a positive integer")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a positive integer", body = bookstore_http::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = bookstore_http::ErrorBody),
        (status = 403, description = "Writes are disabled (no web.admin_token)", body = bookstore_http::ErrorBody),
        (status = 404, description = "No such book", body = bookstore_http::ErrorBody),
        (status = 503, description = "The database is unavailable", body = bookstore_http::ErrorBody),
    ))]
pub async fn delete_book(
    State(state): State<WebState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    let id = book_id(id)?;
    if !state.books.delete(id).await? {
        return Err(no_such_book(id));
    }
    tracing::info!(book.id = %id, "book deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/readers/{uid}` with `Authorization: Bearer <web.admin_token>`.
#[utoipa::path(delete, path = "/api/readers/{uid}", tag = "readers",
    summary = "Forget a reader (needs web.admin_token); publishes a reader.forgotten event on the search topic",
    params(("uid" = String, Path, description = "The reader's id as search events carry it (`user_id`: the visitor id of the signed `uid` cookie); 1 to 64 bytes, no control characters")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The event log has the reader.forgotten event; the trend and recommendation services delete what they hold about the reader as they read it: `{\"uid\": \"...\", \"status\": \"forgetting\"}`"),
        (status = 400, description = "The id is empty, longer than 64 bytes or holds control characters", body = bookstore_http::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = bookstore_http::ErrorBody),
        (status = 403, description = "Writes are disabled (no web.admin_token)", body = bookstore_http::ErrorBody),
        (status = 503, description = "The event log did not take the event (down, slow, its queue full, or it refused it); try again", body = bookstore_http::ErrorBody),
    ))]
pub async fn forget_reader(
    State(state): State<WebState>,
    uid: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&state, &headers)?;
    let Path(uid) = uid.map_err(|err| ApiError::BadRequest(err.body_text()))?;
    if let Some(problem) = invalid_reader_id(&uid) {
        return Err(ApiError::BadRequest(problem));
    }
    publish_forgotten(&state, &uid).await?;
    state.expect_new_answers();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"uid": uid, "status": "forgetting"})),
    ))
}

/// `DELETE /api/readers/` (no id; not documented): the same token, then a 400 that says the id is
/// missing rather than the fallback's "no route".
pub async fn forget_no_reader(
    State(state): State<WebState>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers)?;
    Err(ApiError::BadRequest(
        "the reader id is empty: DELETE /api/readers/{uid}".to_owned(),
    ))
}

/// A JSON book from a request body: JSON by its content type, at most
/// [`MAX_BODY_BYTES`], every field by the rules.
async fn read_book(headers: &HeaderMap, body: Body) -> Result<NewBook, ApiError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| {
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::TooLarge)?;
    parse_new_book(&bytes)
}

/// Checks the bearer token in constant time.
fn authorize(state: &WebState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = state
        .admin_token
        .as_ref()
        .map(|t| t.expose_secret().as_bytes())
        .filter(|t| !t.is_empty())
    else {
        return Err(ApiError::WritesDisabled);
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if token_matches(given.as_bytes(), expected) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme's case does not matter
/// (RFC 9110: `bearer`, `BEARER`).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether `given` equals `expected`, in a time that depends on neither their contents nor the
/// length of `given`: every byte of `expected` is compared (against a zero past the end of
/// `given`), so a wrong token, a prefix of the right one or no token at all take as long.
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut same = given.len().ct_eq(&expected.len());
    for (i, byte) in expected.iter().enumerate() {
        same &= given.get(i).copied().unwrap_or(0).ct_eq(byte);
    }
    bool::from(same)
}

/// A JSON object with the book's fields, all strings; every problem is reported by field.
fn parse_new_book(bytes: &[u8]) -> Result<NewBook, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|err| ApiError::BadRequest(format!("the body is not valid JSON: {err}")))?;
    let Value::Object(object) = value else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".to_owned(),
        ));
    };
    let mut errors = FieldErrors::default();
    let mut input = NewBookInput::default();
    for (key, value) in object {
        let slot = match key.as_str() {
            "title" => &mut input.title,
            "author" => &mut input.author,
            "published_at" => &mut input.published_at,
            "description" => &mut input.description,
            "isbn" => &mut input.isbn,
            _ => {
                errors.add(
                    key,
                    format!(
                        "unknown field; expected {}",
                        NewBookInput::FIELDS.join(", ")
                    ),
                );
                continue;
            }
        };
        match value {
            Value::String(text) => *slot = Some(text),
            Value::Null => {}
            _ => errors.add(key, "must be a string"),
        }
    }
    match NewBook::parse(input) {
        Ok(book) if errors.is_empty() => Ok(book),
        Ok(_) => Err(ApiError::Invalid(errors)),
        Err(invalid) => {
            for (field, message) in invalid.0.iter() {
                errors.add(field, message);
            }
            Err(ApiError::Invalid(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = b"s3cret-token";
        assert!(token_matches(b"s3cret-token", token));
        for wrong in [
            &b""[..],
            b"s3cret",
            b"s3cret-token ",
            b"s3cret-tokem",
            b"S3cret-token",
            b"s3cret-token-and-more",
            b"\0\0\0\0\0\0\0\0\0\0\0\0",
        ] {
            assert!(!token_matches(wrong, token), "{wrong:?}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_matched_whatever_its_case() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER  t0k ", "bEaReR t0k"] {
            assert_eq!(bearer_token(value), Some("t0k"), "{value:?}");
        }
        for value in ["Basic dTpw", "Bearer", "Bearert0k", "t0k"] {
            assert_ne!(bearer_token(value), Some("t0k"), "{value:?}");
        }
    }

    fn fields(body: &str) -> FieldErrors {
        match parse_new_book(body.as_bytes()) {
            Err(ApiError::Invalid(fields)) => fields,
            other => panic!("expected invalid fields, got {other:?}"),
        }
    }

    #[test]
    fn a_good_body_parses() {
        let book = parse_new_book(
            br#"{"title":"Emma","author":"Jane Austen","published_at":"1815-12-23","description":null}"#,
        )
        .unwrap();
        assert_eq!(book.title(), "Emma");
    }

    #[test]
    fn unknown_wrong_typed_and_missing_fields_are_all_reported() {
        let f = fields(r#"{"title": 5, "price": "x", "isbn": "x", "published_at": "1815-12-23"}"#);
        assert!(f.get("title").unwrap().contains("string"));
        assert!(f.get("price").unwrap().contains("unknown"));
        assert!(f.get("isbn").unwrap().contains("ISBN-10 or ISBN-13"));
        assert!(f.get("author").is_some());
    }

    #[test]
    fn non_objects_and_broken_json_are_bad_requests() {
        for body in ["[1,2]", "\"x\"", "{", "", "nul"] {
            assert!(
                matches!(
                    parse_new_book(body.as_bytes()),
                    Err(ApiError::BadRequest(_))
                ),
                "{body}"
            );
        }
    }
}
