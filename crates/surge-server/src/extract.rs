//! Extractors that turn every malformed input into an `ApiError` with the
//! documented status, instead of axum's plain-text rejections.
//!
//! JSON bodies are strict: request types use `deny_unknown_fields`, so an
//! unknown field is a 400, not something silently dropped.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use surge_domain::IdempotencyKey;

use crate::error::ApiError;

/// `Json<T>` with API errors: 400 for bad JSON or wrong types, 413 for an
/// oversize body, 415 for a missing or wrong content type.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large("request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::unsupported_media_type("send the body as Content-Type: application/json")
        }
        _ => ApiError::bad_request(rejection.body_text()),
    }
}

/// `Query<T>` with API errors: 400 for anything it can't parse.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection: QueryRejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// A path segment parsed with `FromStr` (ids): 400 when it isn't one.
pub struct PathId<T>(pub T);

impl<S, T> FromRequestParts<S> for PathId<T>
where
    T: std::str::FromStr + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_request("malformed path"))?;
        raw.parse().map(Self).map_err(|_| ApiError::bad_request("an id is a string of digits"))
    }
}

/// `Idempotency-Key`: 1–128 visible ASCII characters, when present.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    // A header that is not text is no key either: the same refusal.
    let raw = value.to_str().unwrap_or_default();
    Ok(Some(IdempotencyKey::parse(raw)?))
}

/// For an optional body field: absent is `None`, `null` is a 400 (`invalid
/// type: null`), as the document types the field without `null`. Use with
/// `#[serde(default, deserialize_with = "present")]`.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "present")]
        n: Option<i64>,
    }

    #[test]
    fn an_optional_field_may_be_absent_but_not_null() {
        assert_eq!(serde_json::from_str::<Body>("{}").map(|b| b.n).ok(), Some(None));
        assert_eq!(serde_json::from_str::<Body>(r#"{"n": 5}"#).map(|b| b.n).ok(), Some(Some(5)));
        assert!(serde_json::from_str::<Body>(r#"{"n": null}"#).is_err());
    }
}
