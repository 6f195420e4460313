//! Liveness, readiness and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::state::AppState;

const TAG: &str = "operations";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// Liveness
#[utoipa::path(get, path = "/healthz", tag = TAG, responses((status = 200, description = "running")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness
///
/// 200 with every dependency's "ok", or 503 `not_ready` naming the ones
/// that are down.
#[utoipa::path(get, path = "/readyz", tag = TAG,
    responses(
        (status = 200, description = "ready"),
        (status = 503, description = "a dependency is down", body = ErrorBody),
    ),
)]
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

/// Prometheus metrics
#[utoipa::path(get, path = "/metrics", tag = TAG, responses((status = 200, description = "text exposition")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
