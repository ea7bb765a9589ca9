//! What the routes take from a request, shared so that every route refuses a bad request with
//! our `{"error": "…"}` body and the same sentence: a JSON body that may be empty ([`JsonBody`]),
//! a record's id in the path ([`Id`]) or an incident's step ([`StepIds`]), a query string
//! ([`ApiQuery`]), and paging ([`Page`]: `limit` and `cursor`, newest first).

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;

/// A body type's expected shape, as the 400 that refuses a body that does not parse says it.
pub trait BodyShape {
    /// E.g. `{"comment": "…"}`.
    const SHAPE: &'static str;
}

/// A JSON request body of `T`; an empty body (or only whitespace) is `T::default()`. The
/// `Content-Type` is not checked: clients post these bodies without one.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: BodyShape + Default + DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::rejected(e.status(), e.body_text()))?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        serde_json::from_slice(&body)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("body must be {}: {e}", T::SHAPE)))
    }
}

/// What a kind of record is called in the answers about it ("no restore test with id 7").
pub trait Resource {
    const WHAT: &'static str;
}

/// The id of an `R` in the path (`/…/{id}`).
pub struct Id<R>(pub i64, PhantomData<R>);

impl<R> Id<R> {
    /// The id.
    pub fn get(&self) -> i64 {
        self.0
    }
}

impl<R: Resource> Id<R> {
    /// The record with this id, or a 404 naming it.
    pub fn found<T>(&self, record: Option<T>) -> Result<Json<T>, ApiError> {
        record.map(Json).ok_or_else(|| self.not_found())
    }

    /// The 404 for this id.
    pub fn not_found(&self) -> ApiError {
        ApiError::NotFound(format!("no {} with id {}", R::WHAT, self.0))
    }
}

impl<S: Send + Sync, R: Resource> FromRequestParts<S> for Id<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<i64>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest(format!("{} id must be a whole number", R::WHAT)))?;
        Ok(Id(id, PhantomData))
    }
}

/// An incident's step in the path (`/incidents/{id}/actions/{action_id}/…`).
pub struct StepIds {
    pub incident_id: i64,
    pub step_id: i64,
}

impl<S: Send + Sync> FromRequestParts<S> for StepIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((incident_id, step_id)) = Path::<(i64, i64)>::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                ApiError::BadRequest("incident and action ids must be whole numbers".into())
            })?;
        Ok(StepIds {
            incident_id,
            step_id,
        })
    }
}

/// The query string as `T`; one that does not parse is a 400 saying why.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(q) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        Ok(ApiQuery(q))
    }
}

/// Default page size of every list.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page of the restore test and manual backup lists (see [`PageParams`]).
const MAX_LIMIT: u32 = 200;

/// Paging of a list that has no other query parameter.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

impl PageParams {
    /// The page these parameters ask for.
    pub fn page(&self) -> Result<Page, ApiError> {
        Page::new(self.limit, self.cursor.as_deref(), MAX_LIMIT)
    }
}

/// One page of a list, newest first: at most `limit` records with ids below `before`. Pages
/// are fetched one record longer than asked: the extra one says whether another page follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only ids below this one (the cursor); `None` for the first page.
    pub before: Option<i64>,
    pub limit: u32,
}

impl Page {
    /// Checks `limit` (1 to `max`, default [`DEFAULT_LIMIT`]) and `cursor`.
    pub fn new(limit: Option<u32>, cursor: Option<&str>, max: u32) -> Result<Self, ApiError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=max).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {max}"
            )));
        }
        let before = cursor.map(parse_cursor).transpose()?;
        Ok(Page { before, limit })
    }

    /// How many records to fetch: one more than the page holds.
    pub fn fetch(&self) -> u32 {
        self.limit + 1
    }

    /// Trims `items` (fetched with [`Page::fetch`]) to the page and says where the next one
    /// starts: the id of its last record, or `None` on the last page.
    pub fn next_cursor<T>(&self, items: &mut Vec<T>, id: impl Fn(&T) -> i64) -> Option<String> {
        if items.len() > self.limit as usize {
            items.truncate(self.limit as usize);
            items.last().map(|t| id(t).to_string())
        } else {
            None
        }
    }
}

/// A page cursor: an id, written as the API writes it (1 to 18 digits, no sign, no leading 0).
fn parse_cursor(c: &str) -> Result<i64, ApiError> {
    let well_formed =
        (1..=18).contains(&c.len()) && !c.starts_with('0') && c.bytes().all(|b| b.is_ascii_digit());
    well_formed
        .then(|| c.parse::<i64>().ok())
        .flatten()
        .ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_checks_its_limit_and_cursor() {
        assert_eq!(
            Page::new(None, None, 200).ok(),
            Some(Page {
                before: None,
                limit: 50
            })
        );
        assert_eq!(
            Page::new(Some(7), Some("42"), 200).ok(),
            Some(Page {
                before: Some(42),
                limit: 7
            })
        );
        for bad in [Some(0), Some(201)] {
            let e = Page::new(bad, None, 200).unwrap_err();
            assert_eq!(e.to_string(), "limit must be between 1 and 200");
        }
        for bad in ["0", "07", "-1", "1234567890123456789", "x"] {
            let e = Page::new(None, Some(bad), 200).unwrap_err();
            assert_eq!(e.to_string(), "invalid cursor", "{bad}");
        }
    }

    #[test]
    fn a_page_fetched_one_longer_says_where_the_next_starts() {
        let page = Page::new(Some(2), None, 200).unwrap();
        let mut items = vec![9, 8, 7];
        assert_eq!(page.fetch(), 3);
        assert_eq!(page.next_cursor(&mut items, |i| *i), Some("8".into()));
        assert_eq!(items, [9, 8]);
        let mut last = vec![6, 5];
        assert_eq!(page.next_cursor(&mut last, |i| *i), None);
        assert_eq!(last, [6, 5]);
    }
}
