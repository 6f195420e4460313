//! The stock ledger of one process: per sale, stock left and units per
//! buyer under one mutex, so that checking both and deducting is one step.
//! Like the embedded adapter it keeps no reservations. A give-back can be
//! made to fail, as a ledger that is down would.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use surge_domain::flashsale::{Deduction, FlashSale, Reservation, StockLedger};
use surge_domain::order::SaleHoldings;
use surge_domain::{OrderId, SaleId, StoreError, UserId};

use super::lock;

struct Counters {
    left: i64,
    per_user: HashMap<UserId, u32>,
    /// Orders whose units came back (or were counted back at the load).
    returned: HashSet<OrderId>,
}

#[derive(Default)]
pub struct MemLedger {
    sales: Mutex<HashMap<SaleId, Counters>>,
    restores_fail: AtomicBool,
}

impl MemLedger {
    /// While set, every give-back fails as if the ledger were down.
    pub fn fail_restores(&self, fail: bool) {
        self.restores_fail.store(fail, Ordering::SeqCst);
    }
}

fn counters(sale: &FlashSale, holdings: &SaleHoldings) -> Counters {
    Counters {
        left: (sale.stock - holdings.sold).max(0),
        per_user: holdings.per_user.iter().copied().collect(),
        returned: holdings.returned.iter().copied().collect(),
    }
}

#[async_trait]
impl StockLedger for MemLedger {
    async fn load(&self, sale: &FlashSale, holdings: &SaleHoldings) -> Result<(), StoreError> {
        lock(&self.sales).insert(sale.id, counters(sale, holdings));
        Ok(())
    }

    async fn load_if_absent(&self, sale: &FlashSale, holdings: &SaleHoldings) -> Result<(), StoreError> {
        lock(&self.sales).entry(sale.id).or_insert_with(|| counters(sale, holdings));
        Ok(())
    }

    async fn try_deduct(
        &self,
        sale: SaleId,
        reservation: Reservation,
        per_user_limit: u32,
    ) -> Result<Deduction, StoreError> {
        let mut sales = lock(&self.sales);
        let Some(counters) = sales.get_mut(&sale) else { return Ok(Deduction::NotLoaded) };
        let held = counters.per_user.get(&reservation.user).copied().unwrap_or(0);
        if held + reservation.quantity > per_user_limit {
            return Ok(Deduction::LimitExceeded);
        }
        if counters.left < i64::from(reservation.quantity) {
            return Ok(Deduction::SoldOut);
        }
        counters.left -= i64::from(reservation.quantity);
        counters.per_user.insert(reservation.user, held + reservation.quantity);
        Ok(Deduction::Done { stock_left: counters.left })
    }

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
        if self.restores_fail.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the ledger is down".to_owned()));
        }
        let mut sales = lock(&self.sales);
        let Some(counters) = sales.get_mut(&sale) else { return Ok(false) };
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
        Ok(lock(&self.sales).get(&sale).map(|counters| counters.left))
    }

    async fn forget(&self, sale: SaleId) -> Result<(), StoreError> {
        lock(&self.sales).remove(&sale);
        Ok(())
    }
}
