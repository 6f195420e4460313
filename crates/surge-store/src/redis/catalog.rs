//! Cache-aside product reads shared by every node (the distributed mode's
//! second tier, under each node's in-process cache).
//!
//! - **Read**: `GET` the product's key; on a miss, one node takes a short
//!   load lock (`SET NX PX`), reads the store and writes the entry back
//!   with a jittered TTL; the others wait for that entry while the lock is
//!   held instead of all reading the store at once (a cluster-wide
//!   stampede), and read the store themselves only if the lock goes without
//!   an entry.
//! - **Missing ids** are cached as a tombstone with a shorter TTL.
//! - **Write**: the store commits, then the key is deleted and every node is
//!   told to evict its own copy ([`Event::ProductChanged`]); both again
//!   after a short delay, which closes the race where a reader put back the
//!   row it read just before the commit.
//! - **Redis down**: reads go to the store (each node's in-process cache
//!   still shares one load per key), and writes still commit; entries
//!   written before the outage expire with their TTL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use surge_domain::catalog::{CatalogStore, NewProduct, Product, ProductPage, ProductPatch, Stock};
use surge_domain::{MerchantId, ProductId, StoreError};
use time::OffsetDateTime;

use super::events::{Event, RedisEvents};
use super::{RedisConn, unavailable};
use crate::cache::{CacheMetrics, ProductCacheConfig};
use crate::rows::ProductRow;

/// The value cached for an id that names no product.
const MISSING: &str = "-";
/// How long one node may hold a key's load lock: the others wait for its
/// entry while the lock is held, for at most this long.
const LOAD_LOCK_TTL: Duration = Duration::from_secs(2);
/// How often a waiting node looks for the entry.
const LOAD_POLL: Duration = Duration::from_millis(10);

pub struct RedisCatalog<S: ?Sized> {
    store: Arc<S>,
    conn: RedisConn,
    namespace: String,
    events: RedisEvents,
    config: ProductCacheConfig,
    metrics: CacheMetrics,
}

