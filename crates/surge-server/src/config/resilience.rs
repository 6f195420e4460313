//! The resilience policies' settings: breakers, retries, bulkheads, the
//! adaptive limit and the hot-parameter limit. Each converts into its
//! `surge_guard` policy's config.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use surge_guard::breaker::{BreakerConfig, TripRule};
use surge_guard::retry::Retries;
use tower::retry::budget::TpsBudget;

use super::{ConfigError, HOUR, MINUTE, at_most, at_most_for, ensure};

/// A circuit breaker's settings; every rule below is active.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Open when this share of the window's calls failed...
    pub error_ratio: f64,
    /// ... or this share was slower than `slow_call` ...
    pub slow_call_ratio: f64,
    #[serde(with = "humantime_serde")]
    pub slow_call: Duration,
    /// ... over this sliding window, once it holds `min_calls` calls.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub min_calls: u32,
    /// How long it stays open before probing.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// Probe calls that must all succeed to close it.
    pub probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            error_ratio: 0.5,
            slow_call_ratio: 0.8,
            slow_call: Duration::from_secs(1),
            window: Duration::from_secs(10),
            min_calls: 10,
            open_for: Duration::from_secs(5),
            probes: 1,
        }
    }
}

impl BreakerSettings {
    /// Probes come four a second: three failures in a row (under a second)
    /// open the breaker; it probes again after two seconds.
    pub fn for_dependencies() -> Self {
        Self {
            consecutive_failures: 3,
            min_calls: 20,
            open_for: Duration::from_secs(2),
            slow_call: Duration::from_millis(400),
            ..Self::default()
        }
    }

    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let setting = |field: &str| format!("{name}.{field}");
        at_most(&setting("consecutive_failures"), u64::from(self.consecutive_failures), 100_000)?;
        at_most(&setting("min_calls"), u64::from(self.min_calls), 1_000_000)?;
        at_most(&setting("probes"), u64::from(self.probes), 1_000)?;
        at_most_for(&setting("slow_call"), self.slow_call, 10 * MINUTE)?;
        at_most_for(&setting("window"), self.window, HOUR)?;
        at_most_for(&setting("open_for"), self.open_for, HOUR)?;
        for (field, value) in [
            ("consecutive_failures", self.consecutive_failures),
            ("min_calls", self.min_calls),
            ("probes", self.probes),
        ] {
            ensure(value > 0, &setting(field), "must be at least 1")?;
        }
        for (field, ratio) in [("error_ratio", self.error_ratio), ("slow_call_ratio", self.slow_call_ratio)] {
            ensure(ratio > 0.0 && ratio <= 1.0, &setting(field), "must be in (0, 1]")?;
        }
        for (field, value) in [("window", self.window), ("open_for", self.open_for), ("slow_call", self.slow_call)] {
            ensure(!value.is_zero(), &setting(field), "must be greater than zero")?;
        }
        Ok(())
    }
}

impl From<&BreakerSettings> for BreakerConfig {
    fn from(breaker: &BreakerSettings) -> Self {
        Self {
            rules: vec![
                TripRule::ConsecutiveFailures(breaker.consecutive_failures),
                TripRule::ErrorRatio(breaker.error_ratio),
                TripRule::SlowCallRatio { ratio: breaker.slow_call_ratio, slow_call: breaker.slow_call },
            ],
            window: breaker.window,
            min_calls: breaker.min_calls,
            open_for: breaker.open_for,
            probes: breaker.probes,
        }
    }
}

/// Retries of an idempotent outbound call: tries, backoff and the budget
/// that bounds retries to a fraction of recent successful calls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Tries in all, the first included; 1 turns retries off.
    pub attempts_max: u32,
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Retries allowed per successful call, over `budget_window`.
    pub budget_ratio: f32,
    /// Retries a second allowed whatever the ratio says.
    pub budget_floor_per_sec: u32,
    #[serde(with = "humantime_serde")]
    pub budget_window: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            attempts_max: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            budget_ratio: 0.2,
            budget_floor_per_sec: 1,
            budget_window: Duration::from_secs(10),
        }
    }
}

impl RetrySettings {
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let setting = |field: &str| format!("{name}.{field}");
        at_most_for(&setting("backoff_max"), self.backoff_max, 5 * MINUTE)?;
        at_most(&setting("budget_floor_per_sec"), u64::from(self.budget_floor_per_sec), 100_000)?;
        ensure((1..=10).contains(&self.attempts_max), &setting("attempts_max"), "must be between 1 and 10")?;
        ensure(
            !self.backoff_base.is_zero() && self.backoff_base <= self.backoff_max,
            &setting("backoff_base"),
            &format!("must be above zero and at most {name}.backoff_max"),
        )?;
        ensure((0.0..=1000.0).contains(&self.budget_ratio), &setting("budget_ratio"), "must be between 0 and 1000")?;
        ensure(
            (Duration::from_secs(1)..=MINUTE).contains(&self.budget_window),
            &setting("budget_window"),
            "must be between 1s and 60s",
        )
    }
}

