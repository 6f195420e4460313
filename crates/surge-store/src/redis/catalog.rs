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
//! - **Write**: the store commits, then the key and its load lock are
//!   deleted and every node is told to evict its own copy
//!   ([`Event::ProductChanged`]); all again after a short delay. A load in
//!   progress caches what it read only while the lock still holds its token
//!   (one script), so a row read before the commit is not put back after.
//! - **Redis down**: reads go to the store (each node's in-process cache
//!   still shares one load per key), and writes still commit; entries
//!   written before the outage expire with their TTL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use redis::Script;
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

/// KEYS: entry, lock. ARGV: token, value, TTL in ms. Writes the entry only
/// while the lock still holds the loader's token, then frees the lock. A
/// write that committed during the load deleted the lock with the entry, so
/// what the loader read may be older than the store: it is not cached.
const WRITE_BACK: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
return 1
";

/// KEYS: lock. ARGV: token. Frees the lock only if it is still this load's.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub struct RedisCatalog<S: ?Sized> {
    store: Arc<S>,
    conn: RedisConn,
    namespace: String,
    events: RedisEvents,
    config: ProductCacheConfig,
    metrics: CacheMetrics,
    write_back: Script,
    unlock: Script,
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
            write_back: Script::new(WRITE_BACK),
            unlock: Script::new(UNLOCK),
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

    /// Caches what the lock holder read, unless a write came first (see
    /// [`WRITE_BACK`]); `Ok(false)` then.
    async fn write_back(&self, id: ProductId, token: u64, entry: &Option<Arc<Product>>) -> Result<bool, StoreError> {
        let (value, ttl) = match entry {
            Some(product) => (encode(product), self.jittered_ttl()),
            None => (MISSING.to_owned(), self.config.negative_ttl),
        };
        let mut conn = self.conn.clone();
        let written: i64 = self
            .write_back
            .key(self.key(id))
            .key(self.lock_key(id))
            .arg(token)
            .arg(value)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(written == 1)
    }

    fn jittered_ttl(&self) -> Duration {
        let jitter = self.config.ttl_jitter.min(self.config.ttl);
        if jitter.is_zero() {
            return self.config.ttl;
        }
        let offset = rand::rng().random_range(0..=jitter.as_millis() as u64 * 2);
        self.config.ttl - jitter + Duration::from_millis(offset)
    }

    /// Takes the key's load lock with a token of this load's own; `None`
    /// when another load holds it.
    async fn lock(&self, id: ProductId) -> Result<Option<u64>, StoreError> {
        let token = rand::random::<u64>();
        let mut conn = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.lock_key(id))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(LOAD_LOCK_TTL.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(taken.map(|_| token))
    }

    /// Reads the store and caches what it says, under the load lock.
    async fn load(&self, id: ProductId, token: u64) -> Result<Option<Arc<Product>>, StoreError> {
        self.metrics.loads.increment(1);
        let loaded = self.store.get(id).await;
        let cached = match &loaded {
            Ok(entry) => self.write_back(id, token, entry).await,
            Err(_) => self.unlock(id, token).await,
        };
        match cached {
            Ok(true) => {}
            Ok(false) => tracing::debug!(product_id = %id, "a write came during the load; not cached"),
            Err(error) => tracing::debug!(%error, product_id = %id, "product not cached in redis"),
        }
        loaded
    }

    /// Gives the lock back if this load still holds it.
    async fn unlock(&self, id: ProductId, token: u64) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let deleted: i64 =
            self.unlock.key(self.lock_key(id)).arg(token).invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(deleted == 1)
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
        let (conn, keys, events) = (self.conn.clone(), [self.key(id), self.lock_key(id)], self.events.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn.clone()).await;
            events.announce(Event::ProductChanged(id));
        });
    }

    /// Deletes the entry and the load lock (one slot: the hash tag), so a
    /// load that read the row before the write can't cache it after.
    async fn evict(&self, id: ProductId) {
        let mut conn = self.conn.clone();
        let keys = [self.key(id), self.lock_key(id)];
        if let Err(error) = redis::cmd("DEL").arg(&keys).query_async::<i64>(&mut conn).await {
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
            Ok(Some(token)) => self.load(id, token).await,
            Ok(None) => self.wait_for_load(id).await,
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

    /// The inventory moved these products' units: dropped as after a write.
    async fn stock_moved(&self, ids: &[ProductId]) {
        self.store.stock_moved(ids).await;
        for &id in ids {
            self.invalidate_after_write(id).await;
        }
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

    /// A load reads the row, a write commits on another node, then the load
    /// tries to cache what it read: refused, so the old row isn't served.
    #[tokio::test]
    async fn a_row_read_before_a_write_is_not_cached_after_it() {
        for (name, conn, namespace) in redis_conns().await {
            let (store, _dir) = SlowStore::open(Duration::ZERO).await;
            let product = sample_product(1);
            store.insert(product.id, &new_product(&product), None, OffsetDateTime::now_utc()).await.expect("insert");
            let config = ProductCacheConfig { second_delete_delay: Duration::ZERO, ..ProductCacheConfig::default() };
            let node = |conn: &RedisConn| {
                RedisCatalog::new(Arc::clone(&store), conn.clone(), &namespace, &config, CacheMetrics::noop())
            };
            let (loader, writer) = (node(&conn), node(&conn));

            let token = loader.lock(product.id).await.expect("redis").expect("the lock is free");
            let read_before = store.get(product.id).await.expect("read");
            let patch = ProductPatch::parse(Some(ProductName::from_trusted("New".into())), None).expect("patch");
            writer.update(product.id, &patch, OffsetDateTime::now_utc()).await.expect("update");
            assert_eq!(loader.write_back(product.id, token, &read_before).await, Ok(false), "{name}");
            assert_eq!(loader.get_cached(product.id).await, Ok(None), "{name}: nothing stale cached");
            let now = loader.get(product.id).await.expect("read").expect("found");
            assert_eq!(now.name.as_str(), "New", "{name}");
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
            reserved: Stock::from_trusted(2),
            // Stored to the millisecond, as in the database.
            updated_at: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_000_000).expect("time"),
        };
        assert_eq!(decode(&encode(&product)), Some(Some(Arc::new(product))));
        assert_eq!(decode(MISSING), Some(None));
        assert_eq!(decode("{not json"), None);
    }
}
