//! What payments need from a provider and from a store.
//!
//! The provider port is shaped after what card acquirers and wallets share:
//! open a payment (an intent) and get back the provider's reference and
//! where the buyer pays; later, receive signed events about it. An adapter
//! maps its provider's own event names onto [`EventKind`] (Stripe's
//! `payment_intent.succeeded` → `PaymentSucceeded`,
//! `payment_intent.payment_failed` → `PaymentFailed`, its `data.object.id`
//! → `provider_ref`, `amount_received` → `amount_cents`, the event's `id` →
//! `event_id`; its `Stripe-Signature: t=…,v1=…` header is the scheme the
//! sandbox copies), so the domain never sees a provider's wire format.

use async_trait::async_trait;
use thiserror::Error;
use time::OffsetDateTime;

use super::{Payment, PaymentStatus, Refund};
use crate::ids::{OrderId, PaymentId, ProductId, RefundId};
use crate::store::StoreError;

/// A payment opened with a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub provider_ref: String,
    pub pay_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    PaymentSucceeded,
    PaymentFailed,
    RefundSucceeded,
    RefundFailed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::PaymentSucceeded => "payment.succeeded",
            EventKind::PaymentFailed => "payment.failed",
            EventKind::RefundSucceeded => "refund.succeeded",
            EventKind::RefundFailed => "refund.failed",
        }
    }

    /// Is it about a refund (its `provider_ref` names a refund)?
    pub fn is_refund(self) -> bool {
        matches!(self, EventKind::RefundSucceeded | EventKind::RefundFailed)
    }
}

/// One verified event of a provider about one of its payments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    /// Unique per provider; a redelivery repeats it.
    pub event_id: String,
    pub kind: EventKind,
    pub provider_ref: String,
    pub amount_cents: i64,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CallbackError {
    /// Missing, malformed, wrong or stale signature.
    #[error("{0}")]
    BadSignature(&'static str),
    /// Signed, but not an event this platform reads.
    #[error("{0}")]
    Malformed(String),
}

#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// The name callbacks are posted under (`/v1/payments/callbacks/{name}`).
    fn name(&self) -> &'static str;

    /// Opens a payment of `amount_cents` with the provider.
    async fn open(&self, payment: PaymentId, amount_cents: i64) -> Result<Intent, StoreError>;

    /// Asks the provider to refund `amount_cents` of a payment it captured;
    /// the refund's provider reference.
    async fn refund(&self, refund: RefundId, payment_ref: &str, amount_cents: i64) -> Result<String, StoreError>;

    /// Checks a callback's signature header against its raw body (and the
    /// time, for replayed old callbacks) and reads its event.
    fn verify(&self, signature: Option<&str>, body: &[u8], now: OffsetDateTime)
    -> Result<ProviderEvent, CallbackError>;

    /// The provider's own record of every payment and refund it was asked
    /// for, for reconciliation; `None` when it keeps none to compare with.
    async fn report(&self) -> Result<Option<Vec<ProviderRecord>>, StoreError> {
        Ok(None)
    }
}

/// A payment or refund as a provider's report, or the platform's books,
/// have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    pub provider_ref: String,
    pub amount_cents: i64,
    pub status: PaymentStatus,
    /// The order it is of (the platform's books know; a provider need not).
    pub order_id: Option<OrderId>,
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The payment moved; when it succeeded and its order was still
    /// unpaid, the order is paid and these products' units left
    /// `reserved`. A refund event moved `refund`.
    Moved { payment: Payment, products: Vec<ProductId>, refund: Option<Refund> },
    /// This event was applied before: nothing changed.
    Repeat(Payment),
    /// The event would move the payment backwards (a failure after a
    /// success) or nowhere: recorded as seen, nothing changed.
    Stale(Payment),
    /// No payment has this provider reference: nothing changed.
    UnknownRef,
    /// The amount is not the payment's: nothing changed.
    AmountMismatch(Payment),
}

/// What asking for a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    Created(Refund),
    /// The caller's key names an earlier refund of the order: that one.
    Replayed(Refund),
    /// More than what was captured and is not refunded yet (nothing
    /// captured at all included): nothing changed.
    ExceedsPayment {
        refundable_cents: i64,
    },
}

#[async_trait]
pub trait PaymentStore: Send + Sync + 'static {
    /// Writes a new pending payment, unless the order has one pending
    /// already: then that one, unchanged.
    async fn insert(&self, payment: &Payment) -> Result<Payment, StoreError>;

    async fn get(&self, id: PaymentId) -> Result<Option<Payment>, StoreError>;

    /// The order's pending payment, if it has one.
    async fn pending_of(&self, order: OrderId) -> Result<Option<Payment>, StoreError>;

    /// In one transaction: takes the amount from what the order's captured
    /// payment can still refund (a conditional update: concurrent refunds
    /// never pass it), writes the refund `pending` and posts it pending to
    /// the ledger. The refund's payment, provider and reference are filled
    /// in from the captured payment and `provider_ref`.
    async fn insert_refund(&self, refund: &Refund, idempotency_key: Option<&str>) -> Result<RefundOutcome, StoreError>;

    async fn refund(&self, id: RefundId) -> Result<Option<Refund>, StoreError>;

    /// The order's refund asked under the caller's idempotency key, if any.
    async fn refund_by_key(&self, order: OrderId, key: &str) -> Result<Option<Refund>, StoreError>;

    /// Every payment and refund with `provider`, as the platform's books
    /// have it (the other side of the provider's report).
    async fn provider_records(&self, provider: &str) -> Result<Vec<ProviderRecord>, StoreError>;

    /// The order's captured payment, if any (the refunds' source).
    async fn captured_of(&self, order: OrderId) -> Result<Option<Payment>, StoreError>;

    /// In one transaction: records the event under its id (a repeat
    /// changes nothing), moves the payment if that moves it forward, and
    /// on a success pays the order if it is still `CREATED` (its units
    /// leave `reserved`, as `OrderStore::transition` does).
    async fn apply(&self, provider: &str, event: &ProviderEvent, now: OffsetDateTime) -> Result<Applied, StoreError>;
}
