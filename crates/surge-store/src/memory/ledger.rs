//! The embedded stock ledger: per sale, stock left and units per buyer under
//! one mutex, so that the check of both and the deduction are one step. It
//! keeps no reservations: it is rebuilt from the orders at every start.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use async_trait::async_trait;
use std::time::Duration;

use surge_domain::flashsale::{Deduction, FlashSale, Reservation, StockLedger};
use surge_domain::order::SaleHoldings;
use surge_domain::{OrderId, SaleId, StoreError, UserId};

#[derive(Debug, Default)]
struct Counters {
    left: i64,
    per_user: HashMap<UserId, u32>,
    /// Orders whose units came back (or were counted back at the load).
    returned: HashSet<OrderId>,
}

impl Counters {
    fn of(sale: &FlashSale, holdings: &SaleHoldings) -> Self {
        Self {
            left: (sale.stock - holdings.sold).max(0),
            per_user: holdings.per_user.iter().copied().collect(),
            returned: holdings.returned.iter().copied().collect(),
        }
    }
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
        let counters = Arc::new(Mutex::new(Counters::of(sale, holdings)));
        self.sales.write().unwrap_or_else(PoisonError::into_inner).insert(sale.id, counters);
        Ok(())
    }

    async fn load_if_absent(&self, sale: &FlashSale, holdings: &SaleHoldings) -> Result<(), StoreError> {
        let mut sales = self.sales.write().unwrap_or_else(PoisonError::into_inner);
        sales.entry(sale.id).or_insert_with(|| Arc::new(Mutex::new(Counters::of(sale, holdings))));
        Ok(())
    }

    async fn try_deduct(
        &self,
        sale: SaleId,
        reservation: Reservation,
        per_user_limit: u32,
    ) -> Result<Deduction, StoreError> {
        let Reservation { user, quantity, .. } = reservation;
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

    /// Nothing outlives this process, so nothing is reserved: a release is a
    /// plain restore.
    async fn release(&self, sale: SaleId, reservation: Reservation) -> Result<(), StoreError> {
        let Reservation { order, user, quantity } = reservation;
        self.restore(sale, order, user, quantity).await.map(drop)
    }

    async fn settle(&self, _sale: SaleId, _written: &[Reservation]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn stale_reservations(&self, _sale: SaleId, _older_than: Duration) -> Result<Vec<Reservation>, StoreError> {
        Ok(Vec::new())
    }

    async fn restore(&self, sale: SaleId, order: OrderId, user: UserId, quantity: u32) -> Result<bool, StoreError> {
        let Some(counters) = self.counters(sale) else {
            return Ok(false);
        };
        let mut counters = counters.lock().unwrap_or_else(PoisonError::into_inner);
        if !counters.returned.insert(order) {
            return Ok(true);
        }
        counters.left += i64::from(quantity);
        if let Some(held) = counters.per_user.get_mut(&user) {
            *held = held.saturating_sub(quantity);
        }
        Ok(true)
    }

    async fn stock_left(&self, sale: SaleId) -> Result<Option<i64>, StoreError> {
        Ok(self.counters(sale).map(|c| c.lock().unwrap_or_else(PoisonError::into_inner).left))
    }

    async fn forget(&self, sale: SaleId) -> Result<(), StoreError> {
        let mut sales = self.sales.write().unwrap_or_else(PoisonError::into_inner);
        sales.remove(&sale);
        sales.shrink_to_fit();
        Ok(())
    }
}
