//! Where orders, products and sales are kept: the embedded SQLite file, or
//! PostgreSQL (the distributed mode).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use surge_store::postgres::PgConfig;
use surge_store::sqlite::SqliteConfig;

use super::values::ServerUrl;
use super::{ConfigError, at_most, ensure};

/// `[store] kind = "sqlite"` (the default) or `kind = "postgres"` with its
/// `url`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StoreSettings {
    Sqlite(SqliteSettings),
    Postgres(PostgresSettings),
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self::Sqlite(SqliteSettings::default())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteSettings {
    pub max_connections: u32,
    /// How long a writer waits for the write lock.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// SQLite's page cache per connection (the store's and the embedded
    /// queue's), in KiB: memory traded for reads that skip the file.
    /// Resident memory grows with the database until every connection's
    /// cache is full.
    pub page_cache_kib: u32,
}

impl Default for SqliteSettings {
    fn default() -> Self {
        Self { max_connections: 8, busy_timeout: Duration::from_secs(5), page_cache_kib: 2048 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/database`.
    pub url: ServerUrl,
    #[serde(default = "PostgresSettings::default_max_connections")]
    pub max_connections: u32,
    /// How long a query waits for a pooled connection.
    #[serde(default = "PostgresSettings::default_acquire_timeout", with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl PostgresSettings {
    fn default_max_connections() -> u32 {
        8
    }

    fn default_acquire_timeout() -> Duration {
        Duration::from_secs(3)
    }
}

impl StoreSettings {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    pub(super) fn validate(&self, http: &super::HttpSettings) -> Result<(), ConfigError> {
        match self {
            Self::Sqlite(sqlite) => {
                at_most("store.max_connections", u64::from(sqlite.max_connections), 1_000)?;
                ensure(sqlite.max_connections > 0, "store.max_connections", "must be at least 1")?;
                at_most("store.page_cache_kib", u64::from(sqlite.page_cache_kib), 1 << 20)?;
                ensure(sqlite.page_cache_kib >= 64, "store.page_cache_kib", "must be at least 64")?;
                ensure(
                    sqlite.busy_timeout < http.request_budget,
                    "store.busy_timeout",
                    "must be shorter than http.request_budget",
                )
            }
            Self::Postgres(postgres) => {
                ensure(postgres.url.is(&["postgres", "postgresql"]), "store.url", "must be a postgres:// URL")?;
                at_most("store.max_connections", u64::from(postgres.max_connections), 1_000)?;
                ensure(postgres.max_connections > 0, "store.max_connections", "must be at least 1")?;
                http.contains("store.acquire_timeout", postgres.acquire_timeout)
            }
        }
    }
}

impl SqliteSettings {
    pub fn config(&self, data_dir: &Path) -> SqliteConfig {
        SqliteConfig {
            max_connections: self.max_connections,
            busy_timeout: self.busy_timeout,
            page_cache_kib: self.page_cache_kib,
            ..SqliteConfig::in_dir(data_dir)
        }
    }
}

impl From<&PostgresSettings> for PgConfig {
    fn from(postgres: &PostgresSettings) -> Self {
        Self {
            url: postgres.url.expose().to_owned(),
            max_connections: postgres.max_connections,
            acquire_timeout: postgres.acquire_timeout,
        }
    }
}
