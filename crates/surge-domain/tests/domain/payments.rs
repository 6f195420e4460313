//! The payment service: who opens a payment and when, what a refund needs
//! before the provider is asked, and how a callback's outcome is answered.
//! The store's exactly-once application of events is proven against SQLite
//! and PostgreSQL in the store contract; here it is an in-memory port whose
//! `apply` answers what a test scripts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use surge_domain::payment::{
    Applied, CallbackError, EventKind, Intent, Payment, PaymentError, PaymentProvider, PaymentStatus, PaymentStore,
    Payments, ProviderEvent, ProviderRecord, Refund, RefundOutcome,
};
use surge_domain::{Cents, IdGenerator, InvalidInput, OrderId, PaymentId, ProductId, RefundId, Rule, StoreError};
use time::OffsetDateTime;

use crate::checkout::MovedLog;
use crate::world::{MERCHANT, PAYMENT_TIMEOUT, PRICE_CENTS, World, customer, key_of, merchant};

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts what it is asked; a callback verifies when signed "good".
#[derive(Default)]
pub struct Provider {
    opened: Mutex<u32>,
    refunds: Mutex<u32>,
    event: Mutex<Option<ProviderEvent>>,
}

#[async_trait]
impl PaymentProvider for Provider {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn open(&self, payment: PaymentId, _amount_cents: i64) -> Result<Intent, StoreError> {
        *lock(&self.opened) += 1;
        Ok(Intent { provider_ref: format!("sb_{payment}"), pay_url: format!("https://pay.test/{payment}") })
    }

    async fn refund(&self, refund: RefundId, _payment_ref: &str, _amount_cents: i64) -> Result<String, StoreError> {
        *lock(&self.refunds) += 1;
        Ok(format!("rf_{refund}"))
    }

    fn verify(
        &self,
        signature: Option<&str>,
        _body: &[u8],
        _now: OffsetDateTime,
    ) -> Result<ProviderEvent, CallbackError> {
        match (signature, lock(&self.event).clone()) {
            (Some("good"), Some(event)) => Ok(event),
            _ => Err(CallbackError::BadSignature("the signature does not match")),
        }
    }
}

/// Payments and refunds in memory; `apply` answers what the test scripts.
#[derive(Default)]
pub struct Books {
    payments: Mutex<Vec<Payment>>,
    refunds: Mutex<Vec<(Refund, Option<String>)>>,
    applied: Mutex<Option<Applied>>,
}

impl Books {
    pub fn capture(&self, order: OrderId) {
        for payment in lock(&self.payments).iter_mut().filter(|payment| payment.order_id == order) {
            payment.status = PaymentStatus::Succeeded;
        }
    }
}

#[async_trait]
impl PaymentStore for Books {
    async fn insert(&self, payment: &Payment) -> Result<Payment, StoreError> {
        lock(&self.payments).push(payment.clone());
        Ok(payment.clone())
    }

    async fn get(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        Ok(lock(&self.payments).iter().find(|payment| payment.id == id).cloned())
    }

    async fn pending_of(&self, order: OrderId) -> Result<Option<Payment>, StoreError> {
        let payments = lock(&self.payments);
        Ok(payments.iter().find(|p| p.order_id == order && p.status == PaymentStatus::Pending).cloned())
    }

    async fn insert_refund(&self, refund: &Refund, key: Option<&str>) -> Result<RefundOutcome, StoreError> {
        let mut refunds = lock(&self.refunds);
        if let Some((first, _)) =
            refunds.iter().find(|(r, k)| r.order_id == refund.order_id && k.as_deref() == key && key.is_some())
        {
            return Ok(RefundOutcome::Replayed(first.clone()));
        }
        let mut payments = lock(&self.payments);
        let Some(payment) = payments.iter_mut().find(|payment| payment.id == refund.payment_id) else {
            return Ok(RefundOutcome::ExceedsPayment { refundable_cents: 0 });
        };
        let refundable_cents = payment.amount_cents - payment.refunded_cents;
        if refund.amount_cents > refundable_cents {
            return Ok(RefundOutcome::ExceedsPayment { refundable_cents });
        }
        payment.refunded_cents += refund.amount_cents;
        refunds.push((refund.clone(), key.map(str::to_owned)));
        Ok(RefundOutcome::Created(refund.clone()))
    }

