//! The inventory's part of the store contract: a sale's allocation, a
//! checkout's all-or-nothing reservation, what paying and cancelling do to
//! a product's units, and the close of an ended sale. Each case runs on
//! SQLite and on PostgreSQL, as the rest of the contract.

use std::sync::Arc;

use surge_domain::catalog::{CatalogStore, Stock};
use surge_domain::flashsale::{FlashSale, Quantity, SaleStore};
use surge_domain::inventory::{ClosedSale, InventoryStore};
use surge_domain::order::{
    Address, CheckoutLine, CheckoutStore, NewCheckout, NewCheckoutOrder, Order, OrderKind, OrderStatus, OrderStore,
    Placed,
};
use surge_domain::{Cents, IdempotencyKey, MerchantId, OrderId, ProductId, SaleId, UserId};

use super::{Backend, PgBackend, SqliteBackend, Store, at_ms, new_product, now_ms, request};

contract!(
    a_sale_takes_its_stock_from_the_product_or_nothing,
    a_checkout_reserves_every_line_or_none_and_its_key_replays_it,
    paying_or_cancelling_a_checkout_order_moves_its_reservation,
    a_closed_sale_gives_back_what_it_did_not_sell_once_and_takes_no_late_order,
    concurrent_checkouts_never_reserve_more_than_the_stock,
    racing_checkouts_under_shared_keys_reserve_once_per_key_and_a_short_one_takes_nothing,
    a_checkout_that_cannot_be_written_fails_alone_and_its_batch_goes_on,
);

/// Product `id` of `merchant` (sku `S<id>`, price 100) with `stock` units.
pub(super) async fn product<S: Store>(store: &S, id: i64, merchant: i64, stock: i64) {
    CatalogStore::insert(store, ProductId::new(id), &new_product(merchant, &format!("S{id}")), None, now_ms())
        .await
        .expect("product");
    store.set_stock(ProductId::new(id), Stock::from_trusted(stock), now_ms()).await.expect("stock");
}

/// (stock, reserved) of a product.
async fn units<S: Store>(store: &S, id: i64) -> (i64, i64) {
    let product = CatalogStore::get(store, ProductId::new(id)).await.expect("get").expect("exists");
    (product.stock.get(), product.reserved.get())
}

fn sale(id: i64, stock: i64, ended: bool) -> FlashSale {
    let (starts_at, ends_at) =
        if ended { (at_ms(1_000), at_ms(2_000)) } else { (now_ms(), now_ms() + time::Duration::HOUR) };
    FlashSale {
        id: SaleId::new(id),
        product_id: ProductId::new(1),
        merchant_id: MerchantId::new(1),
        stock,
        price_cents: Cents::from_trusted(1),
        starts_at,
        ends_at,
        per_user_limit: 5,
    }
}

pub(super) fn address() -> Address {
    Address::parse("north", "Harbin", "1 Main St", "150000", "+86 1234").expect("address")
}

pub(super) fn line(product: i64, quantity: u32) -> CheckoutLine {
    CheckoutLine { product_id: ProductId::new(product), quantity: Quantity::from_trusted(quantity) }
}

pub(super) fn order(id: i64, merchant: i64, lines: Vec<CheckoutLine>) -> NewCheckoutOrder {
    NewCheckoutOrder { id: OrderId::new(id), merchant_id: MerchantId::new(merchant), lines }
}

/// Checkout `checkout` of `user`, at 1 s, payable until 9 s.
pub(super) async fn place<S: Store>(
    store: &S,
    checkout: i64,
    user: i64,
    orders: &[NewCheckoutOrder],
    key: Option<&str>,
) -> Placed {
    let new = NewCheckout {
        checkout_id: checkout,
        user: UserId::new(user),
        orders: orders.to_vec(),
        address: address(),
        idempotency_key: key.map(|key| IdempotencyKey::parse(key).expect("a well-formed key")),
        pay_by: at_ms(9_000),
        now: at_ms(1_000),
    };
    CheckoutStore::place(store, &new).await.expect("place")
}

