//! The after-sale service: a return is asked by the buyer of a delivered
//! order within the window (once per key), decided by its merchant, and
//! inspected for a refund of at most what the payment can still refund.
//! The store's transactions and the refund saga are proven against SQLite
//! and PostgreSQL in the store contract and the API tests; here the
//! stores are in memory.

use std::sync::Arc;
use std::time::Duration;

use surge_domain::aftersale::{AfterSale, AfterSaleError, AfterSalePorts, ReturnPolicy, ReturnStatus};
use surge_domain::fulfilment::{Fulfilment, NewCourier, Shipment, ShipmentStatus};
use surge_domain::order::{OrderStatus, OrderStore};
use surge_domain::payment::Payments;
use surge_domain::{
    Actor, Cents, Clock, CourierId, IdGenerator, InvalidInput, MerchantId, OrderId, ReturnId, Rule, UserId,
};

use crate::checkout::MovedLog;
use crate::fulfilment::zones;
use crate::memory::{MemDepot, MemReturns};
use crate::payments::{Books, Provider};
use crate::world::{MERCHANT, PRICE_CENTS, World, admin, customer, key_of, merchant};

/// Two units at `PRICE_CENTS`.
const AMOUNT: i64 = 2 * PRICE_CENTS;

struct Desk {
    world: World,
    depot: Arc<MemDepot>,
    returns: Arc<MemReturns>,
    payments: Arc<Payments>,
    books: Arc<Books>,
    moved: Arc<MovedLog>,
    fulfilment: Arc<Fulfilment>,
    after_sale: AfterSale,
}

impl Desk {
    fn new(policy: ReturnPolicy) -> Self {
        let world = World::new();
        let orders = Arc::clone(&world.orders);
        let depot = Arc::new(MemDepot::default());
        let returns = Arc::new(MemReturns::new(world.order_store.clone(), depot.clone()));
        let fulfilment = Arc::new(Fulfilment::new(depot.clone(), zones(), world.clock.clone()));
        let (books, moved) = (Arc::new(Books::default()), Arc::new(MovedLog::default()));
        let ids = Arc::new(IdGenerator::new(5).expect("node id in range"));
        let payments = Arc::new(Payments::new(
            books.clone(),
            orders.clone(),
            Arc::new(Provider::default()),
            moved.clone(),
            ids.clone(),
            world.clock.clone(),
        ));
        let ports = AfterSalePorts {
            store: returns.clone(),
            orders,
            fulfilment: fulfilment.clone(),
            payments: payments.clone(),
            stock: moved.clone(),
        };
        let after_sale = AfterSale::new(ports, ids, world.clock.clone()).with_policy(policy);
        Self { world, depot, returns, payments, books, moved, fulfilment, after_sale }
    }

    /// Buyer 1's order of two units, paid (captured) and on its way.
    async fn paid(&self) -> OrderId {
        let sale = self.world.open_sale(10, 5).await;
        let order = self.world.place(1, &sale, 2).await.expect("accepted");
        self.world.consume().await;
        self.payments.start(&customer(1), order).await.expect("payment opened");
        self.books.capture(order);
        let now = self.world.clock.now();
        for (from, to) in [(OrderStatus::Created, OrderStatus::Paid), (OrderStatus::Paid, OrderStatus::Fulfilling)] {
            self.world.order_store.transition(order, from, to, now).await.expect("moved").expect("in that state");
        }
        let (user, seller) = (UserId::new(1), MerchantId::new(MERCHANT));
        self.fulfilment.open_forward(order, user, seller, None).await.expect("forward parcel");
        order
    }

    /// The order's parcel is delivered now.
    async fn deliver(&self, order: OrderId) {
        let now = self.world.clock.now();
        let moved = self.world.order_store.transition(order, OrderStatus::Fulfilling, OrderStatus::Delivered, now);
        moved.await.expect("moved").expect("fulfilling");
        self.depot.set_status(&Shipment::forward_waybill(order), ShipmentStatus::Delivered, now);
    }

    async fn delivered(&self) -> OrderId {
        let order = self.paid().await;
        self.deliver(order).await;
        order
    }