    async fn refund(&self, id: RefundId) -> Result<Option<Refund>, StoreError> {
        Ok(lock(&self.refunds).iter().map(|(refund, _)| refund).find(|refund| refund.id == id).cloned())
    }

    async fn refund_by_key(&self, order: OrderId, key: &str) -> Result<Option<Refund>, StoreError> {
        let refunds = lock(&self.refunds);
        Ok(refunds.iter().find(|(r, k)| r.order_id == order && k.as_deref() == Some(key)).map(|(r, _)| r.clone()))
    }

    async fn provider_records(&self, _provider: &str) -> Result<Vec<ProviderRecord>, StoreError> {
        Ok(Vec::new())
    }

    async fn captured_of(&self, order: OrderId) -> Result<Option<Payment>, StoreError> {
        let payments = lock(&self.payments);
        Ok(payments.iter().find(|p| p.order_id == order && p.status == PaymentStatus::Succeeded).cloned())
    }

    async fn apply(
        &self,
        _provider: &str,
        _event: &ProviderEvent,
        _now: OffsetDateTime,
    ) -> Result<Applied, StoreError> {
        Ok(lock(&self.applied).clone().unwrap_or(Applied::UnknownRef))
    }
}

struct Cashier {
    world: World,
    books: Arc<Books>,
    provider: Arc<Provider>,
    moved: Arc<MovedLog>,
    payments: Payments,
}

impl Cashier {
    /// Payments at a 2.5% commission over a fresh world.
    fn new() -> Self {
        let world = World::new();
        let orders = Arc::clone(&world.orders);
        let (books, provider, moved) =
            (Arc::new(Books::default()), Arc::new(Provider::default()), Arc::new(MovedLog::default()));
        let ids = Arc::new(IdGenerator::new(3).expect("node id in range"));
        let payments = Payments::new(books.clone(), orders, provider.clone(), moved.clone(), ids, world.clock.clone())
            .with_commission_bps(250);
        Self { world, books, provider, moved, payments }
    }

    /// A `CREATED` order of two units for `buyer`.
    async fn order(&self, buyer: i64) -> OrderId {
        let sale = self.world.open_sale(10, 5).await;
        let id = self.world.place(buyer, &sale, 2).await.expect("accepted");
        self.world.consume().await;
        id
    }

    fn opened(&self) -> u32 {
        *lock(&self.provider.opened)
    }

    fn refunds_asked(&self) -> u32 {
        *lock(&self.provider.refunds)
    }
}

#[tokio::test]
async fn the_buyer_opens_one_payment_per_order_with_its_commission_until_the_window_closes() {
    let cashier = Cashier::new();
    let order = cashier.order(1).await;
    assert_eq!(cashier.payments.start(&customer(2), order).await, Err(PaymentError::NotFound("order")));
    assert!(matches!(cashier.payments.start(&merchant(MERCHANT), order).await, Err(PaymentError::Forbidden(_))));

    let payment = cashier.payments.start(&customer(1), order).await.expect("opened");
    assert_eq!((payment.amount_cents, payment.status), (2 * PRICE_CENTS, PaymentStatus::Pending));
    assert_eq!(payment.commission_cents, 2 * PRICE_CENTS * 250 / 10_000, "2.5%, rounded down");
    let again = cashier.payments.start(&customer(1), order).await.expect("the pending one");
    assert_eq!(again.id, payment.id);
    assert_eq!(cashier.opened(), 1, "a repeated click opens nothing new");

    let late = cashier.order(3).await;
    cashier.world.clock.advance(PAYMENT_TIMEOUT + Duration::from_secs(1));
    assert_eq!(cashier.payments.start(&customer(3), late).await, Err(PaymentError::PaymentWindowClosed));
    assert_eq!(cashier.opened(), 1);
}

