//! `InventoryStore` and `CheckoutStore` on Postgres, and the moves of a
//! product's units that the order store's transactions make (the
//! statements are in `crate::sql_inventory`).

use async_trait::async_trait;
use sqlx::PgPool;
use surge_domain::inventory::{ClosedSale, InventoryStore};
use surge_domain::order::{
    CheckoutLine, CheckoutStore, NewCheckout, NewCheckoutOrder, Order, OrderKind, OrderStatus, Placed,
};
use surge_domain::outbox::{DomainEvent, EventRecord};
use surge_domain::{ProductId, SaleId, StoreError, UserId};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::outbox::record_events;
use super::{PgStore, store_error, with_conflict_retry};
use crate::conflict::TxError;
use crate::rows::{AddressDoc, ORDER_COLUMNS, OrderRow, unix_ms};
use crate::sql_checkout::Waiting;

crate::sql_inventory::inventory_store!(PgStore);
crate::sql_inventory::inventory_moves!(sqlx::PgConnection);

// NO KEY UPDATE: what an UPDATE of these columns takes, which leaves the
// key-share locks of rows referencing a product (a sale being created on it)
// alone.
crate::sql_checkout::checkout_batch!(sqlx::PgConnection, sqlx::Postgres, " FOR NO KEY UPDATE");

/// Most checkouts one transaction places.
const BATCH_MAX: usize = 128;
/// Checkouts waiting for the writer; callers beyond it wait for room.
pub(super) const CAPACITY: usize = 4_096;
/// The longest one batch may take, conflicts and their retries included
/// (the writer's statements have no request deadline to bound them).
const BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Checkouts are placed by the node's one writer, many to a transaction
/// (`crate::sql_checkout`). A checkout's every line takes hot product rows,
/// and a transaction holds their locks until its commit has been flushed:
/// one transaction per checkout put every checkout of a hot product in one
/// line, each waiting for the last one's flush. A batch takes its rows once
/// (locked in ascending id, as every writer of products does, so nodes'
/// batches wait for each other but never deadlock) for all its checkouts.
/// A caller hears its answer after the commit.
#[async_trait]
impl CheckoutStore for PgStore {
    async fn place(&self, checkout: &NewCheckout) -> Result<Placed, StoreError> {
        let (waiting, answer) = Waiting::new(checkout);
        self.checkouts.send(waiting).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the checkout writer stopped".to_owned())
}

/// The writer: one transaction per batch of waiting checkouts, run again
/// whole when PostgreSQL aborts it for a conflict. A checkout whose caller
/// gave up while it waited is not placed (`Waiting::abandoned`). A batch
/// that outlasts [`BATCH_TIMEOUT`] is
/// rolled back and every caller told so.
pub(super) async fn write_loop(pool: PgPool, mut receiver: mpsc::Receiver<Waiting>) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while receiver.recv_many(&mut batch, BATCH_MAX).await > 0 {
        batch.retain(|waiting| !waiting.abandoned());
        if batch.is_empty() {
            continue;
        }
        let checkouts: Vec<&NewCheckout> = batch.iter().map(|waiting| &waiting.new).collect();
        let placed = with_conflict_retry("checkout batch", || place_batch(&pool, &checkouts));
        let placed = tokio::time::timeout(BATCH_TIMEOUT, placed).await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!("a checkout batch took over {BATCH_TIMEOUT:?}; rolled back")))
        });
        match placed {
            Ok(answers) => {
                for (waiting, answer) in batch.drain(..).zip(answers) {
                    let _ = waiting.done.send(answer);
                }
            }
            Err(error) => {
                for waiting in batch.drain(..) {
                    let _ = waiting.done.send(Err(error.clone()));
                }
            }
        }
    }
}

async fn place_batch(pool: &PgPool, checkouts: &[&NewCheckout]) -> Result<Vec<Result<Placed, StoreError>>, TxError> {
    let mut tx = pool.begin().await?;
    let placed = place_all_on::<TxError>(&mut tx, checkouts).await?;
    tx.commit().await?;
    Ok(placed)
}
