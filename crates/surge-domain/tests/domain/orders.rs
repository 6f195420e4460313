//! Order use cases: the state machine through the service, who may do what,
//! and the payment timeout on a clock the test moves.

use std::time::Duration;

use surge_domain::order::{OrderError, OrderEvent, OrderStatus, OrderStore};
use surge_domain::{Clock, OrderId};

use crate::world::{MERCHANT, PAYMENT_TIMEOUT, World, admin, customer, merchant};

/// A written (`CREATED`) order of one unit for `user`.
async fn created_order(world: &World, sale: &surge_domain::flashsale::FlashSale, user: i64) -> OrderId {
    let id = world.place(user, sale, 1).await.expect("accepted");
    world.consume().await;
    id
}

#[tokio::test]
async fn expire_unpaid_cancels_only_orders_past_their_payment_window() {
    let world = World::new();
    let sale = world.open_sale(5, 1).await;
    let early = created_order(&world, &sale, 1).await;
    world.clock.advance(Duration::from_secs(10 * 60));
    let late = created_order(&world, &sale, 2).await;
    let paid = created_order(&world, &sale, 3).await;
    world.orders.pay(&customer(3), paid).await.expect("paid in time");
    assert_eq!(world.stock_left(sale.id).await, 2);

    world.clock.advance(PAYMENT_TIMEOUT - Duration::from_secs(10 * 60) - Duration::from_millis(1));
    assert_eq!(world.orders.expire_unpaid(100).await.expect("sweep"), 0, "a millisecond before the first window");

    world.clock.advance(Duration::from_millis(1));
    assert_eq!(world.orders.expire_unpaid(100).await.expect("sweep"), 1, "the first window closes");
    assert_eq!(world.order(1, early).await.status, OrderStatus::Cancelled);
    assert_eq!(world.order(2, late).await.status, OrderStatus::Created, "its window is still open");
    assert_eq!(world.stock_left(sale.id).await, 3, "the expired unit is back on sale");
    assert_eq!(world.orders.expire_unpaid(100).await.expect("sweep"), 0, "a repeat cancels nothing more");

    world.clock.advance(Duration::from_secs(10 * 60));
    assert_eq!(world.orders.expire_unpaid(100).await.expect("sweep"), 1);
    assert_eq!(world.order(2, late).await.status, OrderStatus::Cancelled);
    assert_eq!(world.order(3, paid).await.status, OrderStatus::Paid, "a paid order never expires");
    assert_eq!(world.stock_left(sale.id).await, 4);
}

#[tokio::test]
async fn expire_unpaid_takes_at_most_its_limit_per_sweep() {
    let world = World::new();
    let sale = world.open_sale(5, 1).await;
    for user in 1..=3 {
        created_order(&world, &sale, user).await;
    }
    world.clock.advance(PAYMENT_TIMEOUT);
    assert_eq!(world.orders.expire_unpaid(2).await.expect("sweep"), 2);
    assert_eq!(world.orders.expire_unpaid(2).await.expect("sweep"), 1);
    assert_eq!(world.stock_left(sale.id).await, 5);
}

#[tokio::test]
async fn the_buyer_pays_once_inside_the_window_and_never_after_it() {
    let world = World::new();
    let sale = world.open_sale(5, 1).await;
    let on_time = created_order(&world, &sale, 1).await;
    let too_late = created_order(&world, &sale, 2).await;

    world.clock.advance(Duration::from_secs(60));
    let paid = world.orders.pay(&customer(1), on_time).await.expect("paid");
    assert_eq!((paid.status, paid.pay_by), (OrderStatus::Paid, None));
    assert_eq!(paid.updated_at, world.clock.now(), "stamped by the clock");
    let again = world.orders.pay(&customer(1), on_time).await;
    assert_eq!(again, Err(OrderError::IllegalTransition { from: OrderStatus::Paid, event: OrderEvent::Pay }));

    world.clock.advance(PAYMENT_TIMEOUT);
    assert_eq!(world.orders.pay(&customer(2), too_late).await, Err(OrderError::PaymentWindowClosed));
    assert_eq!(world.order(2, too_late).await.status, OrderStatus::Created, "the sweeper cancels it, not pay");
}

