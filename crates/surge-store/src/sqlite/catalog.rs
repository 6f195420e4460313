//! `CatalogStore` on SQLite.

use std::sync::Arc;

use async_trait::async_trait;
use surge_domain::catalog::{CatalogStore, NewProduct, Product, ProductName, ProductPage, ProductPatch, Stock};
use surge_domain::{Cents, MerchantId, ProductId, StoreError};
use time::OffsetDateTime;

use super::{SqliteStore, store_error};
use crate::rows::{PRODUCT_COLUMNS as COLUMNS, ProductRow, one_page, unix_ms};

#[async_trait]
impl CatalogStore for SqliteStore {
    async fn insert(
        &self,
        id: ProductId,
        new: &NewProduct,
        idempotency_key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Product, StoreError> {
        let now_ms = unix_ms(now);
        let sql = format!(
            "INSERT INTO products (id, merchant_id, sku, name, price_cents, stock, idempotency_key, created_at_ms, \
             updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING {COLUMNS}"
        );
        let row: ProductRow = sqlx::query_as(&sql)
            .bind(id.get())
            .bind(new.merchant_id.get())
            .bind(new.sku.as_str())
            .bind(new.name.as_str())
            .bind(new.price_cents.get())
            .bind(new.stock.get())
            .bind(idempotency_key)
            .bind(now_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(row.into())
    }

    async fn find_by_idempotency_key(&self, merchant: MerchantId, key: &str) -> Result<Option<Product>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM products WHERE merchant_id = $1 AND idempotency_key = $2");
        let row: Option<ProductRow> = sqlx::query_as(&sql)
            .bind(merchant.get())
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(row.map(Into::into))
    }

    async fn get(&self, id: ProductId) -> Result<Option<Arc<Product>>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM products WHERE id = $1");
        let row: Option<ProductRow> =
            sqlx::query_as(&sql).bind(id.get()).fetch_optional(&self.pool).await.map_err(store_error)?;
        Ok(row.map(|row| Arc::new(row.into())))
    }

    async fn update(
        &self,
        id: ProductId,
        patch: &ProductPatch,
        now: OffsetDateTime,
    ) -> Result<Option<Product>, StoreError> {
        let sql = format!(
            "UPDATE products SET name = COALESCE($1, name), price_cents = COALESCE($2, price_cents), \
             updated_at_ms = $3 WHERE id = $4 RETURNING {COLUMNS}"
        );
        let row: Option<ProductRow> = sqlx::query_as(&sql)
            .bind(patch.name.as_ref().map(ProductName::as_str))
            .bind(patch.price_cents.map(Cents::get))
            .bind(unix_ms(now))
            .bind(id.get())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(row.map(Into::into))
    }

    async fn set_stock(&self, id: ProductId, stock: Stock, now: OffsetDateTime) -> Result<Option<Product>, StoreError> {
        let sql = format!("UPDATE products SET stock = $1, updated_at_ms = $2 WHERE id = $3 RETURNING {COLUMNS}");
        let row: Option<ProductRow> = sqlx::query_as(&sql)
            .bind(stock.get())
            .bind(unix_ms(now))
            .bind(id.get())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(row.map(Into::into))
    }

    async fn list(
        &self,
        merchant: Option<MerchantId>,
        after: Option<ProductId>,
        limit: u32,
    ) -> Result<ProductPage, StoreError> {
        // One row more than asked tells whether another page follows.
        let sql = format!(
            "SELECT {COLUMNS} FROM products WHERE ($1 IS NULL OR merchant_id = $1) AND id > $2 \
             ORDER BY id LIMIT $3"
        );
        let rows: Vec<ProductRow> = sqlx::query_as(&sql)
            .bind(merchant.map(MerchantId::get))
            .bind(after.map_or(-1, ProductId::get))
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let items: Vec<Product> = rows.into_iter().map(Into::into).collect();
        let (items, next_after) = one_page(items, limit, |p| p.id);
        Ok(ProductPage { items, next_after })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(store_error)?;
        Ok(())
    }
}
