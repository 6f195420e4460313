//! The state every node shares: the stock ledger, intake keys, the pending
//! views and the cluster-wide limits. In this process (embedded mode), or
//! in Redis.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{ServerUrl, list};
use super::{ConfigError, DAY, at_most, at_most_for, ensure, invalid};

/// `[shared] kind = "in_process"` (the default) or `kind = "redis"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SharedSettings {
    InProcess(InProcessSettings),
    Redis(RedisSettings),
}

impl Default for SharedSettings {
    fn default() -> Self {
        Self::InProcess(InProcessSettings {})
    }
}

/// Nothing to set: the state lives and dies with this process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InProcessSettings {}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://` (or `rediss://`, TLS) URLs: one standalone server, or
    /// seed nodes of a cluster. A list, or one string with commas.
    #[serde(deserialize_with = "list")]
    pub urls: Vec<ServerUrl>,
    /// The URLs are nodes of a Redis Cluster.
    pub cluster: bool,
    /// Prefix of every key.
    pub namespace: String,
    /// Longest wait for one command.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// How long an intake key remembers its order.
    #[serde(with = "humantime_serde")]
    pub key_ttl: Duration,
    /// Replicas that must hold a deduction before intake answers 202
    /// (`WAIT` on the sale's master): 1 with a Redis Cluster, so a failover
    /// can't lose an acknowledged deduction; 0 without replicas.
    pub wait_replicas: u32,
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    /// For `rediss://` URLs: the PEM file of the CA that signed the
    /// servers' certificates; without it the system's trust store is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            cluster: false,
            namespace: "surge".to_owned(),
            response_timeout: Duration::from_millis(500),
            key_ttl: Duration::from_secs(7 * 24 * 3600),
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(100),
            tls_ca_file: None,
        }
    }
}

impl SharedSettings {
    pub fn redis(&self) -> Option<&RedisSettings> {
        match self {
            Self::InProcess(_) => None,
            Self::Redis(redis) => Some(redis),
        }
    }

    pub(super) fn validate(&self, http: &super::HttpSettings) -> Result<(), ConfigError> {
        self.redis().map_or(Ok(()), |redis| redis.validate(http))
    }
}

impl RedisSettings {
    fn validate(&self, http: &super::HttpSettings) -> Result<(), ConfigError> {
        at_most_for("shared.key_ttl", self.key_ttl, 90 * DAY)?;
        at_most("shared.wait_replicas", u64::from(self.wait_replicas), 16)?;
        at_most("shared.namespace", self.namespace.len() as u64, 64)?;
        ensure(!self.urls.is_empty(), "shared.urls", "must name at least one Redis server")?;
        if let Some(url) = self.urls.iter().find(|url| !url.is(&["redis", "rediss"])) {
            return Err(invalid("shared.urls", format!("must be redis:// or rediss:// (TLS) URLs, not {url}")));
        }
        // A cluster fails over to a replica: a deduction the master had not
        // passed on would be lost with it, and its 202 would be stock sold
        // twice.
        ensure(!self.cluster || self.wait_replicas > 0, "shared.wait_replicas", "must be at least 1 with a cluster")?;
        if self.wait_replicas > 0 {
            http.contains("shared.wait_timeout", self.wait_timeout)?;
        }
        http.contains("shared.response_timeout", self.response_timeout)?;
        ensure(self.key_ttl >= Duration::from_secs(60), "shared.key_ttl", "must be at least 60s")?;
        ensure(!self.namespace.is_empty(), "shared.namespace", "must not be empty")
    }

    /// The URLs as the client takes them.
    pub fn exposed_urls(&self) -> Vec<String> {
        self.urls.iter().map(|url| url.expose().to_owned()).collect()
    }
}
