//! The node's product cache (cache-aside, stampede-proof).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use surge_store::cache::ProductCacheConfig;

use super::{ConfigError, DAY, HOUR, at_most, at_most_for, ensure};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    pub capacity: u64,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub ttl_jitter: Duration,
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub second_delete_delay: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            ttl: Duration::from_secs(60),
            ttl_jitter: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(5),
            second_delete_delay: Duration::from_millis(500),
        }
    }
}

impl CacheSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        at_most("cache.capacity", self.capacity, 100_000_000)?;
        at_most_for("cache.ttl", self.ttl, DAY)?;
        at_most_for("cache.negative_ttl", self.negative_ttl, HOUR)?;
        at_most_for("cache.second_delete_delay", self.second_delete_delay, HOUR)?;
        ensure(self.capacity > 0, "cache.capacity", "must be at least 1")?;
        ensure(!self.ttl.is_zero(), "cache.ttl", "must be greater than zero")?;
        ensure(!self.negative_ttl.is_zero(), "cache.negative_ttl", "must be greater than zero")?;
        ensure(self.ttl_jitter < self.ttl, "cache.ttl_jitter", "must be shorter than cache.ttl")
    }
}

impl From<&CacheSettings> for ProductCacheConfig {
    fn from(cache: &CacheSettings) -> Self {
        Self {
            capacity: cache.capacity,
            ttl: cache.ttl,
            ttl_jitter: cache.ttl_jitter,
            negative_ttl: cache.negative_ttl,
            second_delete_delay: cache.second_delete_delay,
        }
    }
}
