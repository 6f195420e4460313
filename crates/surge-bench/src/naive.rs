//! The naive baseline: the same intake endpoint done the textbook way, one
//! SQL transaction per request (`UPDATE ... SET stock = stock - q WHERE
//! stock >= q`, a per-user check, an insert) on SQLite with the same durability as
//! Surge's queue (WAL, `synchronous = FULL`). It serves just enough of the
//! API for the flash-sale scenario: create product and sale, intake, read
//! orders; and the checkout the same way (each line's conditional update and
//! one order per merchant, in one transaction). Tokens are verified with the
//! same secret, as Surge does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::tokens::Tokens;

#[derive(Clone)]
struct Naive {
    pool: SqlitePool,
    tokens: Arc<Tokens>,
    next_id: Arc<AtomicI64>,
}

pub async fn serve(listen: SocketAddr, data_dir: PathBuf, tokens: Tokens) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)?;
    let url = format!("sqlite://{}", data_dir.join("naive.db").display());
    let options = SqliteConnectOptions::from_str(&url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(std::time::Duration::from_secs(30));
    let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
    for ddl in [
        "CREATE TABLE IF NOT EXISTS sales (id BIGINT PRIMARY KEY, stock BIGINT NOT NULL, per_user_limit BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS orders (id BIGINT PRIMARY KEY, sale_id BIGINT NOT NULL, user_id BIGINT NOT NULL, \
         quantity BIGINT NOT NULL, idempotency_key TEXT, UNIQUE (user_id, idempotency_key))",
        "CREATE INDEX IF NOT EXISTS orders_sale_user ON orders (sale_id, user_id)",
        "CREATE TABLE IF NOT EXISTS products (id BIGINT PRIMARY KEY, merchant_id BIGINT NOT NULL, \
         price_cents BIGINT NOT NULL, stock BIGINT NOT NULL CHECK (stock >= 0))",
        "CREATE TABLE IF NOT EXISTS checkout_orders (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, \
         merchant_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL, idempotency_key TEXT NOT NULL, \
         UNIQUE (user_id, idempotency_key, merchant_id))",
    ] {
        sqlx::query(ddl).execute(&pool).await?;
    }
    let state = Naive { pool, tokens: Arc::new(tokens), next_id: Arc::new(AtomicI64::new(now_ms() << 16)) };
    let app = Router::new()
        .route("/v1/products", post(create_product))
        .route("/v1/checkout", post(checkout))
        .route("/v1/flash-sales", post(create_sale))
        .route("/v1/flash-sales/{id}/orders", post(place_order))
        .route("/v1/orders", get(list_orders))
        .route("/v1/orders/{id}", get(get_order))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("naive server on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn error(status: StatusCode, code: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": code}}))).into_response()
}

