//! Flash-sale endpoints (API.md, "Flash sales").

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use surge_domain::flashsale::{NewSale, Quantity, SaleStatus, SaleView};
use surge_domain::{Actor, Cents, OrderId, ProductId, SaleId};
use surge_guard::bulkhead::SlotHold;
use surge_store::redis::Admission;
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, PathId, idempotency_key, present};
use crate::routes::OverloadGuards;
use crate::state::AppState;

/// All core work.
pub fn routes(guards: &OverloadGuards) -> Router<AppState> {
    Router::new()
        .route("/v1/flash-sales", guards.core(post(create_sale)))
        .route("/v1/flash-sales/{id}", guards.sale_read(get(get_sale)))
        .route("/v1/flash-sales/{id}/orders", guards.core_carrying(post(place_order)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    product_id: ProductId,
    stock: i64,
    price_cents: i64,
    #[serde(with = "time::serde::rfc3339")]
    starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    ends_at: OffsetDateTime,
    per_user_limit: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntakeBody {
    #[serde(default, deserialize_with = "present")]
    quantity: Option<i64>,
}

#[derive(Debug, Serialize)]
struct SaleBody {
    id: SaleId,
    product_id: ProductId,
    stock: i64,
    stock_left: i64,
    price_cents: Cents,
    #[serde(with = "time::serde::rfc3339")]
    starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    ends_at: OffsetDateTime,
    per_user_limit: u32,
    status: SaleStatus,
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
            status: view.status,
        }
    }
}

#[derive(Debug, Serialize)]
struct Accepted {
    order_id: OrderId,
    status: &'static str,
}

async fn create_sale(
    State(state): State<AppState>,
    Caller(actor): Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<SaleBody>), ApiError> {
    if !actor.is_admin() {
        return Err(ApiError::forbidden("only an admin creates flash sales"));
    }
    let price = Cents::parse(body.price_cents).map_err(|e| ApiError::bad_request(format!("price_cents {e}")))?;
    let new = NewSale::parse(
        body.product_id,
        body.stock,
        price,
        body.starts_at,
        body.ends_at,
        body.per_user_limit,
        OffsetDateTime::now_utc(),
    )
    .map_err(ApiError::bad_request)?;
    let sale = state.flash_sales.create(&actor, new).await?;
    if let Actor::Admin(admin) = &actor {
        tracing::warn!(%admin, sale_id = %sale.id, stock = sale.stock, "flash sale created");
    }
    let view = state.flash_sales.view(sale.id).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

async fn get_sale(State(state): State<AppState>, PathId(id): PathId<SaleId>) -> Result<Json<SaleBody>, ApiError> {
    Ok(Json(state.flash_sales.view(id).await?.into()))
}

/// The intake, in order: token → rate limits → (service: sold-out flag →
/// idempotency key → atomic deduct → durable append) → 202.
async fn place_order(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(sale): PathId<SaleId>,
    headers: HeaderMap,
    slot: Option<Extension<SlotHold>>,
    ApiJson(body): ApiJson<IntakeBody>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Actor::Customer(user) = &actor else {
        return Err(ApiError::forbidden("only customers place orders"));
    };
    if !state.intake_switch.is_enabled() {
        return Err(ApiError::degraded("flash-sale intake is switched off; retry later"));
    }
    state.intake_limits.check(*user, sale)?;
    if let Some(limit) = &state.cluster_user_limit {
        match limit.acquire(&format!("{}:{}", sale.get(), user.get())).await {
            Ok(Admission::Rejected { retry_after }) => {
                return Err(ApiError::rate_limited(retry_after.as_secs_f64().ceil().max(1.0) as u64));
            }
            Ok(Admission::Admitted { .. }) => {}
            // A limiter outage must not stop the sale; the node-local limits
            // still hold.
            Err(error) => tracing::warn!(%error, "cluster-wide intake limit unavailable; admitting"),
        }
    }
    let quantity = Quantity::parse(body.quantity.unwrap_or(1)).map_err(ApiError::bad_request)?;
    let key = idempotency_key(&headers)?.map(str::to_owned);
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
        flash_sales.place_order(&actor, sale, quantity, key.as_deref()).await
    });
    let order_id = intake.await.map_err(|_| ApiError::internal())??;
    Ok((StatusCode::ACCEPTED, Json(Accepted { order_id, status: "PENDING" })))
}
