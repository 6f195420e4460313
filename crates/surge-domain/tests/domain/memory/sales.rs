//! Sales by id, and when their counters were last rebuilt.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use surge_domain::flashsale::{FlashSale, SaleStore};
use surge_domain::{SaleId, StoreError};
use time::OffsetDateTime;

use super::lock;

#[derive(Default)]
pub struct MemSales {
    sales: Mutex<BTreeMap<SaleId, FlashSale>>,
    rebuilt_ms: Mutex<HashMap<SaleId, i64>>,
}

impl MemSales {
    /// The sale's stock and per-buyer limit, the bounds the order store
    /// keeps even if the ledger does not.
    pub fn bounds(&self, id: SaleId) -> Option<(i64, u32)> {
        lock(&self.sales).get(&id).map(|sale| (sale.stock, sale.per_user_limit))
    }
}

#[async_trait]
impl SaleStore for MemSales {
    /// Product stock is not modelled here (the store contract tests the
    /// allocation on both databases): every sale gets its stock.
    async fn insert(&self, sale: &FlashSale, _now: OffsetDateTime) -> Result<bool, StoreError> {
        let mut sales = lock(&self.sales);
        if sales.contains_key(&sale.id) {
            return Err(StoreError::Duplicate("id"));
        }
        sales.insert(sale.id, sale.clone());
        Ok(true)
    }

    async fn get(&self, id: SaleId) -> Result<Option<FlashSale>, StoreError> {
        Ok(lock(&self.sales).get(&id).cloned())
    }

    async fn list_unended(&self, now: OffsetDateTime) -> Result<Vec<FlashSale>, StoreError> {
        Ok(lock(&self.sales).values().filter(|sale| sale.ends_at > now).cloned().collect())
    }

    async fn ledger_rebuilt_ms(&self, id: SaleId) -> Result<Option<i64>, StoreError> {
        Ok(lock(&self.rebuilt_ms).get(&id).copied())
    }

    async fn record_ledger_rebuilt(&self, id: SaleId, at_ms: i64) -> Result<(), StoreError> {
        let mut rebuilt = lock(&self.rebuilt_ms);
        let at = rebuilt.entry(id).or_insert(at_ms);
        *at = (*at).max(at_ms);
        Ok(())
    }
}