async fn create_product(State(naive): State<Naive>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let id = naive.next_id.fetch_add(1, Ordering::Relaxed);
    let merchant = naive.tokens.subject(&headers, "merchant").unwrap_or(1);
    let inserted = sqlx::query("INSERT INTO products (id, merchant_id, price_cents, stock) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(merchant)
        .bind(body["price_cents"].as_i64().unwrap_or(0))
        .bind(body["stock"].as_i64().unwrap_or(0))
        .execute(&naive.pool)
        .await;
    match inserted {
        Ok(_) => (StatusCode::CREATED, Json(json!({"id": id.to_string()}))).into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

#[derive(Deserialize)]
struct CheckoutBody {
    items: Vec<CheckoutLine>,
}

#[derive(Deserialize)]
struct CheckoutLine {
    product_id: String,
    quantity: i64,
}

async fn checkout(State(naive): State<Naive>, headers: HeaderMap, Json(body): Json<CheckoutBody>) -> Response {
    let Some(user) = naive.tokens.customer(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        return error(StatusCode::BAD_REQUEST, "idempotency_key_required");
    };
    let mut lines: Vec<(i64, i64)> =
        body.items.iter().filter_map(|line| Some((line.product_id.parse().ok()?, line.quantity))).collect();
    lines.sort_unstable();
    match checkout_once(&naive, user, &key, &lines).await {
        Ok(Ok(orders)) => (StatusCode::CREATED, Json(json!({"orders": orders}))).into_response(),
        Ok(Err(code)) => error(StatusCode::CONFLICT, code),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

/// One transaction per checkout: each line's conditional update, then one
/// order per merchant.
async fn checkout_once(
    naive: &Naive,
    user: i64,
    key: &str,
    lines: &[(i64, i64)],
) -> Result<Result<Vec<Value>, &'static str>, sqlx::Error> {
    let mut tx = naive.pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut per_merchant: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
    for (product, quantity) in lines {
        let taken: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE products SET stock = stock - $1 WHERE id = $2 AND stock >= $1 RETURNING merchant_id, price_cents",
        )
        .bind(quantity)
        .bind(product)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((merchant, price)) = taken else {
            return Ok(Err("insufficient_stock"));
        };
        *per_merchant.entry(merchant).or_default() += price * quantity;
    }
    let mut orders = Vec::with_capacity(per_merchant.len());
    for (merchant, amount) in per_merchant {
        let id = naive.next_id.fetch_add(1, Ordering::Relaxed);
        sqlx::query(
            "INSERT INTO checkout_orders (id, user_id, merchant_id, amount_cents, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(user)
        .bind(merchant)
        .bind(amount)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        orders.push(json!({"id": id.to_string(), "merchant_id": merchant.to_string(), "amount_cents": amount}));
    }
    tx.commit().await?;
    Ok(Ok(orders))
}

async fn create_sale(State(naive): State<Naive>, Json(body): Json<Value>) -> Response {
    let id = naive.next_id.fetch_add(1, Ordering::Relaxed);
    let stock = body["stock"].as_i64().unwrap_or(0);
    let limit = body["per_user_limit"].as_i64().unwrap_or(1);
    let inserted = sqlx::query("INSERT INTO sales (id, stock, per_user_limit) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(stock)
        .bind(limit)
        .execute(&naive.pool)
        .await;
    match inserted {
        Ok(_) => (StatusCode::CREATED, Json(json!({"id": id.to_string(), "stock": stock}))).into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

#[derive(Deserialize)]
struct IntakeBody {
    quantity: Option<i64>,
}

async fn place_order(
    State(naive): State<Naive>,
    Path(sale): Path<i64>,
    headers: HeaderMap,
    Json(body): Json<IntakeBody>,
) -> Response {
    let Some(user) = naive.tokens.customer(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let quantity = body.quantity.unwrap_or(1);
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    match intake(&naive, sale, user, quantity, key).await {
        Ok(Ok(id)) => {
            (StatusCode::ACCEPTED, Json(json!({"order_id": id.to_string(), "status": "PENDING"}))).into_response()
        }
        Ok(Err(code)) => error(StatusCode::CONFLICT, code),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

/// One transaction per request: the textbook way.
async fn intake(
    naive: &Naive,
    sale: i64,
    user: i64,
    quantity: i64,
    key: Option<String>,
) -> Result<Result<i64, &'static str>, sqlx::Error> {
    let mut tx = naive.pool.begin_with("BEGIN IMMEDIATE").await?;
    if let Some(key) = &key {
        let earlier: Option<i64> =
            sqlx::query_scalar("SELECT id FROM orders WHERE user_id = $1 AND idempotency_key = $2")
                .bind(user)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(id) = earlier {
            return Ok(Ok(id));
        }
    }
    let held: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(quantity), 0) FROM orders WHERE sale_id = $1 AND user_id = $2")
            .bind(sale)
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
    let limit: i64 =
        sqlx::query_scalar("SELECT per_user_limit FROM sales WHERE id = $1").bind(sale).fetch_one(&mut *tx).await?;
    if held + quantity > limit {
        return Ok(Err("limit_exceeded"));
    }
    let updated = sqlx::query("UPDATE sales SET stock = stock - $1 WHERE id = $2 AND stock >= $1")
        .bind(quantity)
        .bind(sale)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Ok(Err("sold_out"));
    }
    let id = naive.next_id.fetch_add(1, Ordering::Relaxed);
    sqlx::query("INSERT INTO orders (id, sale_id, user_id, quantity, idempotency_key) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(sale)
        .bind(user)
        .bind(quantity)
        .bind(key)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Ok(id))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list_orders(State(naive): State<Naive>, Query(query): Query<ListQuery>) -> Response {
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let before = query.cursor.and_then(|c| c.parse::<i64>().ok()).unwrap_or(i64::MAX);
    let rows: Result<Vec<(i64, i64, i64)>, _> =
        sqlx::query_as("SELECT id, user_id, quantity FROM orders WHERE id < $1 ORDER BY id DESC LIMIT $2")
            .bind(before)
            .bind(limit + 1)
            .fetch_all(&naive.pool)
            .await;
    let Ok(mut rows) = rows else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    };
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more { rows.last().map(|r| r.0.to_string()) } else { None };
    let items: Vec<Value> = rows.iter().map(|(id, user, q)| order_json(*id, *user, *q)).collect();
    Json(json!({"items": items, "next_cursor": next})).into_response()
}

async fn get_order(State(naive): State<Naive>, Path(id): Path<i64>) -> Response {
    let row: Result<Option<(i64, i64, i64)>, _> =
        sqlx::query_as("SELECT id, user_id, quantity FROM orders WHERE id = $1")
            .bind(id)
            .fetch_optional(&naive.pool)
            .await;
    match row {
        Ok(Some((id, user, quantity))) => Json(order_json(id, user, quantity)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found"),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

fn order_json(id: i64, user: i64, quantity: i64) -> Value {
    json!({"id": id.to_string(), "user_id": user.to_string(), "quantity": quantity, "status": "CREATED"})
}