impl<S: CatalogStore + ?Sized + 'static> RedisCatalog<S> {
    pub fn new(
        store: Arc<S>,
        conn: RedisConn,
        namespace: &str,
        config: &ProductCacheConfig,
        metrics: CacheMetrics,
    ) -> Self {
        Self {
            events: RedisEvents::new(conn.clone(), namespace),
            store,
            conn,
            namespace: namespace.to_owned(),
            config: config.clone(),
            metrics,
        }
    }

    fn key(&self, id: ProductId) -> String {
        format!("{}:{{p:{}}}", self.namespace, id.get())
    }

    /// In the entry's slot (the hash tag), on the same cluster node.
    fn lock_key(&self, id: ProductId) -> String {
        format!("{}:{{p:{}}}:lock", self.namespace, id.get())
    }

    /// The cached entry: `Ok(None)` when not cached.
    async fn read(&self, id: ProductId) -> Result<Option<Option<Arc<Product>>>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> =
            redis::cmd("GET").arg(self.key(id)).query_async(&mut conn).await.map_err(unavailable)?;
        Ok(raw.and_then(|raw| decode(&raw)))
    }

    async fn write(&self, id: ProductId, entry: &Option<Arc<Product>>) -> Result<(), StoreError> {
        let (value, ttl) = match entry {
            Some(product) => (encode(product), self.jittered_ttl()),
            None => (MISSING.to_owned(), self.config.negative_ttl),
        };
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.key(id))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    fn jittered_ttl(&self) -> Duration {
        let jitter = self.config.ttl_jitter.min(self.config.ttl);
        if jitter.is_zero() {
            return self.config.ttl;
        }
        let offset = rand::rng().random_range(0..=jitter.as_millis() as u64 * 2);
        self.config.ttl - jitter + Duration::from_millis(offset)
    }

    /// Takes the key's load lock; `false` when another node holds it.
    async fn lock(&self, id: ProductId) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.lock_key(id))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(LOAD_LOCK_TTL.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(taken.is_some())
    }

    async fn unlock(&self, id: ProductId) {
        let mut conn = self.conn.clone();
        let _: Result<i64, _> = redis::cmd("DEL").arg(self.lock_key(id)).query_async(&mut conn).await;
    }

    /// Reads the store and caches what it says, under the load lock.
    async fn load(&self, id: ProductId) -> Result<Option<Arc<Product>>, StoreError> {
        self.metrics.loads.increment(1);
        let loaded = self.store.get(id).await;
        if let Ok(entry) = &loaded
            && let Err(error) = self.write(id, entry).await
        {
            tracing::debug!(%error, product_id = %id, "product not cached in redis");
        }
        self.unlock(id).await;
        loaded
    }

    /// Another node is loading the key: waits for its entry while it holds
    /// the lock; reads the store if the lock goes (or Redis fails) without
    /// an entry.
    async fn wait_for_load(&self, id: ProductId) -> Result<Option<Arc<Product>>, StoreError> {
        let deadline = tokio::time::Instant::now() + LOAD_LOCK_TTL;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(LOAD_POLL).await;
            match self.read(id).await {
                Ok(Some(entry)) => {
                    self.metrics.hits.increment(1);
                    return Ok(entry);
                }
                Ok(None) if self.locked(id).await => continue,
                Ok(None) => {
                    // The holder is done: its entry is there unless it failed.
                    if let Ok(Some(entry)) = self.read(id).await {
                        self.metrics.hits.increment(1);
                        return Ok(entry);
                    }
                    break;
                }
                Err(_) => break,
            }
        }
        self.metrics.loads.increment(1);
        self.store.get(id).await
    }

    async fn locked(&self, id: ProductId) -> bool {
        let mut conn = self.conn.clone();
        let exists: Result<i64, _> = redis::cmd("EXISTS").arg(self.lock_key(id)).query_async(&mut conn).await;
        matches!(exists, Ok(1))
    }

    /// Deletes the key now and again after the delay, and tells every node
    /// each time.
    async fn invalidate_after_write(&self, id: ProductId) {
        self.evict(id).await;
        let delay = self.config.second_delete_delay;
        if delay.is_zero() {
            return;
        }
        let (conn, key, events) = (self.conn.clone(), self.key(id), self.events.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _: Result<i64, _> = redis::cmd("DEL").arg(key).query_async(&mut conn.clone()).await;
            events.announce(Event::ProductChanged(id));
        });
    }

    async fn evict(&self, id: ProductId) {
        let mut conn = self.conn.clone();
        if let Err(error) = redis::cmd("DEL").arg(self.key(id)).query_async::<i64>(&mut conn).await {
            tracing::warn!(%error, product_id = %id, "product not evicted from redis; it expires with its TTL");
        }
        if let Err(error) = self.events.publish(Event::ProductChanged(id)).await {
            tracing::warn!(%error, product_id = %id, "product change not broadcast; other nodes' copies expire");
        }
    }
}

