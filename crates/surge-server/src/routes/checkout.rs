//! Checkout (API.md, "Checkout and inventory"): a cart becomes one order per
//! merchant, every unit reserved or none.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use surge_domain::flashsale::Quantity;
use surge_domain::order::{Address, Checkout, CheckoutLine};
use surge_domain::{Actor, ProductId};
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, idempotency_key};
use crate::routes::OverloadGuards;
use crate::routes::orders::{AddressBody, OrderBody};
use crate::routes::wire::{Id, IdempotencyKey};
use crate::state::AppState;

const TAG: &str = "orders";

/// Core work: it takes stock.
pub fn routes(guards: &OverloadGuards) -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(checkout).map(|route| guards.core(route)))
}

/// A cart: 1 to 100 lines, each product once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Checkout)]
struct CheckoutBody {
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<LineBody>,
    address: AddressBody,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CheckoutLine)]
struct LineBody {
    #[schema(value_type = Id)]
    product_id: ProductId,
    #[schema(minimum = 1, maximum = 1000)]
    quantity: i64,
}

impl TryFrom<CheckoutBody> for Checkout {
    type Error = ApiError;

    fn try_from(body: CheckoutBody) -> Result<Self, ApiError> {
        let lines = body
            .items
            .iter()
            .map(|line| {
                let quantity = Quantity::parse(line.quantity)?;
                Ok(CheckoutLine { product_id: line.product_id, quantity })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let AddressBody { region, city, line1, postcode, phone } = &body.address;
        let address = Address::parse(region, city, line1, postcode, phone)?;
        Ok(Checkout::parse(lines, address)?)
    }
}

/// The orders of one checkout, one per merchant, in merchant order.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CheckoutOrders)]
struct CheckoutOrders {
    orders: Vec<OrderBody>,
}

/// Checkout: one order per merchant, every unit reserved or none
#[utoipa::path(post, path = "/v1/checkout", tag = TAG, security(("bearer" = [])),
    params(IdempotencyKey), request_body = CheckoutBody,
    responses(
        (status = 201, description = "the orders, each CREATED with its units reserved; a repeated \
            Idempotency-Key returns the first checkout's orders", body = CheckoutOrders),
        (status = 400, description = "bad input; nothing reserved", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "not a customer", body = ErrorBody),
        (status = 409, description = "insufficient_stock; nothing reserved", body = ErrorBody),
        (status = 503, description = "overloaded or unavailable", body = ErrorBody),
    ),
)]
async fn checkout(
    State(state): State<AppState>,
    Caller(actor): Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CheckoutBody>,
) -> Result<(StatusCode, Json<CheckoutOrders>), ApiError> {
    if !matches!(actor, Actor::Customer(_)) {
        return Err(ApiError::forbidden("only a customer checks out"));
    }
    let key = idempotency_key(&headers)?;
    let checkout = Checkout::try_from(body)?;
    let orders = state.checkouts.place(&actor, &checkout, key.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(CheckoutOrders { orders: orders.into_iter().map(OrderBody::from).collect() })))
}
