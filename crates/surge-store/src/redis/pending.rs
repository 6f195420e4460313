//! The pending-order view shared by every node: a request accepted on one
//! node reads `PENDING` on any other until the consumer writes its order.
//! Entries expire after `ttl` in case a removal is lost.

use std::time::Duration;

use async_trait::async_trait;
use surge_domain::flashsale::OrderRequested;
use surge_domain::order::PendingOrders;
use surge_domain::{OrderId, StoreError};

use super::{RedisConn, unavailable};
use crate::queue::wire;

pub struct RedisPending {
    conn: RedisConn,
    namespace: String,
    ttl: Duration,
}

impl RedisPending {
    pub fn new(conn: RedisConn, namespace: &str, ttl: Duration) -> Self {
        Self { conn, namespace: namespace.to_owned(), ttl }
    }

    fn key(&self, id: OrderId) -> String {
        format!("{}:pending:{}", self.namespace, id.get())
    }
}

#[async_trait]
impl PendingOrders for RedisPending {
    async fn insert(&self, request: &OrderRequested) -> Result<(), StoreError> {
        let payload = wire::encode_text(request)?;
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.key(request.order_id))
            .arg(payload)
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn get(&self, id: OrderId) -> Result<Option<OrderRequested>, StoreError> {
        let mut conn = self.conn.clone();
        let payload: Option<String> =
            redis::cmd("GET").arg(self.key(id)).query_async(&mut conn).await.map_err(unavailable)?;
        payload
            .map(|payload| wire::decode(payload.as_bytes()).map_err(|e| StoreError::Unavailable(e.to_string())))
            .transpose()
    }

    async fn remove(&self, ids: &[OrderId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        // One DEL per key, sent together: in a cluster the keys live in
        // different slots, which neither a multi-key DEL nor a pipeline may span.
        let deletes = ids.iter().map(|id| {
            let mut conn = self.conn.clone();
            let key = self.key(*id);
            async move { redis::cmd("DEL").arg(key).query_async::<()>(&mut conn).await }
        });
        for deleted in futures::future::join_all(deletes).await {
            deleted.map_err(unavailable)?;
        }
        Ok(())
    }
}
