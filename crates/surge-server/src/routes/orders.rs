//! Order endpoints (API.md, "Orders").

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use surge_domain::catalog::PageRequest;
use surge_domain::order::{Address, Order, OrderItem, OrderKind, OrderStatus};
use surge_domain::{MerchantId, OrderId, ProductId, SaleId, UserId};
use surge_guard::bulkhead::SlotHold;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, PathId};
use crate::routes::OverloadGuards;
use crate::routes::wire::{Id, PageQuery};
use crate::state::AppState;

const TAG: &str = "orders";

/// One order's reads and moves are core; the listing is non-core.
pub fn routes(guards: &OverloadGuards) -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_orders).map(|route| guards.non_core(route)))
        .routes(routes!(get_order).map(|route| guards.core(route)))
        .routes(routes!(pay_order).map(|route| guards.core(route)))
        .routes(routes!(cancel_order).map(|route| guards.core_carrying(route)))
}

// The domain's order less what only the server needs (the payment
// deadline).
/// An order; a 202 order not yet written reads as `PENDING`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Order)]
pub(crate) struct OrderBody {
    #[schema(value_type = Id)]
    id: OrderId,
    #[schema(value_type = Id)]
    user_id: UserId,
    #[schema(value_type = Id)]
    merchant_id: MerchantId,
    /// The first item's product.
    #[schema(value_type = Id)]
    product_id: ProductId,
    /// `null` for an order that no flash sale made.
    #[schema(value_type = Option<Id>, required = true)]
    flash_sale_id: Option<SaleId>,
    /// Units over every item.
    quantity: u32,
    amount_cents: i64,
    status: OrderStatusBody,
    kind: KindBody,
    items: Vec<ItemBody>,
    /// Where a checkout order goes; `null` for a flash-sale order.
    #[schema(required = true)]
    address: Option<AddressBody>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<Order> for OrderBody {
    fn from(order: Order) -> Self {
        let Order {
            id,
            user_id,
            merchant_id,
            product_id,
            flash_sale_id,
            quantity,
            amount_cents,
            status,
            kind,
            items,
            address,
            created_at,
            updated_at,
            pay_by: _,
        } = order;
        OrderBody {
            id,
            user_id,
            merchant_id,
            product_id,
            flash_sale_id,
            quantity,
            amount_cents,
            status: status.into(),
            kind: match kind {
                OrderKind::FlashSale => KindBody::FlashSale,
                OrderKind::Checkout => KindBody::Checkout,
            },
            items: items.into_iter().map(ItemBody::from).collect(),
            address: address.map(AddressBody::from),
            created_at,
            updated_at,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = OrderKind)]
enum KindBody {
    FlashSale,
    Checkout,
}

/// One line of an order, at the price it was bought for.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OrderItem)]
struct ItemBody {
    #[schema(value_type = Id)]
    product_id: ProductId,
    /// `null` only while a flash-sale order reads as `PENDING`.
    #[schema(required = true)]
    sku: Option<String>,
    quantity: u32,
    unit_price_cents: i64,
}

impl From<OrderItem> for ItemBody {
    fn from(item: OrderItem) -> Self {
        let OrderItem { product_id, sku, quantity, unit_price_cents } = item;
        ItemBody { product_id, sku, quantity, unit_price_cents }
    }
}

/// A delivery address; `region` routes fulfilment.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Address)]
pub(crate) struct AddressBody {
    #[schema(min_length = 1, max_length = 200)]
    pub region: String,
    #[schema(min_length = 1, max_length = 200)]
    pub city: String,
    #[schema(min_length = 1, max_length = 200)]
    pub line1: String,
    #[schema(min_length = 1, max_length = 200)]
    pub postcode: String,
    #[schema(pattern = r"^[0-9+() -]{3,32}$")]
    pub phone: String,
}

impl From<Address> for AddressBody {
    fn from(address: Address) -> Self {
        let Address { region, city, line1, postcode, phone } = address;
        AddressBody { region, city, line1, postcode, phone }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = OrderStatus)]
enum OrderStatusBody {
    Pending,
    Created,
    Paid,
    Fulfilling,
    Delivered,
    Cancelled,
    ReturnRequested,
    Returned,
    Refunded,
    Failed,
}

impl From<OrderStatus> for OrderStatusBody {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Pending => OrderStatusBody::Pending,
            OrderStatus::Created => OrderStatusBody::Created,
            OrderStatus::Paid => OrderStatusBody::Paid,
            OrderStatus::Fulfilling => OrderStatusBody::Fulfilling,
            OrderStatus::Delivered => OrderStatusBody::Delivered,
            OrderStatus::Cancelled => OrderStatusBody::Cancelled,
            OrderStatus::ReturnRequested => OrderStatusBody::ReturnRequested,
            OrderStatus::Returned => OrderStatusBody::Returned,
            OrderStatus::Refunded => OrderStatusBody::Refunded,
            OrderStatus::Failed => OrderStatusBody::Failed,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct OrderPage {
    items: Vec<OrderBody>,
    /// `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// An order (PENDING until written)
#[utoipa::path(get, path = "/v1/orders/{id}", tag = TAG, security(("bearer" = [])), params(("id" = inline(Id), Path)),
    responses(
        (status = 200, description = "the order", body = OrderBody),
        (status = 404, description = "no such order, or not the caller's", body = ErrorBody),
    ),
)]
async fn get_order(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<OrderId>,
) -> Result<Json<OrderBody>, ApiError> {
    Ok(Json(state.orders.get(&actor, id).await?.into()))
}

/// Orders, newest first (customer: own; merchant: tenant's; admin: all)
#[utoipa::path(get, path = "/v1/orders", tag = TAG, security(("bearer" = [])), params(PageQuery),
    responses(
        (status = 200, description = "a page", body = OrderPage),
        (status = 401, description = "no valid token", body = ErrorBody),
    ),
)]
async fn list_orders(
    State(state): State<AppState>,
    Caller(actor): Caller,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    let before = query.cursor.as_deref().map(str::parse::<OrderId>).transpose();
    let before = before.map_err(|_| ApiError::bad_request("cursor is not valid"))?;
    let page = PageRequest::parse(query.limit, None)?;
    let found = state.orders.list(&actor, before, page.limit).await?;
    Ok(Json(OrderPage {
        items: found.items.into_iter().map(OrderBody::from).collect(),
        next_cursor: found.next_before.map(|id| id.to_string()),
    }))
}