#[tokio::test]
async fn a_refund_needs_a_reason_an_amount_and_a_capture_before_the_provider_is_asked_once_per_key() {
    let cashier = Cashier::new();
    let order = cashier.order(1).await;
    cashier.payments.start(&customer(1), order).await.expect("opened");
    let cents = |value| Cents::parse("amount_cents", value).expect("cents");
    let refund = |actor, amount, reason: &'static str, key: Option<&'static str>| {
        let payments = &cashier.payments;
        async move { payments.refund(&actor, order, cents(amount), reason, key.map(key_of).as_ref()).await }
    };

    assert!(matches!(refund(customer(1), 100, "broken", None).await, Err(PaymentError::Forbidden(_))));
    let no_reason = InvalidInput::new("reason", Rule::Text { min: 1, max: 200 });
    assert_eq!(refund(merchant(MERCHANT), 100, "  ", None).await, Err(PaymentError::Invalid(no_reason)));
    let nothing = InvalidInput::new("amount_cents", Rule::AtLeast(1));
    assert_eq!(refund(merchant(MERCHANT), 0, "broken", None).await, Err(PaymentError::Invalid(nothing)));
    let uncaptured = refund(merchant(MERCHANT), 100, "broken", None).await;
    assert_eq!(uncaptured, Err(PaymentError::RefundExceedsPayment { refundable_cents: 0 }));
    assert_eq!(cashier.refunds_asked(), 0, "nothing asked of the provider before a capture");

    cashier.books.capture(order);
    let first = refund(merchant(MERCHANT), 200, "broken", Some("r-1")).await.expect("refunded");
    assert_eq!((first.amount_cents, first.status), (200, PaymentStatus::Pending));
    let replay = refund(merchant(MERCHANT), 200, "broken", Some("r-1")).await.expect("the first");
    assert_eq!(replay.id, first.id);
    assert_eq!(cashier.refunds_asked(), 1, "a repeated key asks the provider nothing");

    let over = refund(merchant(MERCHANT), 2 * PRICE_CENTS - 199, "more", None).await;
    assert_eq!(over, Err(PaymentError::RefundExceedsPayment { refundable_cents: 2 * PRICE_CENTS - 200 }));
    assert_eq!(cashier.refunds_asked(), 1, "a refund past what is left is refused before the provider");
    assert_eq!(cashier.payments.refundable(order).await, Ok(2 * PRICE_CENTS - 200));
}

#[tokio::test]
async fn a_callback_is_verified_then_answered_by_what_the_store_applied() {
    let cashier = Cashier::new();
    let order = cashier.order(1).await;
    let payment = cashier.payments.start(&customer(1), order).await.expect("opened");
    let event = ProviderEvent {
        event_id: "evt-1".into(),
        kind: EventKind::PaymentSucceeded,
        provider_ref: payment.provider_ref.clone(),
        amount_cents: payment.amount_cents,
    };
    *lock(&cashier.provider.event) = Some(event);
    let callback = |provider, signature| cashier.payments.callback(provider, signature, b"{}");

    assert_eq!(callback("stripe", Some("good")).await, Err(PaymentError::NotFound("payment provider")));
    assert!(matches!(callback("sandbox", Some("forged")).await, Err(PaymentError::BadSignature(_))));
    let script = |applied| *lock(&cashier.books.applied) = Some(applied);

    script(Applied::UnknownRef);
    let unknown = InvalidInput::new("provider_ref", Rule::NamesNo("payment"));
    assert_eq!(callback("sandbox", Some("good")).await, Err(PaymentError::Invalid(unknown)));
    script(Applied::AmountMismatch(payment.clone()));
    assert!(
        matches!(callback("sandbox", Some("good")).await, Err(PaymentError::Invalid(InvalidInput { field, .. })) if field == "amount_cents")
    );
    script(Applied::Repeat(payment.clone()));
    assert_eq!(callback("sandbox", Some("good")).await, Ok(payment.clone()));
    assert!(cashier.moved.moved().is_empty(), "a repeat moves no stock");

    let captured = Payment { status: PaymentStatus::Succeeded, ..payment };
    script(Applied::Moved { payment: captured.clone(), products: vec![ProductId::new(5)], refund: None });
    assert_eq!(callback("sandbox", Some("good")).await, Ok(captured));
    assert_eq!(cashier.moved.moved(), vec![ProductId::new(5)], "the cached stock of what moved is told");
}
