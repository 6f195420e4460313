//! After-sale use cases: ask for a return, decide it, inspect the parcel,
//! and the refund saga that follows a passed inspection.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::ports::{AfterSaleStore, NewReturn};
use super::{Return, ReturnStatus};
use crate::actor::Actor;
use crate::clock::Clock;
use crate::fulfilment::{Direction, Fulfilment, FulfilmentError, NewShipment, Shipment, ShipmentStatus};
use crate::idempotency::IdempotencyKey;
use crate::ids::{IdGenerator, OrderId, RefundId, ReturnId};
use crate::input::{InvalidInput, Rule};
use crate::money::Cents;
use crate::order::{Order, OrderError, OrderKind, OrderStatus, Orders, StockKeeper};
use crate::payment::{PaymentStatus, Payments};
use crate::store::StoreError;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AfterSaleError {
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    /// The order is not delivered, or is being returned already.
    #[error("the order is {}", .0.as_str())]
    OrderNotReturnable(OrderStatus),
    #[error("the return window has closed")]
    WindowClosed,
    #[error("this Idempotency-Key named a return of another order")]
    KeyOfAnotherOrder,
    /// The step does not start where the return is.
    #[error("the return is {}", .0.as_str())]
    NotNow(ReturnStatus),
    /// Another request decided or inspected the return first.
    #[error("the return changed meanwhile; read it again")]
    ChangedMeanwhile,
    /// The order context refused the step the return asked of it.
    #[error(transparent)]
    Order(OrderError),
    /// The fulfilment context refused the step the return asked of it.
    #[error(transparent)]
    Shipment(FulfilmentError),
    /// More than the payment can still refund (earlier refunds count).
    #[error("refund_cents exceeds what the payment can still refund ({refundable_cents} cents)")]
    RefundExceedsPayment { refundable_cents: i64 },
    #[error("{0}")]
    Invalid(InvalidInput),
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

impl From<OrderError> for AfterSaleError {
    fn from(error: OrderError) -> Self {
        match error {
            OrderError::NotFound => AfterSaleError::NotFound("order"),
            OrderError::Forbidden(why) => AfterSaleError::Forbidden(why),
            OrderError::Unavailable(cause) => AfterSaleError::Unavailable(cause),
            other => AfterSaleError::Order(other),
        }
    }
}

impl From<FulfilmentError> for AfterSaleError {
    fn from(error: FulfilmentError) -> Self {
        match error {
            FulfilmentError::NotFound(what) => AfterSaleError::NotFound(what),
            FulfilmentError::Forbidden(why) => AfterSaleError::Forbidden(why),
            FulfilmentError::Invalid(why) => AfterSaleError::Invalid(why),
            FulfilmentError::Overloaded => AfterSaleError::Unavailable(StoreError::Unavailable("overloaded".into())),
            FulfilmentError::Unavailable(cause) => AfterSaleError::Unavailable(cause),
            refused @ (FulfilmentError::NotNow(_)
            | FulfilmentError::ChangedMeanwhile
            | FulfilmentError::IllegalScan(_)) => AfterSaleError::Shipment(refused),
        }
    }
}

/// Longest reason for a return.
pub const MAX_REASON: usize = 200;
/// How long a node holds a return while it asks for its refund.
const REFUND_LEASE: Duration = Duration::from_secs(30);
/// The longest wait between two refund attempts.
const MAX_REFUND_BACKOFF: Duration = Duration::from_secs(600);

/// The rules returns follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnPolicy {
    /// How long after delivery a buyer may ask.
    pub window: Duration,
    /// Returns of orders under this amount are approved at once (0: none).
    pub auto_approve_under_cents: i64,
}

impl Default for ReturnPolicy {
    fn default() -> Self {
        Self { window: Duration::from_secs(7 * 24 * 3600), auto_approve_under_cents: 0 }
    }
}

