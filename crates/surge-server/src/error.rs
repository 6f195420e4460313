//! Every failure leaves as `{"error": {"code", "message"}}` with one of a
//! small, deliberate set of status codes (API.md). 5xx bodies say nothing
//! internal; the cause goes to the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use surge_domain::StoreError;
use surge_domain::catalog::CatalogError;
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

/// Declares [`ErrorCode`] from one table: each code, its status and its
/// name in the body.
macro_rules! error_codes {
    ($($code:ident => $status:ident, $name:literal;)+) => {
        /// Every error code the API answers with, and its one status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($code,)+
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$code,)+];

            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$code => StatusCode::$status,)+
                }
            }

            /// The code as the body carries it (`docs/api.md`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$code => $name,)+
                }
            }
        }
    };
}

error_codes! {
    BadRequest => BAD_REQUEST, "bad_request";
    Unauthorized => UNAUTHORIZED, "unauthorized";
    Forbidden => FORBIDDEN, "forbidden";
    NotFound => NOT_FOUND, "not_found";
    MethodNotAllowed => METHOD_NOT_ALLOWED, "method_not_allowed";
    PayloadTooLarge => PAYLOAD_TOO_LARGE, "payload_too_large";
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type";
    DuplicateSku => CONFLICT, "duplicate_sku";
    SoldOut => CONFLICT, "sold_out";
    LimitExceeded => CONFLICT, "limit_exceeded";
    InsufficientStock => CONFLICT, "insufficient_stock";
    BadSignature => BAD_REQUEST, "bad_signature";
    RefundExceedsPayment => CONFLICT, "refund_exceeds_payment";
    NotActive => UNPROCESSABLE_ENTITY, "not_active";
    InvalidState => UNPROCESSABLE_ENTITY, "invalid_state";
    RateLimited => TOO_MANY_REQUESTS, "rate_limited";
    Internal => INTERNAL_SERVER_ERROR, "internal";
    Unavailable => SERVICE_UNAVAILABLE, "unavailable";
    Overloaded => SERVICE_UNAVAILABLE, "overloaded";
    Degraded => SERVICE_UNAVAILABLE, "degraded";
    NotReady => SERVICE_UNAVAILABLE, "not_ready";
    DeadlineExceeded => GATEWAY_TIMEOUT, "deadline_exceeded";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds, sent as `Retry-After` on 429 and 503.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after_secs: None }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UnsupportedMediaType, message)
    }

    /// A dependency is down; the cause is logged, the client told to retry.
    pub fn unavailable(cause: &StoreError) -> Self {
        tracing::error!(error = %cause, "dependency unavailable");
        Self {
            retry_after_secs: Some(1),
            ..Self::new(ErrorCode::Unavailable, "a dependency is unavailable, retry later")
        }
    }

    /// The node shed the call to stay responsive.
    pub fn overloaded(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(ErrorCode::Overloaded, "the service is overloaded; retry later")
        }
    }

    /// A feature is switched to its fallback (by hand or by a breaker).
    pub fn degraded(message: impl Into<String>) -> Self {
        Self { retry_after_secs: Some(5), ..Self::new(ErrorCode::Degraded, message) }
    }

    pub fn deadline_exceeded() -> Self {
        Self::new(ErrorCode::DeadlineExceeded, "the request's deadline passed")
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }
}

/// Every error's body: `{"error": {"code", "message"}}`. Clients match on
/// `code`; `message` is for people.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody<'a> {
    #[schema(inline)]
    error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
struct ErrorDetail<'a> {
    #[schema(schema_with = code_schema)]
    code: &'a str,
    message: &'a str,
}

