//! The inventory context: who holds a product's units. A product's `stock`
//! is what can still be sold; its `reserved` is what unpaid checkout orders
//! and flash sales hold. Units move between the two only inside the
//! transactions that create, pay or cancel an order or make a sale (the
//! order and sale store adapters do it, by conditional updates), so the
//! counts never disagree with the orders. What this module adds is the end
//! of a sale's allocation: once a sale is over, what it did not sell goes
//! back to its product.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::catalog::CatalogStore;
use crate::clock::Clock;
use crate::ids::{ProductId, SaleId};
use crate::store::StoreError;

/// A sale whose allocation was closed: `returned` units went back to the
/// product's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedSale {
    pub sale: SaleId,
    pub product: ProductId,
    pub returned: i64,
}

#[async_trait]
pub trait InventoryStore: Send + Sync + 'static {
    /// Closes up to `limit` sales that took their stock from their product
    /// and ended before `ended_before`, each in its own transaction and
    /// once, however many nodes ask: the units not sold go from the
    /// product's `reserved` back to its `stock`, and no order can be
    /// written against the sale any more (a late one is written `FAILED`).
    /// Units its unpaid orders hold stay reserved until they are paid or
    /// cancelled.
    async fn close_ended_sales(
        &self,
        ended_before: OffsetDateTime,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ClosedSale>, StoreError>;
}

pub struct Inventory {
    store: Arc<dyn InventoryStore>,
    catalog: Arc<dyn CatalogStore>,
    clock: Arc<dyn Clock>,
}

impl Inventory {
    pub fn new(store: Arc<dyn InventoryStore>, catalog: Arc<dyn CatalogStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, catalog, clock }
    }

    /// Gives back what sales that ended more than `grace` ago did not sell
    /// (the grace lets the queue deliver their last accepted requests).
    /// Returns how many sales were closed.
    pub async fn close_ended_sales(&self, grace: Duration, limit: u32) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let closed = self.store.close_ended_sales(now - grace, now, limit).await?;
        for sale in &closed {
            tracing::info!(sale_id = %sale.sale, product_id = %sale.product, returned = sale.returned,
                "flash sale closed; unsold units back on the product");
        }
        let products: Vec<ProductId> = closed.iter().map(|sale| sale.product).collect();
        if !products.is_empty() {
            self.catalog.stock_moved(&products).await;
        }
        Ok(closed.len())
    }
}
