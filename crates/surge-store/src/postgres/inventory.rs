//! `InventoryStore` and `CheckoutStore` on Postgres, and the moves of a
//! product's units that the order store's transactions make (the
//! statements are in `crate::sql_inventory`).

use async_trait::async_trait;
use surge_domain::inventory::{ClosedSale, InventoryStore};
use surge_domain::order::{
    CheckoutLine, CheckoutStore, NewCheckout, NewCheckoutOrder, Order, OrderKind, OrderStatus, Placed,
};
use surge_domain::outbox::{DomainEvent, EventRecord};
use surge_domain::{ProductId, SaleId, StoreError, UserId};
use time::OffsetDateTime;

use super::outbox::record_events;
use super::{PgStore, store_error};
use crate::rows::{AddressDoc, ItemDoc, ORDER_COLUMNS, OrderRow, unix_ms};

crate::sql_inventory::inventory_store!(PgStore);
crate::sql_inventory::inventory_moves!(sqlx::PgConnection);

/// One transaction per checkout: PostgreSQL runs many at once, each
/// waiting only on the product rows it shares with another.
#[async_trait]
impl CheckoutStore for PgStore {
    async fn place(&self, checkout: &NewCheckout) -> Result<Placed, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let placed = place_on(&mut tx, checkout).await?;
        if matches!(placed, Placed::Created(_)) {
            tx.commit().await.map_err(store_error)?;
        }
        // Anything else: dropping the transaction rolls its moves back.
        Ok(placed)
    }
}
