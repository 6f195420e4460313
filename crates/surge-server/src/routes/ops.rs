//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 with every dependency's "ok", or 503 `not_ready` naming the ones
/// that are down.
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let checks = state.readiness.check().await;
    let down: Vec<String> =
        checks.iter().filter_map(|(name, state)| state.err().map(|why| format!("{name}: {why}"))).collect();
    if !down.is_empty() {
        return Err(ApiError { retry_after_secs: Some(1), ..ApiError::new(ErrorCode::NotReady, down.join(", ")) });
    }
    let checks: serde_json::Map<String, serde_json::Value> =
        checks.into_iter().map(|(name, _)| (name.to_owned(), json!("ok"))).collect();
    Ok(Json(json!({ "status": "ready", "checks": checks })))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
