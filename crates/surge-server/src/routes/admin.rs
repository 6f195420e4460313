//! The config centre, first part: degradation switches (API.md,
//! "Operations"). Manual settings are persisted and take effect on every
//! route at once.

use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use surge_domain::Actor;
use surge_domain::runtime_config::StoredSwitch;
use surge_guard::switch::{Mode, Switch};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::config_centre::Tunables;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, present};
use crate::state::AppState;

const TAG: &str = "admin";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_switches))
        .routes(routes!(set_switch))
        .routes(routes!(get_config, set_config))
}

// The schema of `Tunables`, which `config_centre` does not annotate: its
// three sections are described as objects.
/// The run-time settings; GET answers all three sections, PUT takes any
/// subset.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Tunables)]
#[expect(dead_code, reason = "read by the document only; the handlers send and take `Tunables`")]
struct TunablesSchema {
    /// `per_user_rate`, `per_sale_rate`.
    #[schema(value_type = Object, required = false)]
    flash_sale: (),
    /// Pool sizes and the adaptive limit's bounds.
    #[schema(value_type = Object, required = false)]
    overload: (),
    /// The notification breaker's thresholds.
    #[schema(value_type = Object, required = false)]
    notify_breaker: (),
}

/// Run-time settings (admin)
///
/// The run-time settings: intake rates, pool sizes, the adaptive limit's
/// bounds and the notification breaker's thresholds.
#[utoipa::path(get, path = "/v1/admin/config", tag = TAG, security(("bearer" = [])),
    responses((status = 200, description = "the settings", body = TunablesSchema)),
)]
async fn get_config(State(state): State<AppState>, caller: Caller) -> Result<Json<Tunables>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(state.live.current()))
}

/// Change run-time settings (admin; any subset; validated, persisted)
///
/// Any subset of the document; validated like start-up, persisted, applied
/// at once. Bad input is a 400 and changes nothing.
#[utoipa::path(put, path = "/v1/admin/config", tag = TAG, security(("bearer" = [])), request_body = TunablesSchema,
    responses(
        (status = 200, description = "the settings", body = TunablesSchema),
        (status = 400, description = "invalid", body = ErrorBody),
    ),
)]
async fn set_config(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(patch): ApiJson<serde_json::Value>,
) -> Result<Json<Tunables>, ApiError> {
    let admin = require_admin(&caller)?;
    if !patch.is_object() {
        return Err(ApiError::bad_request("send a JSON object with the settings to change"));
    }
    let exclusive = state.config_centre.exclusive().await;
    let updated = state.live.update(&patch).await?;
    drop(exclusive);
    tracing::warn!(%admin, patch = %patch, "run-time settings changed by hand");
    state.config_centre.announce().await;
    Ok(Json(updated))
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Switch)]
struct SwitchBody {
    name: String,
    enabled: bool,
    reason: String,
    mode: SwitchMode,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

/// `manual` (set by hand) or `auto` (tripped by a breaker).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum SwitchMode {
    Manual,
    Auto,
}

impl From<Switch> for SwitchBody {
    fn from(switch: Switch) -> Self {
        let since_epoch = switch.updated_at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        SwitchBody {
            name: switch.name,
            enabled: switch.enabled,
            reason: switch.reason,
            mode: match switch.mode {
                Mode::Manual => SwitchMode::Manual,
                Mode::Auto => SwitchMode::Auto,
            },
            updated_at: OffsetDateTime::from_unix_timestamp_nanos(since_epoch.as_nanos() as i128)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SwitchList)]
struct Items {
    items: Vec<SwitchBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SetSwitch)]
struct SetBody {
    enabled: bool,
    #[schema(max_length = 500)]
    reason: String,
    /// `manual` (the default) pins the setting; `auto` hands the switch back
    /// to its breaker (and `enabled` must then be true).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = SwitchMode)]
    mode: Option<String>,
}

/// The admin's subject, for the audit line every change writes.
fn require_admin(caller: &Caller) -> Result<&str, ApiError> {
    match &caller.0 {
        Actor::Admin(subject) => Ok(subject),
        _ => Err(ApiError::forbidden("admin only")),
    }
}

/// Degradation switches (admin)
#[utoipa::path(get, path = "/v1/admin/switches", tag = TAG, security(("bearer" = [])),
    responses((status = 200, description = "the switches", body = Items)),
)]
async fn list_switches(State(state): State<AppState>, caller: Caller) -> Result<Json<Items>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(Items { items: state.switches.list().into_iter().map(Into::into).collect() }))
}

/// Flip a switch (admin; persisted)
#[utoipa::path(put, path = "/v1/admin/switches/{name}", tag = TAG, security(("bearer" = [])),
    params(("name" = String, Path, description = "the switch's name")), request_body = SetBody,
    responses(
        (status = 200, description = "the switch", body = SwitchBody),
        (status = 404, description = "no such switch", body = ErrorBody),
    ),
)]
async fn set_switch(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<SetBody>,
) -> Result<Json<SwitchBody>, ApiError> {
    let admin = require_admin(&caller)?;
    if body.reason.chars().count() > 500 {
        return Err(ApiError::bad_request("reason is at most 500 characters"));
    }
    let known = state.switches.list().into_iter().any(|s| s.name == name);
    if !known {
        return Err(ApiError::not_found(format!("no switch named {name}")));
    }
    let exclusive = state.config_centre.exclusive().await;
    let switch = match body.mode.as_deref() {
        None | Some("manual") => {
            let stored = StoredSwitch { name: name.clone(), enabled: body.enabled, reason: body.reason.clone() };
            state.switch_store.save_switch(&stored).await.map_err(|e| ApiError::unavailable(&e))?;
            state.switches.set_manual(&name, body.enabled, &body.reason)
        }
        Some("auto") if body.enabled => {
            state.switch_store.forget_switch(&name).await.map_err(|e| ApiError::unavailable(&e))?;
            state.switches.release(&name)
        }
        Some("auto") => return Err(ApiError::bad_request("mode auto hands the switch back enabled")),
        Some(_) => return Err(ApiError::bad_request("mode is manual or auto")),
    };
    drop(exclusive);
    let switch = switch.map_err(|unknown| ApiError::not_found(unknown.to_string()))?;
    tracing::warn!(%admin, switch = %name, enabled = body.enabled, reason = %body.reason, "switch set by hand");
    state.config_centre.announce().await;
    Ok(Json(switch.into()))
}
