//! What the flash-sale path needs from stores, the cache and the queue.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::sale::{FlashSale, OrderRequested};
use super::service::IntakeError;
use crate::ids::{OrderId, SaleId, UserId};
use crate::order::SaleHoldings;
use crate::store::StoreError;

#[async_trait]
pub trait SaleStore: Send + Sync + 'static {
    /// Writes the sale and takes its stock from its product (`stock` to
    /// `reserved`) in one transaction; `false`, with nothing written, when
    /// the product has fewer sellable units than the sale's stock.
    async fn insert(&self, sale: &FlashSale, now: OffsetDateTime) -> Result<bool, StoreError>;
    async fn get(&self, id: SaleId) -> Result<Option<FlashSale>, StoreError>;
    /// Sales that have not ended at `now` (to pre-warm after a restart).
    async fn list_unended(&self, now: OffsetDateTime) -> Result<Vec<FlashSale>, StoreError>;
    /// When a node last rebuilt the sale's counters in the shared ledger
    /// (Unix ms), if ever.
    async fn ledger_rebuilt_ms(&self, id: SaleId) -> Result<Option<i64>, StoreError>;
    /// Records that the sale's counters were rebuilt at `at_ms`.
    async fn record_ledger_rebuilt(&self, id: SaleId, at_ms: i64) -> Result<(), StoreError>;
}

/// The outcome of one atomic check-and-deduct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deduction {
    Done {
        stock_left: i64,
    },
    SoldOut,
    LimitExceeded,
    /// The sale's counters are not in the cache (not pre-warmed).
    NotLoaded,
}

/// The outcome of a deduction that also claims the request's idempotency
/// key, in one atomic step (a ledger that holds the keys too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedDeduction {
    /// Deducted, and the key is claimed for this request's order until
    /// [`IntakeKeys::settle_claim`].
    Claimed { stock_left: i64 },
    /// Not deducted (sold out, over the limit, not loaded); the key is left
    /// unclaimed, as a failed intake leaves it.
    Refused(Deduction),
    /// The key already names this order.
    Replay(OrderId),
    /// Another request with the key is in flight.
    InFlight,
}

/// One deduction made for an order, from intake until its order is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub order: OrderId,
    pub user: UserId,
    pub quantity: u32,
}

/// Stock and per-user counters of live sales, where intake deducts them: the
/// in-process ledger (embedded) or Redis with one Lua script (distributed).
///
/// A shared ledger outlives the nodes, so each deduction is also recorded as
/// a reservation until its order is written (`settle`) or its request is
/// given up (`release`). A reservation that stays open past a timeout
/// belongs to a node that died between deduct and append, or to an append
/// whose outcome the node never learnt: the reaper releases it unless the
/// order exists. The in-process ledger is rebuilt from the orders at every
/// start, so it keeps no reservations.
#[async_trait]
pub trait StockLedger: Send + Sync + 'static {
    /// Does the ledger outlive this process (Redis), so that counters
    /// missing from it while a sale is open were lost, with deductions of
    /// other nodes perhaps still on their way to the queue?
    fn is_shared(&self) -> bool {
        false
    }

    /// (Re)loads a sale's counters: stock left is `stock - holdings.sold`.
    /// Only for start-up, before any intake.
    async fn load(&self, sale: &FlashSale, holdings: &SaleHoldings) -> Result<(), StoreError>;

    /// Loads the counters unless they are there already, in one atomic step:
    /// counters in use are never overwritten.
    async fn load_if_absent(&self, sale: &FlashSale, holdings: &SaleHoldings) -> Result<(), StoreError>;

    /// In one atomic step: refuse if the user would pass `per_user_limit` or
    /// the stock can't cover `quantity`; otherwise deduct both and reserve
    /// them for the order.
    async fn try_deduct(
        &self,
        sale: SaleId,
        reservation: Reservation,
        per_user_limit: u32,
    ) -> Result<Deduction, StoreError>;

    /// Claims the request's idempotency key and deducts, in one atomic step,
    /// where the ledger holds the keys too (Redis: one script, one round
    /// trip instead of a claim, a deduction and, on a refusal, a delete).
    /// `Ok(None)` where it doesn't: the caller goes through
    /// [`IntakeKeys::once`]. Repeating a call for the same reservation is
    /// harmless (a client resends a command whose reply was lost).
    async fn try_deduct_claiming(
        &self,
        _sale: SaleId,
        _reservation: Reservation,
        _per_user_limit: u32,
        _key: &str,
    ) -> Result<Option<KeyedDeduction>, StoreError> {
        Ok(None)
    }

    /// The request behind a reservation was given up (its append failed, or
    /// the order store refused it): the stock goes back, once, and only if
    /// the reservation is still open.
    async fn release(&self, sale: SaleId, reservation: Reservation) -> Result<(), StoreError>;

    /// These orders are written: their reservations close. One the reaper
    /// had already released is deducted again, since its order exists.
    async fn settle(&self, sale: SaleId, written: &[Reservation]) -> Result<(), StoreError>;

    /// Reservations open for longer than `older_than`.
    async fn stale_reservations(&self, sale: SaleId, older_than: Duration) -> Result<Vec<Reservation>, StoreError>;

    /// Gives back what a written order held (cancel, payment timeout),
    /// once per order: a repeat (a retry whose first try landed after all,
    /// an order the last load counted as returned) changes nothing.
    /// `Ok(false)` when the sale's counters are not loaded: nothing was
    /// given back.
    async fn restore(&self, sale: SaleId, order: OrderId, user: UserId, quantity: u32) -> Result<bool, StoreError>;

    async fn stock_left(&self, sale: SaleId) -> Result<Option<i64>, StoreError>;

    /// The sale is over and its last orders are in: its counters can go
    /// (from this process now, from a shared ledger after a while, for
    /// nodes that still look).
    async fn forget(&self, sale: SaleId) -> Result<(), StoreError>;

    /// A shared ledger's view of a sale at one instant, for a
    /// reconciliation with the order store; `None` when its counters are
    /// not loaded. `owed` are orders whose give-back the store still owes:
    /// the snapshot says which of them the ledger has back. The in-process
    /// ledger is rebuilt from the store at every start and is not
    /// reconciled (`None`).
    async fn snapshot(&self, _sale: SaleId, _owed: &[OrderId]) -> Result<Option<LedgerSnapshot>, StoreError> {
        Ok(None)
    }

    /// Moves the stock left by `by`, only if it is still `seen` (nothing
    /// was deducted or given back since it was read). Returns whether it
    /// moved.
    async fn adjust(&self, _sale: SaleId, _seen: i64, _by: i64) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// See [`StockLedger::snapshot`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerSnapshot {
    pub stock_left: i64,
    /// Deducted, and not known written or given up.
    pub open: Vec<Reservation>,
    /// Of the orders asked about, those whose units are back.
    pub returned: Vec<OrderId>,
}

