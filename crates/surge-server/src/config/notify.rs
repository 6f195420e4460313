//! Where order notifications go, and the breaker and retries in front of it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::resilience::{BreakerSettings, RetrySettings};
use super::values::ServerUrl;
use super::{ConfigError, at_most, ensure};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySettings {
    /// POST order notifications here; without it they go to the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<ServerUrl>,
    /// For an `https://` webhook: the PEM file of the CA that signed its
    /// certificate, trusted besides the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Notifications waiting for delivery; beyond it they are dropped.
    pub queue_capacity: usize,
    /// The breaker in front of the sink.
    pub breaker: BreakerSettings,
    /// Retries of a refused delivery.
    pub retry: RetrySettings,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            webhook_url: None,
            tls_ca_file: None,
            timeout: Duration::from_secs(2),
            queue_capacity: 10_000,
            breaker: BreakerSettings::default(),
            retry: RetrySettings::default(),
        }
    }
}

impl NotifySettings {
    pub(super) fn validate(&self, http: &super::HttpSettings) -> Result<(), ConfigError> {
        ensure(
            self.webhook_url.as_ref().is_none_or(|url| url.is(&["http", "https"])),
            "notify.webhook_url",
            "must be an http:// or https:// URL",
        )?;
        at_most("notify.queue_capacity", self.queue_capacity as u64, 1_000_000)?;
        ensure(self.queue_capacity > 0, "notify.queue_capacity", "must be at least 1")?;
        self.breaker.validate("notify.breaker")?;
        self.retry.validate("notify.retry")?;
        // Timeouts shrink going downstream: no outbound call may outlive
        // the request budget of the node that makes it.
        ensure(self.timeout < http.request_budget, "notify.timeout", "must be shorter than http.request_budget")
    }
}
