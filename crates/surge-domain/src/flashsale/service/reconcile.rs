//! Keeping a shared ledger honest: sold-out flags refreshed from it, and its
//! stock compared with (and repaired from) what the order store says.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::{FlashSales, LiveSale};
use crate::flashsale::sale::FlashSale;
use crate::ids::OrderId;
use crate::store::StoreError;

/// What one reconciliation pass found (see [`FlashSales::reconcile`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Sales measured (not skipped).
    pub measured: usize,
    /// The sum of their differences left after the repairs, in units
    /// either way.
    pub difference: i64,
    /// Units the repairs moved, either way.
    pub repaired: u64,
}

impl FlashSales {
    /// Clears the sold-out flag of every sale whose stock came back on the
    /// ledger: with a shared ledger, stock returned through another node
    /// (cancel, timeout, reaper) would otherwise stay unsellable here.
    /// Run periodically; one ledger read per flagged sale.
    pub async fn refresh_sold_out(&self) -> Result<usize, StoreError> {
        let flagged: Vec<Arc<LiveSale>> = self
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|live| live.sold_out.load(Ordering::Relaxed))
            .cloned()
            .collect();
        let mut cleared = 0;
        for live in flagged {
            let left = self.ports.ledger.stock_left(live.sale.id).await?;
            if left.is_some_and(|left| left > 0) {
                live.sold_out.store(false, Ordering::SeqCst);
                cleared += 1;
                continue;
            }
            // Lost from the ledger: a flagged sale sends no deduction that
            // would notice, so the sweep rebuilds it (a give-back that found
            // no counters is counted in again this way).
            let lost = left.is_none() && live.sale.is_open(self.clock.now());
            if lost && self.rebuild_lost(&live).await? && !live.sold_out.load(Ordering::SeqCst) {
                cleared += 1;
            }
        }
        Ok(cleared)
    }

    /// Compares the shared ledger's stock of every open sale with what the
    /// order store says it should be, and repairs a difference measured
    /// twice in a row. The ledger should hold `stock - sold - (units of
    /// open reservations whose orders are not written) - (units of
    /// give-backs owed that it does not have back)`; anything else was
    /// lost or counted twice (a give-back lost before the outbox existed, a
    /// settle that found no stock to take again, a hand edit).
    ///
    /// The store is read before and after the ledger's snapshot; a pass in
    /// which either moved (an order written or cancelled meanwhile) proves
    /// nothing and is skipped. The repair moves the stock only if it is
    /// still what the snapshot saw. Counters that are missing are left to
    /// [`Self::rebuild_lost`]. The in-process ledger is not reconciled.
    pub async fn reconcile(&self) -> Result<Reconciliation, StoreError> {
        let mut pass = Reconciliation::default();
        if !self.ports.ledger.is_shared() {
            return Ok(pass);
        }
        let now = self.clock.now();
        let open: Vec<Arc<LiveSale>> = self
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|live| live.sale.is_open(now))
            .cloned()
            .collect();
        for live in open {
            let Some((difference, seen)) = self.measure(&live.sale).await? else { continue };
            pass.measured += 1;
            pass.difference += difference.abs();
            let before = live.difference.swap(difference, Ordering::SeqCst);
            if difference == 0 {
                continue;
            }
            tracing::warn!(sale_id = %live.sale.id, difference, stock_left = seen,
                "the ledger's stock differs from the orders");
            if before != difference || !self.ports.ledger.adjust(live.sale.id, seen, -difference).await? {
                continue;
            }
            live.difference.store(0, Ordering::SeqCst);
            pass.difference -= difference.abs();
            pass.repaired += difference.unsigned_abs();
            tracing::warn!(sale_id = %live.sale.id, by = -difference, "repaired the ledger's stock from the orders");
            if difference < 0 {
                self.may_sell_again(live.sale.id);
            }
        }
        Ok(pass)
    }

    /// The ledger's stock left minus what the orders say it should be, and
    /// the stock left it saw; `None` when the sale's counters are missing
    /// or the store moved during the measure.
    async fn measure(&self, sale: &FlashSale) -> Result<Option<(i64, i64)>, StoreError> {
        let before = self.ports.orders.sale_tally(sale.id, &[]).await?;
        let owed: Vec<OrderId> = before.owed.iter().map(|(order, _)| *order).collect();
        let Some(ledger) = self.ports.ledger.snapshot(sale.id, &owed).await? else {
            return Ok(None);
        };
        let open: Vec<OrderId> = ledger.open.iter().map(|reservation| reservation.order).collect();
        let after = self.ports.orders.sale_tally(sale.id, &open).await?;
        if after.sold != before.sold || after.owed != before.owed {
            return Ok(None);
        }
        let written: HashSet<OrderId> = after.written.into_iter().collect();
        let returned: HashSet<OrderId> = ledger.returned.into_iter().collect();
        let held: i64 = ledger.open.iter().filter(|r| !written.contains(&r.order)).map(|r| i64::from(r.quantity)).sum();
        let owed: i64 =
            after.owed.iter().filter(|(order, _)| !returned.contains(order)).map(|(_, units)| i64::from(*units)).sum();
        let expected = sale.stock - after.sold - held - owed;
        Ok(Some((ledger.stock_left - expected, ledger.stock_left)))
    }
}
