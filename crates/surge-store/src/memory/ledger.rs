//! The embedded stock ledger: per sale, stock left and units per buyer under
//! one mutex, so that the check of both and the deduction are one step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use async_trait::async_trait;
use surge_domain::flashsale::{Deduction, FlashSale, StockLedger};
use surge_domain::order::SaleHoldings;
use surge_domain::{SaleId, StoreError, UserId};

#[derive(Debug, Default)]
struct Counters {
    left: i64,
    per_user: HashMap<UserId, u32>,
}

#[derive(Debug, Default)]
pub struct MemoryLedger {
    sales: RwLock<HashMap<SaleId, Arc<Mutex<Counters>>>>,
}

impl MemoryLedger {
    fn counters(&self, sale: SaleId) -> Option<Arc<Mutex<Counters>>> {
        self.sales.read().unwrap_or_else(PoisonError::into_inner).get(&sale).cloned()
    }
}

#[async_trait]
impl StockLedger for MemoryLedger {
    async fn load(&self, sale: &FlashSale, holdings: &SaleHoldings) -> Result<(), StoreError> {
        let counters = Counters {
            left: (sale.stock - holdings.sold).max(0),
            per_user: holdings.per_user.iter().copied().collect(),
        };
        self.sales.write().unwrap_or_else(PoisonError::into_inner).insert(sale.id, Arc::new(Mutex::new(counters)));
        Ok(())
    }

    async fn load_if_absent(&self, sale: &FlashSale, holdings: &SaleHoldings) -> Result<(), StoreError> {
        let mut sales = self.sales.write().unwrap_or_else(PoisonError::into_inner);
        sales.entry(sale.id).or_insert_with(|| {
            Arc::new(Mutex::new(Counters {
                left: (sale.stock - holdings.sold).max(0),
                per_user: holdings.per_user.iter().copied().collect(),
            }))
        });
        Ok(())
    }

    async fn try_deduct(
        &self,
        sale: SaleId,
        user: UserId,
        quantity: u32,
        per_user_limit: u32,
    ) -> Result<Deduction, StoreError> {
        let Some(counters) = self.counters(sale) else {
            return Ok(Deduction::NotLoaded);
        };
        let mut counters = counters.lock().unwrap_or_else(PoisonError::into_inner);
        let held = counters.per_user.get(&user).copied().unwrap_or(0);
        if held + quantity > per_user_limit {
            return Ok(Deduction::LimitExceeded);
        }
        if counters.left < i64::from(quantity) {
            return Ok(Deduction::SoldOut);
        }
        counters.left -= i64::from(quantity);
        counters.per_user.insert(user, held + quantity);
        debug_assert!(counters.left >= 0);
        Ok(Deduction::Done { stock_left: counters.left })
    }

    async fn restore(&self, sale: SaleId, user: UserId, quantity: u32) -> Result<(), StoreError> {
        let Some(counters) = self.counters(sale) else {
            return Ok(());
        };
        let mut counters = counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.left += i64::from(quantity);
        if let Some(held) = counters.per_user.get_mut(&user) {
            *held = held.saturating_sub(quantity);
        }
        Ok(())
    }

    async fn stock_left(&self, sale: SaleId) -> Result<Option<i64>, StoreError> {
        Ok(self.counters(sale).map(|c| c.lock().unwrap_or_else(PoisonError::into_inner).left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use surge_domain::{Cents, MerchantId, ProductId};
    use time::OffsetDateTime;

    fn sale(stock: i64) -> FlashSale {
        FlashSale {
            id: SaleId::new(1),
            product_id: ProductId::new(1),
            merchant_id: MerchantId::new(1),
            stock,
            price_cents: Cents::from_trusted(1),
            starts_at: OffsetDateTime::UNIX_EPOCH,
            ends_at: OffsetDateTime::now_utc(),
            per_user_limit: 2,
        }
    }

    #[tokio::test]
    async fn deductions_stop_at_the_stock_and_at_each_buyers_limit() {
        let ledger = MemoryLedger::default();
        ledger.load(&sale(3), &SaleHoldings::default()).await.expect("load");
        let (id, alice, bob) = (SaleId::new(1), UserId::new(1), UserId::new(2));
        assert_eq!(ledger.try_deduct(id, alice, 2, 2).await, Ok(Deduction::Done { stock_left: 1 }));
        assert_eq!(ledger.try_deduct(id, alice, 1, 2).await, Ok(Deduction::LimitExceeded));
        assert_eq!(ledger.try_deduct(id, bob, 2, 2).await, Ok(Deduction::SoldOut));
        assert_eq!(ledger.try_deduct(id, bob, 1, 2).await, Ok(Deduction::Done { stock_left: 0 }));
        ledger.restore(id, alice, 2).await.expect("restore");
        assert_eq!(ledger.stock_left(id).await, Ok(Some(2)));
        assert_eq!(ledger.try_deduct(id, alice, 2, 2).await, Ok(Deduction::Done { stock_left: 0 }));
        assert_eq!(ledger.try_deduct(SaleId::new(9), alice, 1, 2).await, Ok(Deduction::NotLoaded));
    }

    #[tokio::test]
    async fn loading_from_holdings_counts_what_is_already_sold() {
        let ledger = MemoryLedger::default();
        let holdings = SaleHoldings { sold: 2, per_user: vec![(UserId::new(1), 2)] };
        ledger.load(&sale(3), &holdings).await.expect("load");
        assert_eq!(ledger.stock_left(SaleId::new(1)).await, Ok(Some(1)));
        assert_eq!(ledger.try_deduct(SaleId::new(1), UserId::new(1), 1, 2).await, Ok(Deduction::LimitExceeded));
    }

    #[tokio::test]
    async fn loading_if_absent_never_overwrites_counters_in_use() {
        let ledger = MemoryLedger::default();
        ledger.load_if_absent(&sale(3), &SaleHoldings::default()).await.expect("load");
        assert_eq!(
            ledger.try_deduct(SaleId::new(1), UserId::new(1), 1, 2).await,
            Ok(Deduction::Done { stock_left: 2 })
        );
        ledger.load_if_absent(&sale(3), &SaleHoldings::default()).await.expect("load again");
        assert_eq!(ledger.stock_left(SaleId::new(1)).await, Ok(Some(2)));
    }
}
