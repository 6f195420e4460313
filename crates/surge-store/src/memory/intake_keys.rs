//! Intake idempotency in process: one `OnceCell` per (sale, user, key).
//! Callers with the same key share the cell, so the second waits for the
//! first; a failed intake leaves the cell empty, the next caller tries
//! itself, and an empty cell nobody waits on is dropped (so rejected
//! attempts don't pile up). Cells that hold an order stay while their sale
//! is served (bounded by its stock; reloaded from the order store at
//! start-up) and go when it is forgotten.

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use surge_domain::flashsale::{IntakeError, IntakeFuture, IntakeKeys};
use surge_domain::{OrderId, SaleId, UserId};
use tokio::sync::OnceCell;

type Key = (SaleId, UserId, Box<str>);

#[derive(Default)]
pub struct MemoryIntakeKeys {
    cells: DashMap<Key, Arc<OnceCell<OrderId>>>,
}

impl MemoryIntakeKeys {
    /// Keys remembered, for tests and metrics.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

#[async_trait]
impl IntakeKeys for MemoryIntakeKeys {
    async fn once<'a>(
        &'a self,
        sale: SaleId,
        user: UserId,
        key: &'a str,
        intake: IntakeFuture<'a>,
    ) -> Result<OrderId, IntakeError> {
        let id: Key = (sale, user, key.into());
        let cell = Arc::clone(self.cells.entry(id.clone()).or_default().value());
        let outcome = cell.get_or_try_init(|| intake).await.copied();
        if outcome.is_err() {
            drop(cell);
            // Under the shard lock no one can take a new handle meanwhile.
            self.cells.remove_if(&id, |_, cell| cell.get().is_none() && Arc::strong_count(cell) == 1);
        }
        outcome
    }

    async fn preload(&self, sale: SaleId, keyed: Vec<(UserId, String, OrderId)>) {
        for (user, key, order) in keyed {
            self.cells.entry((sale, user, key.into())).or_insert_with(|| Arc::new(OnceCell::new_with(Some(order))));
        }
    }

    async fn forget(&self, sale: SaleId) {
        self.cells.retain(|(of, ..), _| *of != sale);
        self.cells.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_forgotten_sale_takes_its_keys_and_leaves_the_others() {
        let keys = MemoryIntakeKeys::default();
        let (user, order) = (UserId::new(1), OrderId::new(10));
        keys.preload(SaleId::new(1), vec![(user, "a".to_owned(), order), (user, "b".to_owned(), order)]).await;
        keys.preload(SaleId::new(2), vec![(user, "a".to_owned(), order)]).await;
        keys.forget(SaleId::new(1)).await;
        assert_eq!(keys.len(), 1);
        let kept = keys.replay(SaleId::new(2), user, "a").await;
        assert_eq!(kept, Ok(Some(order)), "the other sale's key still names its order");
    }
}
