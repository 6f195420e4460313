//! Order use cases: read, list, pay, cancel, expire unpaid orders, and the
//! consumer step that turns accepted requests into orders.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::Order;
use super::ports::{OrderPage, OrderScope, OrderStore, PendingOrders, StockKeeper};
use super::status::{IllegalTransition, OrderEvent, OrderStatus};
use crate::actor::Actor;
use crate::clock::Clock;
use crate::flashsale::{OrderQueue, Reservation};
use crate::ids::OrderId;
use crate::store::StoreError;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OrderError {
    #[error("no such order")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
    /// The order's state does not allow the event (cancel a paid order,
    /// pay a cancelled one).
    #[error("order is {}", from.as_str())]
    IllegalTransition { from: OrderStatus, event: OrderEvent },
    #[error("the payment window has closed")]
    PaymentWindowClosed,
    /// Another request moved the order between the read and the write.
    #[error("order changed meanwhile; read it again")]
    ChangedMeanwhile,
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

impl From<IllegalTransition> for OrderError {
    fn from(error: IllegalTransition) -> Self {
        OrderError::IllegalTransition { from: error.from, event: error.event }
    }
}

/// What one consumer step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consumed {
    /// Queued requests handled (written, found written before, refused).
    pub handled: usize,
    /// Of them, accepted requests written `FAILED`.
    pub failed: usize,
}

/// How old an owed give-back must be before the sweeper retries it: the
/// cancel that marked it has had its own try by then.
const GIVE_BACK_GRACE: Duration = Duration::from_secs(5);

