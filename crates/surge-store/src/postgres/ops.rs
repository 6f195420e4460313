//! `SwitchStore` and `ConfigStore` on PostgreSQL: single-row upserts, so the
//! last writer among the nodes wins, as an operator would expect.

use async_trait::async_trait;
use surge_domain::StoreError;
use time::OffsetDateTime;

use super::{PgStore, store_error};
use crate::ops::{ConfigStore, StoredSwitch, SwitchStore};
use crate::rows::unix_ms;

#[async_trait]
impl SwitchStore for PgStore {
    async fn load_switches(&self) -> Result<Vec<StoredSwitch>, StoreError> {
        let rows: Vec<(String, bool, String)> =
            sqlx::query_as("SELECT name, enabled, reason FROM switches ORDER BY name")
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(rows.into_iter().map(|(name, enabled, reason)| StoredSwitch { name, enabled, reason }).collect())
    }

    async fn save_switch(&self, switch: &StoredSwitch) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO switches (name, enabled, reason, updated_at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, reason = excluded.reason, \
             updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&switch.name)
        .bind(switch.enabled)
        .bind(&switch.reason)
        .bind(unix_ms(OffsetDateTime::now_utc()))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn forget_switch(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM switches WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

#[async_trait]
impl ConfigStore for PgStore {
    async fn load_config(&self, name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM runtime_config WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)
    }

    async fn save_config(&self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO runtime_config (name, value, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(name)
        .bind(value)
        .bind(unix_ms(OffsetDateTime::now_utc()))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }
}
