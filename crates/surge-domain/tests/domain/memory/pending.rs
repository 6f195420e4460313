//! Accepted requests whose orders are not written yet.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use surge_domain::flashsale::OrderRequested;
use surge_domain::order::PendingOrders;
use surge_domain::{OrderId, StoreError};

use super::lock;

#[derive(Default)]
pub struct MemPending {
    requests: Mutex<HashMap<OrderId, OrderRequested>>,
}

impl MemPending {
    pub fn len(&self) -> usize {
        lock(&self.requests).len()
    }
}

#[async_trait]
impl PendingOrders for MemPending {
    async fn insert(&self, request: &OrderRequested) -> Result<(), StoreError> {
        lock(&self.requests).insert(request.order_id, request.clone());
        Ok(())
    }

    async fn get(&self, id: OrderId) -> Result<Option<OrderRequested>, StoreError> {
        Ok(lock(&self.requests).get(&id).cloned())
    }

    async fn remove(&self, ids: &[OrderId]) -> Result<(), StoreError> {
        let mut requests = lock(&self.requests);
        for id in ids {
            requests.remove(id);
        }
        Ok(())
    }
}