pub struct Orders {
    orders: Arc<dyn OrderStore>,
    pending: Arc<dyn PendingOrders>,
    sales: Arc<dyn StockKeeper>,
    payment_timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl Orders {
    pub fn new(
        orders: Arc<dyn OrderStore>,
        pending: Arc<dyn PendingOrders>,
        sales: Arc<dyn StockKeeper>,
        payment_timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { orders, pending, sales, payment_timeout, clock }
    }

    /// The order, or its `PENDING` view while the consumer has not written it.
    /// Someone else's order is `NotFound`, not forbidden: ids are guessable,
    /// and a different answer would tell that the order exists.
    pub async fn get(&self, actor: &Actor, id: OrderId) -> Result<Order, OrderError> {
        let order = self.find(id).await?.ok_or(OrderError::NotFound)?;
        let allowed = match actor {
            Actor::Admin(_) => true,
            Actor::Customer(user) => order.user_id == *user,
            Actor::Merchant(merchant) => order.merchant_id == *merchant,
            // A courier sees the parcel (its shipment), not the order.
            Actor::Courier(_) => false,
        };
        if !allowed {
            return Err(OrderError::NotFound);
        }
        Ok(order)
    }

    async fn find(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
        if let Some(order) = self.orders.get(id).await? {
            return Ok(Some(order));
        }
        Ok(self.pending.get(id).await?.map(|request| Order::pending(&request)))
    }

    pub async fn list(&self, actor: &Actor, before: Option<OrderId>, limit: u32) -> Result<OrderPage, OrderError> {
        let scope = match actor {
            Actor::Admin(_) => OrderScope::All,
            Actor::Customer(user) => OrderScope::Customer(*user),
            Actor::Merchant(merchant) => OrderScope::Merchant(*merchant),
            Actor::Courier(_) => return Err(OrderError::Forbidden("couriers list their tasks, not orders")),
        };
        Ok(self.orders.list(scope, before, limit).await?)
    }

    pub async fn pay(&self, actor: &Actor, id: OrderId) -> Result<Order, OrderError> {
        let order = self.get(actor, id).await?;
        if !matches!(actor, Actor::Customer(user) if *user == order.user_id) {
            return Err(OrderError::Forbidden("only the buyer pays an order"));
        }
        let now = self.clock.now();
        let paid = order.status.apply(OrderEvent::Pay)?;
        if order.pay_by.is_some_and(|deadline| deadline <= now) {
            return Err(OrderError::PaymentWindowClosed);
        }
        let paid = self.orders.transition(id, order.status, paid, now).await?.ok_or(OrderError::ChangedMeanwhile)?;
        self.products_moved(&paid).await;
        Ok(paid)
    }

    /// The order's products' reservations moved with it: cached copies go.
    async fn products_moved(&self, order: &Order) {
        let products: Vec<_> = order.items.iter().map(|item| item.product_id).collect();
        self.sales.products_moved(&products).await;
    }

    pub async fn cancel(&self, actor: &Actor, id: OrderId) -> Result<Order, OrderError> {
        let order = self.get(actor, id).await?;
        let allowed = match actor {
            Actor::Admin(_) => true,
            Actor::Customer(user) => *user == order.user_id,
            Actor::Merchant(_) | Actor::Courier(_) => false,
        };
        if !allowed {
            return Err(OrderError::Forbidden("only the buyer or an admin cancels an order"));
        }
        order.status.apply(OrderEvent::Cancel)?;
        self.cancel_created(&order).await?.ok_or(OrderError::ChangedMeanwhile)
    }

    /// CREATED → CANCELLED, then the stock goes back to the sale. `None` when
    /// the order was no longer CREATED (paid or cancelled meanwhile).
    ///
    /// The cancel commits with the give-back marked as owed (the outbox):
    /// should the ledger fail now, or this node die before it is asked, the
    /// sweeper gives the units back later ([`Self::retry_give_backs`]). The
    /// cancel stands either way.
    async fn cancel_created(&self, order: &Order) -> Result<Option<Order>, StoreError> {
        let now = self.clock.now();
        let cancelled = self.orders.transition(order.id, OrderStatus::Created, OrderStatus::Cancelled, now).await?;
        if let Some(cancelled) = &cancelled {
            self.products_moved(cancelled).await;
            self.give_back(order).await;
        }
        Ok(cancelled)
    }

    /// Gives a cancelled order's units back to its sale and closes the owed
    /// give-back; on failure it stays owed, for the sweeper.
    async fn give_back(&self, order: &Order) {
        if order.flash_sale_id.is_none() {
            return; // no sale, nothing owed
        }
        match self.settle_give_back(order).await {
            Ok(true) => {}
            Ok(false) => tracing::info!(order_id = %order.id, "give-back waits for the sale's counters to be rebuilt"),
            // Given back or not, the owed mark stays; a retry finds which.
            Err(error) => tracing::warn!(order_id = %order.id, %error, "give-back not settled; the sweeper retries it"),
        }
    }

    /// One try at an owed give-back: the units go back (once, however often
    /// this runs), then the mark is cleared. Whether it is settled.
    async fn settle_give_back(&self, order: &Order) -> Result<bool, StoreError> {
        let Some(sale) = order.flash_sale_id else { return Ok(false) };
        if !self.sales.stock_returned(sale, order.id, order.user_id, order.quantity).await? {
            return Ok(false);
        }
        self.orders.give_back_done(order.id).await?;
        Ok(true)
    }

    /// Retries the give-backs still owed (the ledger failed, or a node died
    /// between a cancel and its give-back) that are older than
    /// `GIVE_BACK_GRACE`, so the cancel's own try has finished. The ledger
    /// takes each order's units once, so a try that landed after all costs
    /// nothing. Returns how many are settled.
    pub async fn retry_give_backs(&self, limit: u32) -> Result<usize, StoreError> {
        let before = self.clock.now() - GIVE_BACK_GRACE;
        let mut settled = 0;
        for order in self.orders.give_backs_pending(before, limit).await? {
            settled += usize::from(self.settle_give_back(&order).await?);
        }
        Ok(settled)
    }

    /// Cancels up to `limit` unpaid orders whose payment window closed.
    pub async fn expire_unpaid(&self, limit: u32) -> Result<usize, StoreError> {
        let expired = self.orders.unpaid_expired(self.clock.now(), limit).await?;
        let mut cancelled = 0;
        for order in &expired {
            if self.cancel_created(order).await?.is_some() {
                cancelled += 1;
            }
        }
        Ok(cancelled)
    }

    /// One consumer step: take accepted requests off the queue, write their
    /// orders (each with its `OrderPlaced` event in the outbox, from which
    /// the buyer is notified), acknowledge. Returns how many events it
    /// handled and how many of them ended `FAILED`.
    pub async fn consume(
        &self,
        queue: &dyn OrderQueue,
        batch_max: usize,
        wait: Duration,
    ) -> Result<Consumed, StoreError> {
        let deliveries = queue.poll(batch_max, wait).await?;
        let Some(last) = deliveries.last().map(|d| d.offset) else {
            return Ok(Consumed::default());
        };
        let requests: Vec<_> = deliveries.into_iter().map(|d| d.request).collect();
        let now = self.clock.now();
        let outcome = self.orders.create_requested(&requests, now + self.payment_timeout, now).await?;
        for failed in &outcome.failed {
            // An acknowledged (202) request that did not become an order:
            // the guarantee this platform exists for was broken. Loud.
            tracing::error!(order_id = %failed, "an accepted order ended FAILED: its sale's units were sold twice");
        }
        for refused in &outcome.rejected {
            // Cannot happen while intake runs to completion; if it does, the
            // stock at least goes back instead of being stranded.
            tracing::error!(order_id = %refused.order_id, sale_id = %refused.sale_id,
                "order refused: its idempotency key already names another order");
            let reservation =
                Reservation { order: refused.order_id, user: refused.user_id, quantity: refused.quantity.get() };
            self.sales.released(refused.sale_id, reservation).await?;
        }
        self.sales.settled(&outcome.created).await?;
        self.sales.keys_written(&requests, &outcome.created).await?;
        queue.ack(last).await?;
        let ids: Vec<OrderId> = requests.iter().map(|r| r.order_id).collect();
        self.pending.remove(&ids).await?;
        Ok(Consumed { handled: requests.len(), failed: outcome.failed.len() })
    }
}
