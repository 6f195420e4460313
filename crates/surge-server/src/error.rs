//! Every failure leaves as `{"error": {"code", "message"}}` with one of a
//! small, deliberate set of status codes (API.md). 5xx bodies say nothing
//! internal; the cause goes to the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use surge_domain::StoreError;
use surge_domain::catalog::CatalogError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, sent as `Retry-After` on 429 and 503.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_secs: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }

    /// A dependency is down; the cause is logged, the client told to retry.
    pub fn unavailable(cause: &StoreError) -> Self {
        tracing::error!(error = %cause, "dependency unavailable");
        Self {
            retry_after_secs: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "a dependency is unavailable, retry later")
        }
    }

    /// The node shed the call to stay responsive.
    pub fn overloaded(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the service is overloaded; retry later")
        }
    }

    /// A feature is switched to its fallback (by hand or by a breaker).
    pub fn degraded(message: impl Into<String>) -> Self {
        Self { retry_after_secs: Some(5), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "degraded", message) }
    }

    pub fn deadline_exceeded() -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded", "the request's deadline passed")
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body { error: Inner { code: self.code, message: &self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::NotFound => ApiError::not_found("no such product"),
            CatalogError::Forbidden(why) => ApiError::forbidden(why),
            CatalogError::DuplicateSku => ApiError::new(
                StatusCode::CONFLICT,
                "duplicate_sku",
                "this merchant already has a product with that sku",
            ),
            CatalogError::Invalid(why) => ApiError::bad_request(why),
            CatalogError::NotCached => {
                ApiError::degraded("product details are served from the cache only; retry later")
            }
            CatalogError::Unavailable(cause) => ApiError::unavailable(&cause),
        }
    }
}

impl From<surge_domain::flashsale::SaleError> for ApiError {
    fn from(error: surge_domain::flashsale::SaleError) -> Self {
        use surge_domain::flashsale::SaleError;
        match error {
            SaleError::Forbidden(why) => ApiError::forbidden(why),
            SaleError::NotFound(what) => ApiError::not_found(format!("no such {what}")),
            SaleError::Invalid(why) => ApiError::bad_request(why),
            SaleError::Unavailable(cause) => ApiError::unavailable(&cause),
        }
    }
}

impl From<surge_domain::flashsale::IntakeError> for ApiError {
    fn from(error: surge_domain::flashsale::IntakeError) -> Self {
        use surge_domain::flashsale::IntakeError;
        match error {
            IntakeError::Forbidden => ApiError::forbidden("only customers place orders"),
            IntakeError::NotFound => ApiError::not_found("no such flash sale"),
            IntakeError::NotActive => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_active", "the flash sale is not active")
            }
            IntakeError::SoldOut => ApiError::new(StatusCode::CONFLICT, "sold_out", "the flash sale is sold out"),
            IntakeError::LimitExceeded => {
                ApiError::new(StatusCode::CONFLICT, "limit_exceeded", "this would pass the per-user limit")
            }
            IntakeError::Unavailable(cause) => ApiError::unavailable(&cause),
        }
    }
}

impl From<surge_domain::order::OrderError> for ApiError {
    fn from(error: surge_domain::order::OrderError) -> Self {
        use surge_domain::order::OrderError;
        match error {
            OrderError::NotFound => ApiError::not_found("no such order"),
            OrderError::Forbidden(why) => ApiError::forbidden(why),
            OrderError::InvalidState(why) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_state", why),
            OrderError::Unavailable(cause) => ApiError::unavailable(&cause),
        }
    }
}

impl ApiError {
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; retry later")
        }
    }
}
