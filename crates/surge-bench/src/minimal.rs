//! The baseline server: the least an axum handler can do for the same route.

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::sync::Arc;

/// The same shape and size as a product Surge serves.
const PRODUCT: &str = r#"{"id":"252628494368899072","merchant_id":"42","sku":"BENCH-1","name":"Benchmark product","price_cents":1999,"stock":10,"updated_at":"2026-11-29T02:55:26.668Z"}"#;

pub async fn serve(listen: SocketAddr, callback_secret: String) -> anyhow::Result<()> {
    let secret: Arc<[u8]> = Arc::from(callback_secret.into_bytes());
    let app = Router::new()
        .route("/v1/products/{id}", get(product))
        .route("/v1/flash-sales/{id}/orders", post(intake))
        .route("/v1/payments/callbacks/{provider}", post(callback))
        .with_state(secret);
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

#[derive(Deserialize)]
#[allow(dead_code)] // parsed like Surge parses it, then unused
struct CallbackBody {
    event_id: String,
    #[serde(rename = "type")]
    kind: String,
    provider_ref: String,
    amount_cents: i64,
}

/// Checks the `Surge-Signature` (HMAC-SHA256 of `"<t>.<body>"`) and parses
/// the event, then answers 200: the floor of a verified callback, with no
/// state.
async fn callback(State(secret): State<Arc<[u8]>>, headers: axum::http::HeaderMap, body: Bytes) -> StatusCode {
    let header = headers.get("surge-signature").and_then(|value| value.to_str().ok()).unwrap_or_default();
    let mut parts = header.split(',');
    let t = parts.next().and_then(|part| part.strip_prefix("t=")).unwrap_or_default();
    let v1 = parts.next().and_then(|part| part.strip_prefix("v1=")).and_then(|hex| hex::decode(hex).ok());
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret).expect("HMAC takes a key of any length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&body);
    let signed = v1.is_some_and(|v1| mac.verify_slice(&v1).is_ok());
    if signed && serde_json::from_slice::<CallbackBody>(&body).is_ok() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}