/// The wait before refund attempt `attempts + 1`: 1 s, doubling, at most
/// ten minutes.
pub(super) fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(10)).min(MAX_REFUND_BACKOFF)
}

pub struct AfterSale {
    pub(super) store: Arc<dyn AfterSaleStore>,
    orders: Arc<Orders>,
    fulfilment: Arc<Fulfilment>,
    payments: Arc<Payments>,
    /// Told of the products whose stock a passed inspection raised.
    stock: Arc<dyn StockKeeper>,
    ids: Arc<IdGenerator>,
    pub(super) clock: Arc<dyn Clock>,
    policy: ReturnPolicy,
}

/// What after-sale works with: the contexts it moves and the stock it
/// tells of returned units.
pub struct AfterSalePorts {
    pub store: Arc<dyn AfterSaleStore>,
    pub orders: Arc<Orders>,
    pub fulfilment: Arc<Fulfilment>,
    pub payments: Arc<Payments>,
    pub stock: Arc<dyn StockKeeper>,
}

impl AfterSale {
    pub fn new(ports: AfterSalePorts, ids: Arc<IdGenerator>, clock: Arc<dyn Clock>) -> Self {
        let AfterSalePorts { store, orders, fulfilment, payments, stock } = ports;
        Self { store, orders, fulfilment, payments, stock, ids, clock, policy: ReturnPolicy::default() }
    }

    pub fn with_policy(self, policy: ReturnPolicy) -> Self {
        Self { policy, ..self }
    }

    /// The buyer asks to return a delivered order within the window.
    pub async fn request(
        &self,
        actor: &Actor,
        order_id: OrderId,
        reason: &str,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Return, AfterSaleError> {
        let order = self.orders.get(actor, order_id).await?;
        if !matches!(actor, Actor::Customer(user) if *user == order.user_id) {
            return Err(AfterSaleError::Forbidden("only the buyer asks for a return"));
        }
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(AfterSaleError::Invalid(InvalidInput::new("reason", Rule::Text { min: 1, max: MAX_REASON })));
        }
        let new = NewReturn {
            id: ReturnId::new(self.ids.next_id()),
            order_id,
            user_id: order.user_id,
            merchant_id: order.merchant_id,
            reason: reason.to_owned(),
            idempotency_key: idempotency_key.cloned(),
        };
        // A repeated request (same key) finds its return whatever the
        // order is by now; a new one needs a delivered order in the window.
        let repeat = idempotency_key.is_some() && order.status != OrderStatus::Delivered;
        if !repeat {
            self.within_window(actor, &order).await?;
        }
        let now = self.clock.now();
        let Some(asked) = self.store.request(&new, now).await? else {
            return Err(AfterSaleError::OrderNotReturnable(order.status));
        };
        if asked.order_id != order_id {
            return Err(AfterSaleError::KeyOfAnotherOrder);
        }
        // A repeat finishes what a failed first try left: an approval
        // the rule owed.
        let auto = self.policy.auto_approve_under_cents;
        if asked.status == ReturnStatus::Requested && auto > 0 && order.amount_cents < auto {
            return self.approve_at_once(&asked, actor).await;
        }
        Ok(asked)
    }

    /// Is the order delivered, and not longer ago than the window?
    async fn within_window(&self, actor: &Actor, order: &Order) -> Result<(), AfterSaleError> {
        if order.status != OrderStatus::Delivered {
            return Err(AfterSaleError::OrderNotReturnable(order.status));
        }
        let forward = self.fulfilment.shipment_of_order(actor, order.id).await?;
        let window = time::Duration::try_from(self.policy.window).unwrap_or(time::Duration::MAX);
        if forward.status != ShipmentStatus::Delivered || self.clock.now() - forward.updated_at > window {
            return Err(AfterSaleError::WindowClosed);
        }
        Ok(())
    }

