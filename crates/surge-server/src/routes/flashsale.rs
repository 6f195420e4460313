//! Flash-sale endpoints (API.md, "Flash sales").

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use surge_domain::flashsale::{NewSale, Quantity, SaleStatus, SaleView};
use surge_domain::{Actor, Cents, OrderId, ProductId, SaleId};
use surge_guard::bulkhead::SlotHold;
use surge_guard::rate::Decision;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, PathId, idempotency_key, present};
use crate::routes::OverloadGuards;
use crate::routes::wire::{Id, IdempotencyKey};
use crate::state::AppState;

const TAG: &str = "flash sales";

/// All core work.
pub fn routes(guards: &OverloadGuards) -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(create_sale).map(|route| guards.core(route)))
        .routes(routes!(get_sale).map(|route| guards.sale_read(route)))
        .routes(routes!(place_order).map(|route| guards.core_carrying(route)))
}

/// `starts_at` at most a minute in the past; `ends_at` after `starts_at`,
/// at most 31 days later.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewSale)]
struct CreateBody {
    #[schema(value_type = Id)]
    product_id: ProductId,
    #[schema(minimum = 1, maximum = 10_000_000)]
    stock: i64,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    price_cents: i64,
    #[serde(with = "time::serde::rfc3339")]
    starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    ends_at: OffsetDateTime,
    #[schema(minimum = 1, maximum = 1000)]
    per_user_limit: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct IntakeBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = i64, minimum = 1, maximum = 1000, default = 1)]
    quantity: Option<i64>,
}

/// A sale with its live `stock_left` and status.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Sale)]
struct SaleBody {
    #[schema(value_type = Id)]
    id: SaleId,
    #[schema(value_type = Id)]
    product_id: ProductId,
    stock: i64,
    stock_left: i64,
    #[schema(value_type = i64, minimum = 0)]
    price_cents: Cents,
    #[serde(with = "time::serde::rfc3339")]
    starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    ends_at: OffsetDateTime,
    per_user_limit: u32,
    status: SaleStatusBody,
}

