//! Flash-sale intake: accepted requests, keyed replays, limits, the window,
//! the sold-out race, and the ledger's recovery after a restart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use surge_domain::flashsale::{IntakeError, NewSale, Quantity, SaleError, SaleStatus, StockLedger};
use surge_domain::order::{OrderStatus, OrderStore};
use surge_domain::{Cents, Clock, ProductId, StoreError, UserId};

use crate::world::{PAYMENT_TIMEOUT, PRICE_CENTS, SALE_LENGTH, World, admin, customer, merchant};

#[tokio::test]
async fn an_accepted_order_reads_pending_until_the_consumer_writes_it() {
    let world = World::new();
    let sale = world.open_sale(5, 2).await;
    let accepted_at = world.clock.now();
    let id = world.place(1, &sale, 2).await.expect("accepted");

    let queued = world.queue.appended();
    assert_eq!(queued.len(), 1, "one request, durably queued");
    let request = &queued[0];
    assert_eq!((request.order_id, request.user_id, request.quantity.get()), (id, UserId::new(1), 2));
    assert_eq!(request.amount_cents.get(), 2 * PRICE_CENTS);
    assert_eq!(request.requested_at_ms, world.clock.now_ms(), "stamped by the clock");
    assert_eq!(world.order(1, id).await.status, OrderStatus::Pending);
    assert_eq!(world.stock_left(sale.id).await, 3, "deducted at intake");

    world.clock.advance(Duration::from_secs(2));
    let consumed = world.consume().await;
    assert_eq!((consumed.handled, consumed.failed), (1, 0));
    let order = world.order(1, id).await;
    assert_eq!(order.status, OrderStatus::Created);
    assert_eq!(order.created_at, accepted_at + Duration::from_secs(2), "written when consumed");
    assert_eq!(order.pay_by, Some(order.created_at + PAYMENT_TIMEOUT));
    assert_eq!(world.pending.len(), 0, "no longer pending once written");
    assert_eq!(world.order_store.placed_events(), vec![id], "one OrderPlaced (the buyer is notified from it)");
    assert_eq!(world.consume().await.handled, 0, "acknowledged: nothing comes again");
}

#[tokio::test]
async fn only_customers_order_and_only_from_a_sale_that_exists() {
    let world = World::new();
    let sale = world.open_sale(5, 1).await;
    let one = Quantity::from_trusted(1);
    for actor in [admin(), merchant(1)] {
        assert_eq!(world.sales.place_order(&actor, sale.id, one, None).await, Err(IntakeError::Forbidden));
    }
    let nowhere = surge_domain::SaleId::new(404);
    assert_eq!(world.sales.place_order(&customer(1), nowhere, one, None).await, Err(IntakeError::NotFound));
    assert!(world.queue.appended().is_empty());
    assert_eq!(world.stock_left(sale.id).await, 5);
}

#[tokio::test]
async fn only_an_admin_creates_a_sale_and_only_of_a_product_that_exists() {
    let world = World::new();
    let product = world.product("P").await;
    let new = |product_id| NewSale {
        product_id,
        stock: 3,
        price_cents: Cents::parse("price_cents", 100).expect("price"),
        starts_at: world.clock.now(),
        ends_at: world.clock.now() + SALE_LENGTH,
        per_user_limit: 1,
    };
    let refused = world.sales.create(&merchant(1), new(product.id)).await;
    assert!(matches!(refused, Err(SaleError::Forbidden(_))), "{refused:?}");
    let refused = world.sales.create(&admin(), new(ProductId::new(404))).await;
    assert!(matches!(refused, Err(SaleError::Invalid(_))), "{refused:?}");
    let sale = world.sales.create(&admin(), new(product.id)).await.expect("created");
    assert_eq!(sale.merchant_id, product.merchant_id, "the sale's orders know their tenant");
    assert_eq!(world.sales.view(sale.id).await.expect("view").status, SaleStatus::Active);
}