    /// The return, for its buyer, its merchant or an admin.
    pub async fn get(&self, actor: &Actor, id: ReturnId) -> Result<Return, AfterSaleError> {
        let found = self.store.get(id).await?.ok_or(AfterSaleError::NotFound("return"))?;
        let visible = match actor {
            Actor::Admin(_) => true,
            Actor::Customer(user) => *user == found.user_id,
            Actor::Merchant(merchant) => *merchant == found.merchant_id,
            Actor::Courier(_) => false,
        };
        if !visible {
            return Err(AfterSaleError::NotFound("return"));
        }
        Ok(found)
    }

    /// The return, for its merchant or (when `admin_too`) an admin; its
    /// buyer is refused, anyone else finds nothing.
    async fn decided_by(&self, actor: &Actor, id: ReturnId, admin_too: bool) -> Result<Return, AfterSaleError> {
        let found = self.get(actor, id).await?;
        let allowed = match actor {
            Actor::Merchant(merchant) => *merchant == found.merchant_id,
            Actor::Admin(_) => admin_too,
            _ => false,
        };
        if !allowed {
            return Err(AfterSaleError::Forbidden("the order's merchant decides its returns"));
        }
        Ok(found)
    }

    fn not_now(found: &Return) -> AfterSaleError {
        AfterSaleError::NotNow(found.status)
    }

    /// The merchant (or an admin) approves a requested return: a reverse
    /// shipment goes to a courier of the buyer's zone.
    pub async fn approve(&self, actor: &Actor, id: ReturnId) -> Result<Return, AfterSaleError> {
        let found = self.decided_by(actor, id, true).await?;
        if found.status != ReturnStatus::Requested {
            return Err(Self::not_now(&found));
        }
        self.approve_at_once(&found, actor).await
    }

    async fn approve_at_once(&self, found: &Return, actor: &Actor) -> Result<Return, AfterSaleError> {
        let forward = self.fulfilment.shipment_of_order(actor, found.order_id).await?;
        let reverse = Self::shipment_for(found, &forward, Direction::Reverse);
        let approved =
            self.store.approve(found.id, &reverse, self.clock.now()).await?.ok_or(AfterSaleError::ChangedMeanwhile)?;
        // Approved is written: a failed dispatch leaves it to the next pass.
        if let Err(error) = self.fulfilment.dispatch_now(&reverse.waybill).await {
            tracing::warn!(%error, waybill = %reverse.waybill, "return approved; dispatch left to the next pass");
        }
        Ok(approved)
    }

    /// A shipment between the buyer's address (the forward parcel's zone)
    /// and the merchant: `Reverse` to bring it back, `Forward` to send it
    /// back again.
    fn shipment_for(found: &Return, forward: &Shipment, direction: Direction) -> NewShipment {
        let waybill = match direction {
            Direction::Reverse => Return::reverse_waybill(found.id),
            Direction::Forward => Return::back_to_buyer_waybill(found.id),
        };
        NewShipment {
            waybill,
            order_id: found.order_id,
            user_id: found.user_id,
            merchant_id: found.merchant_id,
            direction,
            region: forward.region.clone(),
            zone: forward.zone.clone(),
        }
    }

    /// The merchant (or an admin) rejects a requested return.
    pub async fn reject(&self, actor: &Actor, id: ReturnId) -> Result<Return, AfterSaleError> {
        let found = self.decided_by(actor, id, true).await?;
        if found.status != ReturnStatus::Requested {
            return Err(Self::not_now(&found));
        }
        self.store.reject(id, self.clock.now()).await?.ok_or(AfterSaleError::ChangedMeanwhile)
    }