#[async_trait]
impl<S: CatalogStore + ?Sized + 'static> CatalogStore for RedisCatalog<S> {
    async fn insert(
        &self,
        id: ProductId,
        new: &NewProduct,
        idempotency_key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Product, StoreError> {
        let product = self.store.insert(id, new, idempotency_key, now).await?;
        // Only a guessed id can be cached as missing; no second delete.
        self.evict(id).await;
        Ok(product)
    }

    async fn find_by_idempotency_key(&self, merchant: MerchantId, key: &str) -> Result<Option<Product>, StoreError> {
        self.store.find_by_idempotency_key(merchant, key).await
    }

    async fn get(&self, id: ProductId) -> Result<Option<Arc<Product>>, StoreError> {
        match self.read(id).await {
            Ok(Some(entry)) => {
                self.metrics.hits.increment(1);
                return Ok(entry);
            }
            Ok(None) => self.metrics.misses.increment(1),
            Err(error) => {
                tracing::debug!(%error, "redis product cache unavailable; reading the store");
                self.metrics.loads.increment(1);
                return self.store.get(id).await;
            }
        }
        match self.lock(id).await {
            Ok(true) => self.load(id).await,
            Ok(false) => self.wait_for_load(id).await,
            Err(_) => {
                self.metrics.loads.increment(1);
                self.store.get(id).await
            }
        }
    }

    async fn update(
        &self,
        id: ProductId,
        patch: &ProductPatch,
        now: OffsetDateTime,
    ) -> Result<Option<Product>, StoreError> {
        let updated = self.store.update(id, patch, now).await?;
        self.invalidate_after_write(id).await;
        Ok(updated)
    }

    async fn set_stock(&self, id: ProductId, stock: Stock, now: OffsetDateTime) -> Result<Option<Product>, StoreError> {
        let updated = self.store.set_stock(id, stock, now).await?;
        self.invalidate_after_write(id).await;
        Ok(updated)
    }

    /// What Redis holds, for the degraded read; never the store.
    async fn get_cached(&self, id: ProductId) -> Result<Option<Option<Arc<Product>>>, StoreError> {
        self.read(id).await
    }

    /// Listings are not cached: they change with every write of any product.
    async fn list(
        &self,
        merchant: Option<MerchantId>,
        after: Option<ProductId>,
        limit: u32,
    ) -> Result<ProductPage, StoreError> {
        self.store.list(merchant, after, limit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}

fn encode(product: &Product) -> String {
    serde_json::to_string(&ProductRow::from(product)).unwrap_or_default()
}

/// The entry, or `None` for a value this version can't read (treated as a
/// miss, so it is loaded again and overwritten).
fn decode(raw: &str) -> Option<Option<Arc<Product>>> {
    if raw == MISSING {
        return Some(None);
    }
    let row: ProductRow = serde_json::from_str(raw).ok()?;
    Some(Some(Arc::new(row.into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_contract::redis_conns;
    use crate::testing::{SlowStore, new_product, sample_product};
    use surge_domain::Cents;
    use surge_domain::catalog::{ProductName, Sku};

    /// Two nodes' shared tiers over one store and one Redis (standalone,
    /// then the cluster).
    #[tokio::test]
    async fn nodes_share_one_load_per_key_and_see_each_others_writes() {
        for (name, conn, namespace) in redis_conns().await {
            let (store, _dir) = SlowStore::open(Duration::from_millis(100)).await;
            let product = sample_product(1);
            store.insert(product.id, &new_product(&product), None, OffsetDateTime::now_utc()).await.expect("insert");
            let config = ProductCacheConfig { second_delete_delay: Duration::ZERO, ..ProductCacheConfig::default() };
            let nodes: Vec<Arc<RedisCatalog<SlowStore>>> = (0..2)
                .map(|_| {
                    let node =
                        RedisCatalog::new(Arc::clone(&store), conn.clone(), &namespace, &config, CacheMetrics::noop());
                    Arc::new(node)
                })
                .collect();

            let reads: Vec<_> = (0..40)
                .map(|n| {
                    let node = Arc::clone(&nodes[n % 2]);
                    tokio::spawn(async move { node.get(ProductId::new(1)).await })
                })
                .collect();
            for read in reads {
                let found = read.await.expect("join").expect("read");
                assert_eq!(found.map(|p| p.sku.clone()), Some(product.sku.clone()), "{name}");
            }
            assert_eq!(store.loads(), 1, "{name}: 40 concurrent misses on two nodes load once");

            let patch = ProductPatch::parse(Some(ProductName::from_trusted("Renamed".into())), None).expect("patch");
            nodes[1].update(ProductId::new(1), &patch, OffsetDateTime::now_utc()).await.expect("update");
            let seen = nodes[0].get(ProductId::new(1)).await.expect("read").expect("found");
            assert_eq!(seen.name.as_str(), "Renamed", "{name}: a write on one node is read on the other");
            assert_eq!(nodes[0].get_cached(ProductId::new(1)).await, Ok(Some(Some(seen))), "{name}");

            for node in &nodes {
                assert_eq!(node.get(ProductId::new(404)).await, Ok(None), "{name}");
            }
            assert_eq!(store.loads(), 3, "{name}: a missing id is loaded once and remembered");
        }
    }

    #[test]
    fn a_product_survives_its_cached_form_and_garbage_is_a_miss() {
        let product = Product {
            id: ProductId::new(1),
            merchant_id: MerchantId::new(2),
            sku: Sku::from_trusted("S-1".into()),
            name: ProductName::from_trusted("Näme \"quoted\"".into()),
            price_cents: Cents::from_trusted(1999),
            stock: Stock::from_trusted(5),
            // Stored to the millisecond, as in the database.
            updated_at: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).expect("time"),
        };
        assert_eq!(decode(&encode(&product)), Some(Some(Arc::new(product))));
        assert_eq!(decode(MISSING), Some(None));
        assert_eq!(decode("{not json"), None);
    }
}
