//! What the catalog needs from a store. Implemented by every store adapter
//! (SQLite now, PostgreSQL next) and by the cache-aside decorator.

use super::product::{NewProduct, Product, ProductPatch, Stock};
use crate::ids::{MerchantId, ProductId};
use crate::store::StoreError;
use async_trait::async_trait;
use std::sync::Arc;
use time::OffsetDateTime;

/// One page of a keyset-paginated listing, ordered by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductPage {
    pub items: Vec<Product>,
    /// The last id of this page when more may follow.
    pub next_after: Option<ProductId>,
}

#[async_trait]
pub trait CatalogStore: Send + Sync + 'static {
    /// Inserts a new product; `StoreError::Duplicate("sku")` when the merchant
    /// already has that sku, `Duplicate("idempotency_key")` when it already
    /// created a product with that key.
    async fn insert(
        &self,
        id: ProductId,
        new: &NewProduct,
        idempotency_key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Product, StoreError>;

    /// The product the merchant created with this idempotency key.
    async fn find_by_idempotency_key(&self, merchant: MerchantId, key: &str) -> Result<Option<Product>, StoreError>;

    /// The product, or `None` when there is no such id.
    async fn get(&self, id: ProductId) -> Result<Option<Arc<Product>>, StoreError>;

    /// Applies the patch; `None` when there is no such id.
    async fn update(
        &self,
        id: ProductId,
        patch: &ProductPatch,
        now: OffsetDateTime,
    ) -> Result<Option<Product>, StoreError>;

    /// Sets the stock on hand; `None` when there is no such id.
    async fn set_stock(&self, id: ProductId, stock: Stock, now: OffsetDateTime) -> Result<Option<Product>, StoreError>;

    /// Products with id greater than `after`, optionally of one merchant, at
    /// most `limit` of them, ascending by id.
    async fn list(
        &self,
        merchant: Option<MerchantId>,
        after: Option<ProductId>,
        limit: u32,
    ) -> Result<ProductPage, StoreError>;

    /// Who sells the product (`None`: no such product). A product never
    /// changes hands, so a cache may keep this while the product's stock
    /// moves under it.
    async fn merchant_of(&self, id: ProductId) -> Result<Option<MerchantId>, StoreError> {
        Ok(self.get(id).await?.map(|product| product.merchant_id))
    }

    /// The product as a cache in front of the store holds it, without
    /// loading: `None` when not cached, `Some(None)` when cached as missing.
    /// Stores with no cache hold nothing.
    async fn get_cached(&self, _id: ProductId) -> Result<Option<Option<Arc<Product>>>, StoreError> {
        Ok(None)
    }

    /// These products' stock or reservations moved outside this port (the
    /// inventory moves them in the order store's transactions): a cache in
    /// front of the store drops its copies. Stores with no cache do
    /// nothing.
    async fn stock_moved(&self, _ids: &[ProductId]) {}

    /// Does the store answer? Used by readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
}