/// One event as delivered by the queue, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub offset: u64,
    pub request: OrderRequested,
}

/// The durable queue between intake and the order consumer.
#[async_trait]
pub trait OrderQueue: Send + Sync + 'static {
    /// Returns once the event is durable (it survives `kill -9`). An error
    /// is `Indeterminate` when the event may have landed (its
    /// acknowledgement was lost), `Unavailable` when it surely did not.
    async fn append(&self, request: &OrderRequested) -> Result<(), StoreError>;

    /// Up to `max` unacknowledged events in order, waiting up to `wait` for
    /// the first one. Delivery is at least once: after a crash, events past
    /// the last ack come again.
    async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StoreError>;

    /// Everything up to and including `offset` is processed.
    async fn ack(&self, offset: u64) -> Result<(), StoreError>;

    /// `requested_at_ms` of the oldest request appended and not yet
    /// acknowledged, `None` when every appended request is acknowledged.
    /// What the reaper needs to prove a request is not in the queue.
    async fn oldest_unacked_ms(&self) -> Result<Option<i64>, StoreError>;

    /// One round trip to the broker, for readiness. An embedded queue has
    /// no broker and is always reachable.
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The intake as a future, for [`IntakeKeys::once`].
pub type IntakeFuture<'a> = Pin<Box<dyn Future<Output = Result<OrderId, IntakeError>> + Send + 'a>>;

/// Idempotency of intake: one outcome per (sale, user, key). It must know
/// every key that produced an order of a live sale (they are reloaded from
/// the order store at start-up), so intake never asks the store.
#[async_trait]
pub trait IntakeKeys: Send + Sync + 'static {
    /// Runs `intake` unless a request with the same key already produced an
    /// order, in which case that order's id is returned. Concurrent callers
    /// with one key wait for the first; if it fails, the next one runs its
    /// own intake (failures are not remembered).
    async fn once<'a>(
        &'a self,
        sale: SaleId,
        user: UserId,
        key: &'a str,
        intake: IntakeFuture<'a>,
    ) -> Result<OrderId, IntakeError>;

    /// The order a key already produced, without claiming the key: for a
    /// repeat that would be refused anyway (the sale is sold out here). A
    /// request with the key still in flight is waited for; `Ok(None)` when
    /// no request with the key produced an order.
    async fn replay(&self, sale: SaleId, user: UserId, key: &str) -> Result<Option<OrderId>, IntakeError> {
        match self.once(sale, user, key, Box::pin(async { Err(IntakeError::SoldOut) })).await {
            Ok(order) => Ok(Some(order)),
            Err(IntakeError::SoldOut) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Ends the claim that [`StockLedger::try_deduct_claiming`] took for
    /// `order`: the key names the order from now on (`produced`), or is free
    /// again (the intake failed). A claim that is no longer this order's
    /// (it expired, and another request holds the key) is left alone. Only
    /// adapters that pair with such a ledger take claims.
    async fn settle_claim(
        &self,
        _sale: SaleId,
        _user: UserId,
        _key: &str,
        _order: OrderId,
        _produced: bool,
    ) -> Result<(), StoreError> {
        Ok(()) // adapters that take no claims have none to settle
    }

    /// The consumer wrote these keyed orders of `sale`: a claim still held
    /// for one of them now names it. The node that took the request does
    /// that itself; this covers a node that died between its append and
    /// [`settle_claim`](Self::settle_claim), whose claim would otherwise
    /// leave repeats waiting until it expires.
    async fn orders_written(&self, _sale: SaleId, _written: &[(UserId, &str, OrderId)]) -> Result<(), StoreError> {
        Ok(())
    }

    /// Remembers keys that produced orders (start-up recovery).
    async fn preload(&self, sale: SaleId, keyed: Vec<(UserId, String, OrderId)>);

    /// The sale is over: its keys can go (a repeat is refused as ended
    /// before any key is asked).
    async fn forget(&self, sale: SaleId);
}
