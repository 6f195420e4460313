//! Catalog and inventory endpoints (API.md, "Catalog and inventory").

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use surge_domain::catalog::{CreateProduct, PageRequest, Product, ProductName, ProductPatch, Sku, Stock};
use surge_domain::{Cents, MerchantId, ProductId};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, PathId, idempotency_key, present};
use crate::routes::OverloadGuards;
use crate::state::AppState;

/// Reads and writes of one product are core; listings are non-core.
pub fn routes(guards: &OverloadGuards) -> Router<AppState> {
    Router::new()
        .route("/v1/products", guards.non_core(get(list_products)).merge(guards.core(post(create_product))))
        .route("/v1/products/{id}", guards.product_read(get(get_product)).merge(guards.core(patch(patch_product))))
        .route("/v1/products/{id}/stock", guards.core(put(set_stock)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    sku: String,
    name: String,
    price_cents: i64,
    stock: i64,
    /// Required from an admin; a merchant may omit it (it is its own).
    #[serde(default, deserialize_with = "present")]
    merchant_id: Option<MerchantId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default, deserialize_with = "present")]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    price_cents: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StockBody {
    stock: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    merchant_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct Page {
    items: Vec<Product>,
    next_cursor: Option<String>,
}

async fn create_product(
    State(state): State<AppState>,
    Caller(actor): Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Product>), ApiError> {
    let key = idempotency_key(&headers)?;
    let request = CreateProduct {
        merchant_id: body.merchant_id,
        sku: Sku::parse(&body.sku).map_err(ApiError::bad_request)?,
        name: ProductName::parse(&body.name).map_err(ApiError::bad_request)?,
        price_cents: Cents::parse(body.price_cents).map_err(|e| ApiError::bad_request(format!("price_cents {e}")))?,
        stock: Stock::parse(body.stock).map_err(ApiError::bad_request)?,
    };
    let product = state.catalog.create(&actor, request, key).await?;
    Ok((StatusCode::CREATED, Json(product)))
}

async fn get_product(
    State(state): State<AppState>,
    PathId(id): PathId<ProductId>,
) -> Result<Json<Arc<Product>>, ApiError> {
    if !state.product_detail_switch.is_enabled() {
        return Ok(Json(state.catalog.get_cached_only(id).await?));
    }
    Ok(Json(state.catalog.get(id).await?))
}

async fn patch_product(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<ProductId>,
    ApiJson(body): ApiJson<PatchBody>,
) -> Result<Json<Product>, ApiError> {
    let name = body.name.as_deref().map(ProductName::parse).transpose().map_err(ApiError::bad_request)?;
    let price = body
        .price_cents
        .map(Cents::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("price_cents {e}")))?;
    let patch = ProductPatch::parse(name, price).map_err(ApiError::bad_request)?;
    Ok(Json(state.catalog.patch(&actor, id, patch).await?))
}

async fn set_stock(
    State(state): State<AppState>,
    Caller(actor): Caller,
    PathId(id): PathId<ProductId>,
    ApiJson(body): ApiJson<StockBody>,
) -> Result<Json<Product>, ApiError> {
    let stock = Stock::parse(body.stock).map_err(ApiError::bad_request)?;
    Ok(Json(state.catalog.set_stock(&actor, id, stock).await?))
}

async fn list_products(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page>, ApiError> {
    let merchant = query.merchant_id.as_deref().map(str::parse::<MerchantId>).transpose();
    let merchant = merchant.map_err(|_| ApiError::bad_request("merchant_id is not an id"))?;
    let after = query.cursor.as_deref().map(str::parse::<ProductId>).transpose();
    let after = after.map_err(|_| ApiError::bad_request("cursor is not valid"))?;
    let page = PageRequest::parse(query.limit, after).map_err(ApiError::bad_request)?;
    let found = state.catalog.list(merchant, page).await?;
    Ok(Json(Page { items: found.items, next_cursor: found.next_after.map(|id| id.to_string()) }))
}