impl From<SaleView> for SaleBody {
    fn from(view: SaleView) -> Self {
        let sale = view.sale;
        SaleBody {
            id: sale.id,
            product_id: sale.product_id,
            stock: sale.stock,
            stock_left: view.stock_left,
            price_cents: sale.price_cents,
            starts_at: sale.starts_at,
            ends_at: sale.ends_at,
            per_user_limit: sale.per_user_limit,
            status: view.status.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = SaleStatus)]
enum SaleStatusBody {
    Scheduled,
    Active,
    SoldOut,
    Ended,
}

impl From<SaleStatus> for SaleStatusBody {
    fn from(status: SaleStatus) -> Self {
        match status {
            SaleStatus::Scheduled => SaleStatusBody::Scheduled,
            SaleStatus::Active => SaleStatusBody::Active,
            SaleStatus::SoldOut => SaleStatusBody::SoldOut,
            SaleStatus::Ended => SaleStatusBody::Ended,
        }
    }
}

/// A 202 is a promise: the order exists after any crash and restart.
#[derive(Debug, Serialize, ToSchema)]
struct Accepted {
    #[schema(value_type = Id)]
    order_id: OrderId,
    #[schema(inline)]
    status: Pending,
}

/// An accepted order reads as `PENDING` until it is written.
#[derive(Debug, Serialize, ToSchema)]
enum Pending {
    #[serde(rename = "PENDING")]
    Pending,
}

/// Create a flash sale (admin)
#[utoipa::path(post, path = "/v1/flash-sales", tag = TAG, security(("bearer" = [])), request_body = CreateBody,
    responses(
        (status = 201, description = "the sale", body = SaleBody, links(
            ("ReadSale" = (operation_id = "get_sale", parameters(("id" = "$response.body#/id")))),
            ("PlaceOrder" = (operation_id = "place_order", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "admin only", body = ErrorBody),
    ),
)]
async fn create_sale(
    State(state): State<AppState>,
    Caller(actor): Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<SaleBody>), ApiError> {
    if !actor.is_admin() {
        return Err(ApiError::forbidden("only an admin creates flash sales"));
    }
    let price = Cents::parse("price_cents", body.price_cents)?;
    let new = NewSale::parse(
        body.product_id,
        body.stock,
        price,
        body.starts_at,
        body.ends_at,
        body.per_user_limit,
        state.clock.now(),
    )?;
    let sale = state.flash_sales.create(&actor, new).await?;
    if let Actor::Admin(admin) = &actor {
        tracing::warn!(%admin, sale_id = %sale.id, stock = sale.stock, "flash sale created");
    }
    let view = state.flash_sales.view(sale.id).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// A sale with live stock_left and status
#[utoipa::path(get, path = "/v1/flash-sales/{id}", tag = TAG, params(("id" = inline(Id), Path)),
    responses(
        (status = 200, description = "the sale", body = SaleBody),
        (status = 404, description = "no such sale", body = ErrorBody),
    ),
)]
async fn get_sale(State(state): State<AppState>, PathId(id): PathId<SaleId>) -> Result<Json<SaleBody>, ApiError> {
    Ok(Json(state.flash_sales.view(id).await?.into()))
}

/// Intake: 202 with an order id at once
#[utoipa::path(post, path = "/v1/flash-sales/{id}/orders", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path), IdempotencyKey), request_body = IntakeBody,
    responses(
        (status = 202, description = "accepted; the order is created shortly", body = Accepted, links(
            ("ReadOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/order_id")))),
            ("PayOrder" = (operation_id = "pay_order", parameters(("id" = "$response.body#/order_id")))),
            ("CancelOrder" = (operation_id = "cancel_order", parameters(("id" = "$response.body#/order_id")))),
        )),
        (status = 400, description = "bad quantity or key", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "not a customer", body = ErrorBody),
        (status = 404, description = "no such sale", body = ErrorBody),
        (status = 409, description = "sold_out or limit_exceeded", body = ErrorBody),
        (status = 422, description = "not_active", body = ErrorBody),
        (status = 429, description = "rate_limited", body = ErrorBody),
        (status = 503, description = "degraded or overloaded", body = ErrorBody),
    ),
)]
async fn place_order(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(sale): PathId<SaleId>,
    headers: HeaderMap,
    slot: Option<Extension<SlotHold>>,
    ApiJson(body): ApiJson<IntakeBody>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    // In order: token → rate limits → (service: sold-out flag → idempotency
    // key → atomic deduct → durable append) → 202.
    let Actor::Customer(user) = &actor else {
        return Err(ApiError::forbidden("only customers place orders"));
    };
    if !state.intake_switch.is_enabled() {
        return Err(ApiError::degraded("flash-sale intake is switched off; retry later"));
    }
    state.intake_limits.check(*user, sale)?;
    if let Some(limit) = &state.cluster_user_limit {
        match limit.decide(&format!("{}:{}", sale.get(), user.get())).await {
            Ok(Decision::Reject { retry_after }) => {
                return Err(ApiError::rate_limited(retry_after.as_secs_f64().ceil().max(1.0) as u64));
            }
            Ok(Decision::Admit | Decision::AdmitAfter(_)) => {}
            // A limiter outage must not stop the sale; the node-local limits
            // still hold.
            Err(error) => tracing::warn!(%error, "cluster-wide intake limit unavailable; admitting"),
        }
    }
    let quantity = Quantity::parse(body.quantity.unwrap_or(1))?;
    let key = idempotency_key(&headers)?;
    // Once begun, intake runs to the end even if the client goes away or the
    // deadline passes: a deduction without its durable append (or an append
    // without its idempotency record) must never be left behind. So its
    // steps run under their own timeouts (each shorter than the request
    // budget, checked at start-up), not the client's deadline: the spawned
    // task does not carry it (`surge_guard::deadline::current` is `None`).
    // It holds the request's bulkhead slot until it ends, so intakes cut
    // off by their deadline still count against the pool.
    let flash_sales = Arc::clone(&state.flash_sales);
    let intake = tokio::spawn(async move {
        let _slot = slot;
        flash_sales.place_order(&actor, sale, quantity, key.as_ref()).await
    });
    let order_id = intake.await.map_err(|_| ApiError::internal())??;
    Ok((StatusCode::ACCEPTED, Json(Accepted { order_id, status: Pending::Pending })))
}
