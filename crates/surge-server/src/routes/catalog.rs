//! Catalog and inventory endpoints (API.md, "Catalog and inventory").

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use surge_domain::catalog::{CreateProduct, PageRequest, Product, ProductName, ProductPatch, Sku, Stock};
use surge_domain::{Cents, MerchantId, ProductId};
use time::OffsetDateTime;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, PathId, idempotency_key, present};
use crate::routes::OverloadGuards;
use crate::routes::wire::{Id, IdempotencyKey};
use crate::state::AppState;

const TAG: &str = "catalog";

/// Reads and writes of one product are core; listings are non-core.
pub fn routes(guards: &OverloadGuards) -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_products).map(|route| guards.non_core(route)))
        .routes(routes!(create_product).map(|route| guards.core(route)))
        .routes(routes!(get_product).map(|route| guards.product_read(route)))
        .routes(at_least_one_field(routes!(patch_product)).map(|route| guards.core(route)))
        .routes(routes!(set_stock).map(|route| guards.core(route)))
}

/// A product as served.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Product)]
struct ProductBody {
    #[schema(value_type = Id)]
    id: ProductId,
    #[schema(value_type = Id)]
    merchant_id: MerchantId,
    #[schema(value_type = String)]
    sku: Sku,
    #[schema(value_type = String)]
    name: ProductName,
    #[schema(value_type = i64, minimum = 0)]
    price_cents: Cents,
    /// Units that can still be sold.
    #[schema(value_type = i64, minimum = 0)]
    stock: Stock,
    /// Units held by unpaid orders and by flash sales.
    #[schema(value_type = i64, minimum = 0)]
    reserved: Stock,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl From<Product> for ProductBody {
    fn from(product: Product) -> Self {
        let Product { id, merchant_id, sku, name, price_cents, stock, reserved, updated_at } = product;
        ProductBody { id, merchant_id, sku, name, price_cents, stock, reserved, updated_at }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewProduct)]
struct CreateBody {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    sku: String,
    /// Trimmed by the server.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    price_cents: i64,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    stock: i64,
    /// Required from an admin; a merchant may omit it (it is its own).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Id)]
    merchant_id: Option<MerchantId>,
}

/// Any of `name`, `price_cents`; at least one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ProductPatch)]
struct PatchBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000_000_i64)]
    price_cents: Option<i64>,
}

