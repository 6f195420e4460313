//! Intake idempotency: one cell per (sale, buyer, key). Callers with one key
//! share the cell, so the second waits for the first; a failed intake
//! leaves the cell empty and the next caller runs its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use surge_domain::flashsale::{IntakeError, IntakeFuture, IntakeKeys};
use surge_domain::{OrderId, SaleId, UserId};
use tokio::sync::OnceCell;

use super::lock;

type Key = (SaleId, UserId, String);

#[derive(Default)]
pub struct MemKeys {
    cells: Mutex<HashMap<Key, Arc<OnceCell<OrderId>>>>,
}

#[async_trait]
impl IntakeKeys for MemKeys {
    async fn once<'a>(
        &'a self,
        sale: SaleId,
        user: UserId,
        key: &'a str,
        intake: IntakeFuture<'a>,
    ) -> Result<OrderId, IntakeError> {
        let id: Key = (sale, user, key.to_owned());
        let cell = Arc::clone(lock(&self.cells).entry(id.clone()).or_default());
        let outcome = cell.get_or_try_init(|| intake).await.copied();
        if outcome.is_err() {
            drop(cell);
            let mut cells = lock(&self.cells);
            if cells.get(&id).is_some_and(|cell| cell.get().is_none() && Arc::strong_count(cell) == 1) {
                cells.remove(&id);
            }
        }
        outcome
    }

    async fn preload(&self, sale: SaleId, keyed: Vec<(UserId, String, OrderId)>) {
        let mut cells = lock(&self.cells);
        for (user, key, order) in keyed {
            cells.entry((sale, user, key)).or_insert_with(|| Arc::new(OnceCell::new_with(Some(order))));
        }
    }

    async fn forget(&self, sale: SaleId) {
        lock(&self.cells).retain(|(of, ..), _| *of != sale);
    }
}
