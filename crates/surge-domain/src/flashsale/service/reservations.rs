//! Where the units go after intake: a reservation is settled when its order
//! is written, released when its request is given up, reaped when its node
//! died; a cancelled order's units come back; other nodes' sell-outs and
//! restocks reach this node's sold-out flags.

use std::collections::{BTreeMap, HashSet};
use std::sync::PoisonError;
use std::time::Duration;

use super::FlashSales;
use crate::flashsale::ports::Reservation;
use crate::flashsale::sale::OrderRequested;
use crate::ids::{OrderId, ProductId, SaleId, UserId};
use crate::order::{Order, StockKeeper};
use crate::store::StoreError;

impl FlashSales {
    /// Releases reservations open for longer than `older_than` whose order
    /// was never written and whose request is provably not in the queue
    /// (the node that took them died before its append, or its append never
    /// landed), and closes those whose order exists. Returns how many were
    /// released.
    ///
    /// Age alone proves nothing: a consumer held back keeps requests in the
    /// queue for as long as it likes, and giving their stock back would sell
    /// it twice (an acknowledged order then ends FAILED). A request is
    /// appended within `intake_max` of its reservation (the request's
    /// budget, plus clock skew between nodes), so a reservation older than
    /// the oldest unacknowledged request by more than that has no request in
    /// the queue: it was processed (its order exists, or the consumer gave
    /// its stock back) or never appended.
    pub async fn reap_reservations(&self, older_than: Duration) -> Result<usize, StoreError> {
        let sales: Vec<SaleId> = self.live.read().unwrap_or_else(PoisonError::into_inner).keys().copied().collect();
        let mut released = 0;
        let mut provable: Option<Duration> = None;
        for sale in sales {
            if self.ports.ledger.stale_reservations(sale, older_than).await?.is_empty() {
                continue;
            }
            let old_enough = match provable {
                Some(age) => age,
                None => *provable.insert(older_than.max(self.age_not_in_queue().await?)),
            };
            for reservation in self.ports.ledger.stale_reservations(sale, old_enough).await? {
                if self.ports.orders.get(reservation.order).await?.is_some() {
                    self.ports.ledger.settle(sale, &[reservation]).await?;
                } else {
                    tracing::warn!(order_id = %reservation.order, sale_id = %sale,
                        "releasing a reservation whose request is not in the queue and whose order was never written");
                    self.released(sale, reservation).await?;
                    released += 1;
                }
            }
        }
        Ok(released)
    }

    /// How old a reservation must be for its request to be provably out of
    /// the queue: older than the oldest unacknowledged request by
    /// `intake_max`. Zero when the queue holds nothing unacknowledged.
    async fn age_not_in_queue(&self) -> Result<Duration, StoreError> {
        let Some(oldest_ms) = self.ports.queue.oldest_unacked_ms().await? else {
            return Ok(Duration::ZERO);
        };
        let before_ms = oldest_ms - self.intake_max.as_millis() as i64;
        Ok(Duration::from_millis(self.clock.now_ms().saturating_sub(before_ms).max(0) as u64))
    }

    /// Another node saw the sale sell out (an event): this node stops
    /// sending deductions for it too, unless the ledger already has stock
    /// again (an event can arrive late). Sales this node doesn't serve yet
    /// are left alone; they load their state when first asked.
    pub async fn sold_out_elsewhere(&self, sale: SaleId) -> Result<(), StoreError> {
        let Some(live) = self.cached(sale) else { return Ok(()) };
        // A late event must not stop sales while stock is there: look
        // first, and set the flag (with its own second look) only if none.
        match self.ports.ledger.stock_left(sale).await? {
            Some(left) if left <= 0 => self.mark_sold_out(&live).await,
            _ => Ok(()),
        }
    }

    /// Another node gave stock of a sold-out sale back (an event).
    pub fn restocked_elsewhere(&self, sale: SaleId) {
        self.may_sell_again(sale);
    }
}

/// The order context reaches the sale's stock through its port.
#[async_trait::async_trait]
impl StockKeeper for FlashSales {
    /// Orders were written for these requests: their reservations close.
    async fn settled(&self, written: &[Order]) -> Result<(), StoreError> {
        let mut by_sale: BTreeMap<SaleId, Vec<Reservation>> = Default::default();
        for order in written {
            let Some(sale) = order.flash_sale_id else { continue };
            by_sale.entry(sale).or_default().push(Reservation {
                order: order.id,
                user: order.user_id,
                quantity: order.quantity,
            });
        }
        for (sale, reservations) in by_sale {
            self.ports.ledger.settle(sale, &reservations).await?;
        }
        Ok(())
    }

    /// The keys of these requests whose orders were written now name them,
    /// where a claim for them is still open (see
    /// [`IntakeKeys::orders_written`]).
    async fn keys_written(&self, requests: &[OrderRequested], written: &[Order]) -> Result<(), StoreError> {
        let written: HashSet<OrderId> = written.iter().map(|order| order.id).collect();
        let mut by_sale: BTreeMap<SaleId, Vec<(UserId, &str, OrderId)>> = Default::default();
        for request in requests.iter().filter(|request| written.contains(&request.order_id)) {
            if let Some(key) = request.idempotency_key.as_deref() {
                by_sale.entry(request.sale_id).or_default().push((request.user_id, key, request.order_id));
            }
        }
        for (sale, keyed) in by_sale {
            self.ports.keys.orders_written(sale, &keyed).await?;
        }
        Ok(())
    }

    /// The catalog's cached copies of these products go: their stock or
    /// reservations moved.
    async fn products_moved(&self, products: &[ProductId]) {
        self.ports.catalog.stock_moved(products).await;
    }

    /// A request was given up after its deduction (failed append, refused
    /// by the order store, or reaped): its reservation's stock goes back.
    async fn released(&self, sale: SaleId, reservation: Reservation) -> Result<(), StoreError> {
        self.ports.ledger.release(sale, reservation).await?;
        self.may_sell_again(sale);
        Ok(())
    }

    /// An order's units came back (cancel, timeout): the ledger gets them,
    /// once however often this runs, and the sale can sell again. Returns
    /// whether the give-back is settled: done, or owed no more because the
    /// sale is over. `false` while an open sale's counters are not loaded:
    /// the counters are rebuilt (from a snapshot that may or may not count
    /// this order returned), and the give-back is tried again after.
    async fn stock_returned(
        &self,
        sale: SaleId,
        order: OrderId,
        user: UserId,
        quantity: u32,
    ) -> Result<bool, StoreError> {
        if self.ports.ledger.restore(sale, order, user, quantity).await? {
            self.may_sell_again(sale);
            return Ok(true);
        }
        let open = match self.cached(sale) {
            Some(live) => live.sale.is_open(self.clock.now()),
            None => self.ports.sales.get(sale).await?.is_some_and(|s| s.is_open(self.clock.now())),
        };
        Ok(!open)
    }
}
