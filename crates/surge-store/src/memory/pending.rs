//! Accepted requests not yet written as orders, so reads answer `PENDING`.

use async_trait::async_trait;
use dashmap::DashMap;
use surge_domain::flashsale::OrderRequested;
use surge_domain::order::PendingOrders;
use surge_domain::{OrderId, StoreError};

#[derive(Debug, Default)]
pub struct MemoryPending {
    requests: DashMap<OrderId, OrderRequested>,
}

#[async_trait]
impl PendingOrders for MemoryPending {
    async fn insert(&self, request: &OrderRequested) -> Result<(), StoreError> {
        self.requests.insert(request.order_id, request.clone());
        Ok(())
    }

    async fn get(&self, id: OrderId) -> Result<Option<OrderRequested>, StoreError> {
        Ok(self.requests.get(&id).map(|entry| entry.value().clone()))
    }

    async fn remove(&self, ids: &[OrderId]) -> Result<(), StoreError> {
        for id in ids {
            self.requests.remove(id);
        }
        Ok(())
    }
}
