//! After-sale, the reverse flow: a buyer's return of a delivered order, the
//! merchant's decision and inspection, and the refund that follows.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use surge_domain::aftersale::{AfterSaleError, MAX_REASON, Return};
use surge_domain::{Cents, OrderId, RefundId, ReturnId};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::extract::{ApiJson, PathId, idempotency_key};
use crate::routes::OverloadGuards;
use crate::routes::wire::{Id, IdempotencyKey};
use crate::state::AppState;

const TAG: &str = "after-sale";

/// Returns move money and stock: core work, as the forward flow is.
pub fn routes(guards: &OverloadGuards) -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(request_return).map(|route| guards.core(route)))
        .routes(routes!(get_return).map(|route| guards.core(route)))
        .routes(routes!(approve).map(|route| guards.core(route)))
        .routes(routes!(reject).map(|route| guards.core(route)))
        .routes(routes!(inspect).map(|route| guards.core(route)))
}

impl From<AfterSaleError> for ApiError {
    fn from(error: AfterSaleError) -> Self {
        match error {
            error @ AfterSaleError::NotFound(_) => ApiError::not_found(error.to_string()),
            AfterSaleError::Forbidden(why) => ApiError::forbidden(why),
            error @ (AfterSaleError::OrderNotReturnable(_)
            | AfterSaleError::WindowClosed
            | AfterSaleError::KeyOfAnotherOrder
            | AfterSaleError::NotNow(_)
            | AfterSaleError::ChangedMeanwhile) => ApiError::new(ErrorCode::InvalidState, error.to_string()),
            AfterSaleError::Order(refused) => refused.into(),
            AfterSaleError::Shipment(refused) => refused.into(),
            error @ AfterSaleError::RefundExceedsPayment { .. } => {
                ApiError::new(ErrorCode::RefundExceedsPayment, error.to_string())
            }
            AfterSaleError::Invalid(refused) => refused.into(),
            AfterSaleError::Unavailable(cause) => ApiError::unavailable(&cause),
        }
    }
}

const _: () = assert!(MAX_REASON == 200, "the schemas below say so");

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReturnRequest {
    #[schema(min_length = 1, max_length = 200)]
    reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InspectRequest {
    /// Did the parcel pass inspection?
    passed: bool,
    /// What to refund when it passed (1 to the order's amount); 0 or
    /// absent when it failed.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    refund_cents: i64,
}

/// A buyer's return of a delivered order.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Return)]
struct ReturnBody {
    #[schema(value_type = Id)]
    id: ReturnId,
    #[schema(value_type = Id)]
    order_id: OrderId,
    /// `requested`, `rejected`, `approved`, `received`, `refunding`,
    /// `refunded` or `inspection_failed`.
    status: String,
    reason: String,
    /// The reverse shipment's waybill, once approved.
    #[schema(required = true)]
    waybill: Option<String>,
    /// What the inspection passed for refunding.
    #[schema(required = true)]
    refund_cents: Option<i64>,
    /// The refund asked for last.
    #[schema(value_type = Option<Id>, required = true)]
    refund_id: Option<RefundId>,
    /// Refunds asked for that did not go through (each is asked again).
    refund_attempts: u32,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<Return> for ReturnBody {
    fn from(found: Return) -> Self {
        Self {
            status: found.status.as_str().to_owned(),
            id: found.id,
            order_id: found.order_id,
            reason: found.reason,
            waybill: found.waybill,
            refund_cents: found.refund_cents,
            refund_id: found.refund_id,
            refund_attempts: found.refund_attempts,
            created_at: found.created_at,
            updated_at: found.updated_at,
        }
    }
}

/// The buyer asks to return a delivered order, within `returns.window` of delivery (buyer)
#[utoipa::path(post, path = "/v1/orders/{id}/returns", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path), IdempotencyKey), request_body = ReturnRequest,
    responses(
        (status = 201, description = "the return, `requested` (or `approved` under the auto-approve rule); a \
            repeated Idempotency-Key returns the first", body = ReturnBody),
        (status = 400, description = "bad id or reason", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "not the buyer", body = ErrorBody),
        (status = 404, description = "no such order, or someone else's", body = ErrorBody),
        (status = 422, description = "invalid_state: not delivered, outside the window, or a return is open",
            body = ErrorBody),
    ),
)]
async fn request_return(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(order): PathId<OrderId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ReturnRequest>,
) -> Result<(StatusCode, Json<ReturnBody>), ApiError> {
    let key = idempotency_key(&headers)?;
    let asked = state.after_sale.request(&actor, order, &body.reason, key.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(asked.into())))
}

/// A return (its buyer, its merchant, admin)
#[utoipa::path(get, path = "/v1/returns/{id}", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path)),
    responses(
        (status = 200, description = "the return", body = ReturnBody),
        (status = 400, description = "bad id", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such return, or someone else's", body = ErrorBody),
    ),
)]
async fn get_return(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<ReturnId>,
) -> Result<Json<ReturnBody>, ApiError> {
    Ok(Json(state.after_sale.get(&actor, id).await?.into()))
}

/// Approves a requested return: a reverse shipment goes to a courier (its merchant, admin)
#[utoipa::path(post, path = "/v1/returns/{id}/approve", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path)),
    responses(
        (status = 200, description = "the return, `approved`, with its reverse waybill", body = ReturnBody),
        (status = 400, description = "bad id", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the buyer", body = ErrorBody),
        (status = 404, description = "no such return, or another merchant's", body = ErrorBody),
        (status = 422, description = "invalid_state: decided already", body = ErrorBody),
    ),
)]
async fn approve(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<ReturnId>,
) -> Result<Json<ReturnBody>, ApiError> {
    Ok(Json(state.after_sale.approve(&actor, id).await?.into()))
}

/// Rejects a requested return: the order is `DELIVERED` again (its merchant, admin)
#[utoipa::path(post, path = "/v1/returns/{id}/reject", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path)),
    responses(
        (status = 200, description = "the return, `rejected`", body = ReturnBody),
        (status = 400, description = "bad id", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "the buyer", body = ErrorBody),
        (status = 404, description = "no such return, or another merchant's", body = ErrorBody),
        (status = 422, description = "invalid_state: decided already", body = ErrorBody),
    ),
)]
async fn reject(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<ReturnId>,
) -> Result<Json<ReturnBody>, ApiError> {
    Ok(Json(state.after_sale.reject(&actor, id).await?.into()))
}

/// Inspects a returned parcel at the warehouse: passed → refund and stock back; failed → back to the buyer (its merchant)
#[utoipa::path(post, path = "/v1/returns/{id}/inspect", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path)), request_body = InspectRequest,
    responses(
        (status = 200, description = "the return, `refunding` (the refund follows) or `inspection_failed`",
            body = ReturnBody),
        (status = 400, description = "bad id or refund_cents", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "not the order's merchant", body = ErrorBody),
        (status = 404, description = "no such return, or another merchant's", body = ErrorBody),
        (status = 409, description = "refund_exceeds_payment: more than the payment can still refund",
            body = ErrorBody),
        (status = 422, description = "invalid_state: not received yet, or inspected already", body = ErrorBody),
    ),
)]
async fn inspect(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<ReturnId>,
    ApiJson(body): ApiJson<InspectRequest>,
) -> Result<Json<ReturnBody>, ApiError> {
    let cents = Cents::parse("refund_cents", body.refund_cents)?;
    Ok(Json(state.after_sale.inspect(&actor, id, body.passed, cents).await?.into()))
}
