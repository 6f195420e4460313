//! What orders need from a store and from the cache.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{Order, OrderStatus};
use crate::flashsale::{OrderRequested, Reservation};
use crate::ids::{MerchantId, OrderId, ProductId, SaleId, UserId};
use crate::store::StoreError;

/// Whose orders a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderScope {
    Customer(UserId),
    Merchant(MerchantId),
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPage {
    pub items: Vec<Order>,
    /// The last id of this page when more may follow (newest first).
    pub next_before: Option<OrderId>,
}

/// What one `create_requested` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreatedOrders {
    /// Orders written by this call.
    pub created: Vec<Order>,
    /// Requests refused because another order already holds their
    /// (sale, buyer, idempotency key): their stock must go back.
    pub rejected: Vec<OrderRequested>,
    /// Accepted requests written `FAILED`: their order would have broken a
    /// sale's bounds (the ledger sold a unit twice). Never expected; each
    /// is logged and counted.
    pub failed: Vec<OrderId>,
}

/// Stock a sale's live orders hold, in total and per buyer, and the orders
/// whose units left them (cancelled) but whose give-back to the ledger is
/// still owed: a ledger loaded from these counts must take those units as
/// returned already. One snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaleHoldings {
    pub sold: i64,
    pub per_user: Vec<(UserId, u32)>,
    pub returned: Vec<OrderId>,
}

/// What the order store holds of a sale, for a reconciliation with the
/// ledger: the units sold, the give-backs still owed (order, units) and,
/// of the orders asked about, those written. One snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaleTally {
    pub sold: i64,
    pub owed: Vec<(OrderId, u32)>,
    pub written: Vec<OrderId>,
}

#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Writes the orders of these requests as `CREATED` at `now`, payable
    /// until `pay_by`, skipping any that exist already (so redelivery is
    /// harmless), and adds their quantities to their sales' sold counts, all
    /// in one transaction.
    async fn create_requested(
        &self,
        requests: &[OrderRequested],
        pay_by: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<CreatedOrders, StoreError>;

    async fn get(&self, id: OrderId) -> Result<Option<Order>, StoreError>;

    /// Newest first, ids below `before`.
    async fn list(&self, scope: OrderScope, before: Option<OrderId>, limit: u32) -> Result<OrderPage, StoreError>;

    /// Moves the order from `from` to `to` if it is still `from`; `None` when
    /// it is not (someone else moved it first, or it doesn't exist). In the
    /// same transaction the inventory follows: when the new state holds no
    /// stock, a flash-sale order's quantity goes back to its sale's sold
    /// count (or, once the sale is closed, to the product), a checkout
    /// order's units from `reserved` back to `stock`; when it is paid, its
    /// units leave `reserved` for good.
    async fn transition(
        &self,
        id: OrderId,
        from: OrderStatus,
        to: OrderStatus,
        now: OffsetDateTime,
    ) -> Result<Option<Order>, StoreError>;

    /// `CREATED` orders whose payment window closed before `now`.
    async fn unpaid_expired(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<Order>, StoreError>;

    /// Orders whose units left them (a transition out of a state that holds
    /// stock) but are not yet back on the ledger, last changed before
    /// `changed_before`: the give-back outbox. The transition marks them.
    async fn give_backs_pending(&self, changed_before: OffsetDateTime, limit: u32) -> Result<Vec<Order>, StoreError>;

    /// The ledger has the order's units back.
    async fn give_back_done(&self, id: OrderId) -> Result<(), StoreError>;

    /// Every (buyer, idempotency key, order) of a sale, to reload the intake
    /// keys at start-up.
    async fn keyed_orders(&self, sale: SaleId) -> Result<Vec<(UserId, String, OrderId)>, StoreError>;

    /// Stock held by the sale's live orders (for rebuilding the cache).
    async fn sale_holdings(&self, sale: SaleId) -> Result<SaleHoldings, StoreError>;

    /// The sale's tally, with which of `among` are written (see
    /// [`SaleTally`]).
    async fn sale_tally(&self, sale: SaleId, among: &[OrderId]) -> Result<SaleTally, StoreError>;
}

/// Accepted requests whose order is not written yet, so that a read between
/// the 202 and the consumer answers `PENDING`.
#[async_trait]
pub trait PendingOrders: Send + Sync + 'static {
    async fn insert(&self, request: &OrderRequested) -> Result<(), StoreError>;
    async fn get(&self, id: OrderId) -> Result<Option<OrderRequested>, StoreError>;
    async fn remove(&self, ids: &[OrderId]) -> Result<(), StoreError>;
}

/// What the order context needs from whoever holds the stock its orders
/// took (today the flash-sale context; the inventory context next): to
/// hear which requests became orders, which were given up, and which
/// orders' units came back. The order context never sees a ledger.
#[async_trait]
pub trait StockKeeper: Send + Sync + 'static {
    /// These orders were written: their reservations close.
    async fn settled(&self, written: &[Order]) -> Result<(), StoreError>;
    /// Of these requests, those written became orders under their
    /// idempotency keys.
    async fn keys_written(&self, requests: &[OrderRequested], written: &[Order]) -> Result<(), StoreError>;
    /// A request was given up after its units were taken: they go back.
    async fn released(&self, sale: SaleId, reservation: Reservation) -> Result<(), StoreError>;
    /// These products' stock or reservations moved (a checkout, a payment,
    /// a cancel): whoever caches them drops its copies.
    async fn products_moved(&self, products: &[ProductId]);
    /// A cancelled or expired order's units come back, once however often
    /// this runs. `false` while they cannot be taken yet (try again later).
    async fn stock_returned(
        &self,
        sale: SaleId,
        order: OrderId,
        user: UserId,
        quantity: u32,
    ) -> Result<bool, StoreError>;
}