#[tokio::test]
async fn illegal_transitions_are_refused_by_name() {
    let world = World::new();
    let sale = world.open_sale(5, 1).await;
    let pending = world.place(1, &sale, 1).await.expect("accepted");
    let refused = world.orders.pay(&customer(1), pending).await;
    assert_eq!(refused, Err(OrderError::IllegalTransition { from: OrderStatus::Pending, event: OrderEvent::Pay }));
    world.consume().await;

    let paid = created_order(&world, &sale, 2).await;
    world.orders.pay(&customer(2), paid).await.expect("paid");
    let refused = world.orders.cancel(&customer(2), paid).await;
    assert_eq!(refused, Err(OrderError::IllegalTransition { from: OrderStatus::Paid, event: OrderEvent::Cancel }));

    world.orders.cancel(&customer(1), pending).await.expect("cancelled");
    let refused = world.orders.pay(&customer(1), pending).await;
    let cancelled = OrderStatus::Cancelled;
    assert_eq!(refused, Err(OrderError::IllegalTransition { from: cancelled, event: OrderEvent::Pay }));
    let refused = world.orders.cancel(&customer(1), pending).await;
    assert_eq!(refused, Err(OrderError::IllegalTransition { from: cancelled, event: OrderEvent::Cancel }));
    assert_eq!(world.stock_left(sale.id).await, 4, "one cancel, one unit back");
}

#[tokio::test]
async fn someone_elses_order_reads_as_not_found() {
    let world = World::new();
    let sale = world.open_sale(5, 1).await;
    let id = created_order(&world, &sale, 1).await;
    for stranger in [customer(2), merchant(MERCHANT + 1)] {
        assert_eq!(world.orders.get(&stranger, id).await, Err(OrderError::NotFound), "{stranger:?}");
        assert_eq!(world.orders.pay(&stranger, id).await, Err(OrderError::NotFound), "{stranger:?}");
        assert_eq!(world.orders.cancel(&stranger, id).await, Err(OrderError::NotFound), "{stranger:?}");
    }
    assert_eq!(world.orders.get(&merchant(MERCHANT), id).await.map(|order| order.id), Ok(id), "the seller");
    assert_eq!(world.orders.get(&admin(), id).await.map(|order| order.id), Ok(id));
}

#[tokio::test]
async fn only_the_buyer_pays_and_only_the_buyer_or_an_admin_cancels() {
    let world = World::new();
    let sale = world.open_sale(5, 1).await;
    let id = created_order(&world, &sale, 1).await;
    let seller = merchant(MERCHANT);
    assert!(matches!(world.orders.pay(&seller, id).await, Err(OrderError::Forbidden(_))));
    assert!(matches!(world.orders.pay(&admin(), id).await, Err(OrderError::Forbidden(_))));
    assert!(matches!(world.orders.cancel(&seller, id).await, Err(OrderError::Forbidden(_))));
    let cancelled = world.orders.cancel(&admin(), id).await.expect("an admin cancels");
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
}

#[tokio::test]
async fn a_give_back_the_ledger_missed_is_retried_by_the_sweeper_after_the_grace() {
    let world = World::new();
    let sale = world.open_sale(1, 1).await;
    let id = created_order(&world, &sale, 1).await;
    world.ledger.fail_restores(true);
    world.orders.cancel(&customer(1), id).await.expect("the cancel stands");
    assert_eq!(world.stock_left(sale.id).await, 0, "the ledger missed the give-back");
    world.ledger.fail_restores(false);

    assert_eq!(world.orders.retry_give_backs(10).await.expect("sweep"), 0, "the cancel's own try may still run");
    world.clock.advance(Duration::from_secs(5));
    assert_eq!(world.orders.retry_give_backs(10).await.expect("sweep"), 1);
    assert_eq!(world.stock_left(sale.id).await, 1);
    assert_eq!(world.orders.retry_give_backs(10).await.expect("sweep"), 0, "settled once");
    world.place(2, &sale, 1).await.expect("the unit sells again");
}

#[tokio::test]
async fn a_redelivered_request_writes_no_second_order() {
    let world = World::new();
    let sale = world.open_sale(5, 2).await;
    let id = created_order(&world, &sale, 1).await;
    let request = world.queue.appended().remove(0);
    world.queue.redeliver(request);
    let consumed = world.consume().await;
    assert_eq!((consumed.handled, consumed.failed), (1, 0));
    assert_eq!(world.order_store.count(), 1);
    assert_eq!(world.order_store.placed_events(), vec![id], "one OrderPlaced: the buyer is notified once");
    assert_eq!(world.order_store.sale_holdings(sale.id).await.expect("holdings").sold, 1);
}

#[tokio::test]
async fn each_actor_lists_its_own_orders_newest_first() {
    let world = World::new();
    let sale = world.open_sale(5, 2).await;
    let first = created_order(&world, &sale, 1).await;
    let other = created_order(&world, &sale, 2).await;
    let second = created_order(&world, &sale, 1).await;
    let ids = |page: surge_domain::order::OrderPage| page.items.into_iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!(ids(world.orders.list(&customer(1), None, 10).await.expect("list")), vec![second, first]);
    assert_eq!(ids(world.orders.list(&admin(), None, 10).await.expect("list")), vec![second, other, first]);
    assert_eq!(ids(world.orders.list(&merchant(MERCHANT + 1), None, 10).await.expect("list")), vec![]);
}
