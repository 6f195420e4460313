//! `SaleStore` on SQLite.

use async_trait::async_trait;
use surge_domain::flashsale::{FlashSale, SaleStore};
use surge_domain::{SaleId, StoreError};
use time::OffsetDateTime;

use super::{SqliteStore, store_error};
use crate::rows::{SALE_COLUMNS as COLUMNS, SaleRow, unix_ms};

#[async_trait]
impl SaleStore for SqliteStore {
    async fn insert(&self, sale: &FlashSale) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO flash_sales (id, product_id, merchant_id, stock, price_cents, starts_at_ms, ends_at_ms, \
             per_user_limit, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(sale.id.get())
        .bind(sale.product_id.get())
        .bind(sale.merchant_id.get())
        .bind(sale.stock)
        .bind(sale.price_cents.get())
        .bind(unix_ms(sale.starts_at))
        .bind(unix_ms(sale.ends_at))
        .bind(i64::from(sale.per_user_limit))
        .bind(unix_ms(OffsetDateTime::now_utc()))
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn get(&self, id: SaleId) -> Result<Option<FlashSale>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM flash_sales WHERE id = $1");
        let row: Option<SaleRow> =
            sqlx::query_as(&sql).bind(id.get()).fetch_optional(&self.pool).await.map_err(store_error)?;
        Ok(row.map(Into::into))
    }

    async fn list_unended(&self, now: OffsetDateTime) -> Result<Vec<FlashSale>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM flash_sales WHERE ends_at_ms > $1 ORDER BY id");
        let rows: Vec<SaleRow> =
            sqlx::query_as(&sql).bind(unix_ms(now)).fetch_all(&self.pool).await.map_err(store_error)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}
