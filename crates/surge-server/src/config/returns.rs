//! After-sale: how long a buyer may ask for a return, and which returns
//! are approved without the merchant.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use surge_domain::aftersale::ReturnPolicy;

use super::{ConfigError, DAY, ensure};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReturnSettings {
    /// How long after delivery a buyer may ask for a return.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Returns of orders under this amount are approved at once, without
    /// the merchant; 0 approves none that way.
    pub auto_approve_under_cents: i64,
}

impl Default for ReturnSettings {
    fn default() -> Self {
        Self { window: 7 * DAY, auto_approve_under_cents: 0 }
    }
}

impl ReturnSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.window >= Duration::from_secs(1) && self.window <= 365 * DAY, "returns.window", "must be 1s-365d")?;
        ensure(self.auto_approve_under_cents >= 0, "returns.auto_approve_under_cents", "must not be negative")
    }
}

impl From<&ReturnSettings> for ReturnPolicy {
    fn from(settings: &ReturnSettings) -> Self {
        ReturnPolicy { window: settings.window, auto_approve_under_cents: settings.auto_approve_under_cents }
    }
}
