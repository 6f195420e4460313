//! The flash-sale use cases. `place_order` is the hot path: read it top to
//! bottom, each step a named call.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use thiserror::Error;
use time::OffsetDateTime;

use super::ports::{Deduction, IntakeKeys, KeyedDeduction, OrderQueue, Reservation, SaleStore, StockLedger};
use super::sale::{FlashSale, NewSale, OrderRequested, Quantity, SaleStatus};
use crate::actor::Actor;
use crate::catalog::CatalogStore;
use crate::ids::{IdGenerator, OrderId, SaleId, UserId};
use crate::order::{Order, OrderStore, PendingOrders, SaleHoldings};
use crate::store::StoreError;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SaleError {
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IntakeError {
    #[error("only customers place orders")]
    Forbidden,
    #[error("no such flash sale")]
    NotFound,
    #[error("the flash sale is not active")]
    NotActive,
    #[error("sold out")]
    SoldOut,
    #[error("per-user limit reached")]
    LimitExceeded,
    /// Requests with this idempotency key kept failing while another held
    /// it; the client retries later.
    #[error("requests with this idempotency key keep failing")]
    KeyContended,
    /// The sale's counters were lost and are not rebuilt yet (see
    /// `FlashSales::rebuild_lost`); the client retries later.
    #[error("the sale's stock counters are being rebuilt")]
    CountersRebuilding,
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

/// A sale with its live stock, as `GET /v1/flash-sales/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleView {
    pub sale: FlashSale,
    pub stock_left: i64,
    pub status: SaleStatus,
}

/// A sale this node serves, with its local sold-out flag: once set, intake
/// rejects without touching shared state.
struct LiveSale {
    sale: FlashSale,
    sold_out: AtomicBool,
    /// When this node first found the ledger without the sale's counters
    /// (Unix ms; 0: not lost), and when it last tried to rebuild them.
    lost_since_ms: AtomicI64,
    rebuild_tried_ms: AtomicI64,
    /// The difference the last reconciliation measured (0: none).
    difference: AtomicI64,
}

impl LiveSale {
    fn new(sale: FlashSale, sold_out: bool) -> Self {
        Self {
            sale,
            sold_out: AtomicBool::new(sold_out),
            lost_since_ms: AtomicI64::new(0),
            rebuild_tried_ms: AtomicI64::new(0),
            difference: AtomicI64::new(0),
        }
    }
}

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

/// How often one node tries to rebuild one sale's lost counters.
const REBUILD_EVERY_MS: i64 = 250;

/// Forgotten sales whose last stock figure this node keeps, at most.
const ENDED_KEPT: usize = 4_096;

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The adapters the flash-sale path runs on.
pub struct FlashSalePorts {
    pub sales: Arc<dyn SaleStore>,
    pub catalog: Arc<dyn CatalogStore>,
    pub ledger: Arc<dyn StockLedger>,
    pub queue: Arc<dyn OrderQueue>,
    pub orders: Arc<dyn OrderStore>,
    pub pending: Arc<dyn PendingOrders>,
    pub keys: Arc<dyn IntakeKeys>,
}

pub struct FlashSales {
    ports: FlashSalePorts,
    ids: Arc<IdGenerator>,
    /// Sales this node serves: every sale not ended (and, for a while,
    /// those that ended), with their counters in the ledger.
    live: RwLock<HashMap<SaleId, Arc<LiveSale>>>,
    /// The stock a forgotten sale ended with (bounded by [`ENDED_KEPT`]).
    ended: RwLock<HashMap<SaleId, i64>>,
    /// The longest from a deduction to its append landing (the request
    /// budget plus the clock skew between nodes).
    intake_max: Duration,
}

impl FlashSales {
    pub fn new(ports: FlashSalePorts, ids: Arc<IdGenerator>) -> Self {
        Self { ports, ids, live: RwLock::default(), ended: RwLock::default(), intake_max: Duration::from_secs(11) }
    }

    /// See the field; the default suits the default request budget.
    pub fn with_intake_max(mut self, intake_max: Duration) -> Self {
        self.intake_max = intake_max;
        self
    }

    pub async fn create(&self, actor: &Actor, new: NewSale) -> Result<FlashSale, SaleError> {
        if !actor.is_admin() {
            return Err(SaleError::Forbidden("only an admin creates flash sales"));
        }
        let product = self.ports.catalog.get(new.product_id).await?;
        let product = product.ok_or_else(|| SaleError::Invalid("product_id names no product".to_owned()))?;
        let sale = FlashSale {
            id: SaleId::new(self.ids.next_id()),
            product_id: new.product_id,
            merchant_id: product.merchant_id,
            stock: new.stock,
            price_cents: new.price_cents,
            starts_at: new.starts_at,
            ends_at: new.ends_at,
            per_user_limit: new.per_user_limit,
        };
        self.ports.sales.insert(&sale).await?;
        // Loaded before anyone can name it: a node that finds an open
        // sale's counters missing takes them as lost. Loaded only if
        // absent, never over counters already in use.
        let holdings = self.load_from_orders(&sale).await?;
        let live = Arc::new(LiveSale::new(sale.clone(), holdings.sold >= sale.stock));
        self.live.write().unwrap_or_else(PoisonError::into_inner).entry(sale.id).or_insert(live);
        Ok(sale)
    }

    pub async fn view(&self, id: SaleId) -> Result<SaleView, SaleError> {
        let live = self.live_sale(id).await?.ok_or(SaleError::NotFound("flash sale"))?;
        let now = OffsetDateTime::now_utc();
        let stock_left = match self.ports.ledger.stock_left(id).await? {
            Some(left) => left,
            // Lost from the ledger: rebuilt as soon as that is safe.
            None if live.sale.is_open(now) && self.rebuild_lost(&live).await? => {
                self.ports.ledger.stock_left(id).await?.unwrap_or(0)
            }
            None if now >= live.sale.ends_at => self.ended_with(&live.sale).await?,
            None => 0,
        };
        let status = live.sale.status(OffsetDateTime::now_utc(), stock_left);
        Ok(SaleView { sale: live.sale.clone(), stock_left, status })
    }

    /// The intake. Returns the id of the accepted order; the order itself is
    /// written later by the consumer.
    pub async fn place_order(
        &self,
        actor: &Actor,
        sale_id: SaleId,
        quantity: Quantity,
        idempotency_key: Option<&str>,
    ) -> Result<OrderId, IntakeError> {
        let Actor::Customer(user) = actor else {
            return Err(IntakeError::Forbidden);
        };
        let live = self.live_sale(sale_id).await?.ok_or(IntakeError::NotFound)?;
        if !live.sale.is_open(OffsetDateTime::now_utc()) {
            return Err(IntakeError::NotActive);
        }
        if live.sold_out.load(Ordering::Relaxed) {
            // Refused without touching the ledger; a replay of a keyed request
            // still gets its order, even if that first request is in flight.
            return match idempotency_key {
                Some(key) => self.ports.keys.replay(sale_id, *user, key).await?.ok_or(IntakeError::SoldOut),
                None => Err(IntakeError::SoldOut),
            };
        }
        match idempotency_key {
            None => self.accept(&live, *user, quantity, None).await,
            Some(key) => self.accept_keyed(&live, *user, quantity, key).await,
        }
    }

    /// Deduct, then append durably; undo the deduction if the append fails.
    async fn accept(
        &self,
        live: &LiveSale,
        user: UserId,
        quantity: Quantity,
        idempotency_key: Option<&str>,
    ) -> Result<OrderId, IntakeError> {
        let sale = &live.sale;
        let reservation = Reservation { order: OrderId::new(self.ids.next_id()), user, quantity: quantity.get() };
        let deduction = self.ports.ledger.try_deduct(sale.id, reservation, sale.per_user_limit).await?;
        self.after_deduction(live, reservation, deduction, idempotency_key).await
    }

    /// A keyed intake: one outcome per key. Where the ledger holds the keys
    /// too, the claim and the deduction are one step; elsewhere the keys
    /// port runs the intake once.
    async fn accept_keyed(
        &self,
        live: &LiveSale,
        user: UserId,
        quantity: Quantity,
        key: &str,
    ) -> Result<OrderId, IntakeError> {
        let sale = &live.sale;
        // A claim in flight whose request then fails frees the key for the
        // next; three rounds of that in a row means something is stuck.
        for _ in 0..3 {
            let reservation = Reservation { order: OrderId::new(self.ids.next_id()), user, quantity: quantity.get() };
            let claimed = self.ports.ledger.try_deduct_claiming(sale.id, reservation, sale.per_user_limit, key).await?;
            let stock_left = match claimed {
                None => {
                    let intake = Box::pin(self.accept(live, user, quantity, Some(key)));
                    return self.ports.keys.once(sale.id, user, key, intake).await;
                }
                Some(KeyedDeduction::Replay(order)) => return Ok(order),
                Some(KeyedDeduction::InFlight) => match self.ports.keys.replay(sale.id, user, key).await? {
                    Some(order) => return Ok(order),
                    None => continue,
                },
                Some(KeyedDeduction::Refused(refusal)) => {
                    return self.after_deduction(live, reservation, refusal, Some(key)).await;
                }
                Some(KeyedDeduction::Claimed { stock_left }) => stock_left,
            };
            let deduction = Deduction::Done { stock_left };
            let outcome = self.after_deduction(live, reservation, deduction, Some(key)).await;
            if matches!(outcome, Err(IntakeError::Unavailable(StoreError::Indeterminate(_)))) {
                // The request may be in the queue: the claim stays in flight,
                // so a retry with the key waits for its order instead of
                // making a second one. The consumer settles it when it
                // writes the order; otherwise it expires with the reservation.
                return outcome;
            }
            let settled = self.ports.keys.settle_claim(sale.id, user, key, reservation.order, outcome.is_ok()).await;
            if let Err(error) = settled {
                // The claim expires on its own; the order (if any) is durable.
                tracing::warn!(%error, "could not record an intake key's outcome");
            }
            return outcome;
        }
        Err(IntakeError::KeyContended)
    }

    /// What follows the deduction: a refusal is answered (and a sell-out
    /// flagged); a deduction is appended durably, and undone if the append
    /// fails.
    async fn after_deduction(
        &self,
        live: &LiveSale,
        reservation: Reservation,
        deduction: Deduction,
        idempotency_key: Option<&str>,
    ) -> Result<OrderId, IntakeError> {
        let sale = &live.sale;
        let (order_id, user, quantity) = (reservation.order, reservation.user, reservation.quantity);
        match deduction {
            Deduction::Done { stock_left } if stock_left <= 0 => self.flag_sold_out(live).await,
            Deduction::Done { .. } => {}
            Deduction::SoldOut => {
                self.flag_sold_out(live).await;
                return Err(IntakeError::SoldOut);
            }
            Deduction::LimitExceeded => return Err(IntakeError::LimitExceeded),
            // The sale is open (checked before), so its counters were lost
            // (a flush, a failover that lost writes): the buyer retries once
            // they are rebuilt.
            Deduction::NotLoaded => {
                self.rebuild_lost(live).await?;
                return Err(IntakeError::CountersRebuilding);
            }
        }
        let request = OrderRequested {
            order_id,
            sale_id: sale.id,
            user_id: user,
            product_id: sale.product_id,
            merchant_id: sale.merchant_id,
            quantity,
            amount_cents: sale.price_cents.get() * i64::from(quantity),
            idempotency_key: idempotency_key.map(str::to_owned),
            requested_at_ms: (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
        };
        match self.enqueue(&request).await {
            Ok(()) => Ok(request.order_id),
            // It may have landed: its order may yet be written, so its stock
            // stays reserved; the reaper gives it back once the queue proves
            // it is not there.
            Err(error @ StoreError::Indeterminate(_)) => {
                tracing::warn!(order_id = %order_id, %error, "append unconfirmed; the reservation stays for the reaper");
                Err(error.into())
            }
            Err(error) => {
                self.released(sale.id, reservation).await?;
                Err(error.into())
            }
        }
    }

    /// The sold-out flag only spares the ledger calls: failing to set it
    /// must not fail (or strand) the request that found the sale sold out.
    async fn flag_sold_out(&self, live: &LiveSale) {
        if let Err(error) = self.mark_sold_out(live).await {
            tracing::warn!(%error, sale_id = %live.sale.id, "sold-out flag not confirmed");
        }
    }

    /// Sets the local sold-out flag, then looks again: stock returned (a
    /// cancel) between the deduction and the flag must not stay unsellable.
    async fn mark_sold_out(&self, live: &LiveSale) -> Result<(), StoreError> {
        live.sold_out.store(true, Ordering::SeqCst);
        if self.ports.ledger.stock_left(live.sale.id).await?.is_some_and(|left| left > 0) {
            live.sold_out.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn enqueue(&self, request: &OrderRequested) -> Result<(), StoreError> {
        self.ports.pending.insert(request).await?;
        match self.ports.queue.append(request).await {
            Ok(()) => Ok(()),
            // Landed or not, the view says PENDING until the order is
            // written or the entry expires.
            Err(error @ StoreError::Indeterminate(_)) => Err(error),
            Err(error) => {
                let _ = self.ports.pending.remove(&[request.order_id]).await;
                Err(error)
            }
        }
    }

    /// A request was given up after its deduction (failed append, refused
    /// by the order store, or reaped): its reservation's stock goes back.
    pub async fn released(&self, sale: SaleId, reservation: Reservation) -> Result<(), StoreError> {
        self.ports.ledger.release(sale, reservation).await?;
        self.may_sell_again(sale);
        Ok(())
    }

    /// Orders were written for these requests: their reservations close.
    pub async fn settled(&self, written: &[Order]) -> Result<(), StoreError> {
        let mut by_sale: std::collections::BTreeMap<SaleId, Vec<Reservation>> = Default::default();
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
    pub async fn keys_written(&self, requests: &[OrderRequested], written: &[Order]) -> Result<(), StoreError> {
        let written: std::collections::HashSet<OrderId> = written.iter().map(|order| order.id).collect();
        let mut by_sale: std::collections::BTreeMap<SaleId, Vec<(UserId, &str, OrderId)>> = Default::default();
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
        Ok(Duration::from_millis(now_ms().saturating_sub(before_ms).max(0) as u64))
    }

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
            let lost = left.is_none() && live.sale.is_open(OffsetDateTime::now_utc());
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
        let now = OffsetDateTime::now_utc();
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

    /// Stops serving sales that ended more than `grace` ago (time for the
    /// queue to deliver their last requests and for the reaper to close
    /// their reservations): their counters and intake keys go, and only
    /// the stock they ended with stays, in a bounded map. A request that
    /// names one afterwards reads the sale from the store and is refused
    /// as ended; nothing is loaded for it again. Returns how many went.
    pub async fn forget_ended(&self, grace: Duration) -> Result<usize, StoreError> {
        let cutoff = OffsetDateTime::now_utc() - grace;
        let over: Vec<SaleId> = self
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|live| live.sale.ends_at <= cutoff)
            .map(|live| live.sale.id)
            .collect();
        for &sale in &over {
            if let Some(left) = self.ports.ledger.stock_left(sale).await? {
                self.remember_ended(sale, left);
            }
            self.ports.ledger.forget(sale).await?;
            self.ports.keys.forget(sale).await;
            let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
            live.remove(&sale);
            live.shrink_to_fit();
        }
        Ok(over.len())
    }

    /// Sales this node serves (a gauge: it falls as ended ones go).
    pub fn served(&self) -> usize {
        self.live.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The stock an ended sale no ledger holds any more ended with: kept
    /// when it was forgotten, or counted from its orders.
    async fn ended_with(&self, sale: &FlashSale) -> Result<i64, StoreError> {
        if let Some(left) = self.ended.read().unwrap_or_else(PoisonError::into_inner).get(&sale.id) {
            return Ok(*left);
        }
        let sold = self.ports.orders.sale_holdings(sale.id).await?.sold;
        let left = (sale.stock - sold).max(0);
        self.remember_ended(sale.id, left);
        Ok(left)
    }

    fn remember_ended(&self, sale: SaleId, left: i64) {
        let mut ended = self.ended.write().unwrap_or_else(PoisonError::into_inner);
        if ended.len() >= ENDED_KEPT && !ended.contains_key(&sale) {
            // Any one makes room: a figure not kept is counted again.
            let evicted = ended.keys().next().copied();
            if let Some(evicted) = evicted {
                ended.remove(&evicted);
            }
        }
        ended.insert(sale, left);
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

    fn may_sell_again(&self, sale: SaleId) {
        if let Some(live) = self.cached(sale) {
            live.sold_out.store(false, Ordering::SeqCst);
        }
    }

    /// An order's units came back (cancel, timeout): the ledger gets them,
    /// once however often this runs, and the sale can sell again. Returns
    /// whether the give-back is settled: done, or owed no more because the
    /// sale is over. `false` while an open sale's counters are not loaded:
    /// the counters are rebuilt (from a snapshot that may or may not count
    /// this order returned), and the give-back is tried again after.
    pub async fn stock_returned(
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
            Some(live) => live.sale.is_open(OffsetDateTime::now_utc()),
            None => self.ports.sales.get(sale).await?.is_some_and(|s| s.is_open(OffsetDateTime::now_utc())),
        };
        Ok(!open)
    }

    /// Rebuilds the ledger of every sale that has not ended from the orders
    /// in the store. Run at start-up, after the queue is drained, so that
    /// the store holds every accepted order of this node's own ledger; a
    /// shared ledger's counters are kept, or rebuilt once that is safe
    /// (see [`Self::first_look`]).
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let sales = self.ports.sales.list_unended(OffsetDateTime::now_utc()).await?;
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
    async fn first_look(&self, sale: FlashSale) -> Result<Arc<LiveSale>, StoreError> {
        if self.ports.ledger.is_shared() && OffsetDateTime::now_utc() >= sale.starts_at {
            let live = match self.ports.ledger.stock_left(sale.id).await? {
                Some(left) => LiveSale::new(sale, left <= 0),
                None => {
                    let live = LiveSale::new(sale, false);
                    live.lost_since_ms.store(now_ms(), Ordering::SeqCst);
                    live
                }
            };
            return Ok(Arc::new(live));
        }
        let holdings = self.load_from_orders(&sale).await?;
        let sold_out = holdings.sold >= sale.stock;
        Ok(Arc::new(LiveSale::new(sale, sold_out)))
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
    async fn rebuild_lost(&self, live: &LiveSale) -> Result<bool, StoreError> {
        let now = now_ms();
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
        self.ports.sales.record_ledger_rebuilt(id, now_ms()).await?;
        Ok(true)
    }

    /// The sale's holdings from the order store, with its intake keys
    /// loaded and its counters loaded unless the ledger has them: a shared
    /// ledger (Redis) holds deductions still in the queue, which the store's
    /// holdings don't show yet.
    async fn load_from_orders(&self, sale: &FlashSale) -> Result<SaleHoldings, StoreError> {
        let holdings = self.ports.orders.sale_holdings(sale.id).await?;
        let keyed = self.ports.orders.keyed_orders(sale.id).await?;
        self.ports.keys.preload(sale.id, keyed).await;
        self.ports.ledger.load_if_absent(sale, &holdings).await?;
        Ok(holdings)
    }

    /// Serves the sale on this node from now on.
    fn cached(&self, id: SaleId) -> Option<Arc<LiveSale>> {
        self.live.read().unwrap_or_else(PoisonError::into_inner).get(&id).cloned()
    }

    /// The sale from this node's registry, or from the store (a sale created
    /// on another node, or one that ended: such a one is not registered).
    async fn live_sale(&self, id: SaleId) -> Result<Option<Arc<LiveSale>>, StoreError> {
        if let Some(live) = self.cached(id) {
            return Ok(Some(live));
        }
        let Some(sale) = self.ports.sales.get(id).await? else {
            return Ok(None);
        };
        if OffsetDateTime::now_utc() >= sale.ends_at {
            // Over: nothing to serve, so nothing is loaded or kept.
            return Ok(Some(Arc::new(LiveSale::new(sale, true))));
        }
        let live = self.first_look(sale).await?;
        let mut registry = self.live.write().unwrap_or_else(PoisonError::into_inner);
        Ok(Some(Arc::clone(registry.entry(id).or_insert(live))))
    }
}
