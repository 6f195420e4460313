//! Intake idempotency in process: one `OnceCell` per (user, key). Callers
//! with the same key share the cell, so the second waits for the first; a
//! failed intake leaves the cell empty and the next caller tries itself.
//! Keys are remembered for a day (after that, and after a restart, the order
//! store's unique (user, key) index answers).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::sync::Cache;
use surge_domain::flashsale::{IntakeError, IntakeFuture, IntakeKeys};
use surge_domain::{OrderId, UserId};
use tokio::sync::OnceCell;

pub struct MemoryIntakeKeys {
    cells: Cache<(UserId, String), Arc<OnceCell<OrderId>>>,
}

impl MemoryIntakeKeys {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self { cells: Cache::builder().max_capacity(capacity).time_to_live(ttl).build() }
    }
}

impl Default for MemoryIntakeKeys {
    fn default() -> Self {
        Self::new(1_000_000, Duration::from_secs(24 * 3600))
    }
}

#[async_trait]
impl IntakeKeys for MemoryIntakeKeys {
    async fn once<'a>(&'a self, user: UserId, key: &'a str, intake: IntakeFuture<'a>) -> Result<OrderId, IntakeError> {
        let cell = self.cells.get_with((user, key.to_owned()), || Arc::new(OnceCell::new()));
        cell.get_or_try_init(|| intake).await.copied()
    }

    async fn completed(&self, user: UserId, key: &str) -> Option<OrderId> {
        self.cells.get(&(user, key.to_owned())).and_then(|cell| cell.get().copied())
    }
}