    /// The merchant inspects the parcel it received. Passed: `refund_cents`
    /// (1 to the order's amount) are refunded and the units go back to
    /// stock; failed: nothing is refunded and the parcel goes back.
    pub async fn inspect(
        &self,
        actor: &Actor,
        id: ReturnId,
        passed: bool,
        refund_cents: Cents,
    ) -> Result<Return, AfterSaleError> {
        let found = self.decided_by(actor, id, false).await?;
        let order = self.orders.get(actor, found.order_id).await?;
        let refund_cents = refund_cents.get();
        if passed && !(1..=order.amount_cents).contains(&refund_cents) {
            let rule = Rule::Between { min: 1, max: order.amount_cents };
            return Err(AfterSaleError::Invalid(InvalidInput::new("refund_cents", rule)));
        }
        if !passed && refund_cents != 0 {
            let rule = Rule::Must("must be 0: a failed inspection refunds nothing");
            return Err(AfterSaleError::Invalid(InvalidInput::new("refund_cents", rule)));
        }
        if found.status != ReturnStatus::Received {
            return Err(Self::not_now(&found));
        }
        if passed {
            let refundable = self.payments.refundable(order.id).await?;
            if refund_cents > refundable {
                return Err(AfterSaleError::RefundExceedsPayment { refundable_cents: refundable });
            }
        }
        let now = self.clock.now();
        let inspected = if passed {
            let units = Self::units(&order);
            let passed = self.store.pass(id, refund_cents, &units, now).await?;
            if passed.is_some() {
                let products: Vec<_> = units.iter().map(|(product, _)| *product).collect();
                self.stock.products_moved(&products).await;
            }
            passed
        } else {
            let forward = self.fulfilment.shipment_of_order(actor, found.order_id).await?;
            self.store.fail(id, &Self::shipment_for(&found, &forward, Direction::Forward), now).await?
        };
        inspected.ok_or(AfterSaleError::ChangedMeanwhile)
    }

    /// The order's units, by product.
    fn units(order: &Order) -> Vec<(crate::ids::ProductId, u32)> {
        if order.kind == OrderKind::FlashSale || order.items.is_empty() {
            return vec![(order.product_id, order.quantity)];
        }
        order.items.iter().map(|item| (item.product_id, item.quantity)).collect()
    }

    /// Asks for the refund of a return due for one, unless another node or
    /// task has it. A refund that cannot be asked for now is asked again
    /// after a backoff, under the same id (the provider may have taken
    /// it); one the provider failed, under a new one.
    pub async fn push_refund(&self, id: ReturnId) -> Result<(), StoreError> {
        let now = self.clock.now();
        let attempt = RefundId::new(self.ids.next_id());
        let Some(claimed) = self.store.claim_refund(id, now, now + REFUND_LEASE, attempt).await? else {
            return Ok(());
        };
        let (Some(cents), Some(refund_id)) = (claimed.refund_cents, claimed.attempt_refund_id) else {
            return Ok(());
        };
        let Ok(amount) = Cents::parse("refund_cents", cents) else {
            return Ok(());
        };
        let reason = format!("return {}", claimed.id);
        match self.payments.refund_once(refund_id, claimed.order_id, amount, &reason).await {
            Ok(refund) => match refund.status {
                PaymentStatus::Pending => self.store.refund_asked(id, refund.id, self.clock.now()).await,
                PaymentStatus::Succeeded => self.store.refunded(refund.id, self.clock.now()).await.map(drop),
                PaymentStatus::Failed => self.refund_failed(&claimed, Some(refund.id)).await,
            },
            Err(error) => {
                tracing::warn!(%error, return_id = %id, attempts = claimed.refund_attempts + 1,
                    "a return's refund could not be asked for; asking again later");
                self.refund_failed(&claimed, None).await
            }
        }
    }

    /// One more refund attempt for `found`, after its backoff.
    pub(super) async fn refund_failed(&self, found: &Return, refund: Option<RefundId>) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.store.refund_retry(found.id, refund, now + backoff(found.refund_attempts), now).await
    }

    /// One pass of the saga: every return due for a refund asks for it.
    pub async fn retry_refunds(&self, limit: u32) -> Result<usize, StoreError> {
        let due = self.store.due_refunds(self.clock.now(), limit).await?;
        for id in &due {
            self.push_refund(*id).await?;
        }
        Ok(due.len())
    }
}