/// The order of a one-order checkout placed as [`place`] does.
pub(super) async fn placed_order<S: Store>(store: &S, checkout: i64, user: i64, order: NewCheckoutOrder) -> Order {
    let Placed::Created(mut written) = place(store, checkout, user, &[order], None).await else { panic!("not placed") };
    written.remove(0)
}

async fn a_sale_takes_its_stock_from_the_product_or_nothing<B: Backend>(backend: &B) {
    let store = backend.open().await;
    product(&store, 1, 1, 5).await;
    assert!(!SaleStore::insert(&store, &sale(10, 6, false), now_ms()).await.expect("insert"), "6 of 5 units");
    assert_eq!(units(&store, 1).await, (5, 0), "a refused sale takes nothing");
    assert_eq!(SaleStore::get(&store, SaleId::new(10)).await.expect("get"), None, "and is not written");
    assert!(SaleStore::insert(&store, &sale(11, 4, false), now_ms()).await.expect("insert"));
    assert_eq!(units(&store, 1).await, (1, 4));
    assert!(!SaleStore::insert(&store, &sale(12, 2, false), now_ms()).await.expect("insert"), "1 unit left");
}

async fn a_checkout_reserves_every_line_or_none_and_its_key_replays_it<B: Backend>(backend: &B) {
    let store = backend.open().await;
    product(&store, 1, 1, 5).await;
    product(&store, 2, 2, 5).await;
    let short = [order(100, 1, vec![line(1, 2)]), order(101, 2, vec![line(2, 6)])];
    assert_eq!(place(&store, 1, 7, &short, Some("k")).await, Placed::InsufficientStock(ProductId::new(2)));
    assert_eq!((units(&store, 1).await, units(&store, 2).await), ((5, 0), (5, 0)), "nothing reserved");
    let unknown = [order(102, 1, vec![line(1, 1), line(99, 1)])];
    assert_eq!(place(&store, 2, 7, &unknown, None).await, Placed::UnknownProduct(ProductId::new(99)));
    assert_eq!(units(&store, 1).await, (5, 0));

    let cart = [order(103, 1, vec![line(1, 2)]), order(104, 2, vec![line(2, 3)])];
    let Placed::Created(orders) = place(&store, 3, 7, &cart, Some("k")).await else { panic!("not created") };
    assert_eq!(orders.iter().map(|o| o.id.get()).collect::<Vec<_>>(), vec![103, 104]);
    let first = &orders[0];
    assert_eq!(
        (first.kind, first.status, first.quantity, first.amount_cents),
        (OrderKind::Checkout, OrderStatus::Created, 2, 200)
    );
    assert_eq!((first.user_id, first.merchant_id, first.flash_sale_id), (UserId::new(7), MerchantId::new(1), None));
    assert_eq!(first.items.len(), 1);
    assert_eq!((first.items[0].sku.as_deref(), first.items[0].unit_price_cents), (Some("S1"), 100));
    assert_eq!(first.address, Some(address()));
    assert_eq!(first.pay_by, Some(at_ms(9_000)));
    assert_eq!(OrderStore::get(&store, first.id).await.expect("get").as_ref(), Some(first), "reads back whole");
    assert_eq!((units(&store, 1).await, units(&store, 2).await), ((3, 2), (2, 3)));

    let again = [order(105, 1, vec![line(1, 2)]), order(106, 2, vec![line(2, 3)])];
    assert_eq!(place(&store, 4, 7, &again, Some("k")).await, Placed::Replayed(orders), "the key names the first");
    assert_eq!((units(&store, 1).await, units(&store, 2).await), ((3, 2), (2, 3)), "nothing reserved twice");
    let theirs = [order(107, 1, vec![line(1, 1)])];
    let Placed::Created(other) = place(&store, 5, 8, &theirs, Some("k")).await else { panic!("another buyer's key") };
    assert_eq!((other.len(), units(&store, 1).await), (1, (2, 3)));
}

