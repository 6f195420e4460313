//! The catalog's use cases and its tenant rules: a merchant creates and
//! changes only its own products, an admin any, a customer none; anyone reads.

use super::ports::{CatalogStore, ProductPage};
use super::product::{NewProduct, Product, ProductName, ProductPatch, Sku, Stock};
use crate::actor::Actor;
use crate::clock::Clock;
use crate::idempotency::IdempotencyKey;
use crate::ids::{IdGenerator, MerchantId, ProductId};
use crate::input::{InvalidInput, Rule};
use crate::money::Cents;
use crate::store::StoreError;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CatalogError {
    #[error("no such product")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("this merchant already has a product with that sku")]
    DuplicateSku,
    #[error("{0}")]
    Invalid(InvalidInput),
    /// Degraded to the cache and the product is not in it.
    #[error("product details are served from the cache only, and this one is not in it")]
    NotCached,
    #[error(transparent)]
    Unavailable(StoreError),
}

impl From<StoreError> for CatalogError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Duplicate("sku") => CatalogError::DuplicateSku,
            other => CatalogError::Unavailable(other),
        }
    }
}

/// A create request, parsed. `merchant_id` is required from an admin and,
/// from a merchant, must be its own when given at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateProduct {
    pub merchant_id: Option<MerchantId>,
    pub sku: Sku,
    pub name: ProductName,
    pub price_cents: Cents,
    pub stock: Stock,
}

/// Keyset pagination: at most `limit` items after the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<ProductId>,
}

impl PageRequest {
    pub const LIMIT_MAX: u32 = 500;
    pub const LIMIT_DEFAULT: u32 = 50;

    pub fn parse(limit: Option<u32>, after: Option<ProductId>) -> Result<Self, InvalidInput> {
        let limit = limit.unwrap_or(Self::LIMIT_DEFAULT);
        if !(1..=Self::LIMIT_MAX).contains(&limit) {
            return Err(InvalidInput::new("limit", Rule::Between { min: 1, max: i64::from(Self::LIMIT_MAX) }));
        }
        Ok(Self { limit, after })
    }
}

pub struct Catalog {
    store: Arc<dyn CatalogStore>,
    ids: Arc<IdGenerator>,
    clock: Arc<dyn Clock>,
}

impl Catalog {
    pub fn new(store: Arc<dyn CatalogStore>, ids: Arc<IdGenerator>, clock: Arc<dyn Clock>) -> Self {
        Self { store, ids, clock }
    }

    /// Creates a product. With an idempotency key, a repeat of the request
    /// (even a concurrent one) returns the product the first one created.
    pub async fn create(
        &self,
        actor: &Actor,
        request: CreateProduct,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Product, CatalogError> {
        let merchant_id = match (actor, request.merchant_id) {
            (Actor::Customer(_) | Actor::Courier(_), _) => {
                return Err(CatalogError::Forbidden("only merchants and admins create products"));
            }
            (Actor::Merchant(own), Some(other)) if *own != other => {
                return Err(CatalogError::Forbidden("a merchant creates products for its own tenant only"));
            }
            (Actor::Merchant(own), _) => *own,
            (Actor::Admin(_), Some(merchant)) => merchant,
            (Actor::Admin(_), None) => {
                return Err(CatalogError::Invalid(InvalidInput::new(
                    "merchant_id",
                    Rule::Must("is required when an admin creates a product"),
                )));
            }
        };
        let new = NewProduct {
            merchant_id,
            sku: request.sku,
            name: request.name,
            price_cents: request.price_cents,
            stock: request.stock,
        };
        if let Some(key) = idempotency_key
            && let Some(earlier) = self.store.find_by_idempotency_key(merchant_id, key.as_str()).await?
        {
            return Ok(earlier);
        }
        let id = ProductId::new(self.ids.next_id());
        match self.store.insert(id, &new, idempotency_key.map(IdempotencyKey::as_str), self.clock.now()).await {
            Ok(product) => Ok(product),
            Err(StoreError::Duplicate(what)) => {
                // A concurrent twin may have won the race with the same key.
                if let Some(key) = idempotency_key
                    && let Some(earlier) = self.store.find_by_idempotency_key(merchant_id, key.as_str()).await?
                {
                    return Ok(earlier);
                }
                Err(StoreError::Duplicate(what).into())
            }
            Err(other) => Err(other.into()),
        }
    }

    pub async fn get(&self, id: ProductId) -> Result<Arc<Product>, CatalogError> {
        self.store.get(id).await?.ok_or(CatalogError::NotFound)
    }

    /// The degraded read (`product_detail_live` off): from the cache only,
    /// never the store.
    pub async fn get_cached_only(&self, id: ProductId) -> Result<Arc<Product>, CatalogError> {
        match self.store.get_cached(id).await? {
            Some(Some(product)) => Ok(product),
            Some(None) => Err(CatalogError::NotFound),
            None => Err(CatalogError::NotCached),
        }
    }

    pub async fn patch(&self, actor: &Actor, id: ProductId, patch: ProductPatch) -> Result<Product, CatalogError> {
        self.authorize_change(actor, id).await?;
        self.store.update(id, &patch, self.clock.now()).await?.ok_or(CatalogError::NotFound)
    }

    pub async fn set_stock(&self, actor: &Actor, id: ProductId, stock: Stock) -> Result<Product, CatalogError> {
        self.authorize_change(actor, id).await?;
        self.store.set_stock(id, stock, self.clock.now()).await?.ok_or(CatalogError::NotFound)
    }

    pub async fn list(&self, merchant: Option<MerchantId>, page: PageRequest) -> Result<ProductPage, CatalogError> {
        Ok(self.store.list(merchant, page.after, page.limit).await?)
    }

    /// The owner never changes, so a cached read is good enough to decide.
    async fn authorize_change(&self, actor: &Actor, id: ProductId) -> Result<(), CatalogError> {
        let current = self.get(id).await?;
        if !actor.manages(current.merchant_id) {
            return Err(CatalogError::Forbidden("only the owning merchant or an admin may change this product"));
        }
        Ok(())
    }
}
