//! The durable queue as a list and an acknowledged prefix; delivery is at
//! least once, as the port says: a poll hands out everything past the last
//! ack again. An append can be made to fail once.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use surge_domain::StoreError;
use surge_domain::flashsale::{Delivery, OrderQueue, OrderRequested};

use super::lock;

#[derive(Default)]
struct Log {
    events: Vec<OrderRequested>,
    /// Events before this position are acknowledged.
    acked: usize,
}

#[derive(Default)]
pub struct MemQueue {
    log: Mutex<Log>,
    fail_next_append: Mutex<Option<StoreError>>,
}

impl MemQueue {
    /// The next append answers `error` (and lands nowhere).
    pub fn fail_next_append(&self, error: StoreError) {
        *lock(&self.fail_next_append) = Some(error);
    }

    /// Every request ever appended, in order.
    pub fn appended(&self) -> Vec<OrderRequested> {
        lock(&self.log).events.clone()
    }

    /// Appends a request again, as a producer retrying after a lost
    /// acknowledgement would.
    pub fn redeliver(&self, request: OrderRequested) {
        lock(&self.log).events.push(request);
    }
}

#[async_trait]
impl OrderQueue for MemQueue {
    async fn append(&self, request: &OrderRequested) -> Result<(), StoreError> {
        if let Some(error) = lock(&self.fail_next_append).take() {
            return Err(error);
        }
        lock(&self.log).events.push(request.clone());
        Ok(())
    }

    /// Never waits: whatever is unacknowledged now, at once.
    async fn poll(&self, max: usize, _wait: Duration) -> Result<Vec<Delivery>, StoreError> {
        let log = lock(&self.log);
        let deliveries = log.events.iter().enumerate().skip(log.acked).take(max);
        Ok(deliveries.map(|(at, request)| Delivery { offset: at as u64, request: request.clone() }).collect())
    }

    async fn ack(&self, offset: u64) -> Result<(), StoreError> {
        let mut log = lock(&self.log);
        log.acked = log.acked.max(offset as usize + 1);
        Ok(())
    }

    async fn oldest_unacked_ms(&self) -> Result<Option<i64>, StoreError> {
        let log = lock(&self.log);
        Ok(log.events.get(log.acked).map(|request| request.requested_at_ms))
    }
}