#[tokio::test]
async fn a_sale_takes_orders_only_inside_its_window() {
    let world = World::new();
    let sale = world.sale_starting_in(Duration::from_secs(600), 5, 5).await;
    assert_eq!(world.sales.view(sale.id).await.expect("view").status, SaleStatus::Scheduled);
    assert_eq!(world.place(1, &sale, 1).await, Err(IntakeError::NotActive));

    world.clock.advance(Duration::from_secs(600));
    assert_eq!(world.sales.view(sale.id).await.expect("view").status, SaleStatus::Active);
    world.place(1, &sale, 1).await.expect("open at its start");

    world.clock.advance(SALE_LENGTH);
    let view = world.sales.view(sale.id).await.expect("view");
    assert_eq!((view.status, view.stock_left), (SaleStatus::Ended, 4));
    assert_eq!(world.place(2, &sale, 1).await, Err(IntakeError::NotActive), "closed at its end");
}

#[tokio::test]
async fn a_replayed_key_gets_the_same_order_and_deducts_once() {
    let world = World::new();
    let sale = world.open_sale(5, 3).await;
    let first = world.place_keyed(1, &sale, "k").await.expect("accepted");
    let replay = world.place_keyed(1, &sale, "k").await.expect("replayed");
    assert_eq!(replay, first);
    assert_eq!(world.queue.appended().len(), 1, "one request queued");
    assert_eq!(world.stock_left(sale.id).await, 4, "one unit deducted");

    world.consume().await;
    assert_eq!(world.place_keyed(1, &sale, "k").await, Ok(first), "and after the order is written");
    let other_key = world.place_keyed(1, &sale, "k2").await.expect("another key");
    let other_buyer = world.place_keyed(2, &sale, "k").await.expect("another buyer");
    assert_eq!(HashSet::from([first, other_key, other_buyer]).len(), 3, "keys are per buyer");
}

#[tokio::test]
async fn a_replayed_key_gets_its_order_even_after_the_sale_sold_out() {
    let world = World::new();
    let sale = world.open_sale(1, 1).await;
    let first = world.place_keyed(4, &sale, "only").await.expect("accepted");
    assert_eq!(world.place(5, &sale, 1).await, Err(IntakeError::SoldOut));
    assert_eq!(world.sales.view(sale.id).await.expect("view").status, SaleStatus::SoldOut);
    assert_eq!(world.place_keyed(4, &sale, "only").await, Ok(first));
    assert_eq!(world.place_keyed(5, &sale, "only").await, Err(IntakeError::SoldOut), "not another buyer's");
}

#[tokio::test]
async fn a_buyer_never_passes_the_per_user_limit() {
    let world = World::new();
    let sale = world.open_sale(10, 2).await;
    assert_eq!(world.place(1, &sale, 3).await, Err(IntakeError::LimitExceeded), "three at once");
    world.place(1, &sale, 2).await.expect("two is the limit");
    assert_eq!(world.place(1, &sale, 1).await, Err(IntakeError::LimitExceeded), "a third later");
    world.place(2, &sale, 2).await.expect("another buyer has a limit of their own");
    assert_eq!(world.stock_left(sale.id).await, 6, "refusals deduct nothing");
}

#[tokio::test]
async fn a_failed_append_gives_the_unit_back_and_leaves_nothing_pending() {
    let world = World::new();
    let sale = world.open_sale(1, 1).await;
    world.queue.fail_next_append(StoreError::Unavailable("broker down".to_owned()));
    let failed = world.place(1, &sale, 1).await;
    assert!(matches!(failed, Err(IntakeError::Unavailable(StoreError::Unavailable(_)))), "{failed:?}");
    assert_eq!(world.stock_left(sale.id).await, 1, "the deduction is undone");
    assert_eq!(world.pending.len(), 0);
    world.place(1, &sale, 1).await.expect("the buyer's retry takes the unit");
}

/// Many buyers at once against a few units: exactly `STOCK` are accepted,
/// never more, and exactly those become orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_oversell_when_200_buyers_race_for_10_units() {
    const STOCK: i64 = 10;
    const BUYERS: i64 = 200;
    let world = Arc::new(World::new());
    let sale = world.open_sale(STOCK, 1).await;
    let tasks: Vec<_> = (1..=BUYERS)
        .map(|user| {
            let (world, sale) = (Arc::clone(&world), sale.clone());
            tokio::spawn(async move { world.place(user, &sale, 1).await })
        })
        .collect();
    let mut accepted = HashSet::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(order) => assert!(accepted.insert(order), "one order id handed out twice"),
            Err(refusal) => assert_eq!(refusal, IntakeError::SoldOut),
        }
    }
    assert_eq!(accepted.len() as i64, STOCK);
    assert_eq!(world.stock_left(sale.id).await, 0);

    let consumed = world.consume().await;
    assert_eq!((consumed.handled as i64, consumed.failed), (STOCK, 0), "every accepted order is written");
    let holdings = world.order_store.sale_holdings(sale.id).await.expect("holdings");
    assert_eq!(holdings.sold, STOCK);
}

