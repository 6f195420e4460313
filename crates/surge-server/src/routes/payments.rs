//! Payment endpoints (API.md, "Payment and settlement"): open a payment of
//! an order, read it, and the providers' signed callbacks.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use surge_domain::payment::{Payment, PaymentStatus, Refund};
use surge_domain::{Cents, MerchantId, OrderId, PaymentId, RefundId, UserId};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, PathId, idempotency_key};
use crate::routes::OverloadGuards;
use crate::routes::wire::{Id, IdempotencyKey};
use crate::state::AppState;

const TAG: &str = "payments";

/// The header a provider signs its callbacks with.
pub const SIGNATURE_HEADER: &str = "surge-signature";

/// Money moves: all core work.
pub fn routes(guards: &OverloadGuards) -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(start_payment).map(|route| guards.core(route)))
        .routes(routes!(get_payment).map(|route| guards.core(route)))
        .routes(routes!(provider_callback).map(|route| guards.core(route)))
        .routes(routes!(refund_order).map(|route| guards.core(route)))
}

/// A refund of part or all of an order's captured payment.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Refund)]
struct RefundBody {
    #[schema(value_type = Id)]
    id: RefundId,
    #[schema(value_type = Id)]
    payment_id: PaymentId,
    #[schema(value_type = Id)]
    order_id: OrderId,
    amount_cents: i64,
    reason: String,
    status: StatusBody,
    provider_ref: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<Refund> for RefundBody {
    fn from(refund: Refund) -> Self {
        let Refund {
            id,
            payment_id,
            order_id,
            merchant_id: _,
            amount_cents,
            reason,
            status,
            provider: _,
            provider_ref,
            created_at,
            updated_at,
        } = refund;
        let status = StatusBody::from(status);
        RefundBody { id, payment_id, order_id, amount_cents, reason, status, provider_ref, created_at, updated_at }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewRefund)]
struct RefundRequest {
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    amount_cents: i64,
    #[schema(min_length = 1, max_length = 200)]
    reason: String,
}

/// A payment of an order with a provider.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Payment)]
struct PaymentBody {
    #[schema(value_type = Id)]
    id: PaymentId,
    #[schema(value_type = Id)]
    order_id: OrderId,
    #[schema(value_type = Id)]
    user_id: UserId,
    #[schema(value_type = Id)]
    merchant_id: MerchantId,
    amount_cents: i64,
    /// The platform's share of `amount_cents`.
    commission_cents: i64,
    /// Refunds pending or succeeded.
    refunded_cents: i64,
    status: StatusBody,
    provider: String,
    provider_ref: String,
    pay_url: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = PaymentStatus)]
enum StatusBody {
    Pending,
    Succeeded,
    Failed,
}

impl From<PaymentStatus> for StatusBody {
    fn from(status: PaymentStatus) -> Self {
        match status {
            PaymentStatus::Pending => StatusBody::Pending,
            PaymentStatus::Succeeded => StatusBody::Succeeded,
            PaymentStatus::Failed => StatusBody::Failed,
        }
    }
}

impl From<Payment> for PaymentBody {
    fn from(payment: Payment) -> Self {
        let Payment {
            id,
            order_id,
            user_id,
            merchant_id,
            amount_cents,
            commission_cents,
            refunded_cents,
            status,
            provider,
            provider_ref,
            pay_url,
            created_at,
            updated_at,
        } = payment;
        let status = StatusBody::from(status);
        PaymentBody {
            id,
            order_id,
            user_id,
            merchant_id,
            amount_cents,
            commission_cents,
            refunded_cents,
            status,
            provider,
            provider_ref,
            pay_url,
            created_at,
            updated_at,
        }
    }
}

/// Opens a payment of the caller's CREATED order (or returns its pending one)
#[utoipa::path(post, path = "/v1/orders/{id}/payments", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path)),
    responses(
        (status = 201, description = "the payment, pending until the provider's callback", body = PaymentBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "not a customer", body = ErrorBody),
        (status = 404, description = "no such order, or not the caller's", body = ErrorBody),
        (status = 422, description = "invalid_state: the order is not CREATED, or its payment window closed",
            body = ErrorBody),
    ),
)]
async fn start_payment(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(order): PathId<OrderId>,
) -> Result<(StatusCode, Json<PaymentBody>), ApiError> {
    let payment = state.payments.start(&actor, order).await?;
    Ok((StatusCode::CREATED, Json(payment.into())))
}

/// A payment (its payer, the order's merchant, an admin)
#[utoipa::path(get, path = "/v1/payments/{id}", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path)),
    responses(
        (status = 200, description = "the payment", body = PaymentBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such payment, or not the caller's", body = ErrorBody),
    ),
)]
async fn get_payment(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<PaymentId>,
) -> Result<Json<PaymentBody>, ApiError> {
    Ok(Json(state.payments.get(&actor, id).await?.into()))
}

/// A provider's signed event about one of its payments, applied once
#[utoipa::path(post, path = "/v1/payments/callbacks/{provider}", tag = TAG,
    params(
        ("provider" = String, Path, description = "the provider's name: `sandbox`"),
        ("Surge-Signature" = String, Header,
            description = "`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>`"),
    ),
    request_body(content = String, content_type = "application/json",
        description = "`{event_id, type, provider_ref, amount_cents}`; `type`: `payment.succeeded` or `payment.failed`"),
    responses(
        (status = 200, description = "applied (or applied before: a repeat changes nothing)", body = PaymentBody),
        (status = 400, description = "bad_signature: a missing, wrong or stale signature; bad_request: not an event \
            of a known payment", body = ErrorBody),
        (status = 404, description = "no such provider", body = ErrorBody),
    ),
)]
async fn provider_callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PaymentBody>, ApiError> {
    let signature = headers.get(SIGNATURE_HEADER).and_then(|value| value.to_str().ok());
    Ok(Json(state.payments.callback(&provider, signature, &body).await?.into()))
}

/// Refunds part or all of the order's captured payment (its merchant, admin)
#[utoipa::path(post, path = "/v1/orders/{id}/refunds", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path), IdempotencyKey), request_body = RefundRequest,
    responses(
        (status = 201, description = "the refund, pending until the provider's callback; a repeated \
            Idempotency-Key returns the first", body = RefundBody),
        (status = 400, description = "bad amount or reason", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "a customer", body = ErrorBody),
        (status = 404, description = "no such order, or another tenant's", body = ErrorBody),
        (status = 409, description = "refund_exceeds_payment: more than is captured and not yet refunded",
            body = ErrorBody),
    ),
)]
async fn refund_order(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(order): PathId<OrderId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RefundRequest>,
) -> Result<(StatusCode, Json<RefundBody>), ApiError> {
    let key = idempotency_key(&headers)?;
    let amount = Cents::parse("amount_cents", body.amount_cents)?;
    let refund = state.payments.refund(&actor, order, amount, &body.reason, key.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(refund.into())))
}
