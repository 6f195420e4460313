//! `SaleStore` on SQLite.

use async_trait::async_trait;
use surge_domain::flashsale::{FlashSale, SaleStore};
use surge_domain::{Cents, MerchantId, ProductId, SaleId, StoreError};
use time::OffsetDateTime;

use super::{SqliteStore, from_unix_ms, store_error, unix_ms};

const COLUMNS: &str = "id, product_id, merchant_id, stock, price_cents, starts_at_ms, ends_at_ms, per_user_limit";

#[derive(sqlx::FromRow)]
struct SaleRow {
    id: i64,
    product_id: i64,
    merchant_id: i64,
    stock: i64,
    price_cents: i64,
    starts_at_ms: i64,
    ends_at_ms: i64,
    per_user_limit: i64,
}

impl From<SaleRow> for FlashSale {
    fn from(row: SaleRow) -> Self {
        FlashSale {
            id: SaleId::new(row.id),
            product_id: ProductId::new(row.product_id),
            merchant_id: MerchantId::new(row.merchant_id),
            stock: row.stock,
            price_cents: Cents::from_trusted(row.price_cents),
            starts_at: from_unix_ms(row.starts_at_ms),
            ends_at: from_unix_ms(row.ends_at_ms),
            per_user_limit: u32::try_from(row.per_user_limit).unwrap_or(1),
        }
    }
}

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