/// Pay at once (buyer): the sandbox shortcut, a payment opened and captured at once
///
/// The body is ignored (`{}` or nothing).
#[utoipa::path(post, path = "/v1/orders/{id}/pay", tag = TAG, security(("bearer" = [])), params(("id" = inline(Id), Path)),
    responses(
        (status = 200, description = "the order", body = OrderBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "seen but not the caller's to move (a merchant paying)", body = ErrorBody),
        (status = 404, description = "no such order, or not the caller's", body = ErrorBody),
        (status = 422, description = "invalid_state", body = ErrorBody),
    ),
)]
async fn pay_order(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<OrderId>,
) -> Result<Json<OrderBody>, ApiError> {
    Ok(Json(state.payments.pay_at_once(&actor, id).await?.into()))
}

/// Cancel (buyer, admin); stock returned
///
/// The body is ignored (`{}` or nothing).
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = TAG, security(("bearer" = [])), params(("id" = inline(Id), Path)),
    responses(
        (status = 200, description = "the order", body = OrderBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "seen but not the caller's to move (a merchant paying)", body = ErrorBody),
        (status = 404, description = "no such order, or not the caller's", body = ErrorBody),
        (status = 422, description = "invalid_state", body = ErrorBody),
    ),
)]
async fn cancel_order(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<OrderId>,
    slot: Option<Extension<SlotHold>>,
) -> Result<Json<OrderBody>, ApiError> {
    // Runs to the end even if the caller goes away: the stock of a cancelled
    // order must reach the ledger. It holds the request's bulkhead slot
    // until then.
    let orders = Arc::clone(&state.orders);
    let cancel = tokio::spawn(async move {
        let _slot = slot;
        orders.cancel(&actor, id).await
    });
    Ok(Json(cancel.await.map_err(|_| ApiError::internal())??.into()))
}