/// A patch names at least one field. utoipa-gen (5 and 6) writes
/// `min_properties` as `maxProperties`, so the bound goes on the derived
/// schema here.
fn at_least_one_field(mut route: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    for (name, schema) in &mut route.0 {
        if let (true, RefOr::T(Schema::Object(object))) = (*name == PatchBody::name(), schema) {
            object.min_properties = Some(1);
        }
    }
    route
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StockBody {
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    stock: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this merchant's products.
    #[param(value_type = String, required = false, pattern = "^[0-9]{1,19}$")]
    merchant_id: Option<String>,
    #[param(value_type = u32, required = false, minimum = 1, maximum = 500, default = 50)]
    limit: Option<u32>,
    /// `next_cursor` of the page before.
    #[param(value_type = String, required = false, pattern = "^[0-9]{1,19}$")]
    cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ProductPage {
    items: Vec<ProductBody>,
    /// `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// Create a product (merchant: own tenant; admin)
#[utoipa::path(post, path = "/v1/products", tag = TAG, security(("bearer" = [])), params(IdempotencyKey),
    request_body = CreateBody,
    responses(
        (status = 201, description = "the product", body = ProductBody, links(
            ("ReadProduct" = (operation_id = "get_product", parameters(("id" = "$response.body#/id")))),
            ("ChangeProduct" = (operation_id = "patch_product", parameters(("id" = "$response.body#/id")))),
            ("SetStock" = (operation_id = "set_stock", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "not this tenant", body = ErrorBody),
        (status = 409, description = "duplicate_sku", body = ErrorBody),
    ),
)]
async fn create_product(
    State(state): State<AppState>,
    Caller(actor): Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<ProductBody>), ApiError> {
    let key = idempotency_key(&headers)?;
    let request = CreateProduct {
        merchant_id: body.merchant_id,
        sku: Sku::parse(&body.sku)?,
        name: ProductName::parse(&body.name)?,
        price_cents: Cents::parse("price_cents", body.price_cents)?,
        stock: Stock::parse(body.stock)?,
    };
    let product = state.catalog.create(&actor, request, key.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(product.into())))
}

/// Read a product (cached)
#[utoipa::path(get, path = "/v1/products/{id}", tag = TAG, params(("id" = inline(Id), Path)),
    responses(
        (status = 200, description = "the product", body = ProductBody),
        (status = 400, description = "malformed id", body = ErrorBody),
        (status = 404, description = "no such product", body = ErrorBody),
        (status = 503, description = "degraded", body = ErrorBody),
    ),
)]
async fn get_product(
    State(state): State<AppState>,
    PathId(id): PathId<ProductId>,
) -> Result<Json<ProductBody>, ApiError> {
    if !state.product_detail_switch.is_enabled() {
        return Ok(Json(Arc::unwrap_or_clone(state.catalog.get_cached_only(id).await?).into()));
    }
    Ok(Json(Arc::unwrap_or_clone(state.catalog.get(id).await?).into()))
}

/// Change name and/or price
#[utoipa::path(patch, path = "/v1/products/{id}", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path)), request_body = PatchBody,
    responses(
        (status = 200, description = "the product", body = ProductBody),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "not the owner", body = ErrorBody),
        (status = 404, description = "no such product", body = ErrorBody),
    ),
)]
async fn patch_product(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<ProductId>,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Json<ProductBody>, ApiError> {
    let name = body.name.as_deref().map(ProductName::parse).transpose()?;
    let price = body.price_cents.map(|cents| Cents::parse("price_cents", cents)).transpose()?;
    let patch = ProductPatch::parse(name, price)?;
    Ok(Json(state.catalog.patch(&actor, id, patch).await?.into()))
}

/// Set the stock
#[utoipa::path(put, path = "/v1/products/{id}/stock", tag = TAG, security(("bearer" = [])),
    params(("id" = inline(Id), Path)), request_body = StockBody,
    responses(
        (status = 200, description = "the product", body = ProductBody),
        (status = 400, description = "bad input", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 403, description = "not the owner", body = ErrorBody),
        (status = 404, description = "no such product", body = ErrorBody),
    ),
)]
async fn set_stock(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<ProductId>,
    ApiJson(body): ApiJson<StockBody>,
) -> Result<Json<ProductBody>, ApiError> {
    let stock = Stock::parse(body.stock)?;
    Ok(Json(state.catalog.set_stock(&actor, id, stock).await?.into()))
}

/// List products
#[utoipa::path(get, path = "/v1/products", tag = TAG, params(ListQuery),
    responses(
        (status = 200, description = "a page", body = ProductPage),
        (status = 400, description = "bad query", body = ErrorBody),
    ),
)]
async fn list_products(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ProductPage>, ApiError> {
    let merchant = query.merchant_id.as_deref().map(str::parse::<MerchantId>).transpose();
    let merchant = merchant.map_err(|_| ApiError::bad_request("merchant_id is not an id"))?;
    let after = query.cursor.as_deref().map(str::parse::<ProductId>).transpose();
    let after = after.map_err(|_| ApiError::bad_request("cursor is not valid"))?;
    let page = PageRequest::parse(query.limit, after)?;
    let found = state.catalog.list(merchant, page).await?;
    Ok(Json(ProductPage {
        items: found.items.into_iter().map(ProductBody::from).collect(),
        next_cursor: found.next_after.map(|id| id.to_string()),
    }))
}
