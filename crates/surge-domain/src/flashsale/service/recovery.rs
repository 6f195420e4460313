//! Rebuilding the ledger: at start-up from the order store, and for an open
//! sale whose counters a shared ledger lost, once that is provably safe.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::{FlashSales, LiveSale};
use crate::flashsale::sale::FlashSale;
use crate::order::SaleHoldings;
use crate::store::StoreError;

/// How often one node tries to rebuild one sale's lost counters.
const REBUILD_EVERY_MS: i64 = 250;

impl FlashSales {
    /// Rebuilds the ledger of every sale that has not ended from the orders
    /// in the store. Run at start-up, after the queue is drained, so that
    /// the store holds every accepted order of this node's own ledger; a
    /// shared ledger's counters are kept, or rebuilt once that is safe
    /// (see [`Self::first_look`]).
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let sales = self.ports.sales.list_unended(self.clock.now()).await?;
        let count = sales.len();
        for sale in sales {
            let live = self.first_look(sale).await?;
            self.live.write().unwrap_or_else(PoisonError::into_inner).insert(live.sale.id, live);
        }
        Ok(count)
    }

    /// A sale this node serves from now on. A shared ledger's counters of a
    /// sale that has started are never loaded here: other nodes may be
    /// deducting, so counters that are there are in use, and counters that
    /// are missing were lost (other nodes' deductions from before the loss
    /// may still be on their way to the queue, so the orders don't show
    /// them yet): those are left to [`Self::rebuild_lost`]. Checking, then
    /// loading if absent, would race a loss that comes in between.
    pub(super) async fn first_look(&self, sale: FlashSale) -> Result<Arc<LiveSale>, StoreError> {
        if self.ports.ledger.is_shared() && self.clock.now() >= sale.starts_at {
            let live = match self.ports.ledger.stock_left(sale.id).await? {
                Some(left) => LiveSale::new(sale, left <= 0),
                None => {
                    let live = LiveSale::new(sale, false);
                    live.lost_since_ms.store(self.clock.now_ms(), Ordering::SeqCst);
                    live
                }
            };
            return Ok(Arc::new(live));
        }
        Ok(Arc::new(self.loaded(sale).await?))
    }

    /// The sale as this node serves it, its counters loaded from the orders
    /// unless the ledger has them already.
    pub(super) async fn loaded(&self, sale: FlashSale) -> Result<LiveSale, StoreError> {
        let holdings = self.load_from_orders(&sale).await?;
        let sold_out = holdings.sold >= sale.stock;
        Ok(LiveSale::new(sale, sold_out))
    }

    /// Rebuilds the counters of an open sale that the ledger lost, from the
    /// order store, once that is safe: the store's holdings must include
    /// every request accepted before the loss, so every such request must
    /// have reached the queue (`intake_max` has passed since the loss was
    /// first seen) and the queue must hold none of them (its oldest
    /// unacknowledged request is newer than the loss by `intake_max`).
    /// Until then intake answers 503. The sale's intake keys are reloaded
    /// too. Returns whether the counters are back.
    ///
    /// The loss is timed from this node's first notice of it, which must
    /// come after the counters were last rebuilt by any node: a notice of
    /// an earlier loss, that another node's rebuild ended, would time a
    /// second loss too early (and miss what was accepted in between). The
    /// store records each rebuild, so such a notice is taken again.
    pub(super) async fn rebuild_lost(&self, live: &LiveSale) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let _ = live.lost_since_ms.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        let since = live.lost_since_ms.load(Ordering::SeqCst);
        // One try per sale per REBUILD_EVERY_MS on this node, whoever asks.
        let tried = live.rebuild_tried_ms.load(Ordering::SeqCst);
        if now - tried < REBUILD_EVERY_MS
            || live.rebuild_tried_ms.compare_exchange(tried, now, Ordering::SeqCst, Ordering::SeqCst).is_err()
        {
            return Ok(false);
        }
        let id = live.sale.id;
        let intake_max_ms = self.intake_max.as_millis() as i64;
        // Another node's clock wrote it: within `intake_max` (which holds
        // the clock skew) a notice counts as stale, to be sure.
        let rebuilt = self.ports.sales.ledger_rebuilt_ms(id).await?;
        if rebuilt.is_some_and(|rebuilt| since <= rebuilt + intake_max_ms) {
            live.lost_since_ms.store(now, Ordering::SeqCst);
            return Ok(false);
        }
        // A request deducted before the loss may still be on its way to the
        // queue for up to `intake_max`; after that it is in the queue or
        // written.
        if now < since + intake_max_ms {
            return Ok(false);
        }
        let queued_before_loss =
            self.ports.queue.oldest_unacked_ms().await?.is_some_and(|oldest| oldest <= since + intake_max_ms);
        if queued_before_loss {
            return Ok(false);
        }
        let holdings = self.load_from_orders(&live.sale).await?;
        live.lost_since_ms.store(0, Ordering::SeqCst);
        live.sold_out.store(holdings.sold >= live.sale.stock, Ordering::SeqCst);
        tracing::warn!(sale_id = %id, sold = holdings.sold, "rebuilt the sale's lost stock counters from the orders");
        // Recorded after the load (whoever loaded): the nodes that noticed
        // this loss then know their notice old, even one that noticed it
        // just before the counters came back.
        self.ports.sales.record_ledger_rebuilt(id, self.clock.now_ms()).await?;
        Ok(true)
    }

    /// The sale's holdings from the order store, with its intake keys
    /// loaded and its counters loaded unless the ledger has them: a shared
    /// ledger (Redis) holds deductions still in the queue, which the store's
    /// holdings don't show yet.
    pub(super) async fn load_from_orders(&self, sale: &FlashSale) -> Result<SaleHoldings, StoreError> {
        let holdings = self.ports.orders.sale_holdings(sale.id).await?;
        let keyed = self.ports.orders.keyed_orders(sale.id).await?;
        self.ports.keys.preload(sale.id, keyed).await;
        self.ports.ledger.load_if_absent(sale, &holdings).await?;
        Ok(holdings)
    }
}
