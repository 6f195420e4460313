//! The baseline server: the least an axum handler can do for the same route.

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;

/// The same shape and size as a product Surge serves.
const PRODUCT: &str = r#"{"id":"252628494368899072","merchant_id":"42","sku":"BENCH-1","name":"Benchmark product","price_cents":1999,"stock":10,"updated_at":"2026-11-29T02:55:26.668Z"}"#;

pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let app = Router::new().route("/v1/products/{id}", get(product)).route("/v1/flash-sales/{id}/orders", post(intake));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("minimal server on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn product() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], PRODUCT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntakeBody {
    #[allow(dead_code)] // parsed like Surge parses it, then unused
    quantity: Option<i64>,
}

/// Parses the same JSON body as Surge's intake and answers 202.
async fn intake(Json(_body): Json<IntakeBody>) -> impl IntoResponse {
    (StatusCode::ACCEPTED, Json(serde_json::json!({"order_id": "1", "status": "PENDING"})))
}
