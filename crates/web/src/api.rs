//! `/api/books`: list and search, read one, create one.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bookstore_domain::{Book, BookId, BookQuery, FieldErrors, NewBook, NewBookInput};
use secrecy::ExposeSecret;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::events::publish_search;
use crate::params::ListParams;
use crate::visitor::Visitor;
use crate::{MAX_BODY_BYTES, WebState};

/// `GET /api/books?q=&o=&limit=`: a plain JSON array of books, best match first, with the number
/// of matching books in `X-Total-Count`.
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
    let page = state.books.search(&query).await?;
    // An API call names its user only through a `uid` cookie it sent.
    let user = (!visitor.is_new).then_some(visitor.uid);
    publish_search(&state, user, &params.q, params.offset, &page.books);
    let mut response = Json(page.books).into_response();
    response
        .headers_mut()
        .insert("x-total-count", HeaderValue::from(page.total));
    Ok(response)
}

fn bad_params(fields: FieldErrors) -> ApiError {
    ApiError::BadRequest(format!("invalid query parameters: {fields}"))
}

/// `GET /api/books/{id}`.
pub async fn get_book(
    State(state): State<WebState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Book>, ApiError> {
    let Path(id) = id.map_err(|err| ApiError::BadRequest(err.body_text()))?;
    let id = id.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::BadRequest(format!("book id must be a positive integer, got {id:?}"))
    })?;
    state
        .books
        .get(BookId(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no book with id {id}")))
}

/// `POST /api/books` with `Authorization: Bearer <web.admin_token>` and a JSON book.
pub async fn create_book(
    State(state): State<WebState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Book>), ApiError> {
    authorize(&state, &headers)?;
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
    let book = parse_new_book(&bytes)?;
    let created = state.books.create(&book).await?;
    tracing::info!(book.id = %created.id, "book created");
    Ok((StatusCode::CREATED, Json(created)))
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
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected)) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
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
        let f = fields(r#"{"title": 5, "isbn": "x", "published_at": "1815-12-23"}"#);
        assert!(f.get("title").unwrap().contains("string"));
        assert!(f.get("isbn").unwrap().contains("unknown"));
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
