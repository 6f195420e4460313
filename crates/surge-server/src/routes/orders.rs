//! Order endpoints (API.md, "Orders").

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use surge_domain::OrderId;
use surge_domain::catalog::PageRequest;
use surge_domain::order::Order;
use surge_guard::bulkhead::SlotHold;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiQuery, PathId};
use crate::routes::OverloadGuards;
use crate::state::AppState;

/// One order's reads and moves are core; the listing is non-core.
pub fn routes(guards: &OverloadGuards) -> Router<AppState> {
    Router::new()
        .route("/v1/orders", guards.non_core(get(list_orders)))
        .route("/v1/orders/{id}", guards.core(get(get_order)))
        .route("/v1/orders/{id}/pay", guards.core(post(pay_order)))
        .route("/v1/orders/{id}/cancel", guards.core_carrying(post(cancel_order)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct Page {
    items: Vec<Order>,
    next_cursor: Option<String>,
}

async fn get_order(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<OrderId>,
) -> Result<Json<Order>, ApiError> {
    Ok(Json(state.orders.get(&actor, id).await?))
}

async fn list_orders(
    State(state): State<AppState>,
    Caller(actor): Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page>, ApiError> {
    let before = query.cursor.as_deref().map(str::parse::<OrderId>).transpose();
    let before = before.map_err(|_| ApiError::bad_request("cursor is not valid"))?;
    let page = PageRequest::parse(query.limit, None).map_err(ApiError::bad_request)?;
    let found = state.orders.list(&actor, before, page.limit).await?;
    Ok(Json(Page { items: found.items, next_cursor: found.next_before.map(|id| id.to_string()) }))
}

/// Bodies of pay and cancel are ignored (`{}` or nothing).
async fn pay_order(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<OrderId>,
) -> Result<Json<Order>, ApiError> {
    Ok(Json(state.orders.pay(&actor, id).await?))
}

/// Runs to the end even if the caller goes away: the stock of a cancelled
/// order must reach the ledger. It holds the request's bulkhead slot until
/// then.
async fn cancel_order(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<OrderId>,
    slot: Option<Extension<SlotHold>>,
) -> Result<Json<Order>, ApiError> {
    let orders = Arc::clone(&state.orders);
    let cancel = tokio::spawn(async move {
        let _slot = slot;
        orders.cancel(&actor, id).await
    });
    Ok(Json(cancel.await.map_err(|_| ApiError::internal())??))
}
