//! The config centre's run-time settings: limits, thresholds and pool sizes
//! an operator can change without a restart (`GET/PUT /v1/admin/config`).
//!
//! A change is merged into the current values, checked by the same
//! `Settings::validate` as start-up (which bounds every value), applied to
//! the live components, then persisted; if it can't be persisted it is
//! rolled back. Stored changes are re-applied at the next start.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use surge_domain::runtime_config::ConfigStore;
use surge_guard::breaker::CircuitBreaker;
use surge_guard::bulkhead::AimdSettings;

use crate::config::{BreakerSettings, Settings};
use crate::error::ApiError;
use crate::limits::IntakeLimits;
use crate::routes::OverloadGuards;

/// Name of the stored document.
pub const TUNABLES: &str = "tunables";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tunables {
    pub flash_sale: RateTunables,
    pub overload: OverloadTunables,
    pub notify_breaker: BreakerSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateTunables {
    pub per_user_rate: u32,
    pub per_sale_rate: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OverloadTunables {
    pub core_concurrency: usize,
    pub non_core_concurrency: usize,
    pub adaptive_min: usize,
    pub adaptive_max: usize,
    #[serde(with = "humantime_serde")]
    pub adaptive_target_latency: Duration,
}

impl Tunables {
    pub fn of(settings: &Settings) -> Self {
        let overload = &settings.overload;
        Self {
            flash_sale: RateTunables {
                per_user_rate: settings.flash_sale.per_user_rate,
                per_sale_rate: settings.flash_sale.per_sale_rate,
            },
            overload: OverloadTunables {
                core_concurrency: overload.core_concurrency,
                non_core_concurrency: overload.non_core_concurrency,
                adaptive_min: overload.adaptive_min,
                adaptive_max: overload.adaptive_max,
                adaptive_target_latency: overload.adaptive_target_latency,
            },
            notify_breaker: settings.notify.breaker.clone(),
        }
    }

    pub fn apply_to(&self, settings: &mut Settings) {
        settings.flash_sale.per_user_rate = self.flash_sale.per_user_rate;
        settings.flash_sale.per_sale_rate = self.flash_sale.per_sale_rate;
        let overload = &mut settings.overload;
        overload.core_concurrency = self.overload.core_concurrency;
        overload.non_core_concurrency = self.overload.non_core_concurrency;
        overload.adaptive_min = self.overload.adaptive_min;
        overload.adaptive_max = self.overload.adaptive_max;
        overload.adaptive_target_latency = self.overload.adaptive_target_latency;
        settings.notify.breaker = self.notify_breaker.clone();
    }

    /// The settings with `stored` (a persisted document) applied, if it is
    /// valid; otherwise the settings unchanged and why.
    pub fn restore(settings: &Settings, stored: &str) -> Result<Settings, String> {
        let tunables: Tunables = serde_json::from_str(stored).map_err(|e| e.to_string())?;
        let mut restored = settings.clone();
        tunables.apply_to(&mut restored);
        restored.validate().map_err(|e| e.to_string())?;
        Ok(restored)
    }
}

/// The live components a change reaches.
pub struct LiveConfig {
    pub settings: Mutex<Settings>,
    pub intake_limits: Arc<IntakeLimits>,
    pub guards: OverloadGuards,
    pub notify_breaker: Arc<CircuitBreaker>,
    pub store: Arc<dyn ConfigStore>,
    /// One change at a time.
    pub updating: tokio::sync::Mutex<()>,
}

impl LiveConfig {
    pub fn current(&self) -> Tunables {
        Tunables::of(&self.settings.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Merges `patch` (any subset of the document), validates, persists and
    /// applies. Bad input changes nothing.
    pub async fn update(&self, patch: &Value) -> Result<Tunables, ApiError> {
        let _one_at_a_time = self.updating.lock().await;
        let mut document = serde_json::to_value(self.current()).map_err(|_| ApiError::internal())?;
        merge(&mut document, patch);
        let tunables: Tunables = serde_json::from_value(document).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut candidate = self.settings.lock().unwrap_or_else(PoisonError::into_inner).clone();
        tunables.apply_to(&mut candidate);
        candidate.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
        let stored = serde_json::to_string(&tunables).map_err(|_| ApiError::internal())?;
        // Applied before it is saved: a change that broke the node would
        // break it now, not at every start after (no crash loop).
        let previous =
            std::mem::replace(&mut *self.settings.lock().unwrap_or_else(PoisonError::into_inner), candidate.clone());
        self.apply_live(&candidate);
        if let Err(error) = self.store.save_config(TUNABLES, &stored).await {
            self.apply_live(&previous);
            *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = previous;
            return Err(ApiError::unavailable(&error));
        }
        Ok(tunables)
    }

    /// Applies a stored document that another node saved (the config
    /// centre's reload); one that no longer validates is ignored.
    pub async fn adopt(&self, stored: &str) {
        let _one_at_a_time = self.updating.lock().await;
        let current = self.settings.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match Tunables::restore(&current, stored) {
            Ok(restored) if restored != current => {
                self.apply_live(&restored);
                *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = restored;
                tracing::info!("run-time settings changed through another node");
            }
            Ok(_) => {}
            Err(why) => tracing::warn!(%why, "ignoring stored run-time settings"),
        }
    }

    fn apply_live(&self, settings: &Settings) {
        self.intake_limits.reconfigure(settings.flash_sale.per_user_rate, settings.flash_sale.per_sale_rate);
        let overload = &settings.overload;
        self.guards.core.resize(overload.core_concurrency);
        self.guards.non_core.resize(overload.non_core_concurrency);
        self.guards.node.reconfigure(aimd(settings));
        self.notify_breaker.reconfigure((&settings.notify.breaker).into());
    }
}

pub fn aimd(settings: &Settings) -> AimdSettings {
    let overload = &settings.overload;
    AimdSettings {
        initial: overload.adaptive_initial,
        min: overload.adaptive_min,
        max: overload.adaptive_max,
        target_latency: overload.adaptive_target_latency,
        backoff: 0.9,
    }
}

/// JSON merge patch (RFC 7386) without deletion: objects merge key by key,
/// anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}
