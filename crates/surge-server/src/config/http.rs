//! The API's own settings: its listener limits, tokens and logs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::Secret;
use super::{ConfigError, DAY, MINUTE, at_most, at_most_for, ensure};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HS256 secret shared by every node. When absent, the embedded mode
    /// generates one into `<data_dir>/jwt-secret` at first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<Secret>,
    /// Lifetime of tokens minted by `surge token` when `--ttl` is not given.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Clock skew tolerated when checking `exp`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self { jwt_secret: None, token_ttl: Duration::from_secs(3600), leeway: Duration::from_secs(30) }
    }
}

impl AuthSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        at_most_for("auth.token_ttl", self.token_ttl, 365 * DAY)?;
        at_most_for("auth.leeway", self.leeway, 5 * MINUTE)?;
        let min = crate::auth::SECRET_LEN_MIN;
        ensure(
            self.jwt_secret.as_ref().is_none_or(|secret| secret.expose().len() >= min),
            "auth.jwt_secret",
            &format!("must be at least {min} bytes"),
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Largest request body accepted; larger ones get 413.
    pub body_limit_bytes: usize,
    /// Longest any request may take; a client's `X-Request-Deadline-Ms` can
    /// only shorten it.
    #[serde(with = "humantime_serde")]
    pub request_budget: Duration,
    /// On SIGTERM, how long in-flight requests get to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long a connection may take to send a request's head; a kept-alive
    /// connection waiting for its next request is closed after it too.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Open connections per listener; further ones wait to be accepted.
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            request_budget: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

impl HttpSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        at_most_for("http.request_budget", self.request_budget, 10 * MINUTE)?;
        at_most_for("http.shutdown_grace", self.shutdown_grace, 10 * MINUTE)?;
        at_most_for("http.header_read_timeout", self.header_read_timeout, 5 * MINUTE)?;
        at_most("http.max_connections", self.max_connections as u64, 1_000_000)?;
        ensure(
            (1..=16 * 1024 * 1024).contains(&self.body_limit_bytes),
            "http.body_limit_bytes",
            "must be between 1 and 16777216",
        )?;
        ensure(!self.request_budget.is_zero(), "http.request_budget", "must be greater than zero")?;
        ensure(!self.header_read_timeout.is_zero(), "http.header_read_timeout", "must be greater than zero")?;
        ensure(self.max_connections > 0, "http.max_connections", "must be at least 1")
    }

    /// Timeouts shrink going downstream: no wait inside a request may
    /// outlive the request's own budget.
    pub(super) fn contains(&self, setting: &str, wait: Duration) -> Result<(), ConfigError> {
        ensure(
            !wait.is_zero() && wait < self.request_budget,
            setting,
            "must be above zero and shorter than http.request_budget",
        )
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `surge_server=debug,info`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".to_owned() }
    }
}

impl LogSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        at_most("log.level", self.level.len() as u64, 1_000)?;
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(drop)
            .map_err(|e| super::invalid("log.level", format!("is not a valid filter: {e}")))
    }
}