/// The same race with every buyer sending its request twice at once under
/// one key: one order per buyer at most, both copies answered with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_oversell_and_one_order_per_key_when_buyers_race_and_resend() {
    const STOCK: i64 = 10;
    let world = Arc::new(World::new());
    let sale = world.open_sale(STOCK, 1).await;
    let tasks: Vec<_> = (1..=60)
        .flat_map(|user| [user, user])
        .map(|user| {
            let (world, sale) = (Arc::clone(&world), sale.clone());
            tokio::spawn(async move { (user, world.place_keyed(user, &sale, "once").await) })
        })
        .collect();
    let mut answers: HashMap<i64, Vec<Result<_, IntakeError>>> = HashMap::new();
    for task in tasks {
        let (user, answer) = task.await.expect("task");
        answers.entry(user).or_default().push(answer);
    }
    let winners: Vec<_> = answers.values().filter(|both| both.iter().any(Result::is_ok)).collect();
    assert_eq!(winners.len() as i64, STOCK, "exactly the stock is sold");
    for both in &winners {
        assert_eq!(both[0], both[1], "a resend gets the first request's order");
    }
    assert_eq!(world.queue.appended().len() as i64, STOCK, "one request queued per winner");
}

#[tokio::test]
async fn a_restarted_node_rebuilds_its_ledger_and_keys_from_the_orders() {
    let world = World::new();
    let sale = world.open_sale(5, 2).await;
    let keyed = world.place_keyed(1, &sale, "k").await.expect("accepted");
    world.place(1, &sale, 1).await.expect("accepted");
    world.place(2, &sale, 1).await.expect("accepted");
    world.consume().await;

    let restarted = world.restart();
    assert_eq!(restarted.sales.recover().await.expect("recovered"), 1, "one sale not ended");
    assert_eq!(restarted.stock_left(sale.id).await, 2, "stock less what the orders hold");
    assert_eq!(restarted.place(1, &sale, 1).await, Err(IntakeError::LimitExceeded), "buyer 1 holds 2");
    assert_eq!(restarted.place_keyed(1, &sale, "k").await, Ok(keyed), "the key still names its order");
    restarted.place(3, &sale, 2).await.expect("what is left still sells");
    assert_eq!(restarted.place(4, &sale, 1).await, Err(IntakeError::SoldOut));
}

#[tokio::test]
async fn an_ended_sale_is_forgotten_after_the_grace_and_keeps_its_last_stock() {
    let world = World::new();
    let sale = world.open_sale(5, 1).await;
    world.place(1, &sale, 1).await.expect("accepted");
    world.consume().await;
    let grace = Duration::from_secs(60);

    world.clock.advance(SALE_LENGTH);
    assert_eq!(world.sales.forget_ended(grace).await.expect("forget"), 0, "ended, but within the grace");
    assert_eq!(world.sales.served(), 1);
    world.clock.advance(grace);
    assert_eq!(world.sales.forget_ended(grace).await.expect("forget"), 1);
    assert_eq!(world.sales.served(), 0);
    assert_eq!(world.ledger.stock_left(sale.id).await.expect("ledger"), None, "its counters are gone");
    let view = world.sales.view(sale.id).await.expect("still readable");
    assert_eq!((view.status, view.stock_left), (SaleStatus::Ended, 4));
}

#[tokio::test]
async fn a_cancelled_unit_of_a_sold_out_sale_sells_again() {
    let world = World::new();
    let sale = world.open_sale(1, 1).await;
    let id = world.place(1, &sale, 1).await.expect("accepted");
    world.consume().await;
    assert_eq!(world.place(2, &sale, 1).await, Err(IntakeError::SoldOut));
    world.orders.cancel(&customer(1), id).await.expect("cancelled");
    assert_eq!(world.stock_left(sale.id).await, 1);
    world.place(2, &sale, 1).await.expect("the unit sells again");
    let written = world.order_store.get(id).await.expect("get").expect("written");
    assert_eq!(written.status, OrderStatus::Cancelled);
}
