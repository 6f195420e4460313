//! Products by id, unique skus and idempotency keys per merchant.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use surge_domain::catalog::{CatalogStore, NewProduct, Product, ProductPage, ProductPatch, Stock};
use surge_domain::{MerchantId, ProductId, StoreError};
use time::OffsetDateTime;

use super::lock;

#[derive(Default)]
struct Products {
    by_id: BTreeMap<ProductId, Product>,
    by_key: HashMap<(MerchantId, String), ProductId>,
}

#[derive(Default)]
pub struct MemCatalog {
    products: Mutex<Products>,
}

impl MemCatalog {
    pub fn len(&self) -> usize {
        lock(&self.products).by_id.len()
    }
}

#[async_trait]
impl CatalogStore for MemCatalog {
    async fn insert(
        &self,
        id: ProductId,
        new: &NewProduct,
        idempotency_key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Product, StoreError> {
        let mut products = lock(&self.products);
        let same_sku = |p: &Product| p.merchant_id == new.merchant_id && p.sku == new.sku;
        if products.by_id.values().any(same_sku) {
            return Err(StoreError::Duplicate("sku"));
        }
        if let Some(key) = idempotency_key {
            if products.by_key.contains_key(&(new.merchant_id, key.to_owned())) {
                return Err(StoreError::Duplicate("idempotency_key"));
            }
            products.by_key.insert((new.merchant_id, key.to_owned()), id);
        }
        let product = Product {
            id,
            merchant_id: new.merchant_id,
            sku: new.sku.clone(),
            name: new.name.clone(),
            price_cents: new.price_cents,
            stock: new.stock,
            reserved: Stock::from_trusted(0),
            updated_at: now,
        };
        products.by_id.insert(id, product.clone());
        Ok(product)
    }

    async fn find_by_idempotency_key(&self, merchant: MerchantId, key: &str) -> Result<Option<Product>, StoreError> {
        let products = lock(&self.products);
        let id = products.by_key.get(&(merchant, key.to_owned()));
        Ok(id.and_then(|id| products.by_id.get(id)).cloned())
    }

    async fn get(&self, id: ProductId) -> Result<Option<Arc<Product>>, StoreError> {
        Ok(lock(&self.products).by_id.get(&id).cloned().map(Arc::new))
    }

    async fn update(
        &self,
        id: ProductId,
        patch: &ProductPatch,
        now: OffsetDateTime,
    ) -> Result<Option<Product>, StoreError> {
        let mut products = lock(&self.products);
        let Some(product) = products.by_id.get_mut(&id) else { return Ok(None) };
        if let Some(name) = &patch.name {
            product.name = name.clone();
        }
        if let Some(price) = patch.price_cents {
            product.price_cents = price;
        }
        product.updated_at = now;
        Ok(Some(product.clone()))
    }

    async fn set_stock(&self, id: ProductId, stock: Stock, now: OffsetDateTime) -> Result<Option<Product>, StoreError> {
        let mut products = lock(&self.products);
        let Some(product) = products.by_id.get_mut(&id) else { return Ok(None) };
        product.stock = stock;
        product.updated_at = now;
        Ok(Some(product.clone()))
    }

    async fn list(
        &self,
        merchant: Option<MerchantId>,
        after: Option<ProductId>,
        limit: u32,
    ) -> Result<ProductPage, StoreError> {
        let products = lock(&self.products);
        let mut items: Vec<Product> = products
            .by_id
            .values()
            .filter(|p| merchant.is_none_or(|m| p.merchant_id == m) && after.is_none_or(|a| p.id > a))
            .take(limit as usize + 1)
            .cloned()
            .collect();
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_after = if more { items.last().map(|p| p.id) } else { None };
        Ok(ProductPage { items, next_after })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
