//! Cache-aside product reads in each node's memory (moka): the only tier in
//! the embedded mode, the hot tier over Redis in the distributed mode.
//!
//! - **Single flight**: concurrent misses of one key share one store load
//!   (moka's `or_try_insert_with` makes the other callers wait for it), so a
//!   cold hot key costs one query, not one per caller (stampede).
//! - **Negative caching**: a missing id is cached as `None` for a shorter TTL,
//!   so lookups of ids that don't exist don't reach the store (penetration).
//! - **Jittered TTL**: each entry lives `ttl ± jitter`, so entries loaded
//!   together don't expire together (avalanche).
//! - **Delete after commit, twice**: a write commits to the store, then
//!   deletes the entry, then deletes it again after a short delay. The second
//!   delete closes the race where a reader loaded the old row just before the
//!   commit and put it back just after the first delete.
//!
//! Store errors are returned, never cached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics::Counter;
use moka::Expiry;
use moka::future::Cache;
use rand::Rng;
use surge_domain::catalog::{CatalogStore, NewProduct, Product, ProductPage, ProductPatch, Stock};
use surge_domain::{MerchantId, ProductId, StoreError};
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductCacheConfig {
    /// Most entries kept; least recently used go first.
    pub capacity: u64,
    pub ttl: Duration,
    /// Each entry's TTL is drawn from `ttl - jitter ..= ttl + jitter`.
    pub ttl_jitter: Duration,
    /// How long "no such product" is remembered.
    pub negative_ttl: Duration,
    /// Delay of the second delete after a write; zero turns it off.
    pub second_delete_delay: Duration,
}

impl Default for ProductCacheConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            ttl: Duration::from_secs(60),
            ttl_jitter: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(5),
            second_delete_delay: Duration::from_millis(500),
        }
    }
}

/// Counters the cache reports; the server registers them with its exporter.
#[derive(Clone)]
pub struct CacheMetrics {
    /// Reads answered from memory, including those that waited on another
    /// caller's load.
    pub hits: Counter,
    /// Reads that started a load.
    pub misses: Counter,
    /// Loads that reached the store.
    pub loads: Counter,
}

impl CacheMetrics {
    pub fn noop() -> Self {
        Self { hits: Counter::noop(), misses: Counter::noop(), loads: Counter::noop() }
    }
}

type Entry = Option<Arc<Product>>;

pub struct CachedCatalog<S: ?Sized> {
    store: Arc<S>,
    cache: Cache<ProductId, Entry>,
    /// Who sells each product read lately. A product never changes hands,
    /// so these stay while `cache` drops the product at every move of its
    /// stock: a checkout splitting a cart of hot products reads no row.
    merchants: Cache<ProductId, MerchantId>,
    second_delete_delay: Duration,
    metrics: CacheMetrics,
}

impl<S: CatalogStore + ?Sized> CachedCatalog<S> {
    pub fn new(store: Arc<S>, config: &ProductCacheConfig, metrics: CacheMetrics) -> Self {
        let cache = Cache::builder()
            .name("product")
            .max_capacity(config.capacity)
            .expire_after(JitteredTtl::from(config))
            .build();
        let merchants = Cache::builder().name("product_merchant").max_capacity(config.capacity).build();
        Self { store, cache, merchants, second_delete_delay: config.second_delete_delay, metrics }
    }

    /// Drops this node's copy of one product (another node changed it).
    pub async fn forget(&self, id: ProductId) {
        self.cache.invalidate(&id).await;
    }

    /// Drops every copy: changes may have been missed (the event
    /// subscription was down).
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    async fn invalidate_after_write(&self, id: ProductId) {
        self.cache.invalidate(&id).await;
        if self.second_delete_delay.is_zero() {
            return;
        }
        let cache = self.cache.clone();
        let delay = self.second_delete_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            cache.invalidate(&id).await;
        });
    }
}