impl From<&RetrySettings> for Retries {
    fn from(retry: &RetrySettings) -> Self {
        let rules = surge_guard::retry::RetrySettings {
            attempts_max: retry.attempts_max,
            backoff_base: retry.backoff_base,
            backoff_max: retry.backoff_max,
        };
        let budget = TpsBudget::new(retry.budget_window, retry.budget_floor_per_sec, retry.budget_ratio);
        Retries::new(rules, Arc::new(budget))
    }
}

/// Route limits beyond the intake's own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateSettings {
    /// Hot-parameter limit: reads of any one product per second (a token
    /// bucket per product id); 0 turns it off.
    pub product_read_per_sec: u32,
    /// The burst one product's bucket holds.
    pub product_read_burst: u32,
}

impl Default for RateSettings {
    fn default() -> Self {
        Self { product_read_per_sec: 0, product_read_burst: 1000 }
    }
}

impl RateSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        at_most("rate.product_read_per_sec", u64::from(self.product_read_per_sec), 100_000_000)?;
        at_most("rate.product_read_burst", u64::from(self.product_read_burst), 100_000_000)?;
        ensure(
            self.product_read_per_sec == 0 || self.product_read_burst > 0,
            "rate.product_read_burst",
            "must be at least 1 when rate.product_read_per_sec is set",
        )
    }
}

/// Bulkheads and the node's adaptive concurrency limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadSettings {
    /// The bulkheads and the adaptive limit; off only to measure their cost.
    pub enabled: bool,
    /// Concurrent core calls (intake, orders, payment, product reads and writes).
    pub core_concurrency: usize,
    /// Concurrent non-core calls (listings): shed first.
    pub non_core_concurrency: usize,
    /// Concurrent reads of a flash sale (`GET /v1/flash-sales/{id}`, open
    /// to anyone): a pool of their own, so a flood of them takes no slot
    /// from intake.
    pub sale_read_concurrency: usize,
    /// How long a call waits for a bulkhead slot before it is shed.
    #[serde(with = "humantime_serde")]
    pub bulkhead_max_wait: Duration,
    /// The node's AIMD limit on concurrent API calls: start, floor, ceiling.
    pub adaptive_initial: usize,
    pub adaptive_min: usize,
    pub adaptive_max: usize,
    /// Calls slower than this shrink the adaptive limit.
    #[serde(with = "humantime_serde")]
    pub adaptive_target_latency: Duration,
}

impl Default for OverloadSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            core_concurrency: 1024,
            non_core_concurrency: 64,
            sale_read_concurrency: 64,
            bulkhead_max_wait: Duration::from_millis(50),
            adaptive_initial: 1024,
            adaptive_min: 32,
            adaptive_max: 4096,
            adaptive_target_latency: Duration::from_millis(500),
        }
    }
}

impl OverloadSettings {
    pub(super) fn validate(&self, http: &super::HttpSettings) -> Result<(), ConfigError> {
        for (setting, value) in [
            ("overload.core_concurrency", self.core_concurrency),
            ("overload.non_core_concurrency", self.non_core_concurrency),
            ("overload.sale_read_concurrency", self.sale_read_concurrency),
            ("overload.adaptive_max", self.adaptive_max),
        ] {
            at_most(setting, value as u64, 1_000_000)?;
            ensure(value > 0, setting, "must be at least 1")?;
        }
        at_most_for("overload.adaptive_target_latency", self.adaptive_target_latency, MINUTE)?;
        ensure(
            self.adaptive_min > 0 && self.adaptive_min <= self.adaptive_max,
            "overload.adaptive_min",
            "must be between 1 and overload.adaptive_max",
        )?;
        ensure(
            (self.adaptive_min..=self.adaptive_max).contains(&self.adaptive_initial),
            "overload.adaptive_initial",
            "must be between overload.adaptive_min and adaptive_max",
        )?;
        ensure(
            !self.adaptive_target_latency.is_zero(),
            "overload.adaptive_target_latency",
            "must be greater than zero",
        )?;
        ensure(
            self.bulkhead_max_wait < http.request_budget,
            "overload.bulkhead_max_wait",
            "must be shorter than http.request_budget",
        )
    }
}