    async fn ask(&self, actor: &Actor, order: OrderId, key: Option<&str>) -> Result<ReturnId, AfterSaleError> {
        let key = key.map(key_of);
        Ok(self.after_sale.request(actor, order, "too small", key.as_ref()).await?.id)
    }

    async fn status_of(&self, order: OrderId) -> OrderStatus {
        self.world.order(1, order).await.status
    }

    async fn inspect(
        &self,
        actor: &Actor,
        id: ReturnId,
        passed: bool,
        cents: i64,
    ) -> Result<ReturnStatus, AfterSaleError> {
        let cents = Cents::parse("refund_cents", cents).expect("cents");
        Ok(self.after_sale.inspect(actor, id, passed, cents).await?.status)
    }
}

fn seller() -> Actor {
    merchant(MERCHANT)
}

#[tokio::test]
async fn the_buyer_asks_a_return_of_a_delivered_order_within_the_window_once_per_key() {
    let desk = Desk::new(ReturnPolicy::default());
    let order = desk.paid().await;
    let early = desk.ask(&customer(1), order, Some("k")).await;
    assert_eq!(early, Err(AfterSaleError::OrderNotReturnable(OrderStatus::Fulfilling)));
    desk.deliver(order).await;

    assert!(matches!(desk.ask(&seller(), order, None).await, Err(AfterSaleError::Forbidden(_))));
    let blank = desk.after_sale.request(&customer(1), order, " ", None).await;
    let reason = InvalidInput::new("reason", Rule::Text { min: 1, max: 200 });
    assert_eq!(blank.map(|asked| asked.id), Err(AfterSaleError::Invalid(reason)));
    let asked = desk.ask(&customer(1), order, Some("k")).await.expect("asked");
    assert_eq!(desk.status_of(order).await, OrderStatus::ReturnRequested);
    assert_eq!(desk.ask(&customer(1), order, Some("k")).await, Ok(asked), "the same key, the same return");
    let another = desk.ask(&customer(1), order, Some("other")).await;
    assert_eq!(another, Err(AfterSaleError::OrderNotReturnable(OrderStatus::ReturnRequested)));

    let late = desk.delivered().await;
    desk.world.clock.advance(Duration::from_secs(7 * 24 * 3600 + 1));
    assert_eq!(desk.ask(&customer(1), late, None).await, Err(AfterSaleError::WindowClosed));
    assert_eq!(desk.status_of(late).await, OrderStatus::Delivered, "nothing changed");
}

#[tokio::test]
async fn its_merchant_approves_a_return_to_a_courier_or_rejects_it_and_the_order_is_delivered_again() {
    let desk = Desk::new(ReturnPolicy::default());
    let order = desk.delivered().await;
    let zone = desk.depot.parcel(&Shipment::forward_waybill(order)).zone;
    let courier = NewCourier {
        id: CourierId::new(4),
        name: "Wang".into(),
        region: zone.clone(),
        zone: zone.clone(),
        capacity: 3,
    };
    desk.fulfilment.put_courier(&admin(), courier).await.expect("courier");
    desk.fulfilment.set_shift(&Actor::Courier(CourierId::new(4)), true, &zone).await.expect("on shift");
    let asked = desk.ask(&customer(1), order, None).await.expect("asked");

    assert!(matches!(desk.after_sale.approve(&customer(1), asked).await, Err(AfterSaleError::Forbidden(_))));
    assert_eq!(desk.after_sale.approve(&merchant(MERCHANT + 1), asked).await, Err(AfterSaleError::NotFound("return")));
    let approved = desk.after_sale.approve(&seller(), asked).await.expect("approved");
    assert_eq!(approved.status, ReturnStatus::Approved);
    let reverse = desk.depot.parcel(approved.waybill.as_deref().expect("a reverse waybill"));
    assert_eq!(
        (reverse.zone.as_str(), reverse.courier_id),
        (zone.as_str(), Some(CourierId::new(4))),
        "a courier of the buyer's zone"
    );
    let again = desk.after_sale.approve(&seller(), asked).await;
    assert_eq!(again, Err(AfterSaleError::NotNow(ReturnStatus::Approved)));

    let other = desk.delivered().await;
    let asked = desk.ask(&customer(1), other, None).await.expect("asked");
    assert_eq!(desk.after_sale.reject(&seller(), asked).await.map(|r| r.status), Ok(ReturnStatus::Rejected));
    assert_eq!(desk.status_of(other).await, OrderStatus::Delivered);
    assert!(desk.ask(&customer(1), other, None).await.is_ok(), "a rejected return may be asked again");
}

