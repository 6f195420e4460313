//! Sale lookups in each node's memory (moka). A sale never changes once
//! written, so a found one is kept until it is pushed out by newer ones; an
//! id the store doesn't know is remembered as missing for a moment, so a
//! flood of made-up ids (anyone may read a sale) costs one query per id
//! per `missing_ttl`, not one per request. Concurrent misses of one id
//! share one load. Store errors are returned, never cached.
//!
//! A sale created through another node is found here once `missing_ttl`
//! has passed since this node last looked for its id (ids are not known
//! before a sale is created, so a real client never waits on this).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::future::Cache;
use surge_domain::flashsale::{FlashSale, SaleStore};
use surge_domain::{SaleId, StoreError};
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleCacheConfig {
    /// Most sales kept (found or missing); least used go first.
    pub capacity: u64,
    /// How long "no such sale" is remembered.
    pub missing_ttl: Duration,
}

impl Default for SaleCacheConfig {
    fn default() -> Self {
        Self { capacity: 50_000, missing_ttl: Duration::from_secs(1) }
    }
}

pub struct CachedSales {
    inner: Arc<dyn SaleStore>,
    found: Cache<SaleId, FlashSale>,
    missing: Cache<SaleId, ()>,
}

impl CachedSales {
    pub fn new(inner: Arc<dyn SaleStore>, config: &SaleCacheConfig) -> Self {
        Self {
            inner,
            found: Cache::builder().max_capacity(config.capacity).build(),
            missing: Cache::builder().max_capacity(config.capacity).time_to_live(config.missing_ttl).build(),
        }
    }
}

#[async_trait]
impl SaleStore for CachedSales {
    async fn insert(&self, sale: &FlashSale, now: OffsetDateTime) -> Result<bool, StoreError> {
        if !self.inner.insert(sale, now).await? {
            return Ok(false);
        }
        self.missing.invalidate(&sale.id).await;
        self.found.insert(sale.id, sale.clone()).await;
        Ok(true)
    }

    async fn get(&self, id: SaleId) -> Result<Option<FlashSale>, StoreError> {
        if let Some(sale) = self.found.get(&id).await {
            return Ok(Some(sale));
        }
        if self.missing.contains_key(&id) {
            return Ok(None);
        }
        let loaded = self.found.try_get_with(id, async {
            match self.inner.get(id).await {
                Ok(Some(sale)) => Ok(sale),
                Ok(None) => Err(None),
                Err(error) => Err(Some(error)),
            }
        });
        match loaded.await {
            Ok(sale) => Ok(Some(sale)),
            Err(error) => match error.as_ref() {
                None => {
                    self.missing.insert(id, ()).await;
                    Ok(None)
                }
                Some(error) => Err(error.clone()),
            },
        }
    }

    async fn list_unended(&self, now: OffsetDateTime) -> Result<Vec<FlashSale>, StoreError> {
        self.inner.list_unended(now).await
    }

    async fn ledger_rebuilt_ms(&self, id: SaleId) -> Result<Option<i64>, StoreError> {
        self.inner.ledger_rebuilt_ms(id).await
    }

    async fn record_ledger_rebuilt(&self, id: SaleId, at_ms: i64) -> Result<(), StoreError> {
        self.inner.record_ledger_rebuilt(id, at_ms).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::flow_contract::sale;

    /// A store that counts its reads.
    #[derive(Default)]
    struct Counting {
        sales: std::sync::Mutex<Vec<FlashSale>>,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl SaleStore for Counting {
        async fn insert(&self, sale: &FlashSale, _now: OffsetDateTime) -> Result<bool, StoreError> {
            self.sales.lock().expect("lock").push(sale.clone());
            Ok(true)
        }

        async fn get(&self, id: SaleId) -> Result<Option<FlashSale>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self.sales.lock().expect("lock").iter().find(|sale| sale.id == id).cloned())
        }

        async fn list_unended(&self, _now: OffsetDateTime) -> Result<Vec<FlashSale>, StoreError> {
            Ok(Vec::new())
        }

        async fn ledger_rebuilt_ms(&self, _id: SaleId) -> Result<Option<i64>, StoreError> {
            Ok(None)
        }

        async fn record_ledger_rebuilt(&self, _id: SaleId, _at_ms: i64) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_unknown_id_asked_again_and_again_reaches_the_store_once() {
        let store = Arc::new(Counting::default());
        let cached = CachedSales::new(store.clone(), &SaleCacheConfig::default());
        for _ in 0..100 {
            assert_eq!(cached.get(SaleId::new(404)).await, Ok(None));
        }
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_sale_written_through_the_cache_is_found_at_once_and_read_from_memory() {
        let store = Arc::new(Counting::default());
        let cached = CachedSales::new(store.clone(), &SaleCacheConfig::default());
        assert_eq!(cached.get(SaleId::new(7)).await, Ok(None), "not there yet");
        let seven = sale(7, 10);
        cached.insert(&seven, OffsetDateTime::now_utc()).await.expect("insert");
        assert_eq!(cached.get(SaleId::new(7)).await, Ok(Some(seven)), "the missing mark went with the insert");
        assert_eq!(store.reads.load(Ordering::SeqCst), 1, "only the first look reached the store");
    }

    #[tokio::test]
    async fn a_sale_written_elsewhere_is_found_once_the_missing_mark_expires() {
        let store = Arc::new(Counting::default());
        let config = SaleCacheConfig { missing_ttl: Duration::from_millis(50), ..SaleCacheConfig::default() };
        let cached = CachedSales::new(store.clone(), &config);
        assert_eq!(cached.get(SaleId::new(9)).await, Ok(None));
        let nine = sale(9, 10);
        store.insert(&nine, OffsetDateTime::now_utc()).await.expect("another node writes it");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(cached.get(SaleId::new(9)).await, Ok(Some(nine)));
    }
}