#[async_trait]
impl<S: CatalogStore + ?Sized> CatalogStore for CachedCatalog<S> {
    async fn insert(
        &self,
        id: ProductId,
        new: &NewProduct,
        idempotency_key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Product, StoreError> {
        let product = self.store.insert(id, new, idempotency_key, now).await?;
        // A fresh id can only be cached as "missing" if someone guessed it.
        self.cache.invalidate(&id).await;
        Ok(product)
    }

    async fn find_by_idempotency_key(&self, merchant: MerchantId, key: &str) -> Result<Option<Product>, StoreError> {
        self.store.find_by_idempotency_key(merchant, key).await
    }

    async fn get(&self, id: ProductId) -> Result<Option<Arc<Product>>, StoreError> {
        let load = async {
            self.metrics.loads.increment(1);
            self.store.get(id).await
        };
        let entry = self.cache.entry(id).or_try_insert_with(load).await.map_err(|e| (*e).clone())?;
        if entry.is_fresh() {
            self.metrics.misses.increment(1);
        } else {
            self.metrics.hits.increment(1);
        }
        Ok(entry.into_value())
    }

    async fn merchant_of(&self, id: ProductId) -> Result<Option<MerchantId>, StoreError> {
        if let Some(merchant) = self.merchants.get(&id).await {
            return Ok(Some(merchant));
        }
        let merchant = self.get(id).await?.map(|product| product.merchant_id);
        if let Some(merchant) = merchant {
            self.merchants.insert(id, merchant).await;
        }
        Ok(merchant)
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

    /// This node's copy, else what the store's own cache tier holds (the
    /// shared Redis tier in the distributed mode); never a store read.
    async fn get_cached(&self, id: ProductId) -> Result<Option<Option<Arc<Product>>>, StoreError> {
        let cached = self.cache.get(&id).await;
        match &cached {
            Some(_) => self.metrics.hits.increment(1),
            None => self.metrics.misses.increment(1),
        }
        match cached {
            Some(entry) => Ok(Some(entry)),
            // A tier that can't answer holds nothing we can serve.
            None => Ok(self.store.get_cached(id).await.unwrap_or(None)),
        }
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

/// Per-entry expiry: jittered TTL for products, a short one for misses.
struct JitteredTtl {
    ttl: Duration,
    jitter: Duration,
    negative_ttl: Duration,
}

impl From<&ProductCacheConfig> for JitteredTtl {
    fn from(config: &ProductCacheConfig) -> Self {
        Self { ttl: config.ttl, jitter: config.ttl_jitter.min(config.ttl), negative_ttl: config.negative_ttl }
    }
}

impl JitteredTtl {
    fn draw(&self, entry: &Entry) -> Duration {
        if entry.is_none() {
            return self.negative_ttl;
        }
        if self.jitter.is_zero() {
            return self.ttl;
        }
        let span_ms = self.jitter.as_millis() as u64 * 2;
        let offset = Duration::from_millis(rand::rng().random_range(0..=span_ms));
        self.ttl - self.jitter + offset
    }
}

impl Expiry<ProductId, Entry> for JitteredTtl {
    fn expire_after_create(&self, _key: &ProductId, value: &Entry, _created_at: Instant) -> Option<Duration> {
        Some(self.draw(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{SlowStore, new_product, sample_product};

    fn config() -> ProductCacheConfig {
        ProductCacheConfig {
            ttl: Duration::from_secs(60),
            ttl_jitter: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(3),
            ..ProductCacheConfig::default()
        }
    }

    #[test]
    fn ttl_of_a_product_stays_within_the_jitter_band_and_varies() {
        let ttl = JitteredTtl::from(&config());
        let product = Some(Arc::new(sample()));
        let draws: Vec<Duration> = (0..200).map(|_| ttl.draw(&product)).collect();
        assert!(draws.iter().all(|d| *d >= Duration::from_secs(50) && *d <= Duration::from_secs(70)));
        assert!(draws.iter().any(|d| *d != draws[0]), "jitter must spread expiries");
    }

    #[test]
    fn a_missing_product_is_remembered_for_the_negative_ttl() {
        assert_eq!(JitteredTtl::from(&config()).draw(&None), Duration::from_secs(3));
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_key_share_a_single_load() {
        let (store, _dir) = SlowStore::open(Duration::from_millis(200)).await;
        let product = sample();
        store.insert(product.id, &new_product(&product), None, OffsetDateTime::now_utc()).await.expect("insert");
        let cached = Arc::new(CachedCatalog::new(Arc::clone(&store), &config(), CacheMetrics::noop()));

        let readers: Vec<_> = (0..100)
            .map(|_| {
                let cached = Arc::clone(&cached);
                tokio::spawn(async move { cached.get(ProductId::new(1)).await })
            })
            .collect();
        for reader in readers {
            let found = reader.await.expect("join").expect("read");
            assert_eq!(found.map(|p| p.sku.clone()), Some(product.sku.clone()));
        }
        assert_eq!(store.loads(), 1);
        // A missing id: many concurrent callers, one load, then remembered.
        let misses: Vec<_> = (0..20)
            .map(|_| {
                let cached = Arc::clone(&cached);
                tokio::spawn(async move { cached.get(ProductId::new(999)).await })
            })
            .collect();
        for miss in misses {
            assert_eq!(miss.await.expect("join").expect("read"), None);
        }
        assert_eq!(cached.get(ProductId::new(999)).await, Ok(None));
        assert_eq!(store.loads(), 2);
    }

    /// A checkout splits its cart by merchant at every request, and every
    /// checkout moves the stock of its products: the merchant must not be
    /// read again each time the product's copy is dropped.
    #[tokio::test]
    async fn who_sells_a_product_outlives_the_moves_of_its_stock() {
        let (store, _dir) = SlowStore::open(Duration::ZERO).await;
        let product = sample();
        store.insert(product.id, &new_product(&product), None, OffsetDateTime::now_utc()).await.expect("insert");
        let cached = CachedCatalog::new(Arc::clone(&store), &config(), CacheMetrics::noop());
        for _ in 0..5 {
            assert_eq!(cached.merchant_of(product.id).await.expect("read"), Some(product.merchant_id));
            cached.stock_moved(&[product.id]).await;
        }
        assert_eq!(store.loads(), 1);
        // The product itself is read again after its stock moved.
        assert!(cached.get(product.id).await.expect("read").is_some());
        assert_eq!(store.loads(), 2);
        assert_eq!(cached.merchant_of(ProductId::new(404)).await.expect("read"), None);
    }

    fn sample() -> Product {
        sample_product(1)
    }
}
