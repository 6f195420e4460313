//! Flash-sale intake, its consumer and its background loops.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, DAY, HOUR, at_most, at_most_for, ensure};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlashSaleSettings {
    /// An unpaid order is cancelled this long after it was created, and its
    /// stock goes back to the sale.
    #[serde(with = "humantime_serde")]
    pub payment_timeout: Duration,
    /// How often unpaid orders past their window are looked for.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// A deduction whose order is not written within this is given back,
    /// unless the order exists (a node died between deduct and append).
    /// Shared ledger only; must exceed the time an intake can take
    /// (`http.request_budget`) and the consumer's worst lag.
    #[serde(with = "humantime_serde")]
    pub reservation_timeout: Duration,
    /// How often each node compares the shared ledger's stock of every open
    /// sale with the orders, and repairs a difference seen twice in a row
    /// (shared ledger only).
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Most queued requests the consumer turns into orders per transaction.
    pub consumer_batch: usize,
    /// Most appends one queue commit carries (group commit).
    pub queue_batch: usize,
    /// Intake attempts admitted per customer per second (burst the same).
    pub per_user_rate: u32,
    /// Intake attempts admitted per sale per second, across customers.
    pub per_sale_rate: u32,
    /// Intake attempts per customer per second across every node (a token
    /// bucket in Redis; needs `shared.kind = "redis"`); 0 turns it off. The
    /// node-local `per_user_rate` still applies first.
    pub cluster_per_user_rate: u32,
}

impl Default for FlashSaleSettings {
    fn default() -> Self {
        Self {
            payment_timeout: Duration::from_secs(15 * 60),
            sweep_interval: Duration::from_secs(1),
            reservation_timeout: Duration::from_secs(5 * 60),
            reconcile_interval: Duration::from_secs(30),
            consumer_batch: 512,
            queue_batch: 1024,
            per_user_rate: 10,
            per_sale_rate: 200_000,
            cluster_per_user_rate: 0,
        }
    }
}

impl FlashSaleSettings {
    pub(super) fn validate(&self, http: &super::HttpSettings) -> Result<(), ConfigError> {
        for (setting, value, max) in [
            ("flash_sale.payment_timeout", self.payment_timeout, 7 * DAY),
            ("flash_sale.sweep_interval", self.sweep_interval, HOUR),
            ("flash_sale.reservation_timeout", self.reservation_timeout, 7 * DAY),
            ("flash_sale.reconcile_interval", self.reconcile_interval, DAY),
        ] {
            at_most_for(setting, value, max)?;
            ensure(!value.is_zero(), setting, "must be greater than zero")?;
        }
        for (setting, value, max) in [
            ("flash_sale.per_user_rate", self.per_user_rate, 1_000_000),
            ("flash_sale.per_sale_rate", self.per_sale_rate, 100_000_000),
        ] {
            at_most(setting, u64::from(value), max)?;
            ensure(value > 0, setting, "must be at least 1")?;
        }
        at_most("flash_sale.cluster_per_user_rate", u64::from(self.cluster_per_user_rate), 1_000_000)?;
        for (setting, value) in
            [("flash_sale.consumer_batch", self.consumer_batch), ("flash_sale.queue_batch", self.queue_batch)]
        {
            ensure((1..=10_000).contains(&value), setting, "must be between 1 and 10000")?;
        }
        ensure(
            self.reservation_timeout > http.request_budget,
            "flash_sale.reservation_timeout",
            "must be longer than http.request_budget",
        )
    }
}
