//! Payment providers. Only the built-in `sandbox` exists so far.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{Secret, ServerUrl};
use super::{ConfigError, at_most_for, ensure};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentSettings {
    /// The platform's commission on each payment, in basis points
    /// (500 = 5%), fixed when a payment is opened.
    pub commission_bps: u32,
    /// How often every node pays out the merchants' closed statements, as
    /// `POST /v1/admin/payouts/run` does (nodes racing pay each statement
    /// once). Unset: only an admin's run pays out.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub payout_interval: Option<Duration>,
    pub sandbox: SandboxSettings,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        Self { commission_bps: 500, payout_interval: None, sandbox: SandboxSettings::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSettings {
    /// Signs the sandbox's callbacks (`Surge-Signature`). Unset: every
    /// callback is refused. Every node of a deployment needs the same one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Where a buyer pays: `<pay_url>/<provider_ref>`.
    pub pay_url: ServerUrl,
    /// A `surge payments-sandbox` process: intents and refunds are opened
    /// there, and it sends the callbacks. Unset: intents are opened in this
    /// process and callbacks come from whoever holds the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<ServerUrl>,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        let pay_url = "http://127.0.0.1:8090/pay".parse().unwrap_or_else(|_| unreachable!("a valid URL"));
        Self { secret: None, pay_url, url: None }
    }
}

impl PaymentSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.commission_bps <= 10_000, "payments.commission_bps", "must be at most 10000 (100%)")?;
        if let Some(interval) = self.payout_interval {
            ensure(interval >= Duration::from_millis(100), "payments.payout_interval", "must be at least 100ms")?;
            at_most_for("payments.payout_interval", interval, Duration::from_secs(31 * 24 * 3_600))?;
        }
        let sandbox = &self.sandbox;
        ensure(
            sandbox.secret.as_ref().is_none_or(|secret| secret.expose().len() >= 16),
            "payments.sandbox.secret",
            "must be at least 16 bytes",
        )?;
        ensure(
            sandbox.url.as_ref().is_none_or(|url| url.is(&["http", "https"])),
            "payments.sandbox.url",
            "must be an http:// or https:// URL",
        )?;
        ensure(sandbox.pay_url.is(&["http", "https"]), "payments.sandbox.pay_url", "must be an http:// or https:// URL")
    }
}