#[tokio::test]
async fn an_inspection_refunds_at_least_a_cent_and_at_most_what_the_payment_can_still_refund() {
    let desk = Desk::new(ReturnPolicy::default());
    let order = desk.delivered().await;
    let asked = desk.ask(&customer(1), order, None).await.expect("asked");
    desk.after_sale.approve(&seller(), asked).await.expect("approved");
    assert_eq!(desk.inspect(&seller(), asked, true, 100).await, Err(AfterSaleError::NotNow(ReturnStatus::Approved)));
    desk.returns.received(asked);

    assert!(matches!(desk.inspect(&customer(1), asked, true, 100).await, Err(AfterSaleError::Forbidden(_))));
    let range = InvalidInput::new("refund_cents", Rule::Between { min: 1, max: AMOUNT });
    assert_eq!(desk.inspect(&seller(), asked, true, 0).await, Err(AfterSaleError::Invalid(range.clone())));
    assert_eq!(desk.inspect(&seller(), asked, true, AMOUNT + 1).await, Err(AfterSaleError::Invalid(range)));
    assert!(matches!(desk.inspect(&seller(), asked, false, 5).await, Err(AfterSaleError::Invalid(_))));
    let refunded = Cents::parse("amount_cents", 200).expect("cents");
    desk.payments.refund(&seller(), order, refunded, "goodwill", None).await.expect("an earlier refund");
    let over = desk.inspect(&seller(), asked, true, AMOUNT - 100).await;
    assert_eq!(over, Err(AfterSaleError::RefundExceedsPayment { refundable_cents: AMOUNT - 200 }));
    assert!(desk.moved.moved().is_empty(), "nothing went back to stock");

    assert_eq!(desk.inspect(&seller(), asked, true, AMOUNT - 200).await, Ok(ReturnStatus::Refunding));
    assert_eq!(desk.status_of(order).await, OrderStatus::Returned);
    assert_eq!(desk.moved.moved().len(), 1, "the units' product is told its stock moved");
    assert_eq!(desk.inspect(&seller(), asked, true, 1).await, Err(AfterSaleError::NotNow(ReturnStatus::Refunding)));

    let kept = desk.delivered().await;
    let asked = desk.ask(&customer(1), kept, None).await.expect("asked");
    desk.after_sale.approve(&seller(), asked).await.expect("approved");
    desk.returns.received(asked);
    assert_eq!(desk.inspect(&seller(), asked, false, 0).await, Ok(ReturnStatus::InspectionFailed));
    assert_eq!(desk.status_of(kept).await, OrderStatus::Delivered);
    let back = desk.depot.parcel(&format!("SB{asked}"));
    assert_eq!(
        (back.status, back.user_id),
        (ShipmentStatus::Created, UserId::new(1)),
        "the parcel goes back to the buyer"
    );
}

#[tokio::test]
async fn a_return_of_an_order_under_the_auto_approve_amount_is_approved_at_once() {
    let desk = Desk::new(ReturnPolicy { auto_approve_under_cents: AMOUNT + 1, ..ReturnPolicy::default() });
    let order = desk.delivered().await;
    let asked = desk.ask(&customer(1), order, None).await.expect("asked");
    assert_eq!(desk.after_sale.get(&customer(1), asked).await.map(|r| r.status), Ok(ReturnStatus::Approved));

    let desk = Desk::new(ReturnPolicy { auto_approve_under_cents: AMOUNT, ..ReturnPolicy::default() });
    let order = desk.delivered().await;
    let asked = desk.ask(&customer(1), order, None).await.expect("asked");
    assert_eq!(desk.after_sale.get(&admin(), asked).await.map(|r| r.status), Ok(ReturnStatus::Requested));
}