async fn paying_or_cancelling_a_checkout_order_moves_its_reservation<B: Backend>(backend: &B) {
    let store = backend.open().await;
    product(&store, 1, 1, 10).await;
    product(&store, 2, 1, 10).await;
    let cart = [order(100, 1, vec![line(2, 3), line(1, 2)])];
    assert!(matches!(place(&store, 1, 7, &cart, None).await, Placed::Created(_)));
    let cart = [order(101, 1, vec![line(1, 4)])];
    assert!(matches!(place(&store, 2, 7, &cart, None).await, Placed::Created(_)));
    assert_eq!((units(&store, 1).await, units(&store, 2).await), ((4, 6), (7, 3)));

    let paid = store.transition(OrderId::new(100), OrderStatus::Created, OrderStatus::Paid, now_ms()).await;
    assert!(paid.expect("pay").is_some());
    assert_eq!((units(&store, 1).await, units(&store, 2).await), ((4, 4), (7, 0)), "sold: out of reserved");
    let cancelled = store.transition(OrderId::new(101), OrderStatus::Created, OrderStatus::Cancelled, now_ms()).await;
    assert!(cancelled.expect("cancel").is_some());
    assert_eq!(units(&store, 1).await, (8, 0), "back to stock");
    let again = store.transition(OrderId::new(101), OrderStatus::Created, OrderStatus::Cancelled, now_ms()).await;
    assert_eq!(again.expect("again"), None);
    assert_eq!(units(&store, 1).await, (8, 0), "once");
}

async fn a_closed_sale_gives_back_what_it_did_not_sell_once_and_takes_no_late_order<B: Backend>(backend: &B) {
    let store = backend.open().await;
    product(&store, 1, 1, 10).await;
    assert!(SaleStore::insert(&store, &sale(10, 4, true), now_ms()).await.expect("insert"));
    let written = store.create_requested(&[request(1, 1), request(2, 2)], now_ms(), now_ms()).await.expect("create");
    assert_eq!(written.created.len(), 2);
    assert!(
        store
            .transition(OrderId::new(1), OrderStatus::Created, OrderStatus::Paid, now_ms())
            .await
            .expect("pay")
            .is_some()
    );
    assert_eq!(units(&store, 1).await, (6, 3), "the paid unit left the allocation");

    let closed = store.close_ended_sales(now_ms(), now_ms(), 10).await.expect("close");
    let expected = ClosedSale { sale: SaleId::new(10), product: ProductId::new(1), returned: 2 };
    assert_eq!(closed, vec![expected]);
    assert_eq!(units(&store, 1).await, (8, 1), "two unsold back; the unpaid order's unit stays reserved");
    assert_eq!(store.close_ended_sales(now_ms(), now_ms(), 10).await.expect("again"), vec![], "once");

    let late = store.create_requested(&[request(3, 3)], now_ms(), now_ms()).await.expect("late");
    assert_eq!(late.failed, vec![OrderId::new(3)], "a closed sale takes no order");
    assert_eq!(units(&store, 1).await, (8, 1));
    let cancel = store.transition(OrderId::new(2), OrderStatus::Created, OrderStatus::Cancelled, now_ms()).await;
    assert!(cancel.expect("cancel").is_some());
    assert_eq!(units(&store, 1).await, (9, 0), "past a closed sale, a cancelled unit goes to the product");
    let owed = store.give_backs_pending(now_ms() + time::Duration::HOUR, 10).await.expect("owed");
    assert!(owed.is_empty(), "and the ledger, which forgot the sale, is owed nothing");
}