/// `code` is one of [`ErrorCode::ALL`]: the document lists them from the
/// same table.
fn code_schema() -> Object {
    let codes = ErrorCode::ALL.iter().map(|code| code.as_str());
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(codes)).build()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.as_str(), message: &self.message } };
        let mut response = (self.code.status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A refused input is the client's to fix: 400, its field and rule as the
/// message.
impl From<surge_domain::InvalidInput> for ApiError {
    fn from(refused: surge_domain::InvalidInput) -> Self {
        ApiError::bad_request(refused.to_string())
    }
}

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::NotFound => ApiError::not_found("no such product"),
            CatalogError::Forbidden(why) => ApiError::forbidden(why),
            CatalogError::DuplicateSku => {
                ApiError::new(ErrorCode::DuplicateSku, "this merchant already has a product with that sku")
            }
            CatalogError::Invalid(refused) => refused.into(),
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
            SaleError::Invalid(refused) => refused.into(),
            error @ SaleError::InsufficientStock => ApiError::new(ErrorCode::InsufficientStock, error.to_string()),
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
            IntakeError::NotActive => ApiError::new(ErrorCode::NotActive, "the flash sale is not active"),
            IntakeError::SoldOut => ApiError::new(ErrorCode::SoldOut, "the flash sale is sold out"),
            IntakeError::LimitExceeded => ApiError::new(ErrorCode::LimitExceeded, "this would pass the per-user limit"),
            error @ (IntakeError::KeyContended | IntakeError::CountersRebuilding) => {
                tracing::warn!(%error, "intake refused for now");
                Self { retry_after_secs: Some(1), ..ApiError::new(ErrorCode::Unavailable, error.to_string()) }
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
            error @ (OrderError::IllegalTransition { .. }
            | OrderError::PaymentWindowClosed
            | OrderError::ChangedMeanwhile) => ApiError::new(ErrorCode::InvalidState, error.to_string()),
            OrderError::Unavailable(cause) => ApiError::unavailable(&cause),
        }
    }
}

impl From<surge_domain::order::CheckoutError> for ApiError {
    fn from(error: surge_domain::order::CheckoutError) -> Self {
        use surge_domain::order::CheckoutError;
        match error {
            error @ CheckoutError::Forbidden => ApiError::forbidden(error.to_string()),
            CheckoutError::Invalid(refused) => refused.into(),
            error @ CheckoutError::InsufficientStock(_) => {
                ApiError::new(ErrorCode::InsufficientStock, format!("{error}; nothing was reserved"))
            }
            CheckoutError::Unavailable(cause) => ApiError::unavailable(&cause),
        }
    }
}

impl From<surge_domain::payment::PaymentError> for ApiError {
    fn from(error: surge_domain::payment::PaymentError) -> Self {
        use surge_domain::payment::PaymentError;
        match error {
            error @ PaymentError::NotFound(_) => ApiError::not_found(error.to_string()),
            PaymentError::Forbidden(why) => ApiError::forbidden(why),
            error @ (PaymentError::InvalidState(_)
            | PaymentError::PaymentWindowClosed
            | PaymentError::ChangedMeanwhile) => ApiError::new(ErrorCode::InvalidState, error.to_string()),
            PaymentError::BadSignature(why) => ApiError::new(ErrorCode::BadSignature, why),
            error @ PaymentError::RefundExceedsPayment { .. } => {
                ApiError::new(ErrorCode::RefundExceedsPayment, error.to_string())
            }
            PaymentError::Invalid(refused) => refused.into(),
            PaymentError::MalformedCallback(why) => ApiError::bad_request(why),
            PaymentError::Unavailable(cause) => ApiError::unavailable(&cause),
        }
    }
}

impl From<surge_domain::settlement::SettlementError> for ApiError {
    fn from(error: surge_domain::settlement::SettlementError) -> Self {
        use surge_domain::settlement::SettlementError;
        match error {
            SettlementError::Forbidden(why) => ApiError::forbidden(why),
            SettlementError::Unavailable(cause) => ApiError::unavailable(&cause),
        }
    }
}

impl ApiError {
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(ErrorCode::RateLimited, "too many requests; retry later")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clients match on the code: each is documented, and one code never
    /// answers with two statuses or spells another's name.
    #[test]
    fn every_error_code_is_documented_and_has_one_error_status() {
        let documents = [include_str!("../../../docs/api.md"), include_str!("../../../README.md")].concat();
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "{name} twice");
            assert!(code.status().is_client_error() || code.status().is_server_error(), "{name}");
            assert!(documents.contains(name), "{name} is in neither docs/api.md nor the README");
        }
    }
}
