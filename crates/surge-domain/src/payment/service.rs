//! Payment use cases: open a payment of an order, read one, and apply a
//! provider's callback.

use std::sync::Arc;

use thiserror::Error;

use super::ports::{
    Applied, CallbackError, EventKind, PaymentProvider, PaymentStore, ProviderEvent, ProviderRecord, RefundOutcome,
};
use super::{Payment, PaymentStatus, Refund};
use crate::actor::Actor;
use crate::clock::Clock;
use crate::idempotency::IdempotencyKey;
use crate::ids::{IdGenerator, OrderId, PaymentId, RefundId};
use crate::input::{InvalidInput, Rule};
use crate::money::Cents;
use crate::order::{Order, OrderError, OrderStatus, Orders, StockKeeper};
use crate::store::StoreError;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PaymentError {
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("order is {}", .0.as_str())]
    InvalidState(OrderStatus),
    #[error("the payment window has closed")]
    PaymentWindowClosed,
    /// Another request moved the order first.
    #[error("the order changed meanwhile; read it again")]
    ChangedMeanwhile,
    #[error("{0}")]
    BadSignature(&'static str),
    /// More than what is captured and not yet refunded.
    #[error("the refund exceeds what the payment can still refund ({refundable_cents} cents)")]
    RefundExceedsPayment { refundable_cents: i64 },
    #[error("{0}")]
    Invalid(InvalidInput),
    /// A callback body that reads as no provider event.
    #[error("{0}")]
    MalformedCallback(String),
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

impl From<OrderError> for PaymentError {
    fn from(error: OrderError) -> Self {
        match error {
            OrderError::NotFound => PaymentError::NotFound("order"),
            OrderError::Forbidden(why) => PaymentError::Forbidden(why),
            OrderError::IllegalTransition { from, .. } => PaymentError::InvalidState(from),
            OrderError::PaymentWindowClosed => PaymentError::PaymentWindowClosed,
            OrderError::ChangedMeanwhile => PaymentError::ChangedMeanwhile,
            OrderError::Unavailable(cause) => PaymentError::Unavailable(cause),
        }
    }
}

impl From<CallbackError> for PaymentError {
    fn from(error: CallbackError) -> Self {
        match error {
            CallbackError::BadSignature(why) => PaymentError::BadSignature(why),
            CallbackError::Malformed(why) => PaymentError::MalformedCallback(why),
        }
    }
}

pub struct Payments {
    store: Arc<dyn PaymentStore>,
    /// The order context, for what the caller may see of an order (a
    /// `PENDING` one included).
    orders: Arc<Orders>,
    provider: Arc<dyn PaymentProvider>,
    stock: Arc<dyn StockKeeper>,
    ids: Arc<IdGenerator>,
    clock: Arc<dyn Clock>,
    /// The platform's commission, in basis points of each payment.
    commission_bps: u32,
}

impl Payments {
    pub fn new(
        store: Arc<dyn PaymentStore>,
        orders: Arc<Orders>,
        provider: Arc<dyn PaymentProvider>,
        stock: Arc<dyn StockKeeper>,
        ids: Arc<IdGenerator>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { store, orders, provider, stock, ids, clock, commission_bps: 0 }
    }

    /// Takes `bps` basis points (at most 10,000) of each payment as the
    /// platform's commission, rounded down.
    pub fn with_commission_bps(mut self, bps: u32) -> Self {
        self.commission_bps = bps.min(10_000);
        self
    }

    fn commission_of(&self, amount_cents: i64) -> i64 {
        let commission = i128::from(amount_cents) * i128::from(self.commission_bps) / 10_000;
        i64::try_from(commission).unwrap_or(amount_cents)
    }

    /// Opens a payment of the buyer's `CREATED` order with the provider, or
    /// returns the one already pending (a repeated click opens nothing new).
    pub async fn start(&self, actor: &Actor, order_id: OrderId) -> Result<Payment, PaymentError> {
        // Someone else's order reads as missing, as in the order context.
        let order = self.orders.get(actor, order_id).await?;
        if !matches!(actor, Actor::Customer(user) if *user == order.user_id) {
            return Err(PaymentError::Forbidden("only the buyer pays an order"));
        }
        if order.status != OrderStatus::Created {
            return Err(PaymentError::InvalidState(order.status));
        }
        let now = self.clock.now();
        if order.pay_by.is_some_and(|deadline| deadline <= now) {
            return Err(PaymentError::PaymentWindowClosed);
        }
        if let Some(pending) = self.store.pending_of(order_id).await? {
            return Ok(pending);
        }
        let id = PaymentId::new(self.ids.next_id());
        let intent = self.provider.open(id, order.amount_cents).await?;
        let payment = Payment {
            id,
            order_id,
            user_id: order.user_id,
            merchant_id: order.merchant_id,
            amount_cents: order.amount_cents,
            commission_cents: self.commission_of(order.amount_cents),
            status: PaymentStatus::Pending,
            provider: self.provider.name().to_owned(),
            provider_ref: intent.provider_ref,
            pay_url: intent.pay_url,
            refunded_cents: 0,
            created_at: now,
            updated_at: now,
        };
        Ok(self.store.insert(&payment).await?)
    }

    /// `POST /v1/orders/{id}/pay`, the sandbox's shortcut: a payment opened
    /// and captured at once, through the same steps as a provider's
    /// callback (so the ledger posts it); the order as it then is.
    pub async fn pay_at_once(&self, actor: &Actor, order_id: OrderId) -> Result<Order, PaymentError> {
        let payment = self.start(actor, order_id).await?;
        let event = ProviderEvent {
            event_id: format!("instant-{}", payment.id),
            kind: EventKind::PaymentSucceeded,
            provider_ref: payment.provider_ref.clone(),
            amount_cents: payment.amount_cents,
        };
        if let Applied::Moved { products, .. } = self.store.apply(&payment.provider, &event, self.clock.now()).await?
            && !products.is_empty()
        {
            self.stock.products_moved(&products).await;
        }
        let order = self.orders.get(actor, order_id).await?;
        if order.status != OrderStatus::Paid {
            // Cancelled between the two steps (its payment window closed).
            return Err(PaymentError::InvalidState(order.status));
        }
        Ok(order)
    }

    /// Refunds `amount_cents` of the order's captured payment, for `reason`
    /// (its merchant or an admin): pending until the provider's callback.
    /// The same key from the same order returns the first refund.
    pub async fn refund(
        &self,
        actor: &Actor,
        order_id: OrderId,
        amount_cents: Cents,
        reason: &str,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Refund, PaymentError> {
        let order = self.orders.get(actor, order_id).await?;
        if matches!(actor, Actor::Customer(_)) {
            return Err(PaymentError::Forbidden("the merchant or an admin refunds an order"));
        }
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control) {
            return Err(PaymentError::Invalid(InvalidInput::new("reason", Rule::Text { min: 1, max: 200 })));
        }
        if amount_cents.get() == 0 {
            return Err(PaymentError::Invalid(InvalidInput::new("amount_cents", Rule::AtLeast(1))));
        }
        // A repeated key asks the provider nothing: the first refund.
        if let Some(key) = idempotency_key
            && let Some(first) = self.store.refund_by_key(order_id, key.as_str()).await?
        {
            return Ok(first);
        }
        let id = RefundId::new(self.ids.next_id());
        self.ask_refund(id, &order, amount_cents, reason, idempotency_key).await
    }

    /// The platform's own refund of an order (after-sale's saga) under an
    /// id the caller chose and keeps: asked again with the same id, it
    /// asks the provider nothing new and returns that refund.
    pub async fn refund_once(
        &self,
        id: RefundId,
        order_id: OrderId,
        amount_cents: Cents,
        reason: &str,
    ) -> Result<Refund, PaymentError> {
        if let Some(asked) = self.store.refund(id).await? {
            return Ok(asked);
        }
        let order = self.orders.get(&Actor::Admin("platform".to_owned()), order_id).await?;
        self.ask_refund(id, &order, amount_cents, reason, None).await
    }

    /// Asks the provider to refund `amount_cents` of the order's captured
    /// payment under `id`, then writes it pending (see
    /// [`PaymentStore::insert_refund`]).
    async fn ask_refund(
        &self,
        id: RefundId,
        order: &Order,
        amount_cents: Cents,
        reason: &str,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Refund, PaymentError> {
        let Some(captured) = self.store.captured_of(order.id).await? else {
            return Err(PaymentError::RefundExceedsPayment { refundable_cents: 0 });
        };
        // Refused before the provider is asked: a refund it made and the
        // books then refuse is money out with no record. The store's
        // conditional write still decides between racing refunds.
        let refundable_cents = captured.amount_cents - captured.refunded_cents;
        if amount_cents.get() > refundable_cents {
            return Err(PaymentError::RefundExceedsPayment { refundable_cents });
        }
        let provider_ref = self.provider.refund(id, &captured.provider_ref, amount_cents.get()).await?;
        let now = self.clock.now();
        let refund = Refund {
            id,
            payment_id: captured.id,
            order_id: order.id,
            merchant_id: order.merchant_id,
            amount_cents: amount_cents.get(),
            reason: reason.to_owned(),
            status: PaymentStatus::Pending,
            provider: captured.provider,
            provider_ref,
            created_at: now,
            updated_at: now,
        };
        match self.store.insert_refund(&refund, idempotency_key.map(IdempotencyKey::as_str)).await {
            Ok(RefundOutcome::Created(refund) | RefundOutcome::Replayed(refund)) => Ok(refund),
            Ok(RefundOutcome::ExceedsPayment { refundable_cents }) => {
                Err(PaymentError::RefundExceedsPayment { refundable_cents })
            }
            // The same id written meanwhile (another node asking the same
            // attempt): that refund.
            Err(StoreError::Duplicate(_)) => self.store.refund(id).await?.ok_or(PaymentError::NotFound("refund")),
            Err(error) => Err(error.into()),
        }
    }

    /// What the order's captured payment can still refund (0 when nothing
    /// is captured).
    pub async fn refundable(&self, order_id: OrderId) -> Result<i64, StoreError> {
        let captured = self.store.captured_of(order_id).await?;
        Ok(captured.map_or(0, |payment| payment.amount_cents - payment.refunded_cents))
    }

    /// The payment, for its payer, its merchant or an admin; anyone else
    /// finds nothing.
    /// The provider's report beside the platform's books of that provider,
    /// for reconciliation; `None` when the provider keeps no report.
    pub async fn provider_books(&self) -> Result<Option<ProviderBooks>, StoreError> {
        let Some(theirs) = self.provider.report().await? else { return Ok(None) };
        let ours = self.store.provider_records(self.provider.name()).await?;
        Ok(Some(ProviderBooks { ours, theirs }))
    }

    pub async fn get(&self, actor: &Actor, id: PaymentId) -> Result<Payment, PaymentError> {
        let payment = self.store.get(id).await?.ok_or(PaymentError::NotFound("payment"))?;
        let allowed = match actor {
            Actor::Admin(_) => true,
            Actor::Customer(user) => *user == payment.user_id,
            Actor::Merchant(merchant) => *merchant == payment.merchant_id,
            Actor::Courier(_) => false,
        };
        if !allowed {
            return Err(PaymentError::NotFound("payment"));
        }
        Ok(payment)
    }

    /// A provider's callback: verified, then applied once (see
    /// [`PaymentStore::apply`]). A repeat or an event that would move the
    /// payment backwards answers with the payment as it is.
    pub async fn callback(
        &self,
        provider: &str,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<Payment, PaymentError> {
        if provider != self.provider.name() {
            return Err(PaymentError::NotFound("payment provider"));
        }
        let event = self.provider.verify(signature, body, self.clock.now())?;
        match self.store.apply(provider, &event, self.clock.now()).await? {
            // A refund that went through is told from the outbox.
            Applied::Moved { payment, products, refund: _ } => {
                tracing::info!(payment_id = %payment.id, order_id = %payment.order_id, status = payment.status.as_str(),
                    event_id = event.event_id, "payment moved");
                if !products.is_empty() {
                    self.stock.products_moved(&products).await;
                }
                Ok(payment)
            }
            Applied::Repeat(payment) | Applied::Stale(payment) => Ok(payment),
            Applied::UnknownRef => {
                Err(PaymentError::Invalid(InvalidInput::new("provider_ref", Rule::NamesNo("payment"))))
            }
            Applied::AmountMismatch(payment) => {
                tracing::warn!(payment_id = %payment.id, expected = payment.amount_cents, got = event.amount_cents,
                    event_id = event.event_id, "callback amount differs from the payment's; not applied");
                Err(PaymentError::Invalid(InvalidInput::new("amount_cents", Rule::Must("differs from the payment's"))))
            }
        }
    }
}

/// The two sides of a provider reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderBooks {
    /// The platform's payments and refunds with the provider.
    pub ours: Vec<ProviderRecord>,
    /// The provider's report.
    pub theirs: Vec<ProviderRecord>,
}