async fn concurrent_checkouts_never_reserve_more_than_the_stock<B: Backend>(backend: &B) {
    const STOCK: i64 = 10;
    let nodes = [Arc::new(backend.open().await), Arc::new(backend.open().await)];
    product(&*nodes[0], 1, 1, STOCK).await;
    product(&*nodes[0], 2, 1, 1_000).await;
    let tasks: Vec<_> = (0..40_i64)
        .map(|i| {
            let node = Arc::clone(&nodes[(i % 2) as usize]);
            // Two products per cart, in either order: lock order must hold.
            let lines = if i % 2 == 0 { vec![line(1, 1), line(2, 1)] } else { vec![line(2, 1), line(1, 1)] };
            tokio::spawn(async move { place(&*node, i, i, &[order(1_000 + i, 1, lines)], None).await })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.expect("task") {
            Placed::Created(_) => created += 1,
            Placed::InsufficientStock(product) => assert_eq!(product, ProductId::new(1)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(created, STOCK);
    assert_eq!(units(&*nodes[0], 1).await, (0, STOCK));
    assert_eq!(units(&*nodes[0], 2).await, (1_000 - STOCK, STOCK), "the refused carts took nothing of product 2");
}

/// 40 checkouts at once of one unit each, for a product with 10: twenty
/// keys, each sent twice. However they are batched (SQLite commits many in
/// one transaction, each in a savepoint), ten keys get their orders, their
/// twins replay those orders, and the twenty others take nothing.
async fn racing_checkouts_under_shared_keys_reserve_once_per_key_and_a_short_one_takes_nothing<B: Backend>(
    backend: &B,
) {
    let store = backend.open().await;
    product(&store, 1, 1, 10).await;
    let attempts = (0..40).map(|i| {
        let store = &store;
        async move {
            let key = format!("k{}", i % 20);
            let cart = [order(100 + i, 1, vec![line(1, 1)])];
            (key.clone(), place(store, 1_000 + i, 7, &cart, Some(&key)).await)
        }
    });
    let outcomes = futures::future::join_all(attempts).await;
    let mut created = std::collections::HashMap::new();
    let (mut replayed, mut short) = (Vec::new(), 0);
    for (key, placed) in outcomes {
        match placed {
            Placed::Created(orders) => assert!(created.insert(key, orders).is_none(), "a key placed twice"),
            Placed::Replayed(orders) => replayed.push((key, orders)),
            Placed::InsufficientStock(_) => short += 1,
            Placed::UnknownProduct(_) => panic!("the product exists"),
        }
    }
    assert_eq!((created.len(), replayed.len(), short), (10, 10, 20));
    for (key, orders) in replayed {
        assert_eq!(created.get(&key), Some(&orders), "a twin replays its key's orders");
    }
    assert_eq!(units(&store, 1).await, (0, 10), "ten units reserved, none twice");
}

/// Checkouts racing into one batch, one of which can't be written (its
/// order's id is taken): that one fails and leaves nothing, every other is
/// placed, whatever batch it landed in.
async fn a_checkout_that_cannot_be_written_fails_alone_and_its_batch_goes_on<B: Backend>(backend: &B) {
    let store = backend.open().await;
    product(&store, 1, 1, 100).await;
    placed_order(&store, 1, 7, order(500, 1, vec![line(1, 1)])).await;
    let attempts = (0..30).map(|i| {
        let store = &store;
        async move {
            // Checkout 15 reuses order 500's id.
            let id = if i == 15 { 500 } else { 600 + i };
            let new = NewCheckout {
                checkout_id: 2_000 + i,
                user: UserId::new(8),
                orders: vec![order(id, 1, vec![line(1, 2)])],
                address: address(),
                idempotency_key: Some(IdempotencyKey::parse(&format!("k{i}")).expect("key")),
                pay_by: at_ms(9_000),
                now: at_ms(1_000),
            };
            (i, CheckoutStore::place(store, &new).await)
        }
    });
    let outcomes = futures::future::join_all(attempts).await;
    for (i, outcome) in outcomes {
        match (i, outcome) {
            (15, outcome) => assert!(outcome.is_err(), "an order id taken: {outcome:?}"),
            (_, Ok(Placed::Created(orders))) => assert_eq!(orders.len(), 1),
            (i, outcome) => panic!("checkout {i} should have been placed: {outcome:?}"),
        }
    }
    // The first order's unit and two of each of the 29 placed.
    assert_eq!(units(&store, 1).await, (100 - 1 - 58, 1 + 58));
    // The failed one's key was not kept: it may be placed again.
    let again = place(&store, 2_015, 8, &[order(615, 1, vec![line(1, 2)])], Some("k15")).await;
    assert!(matches!(again, Placed::Created(_)), "{again:?}");
}
