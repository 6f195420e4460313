//! The relational store contract: what every store adapter promises through
//! the catalog, sale, order, switch and config ports. Each case is written
//! once, generic over the backend, and `contract!` runs it against SQLite (in
//! a temp dir) and against PostgreSQL (a fresh database per case, at
//! 127.0.0.1:5432 or `SURGE_TEST_PG_URL`), as `<case>::sqlite` and
//! `<case>::postgres`. What only a shared database can show (nodes racing)
//! follows at the end, PostgreSQL only.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use surge_domain::catalog::{CatalogStore, NewProduct, ProductName, ProductPatch, Sku, Stock};
use surge_domain::flashsale::{FlashSale, OrderRequested, Quantity, SaleStore};
use surge_domain::order::{CreatedOrders, Order, OrderScope, OrderStatus, OrderStore, SaleHoldings, SaleTally};
use surge_domain::{Cents, IdempotencyKey, MerchantId, OrderId, ProductId, SaleId, StoreError, UserId};
use time::{Duration, OffsetDateTime};

use crate::postgres::PgStore;
use crate::rows::{from_unix_ms, unix_ms};
use crate::sqlite::{SqliteConfig, SqliteStore};
use crate::testing::{TestDatabase, order_requested};
use surge_domain::runtime_config::{ConfigStore, StoredSwitch, SwitchStore};

/// Every port a relational adapter implements, and the store as a whole.
use crate::RelationalStore as Store;

/// Where a case's data lives. Each `open` is another handle on the same data:
/// a restart, or (on PostgreSQL) another node.
trait Backend {
    type Store: Store;
    async fn open(&self) -> Self::Store;
}

struct SqliteBackend(tempfile::TempDir);

impl SqliteBackend {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("tempdir"))
    }
}

impl Backend for SqliteBackend {
    type Store = SqliteStore;

    async fn open(&self) -> SqliteStore {
        SqliteStore::open(&SqliteConfig::in_dir(self.0.path())).await.expect("open sqlite")
    }
}

struct PgBackend(TestDatabase);

impl PgBackend {
    async fn new() -> Self {
        Self(TestDatabase::create().await)
    }
}

impl Backend for PgBackend {
    type Store = PgStore;

    async fn open(&self) -> PgStore {
        PgStore::open(&self.0.config()).await.expect("open postgres")
    }
}

/// One test module per case, with one test per adapter.
macro_rules! contract {
    ($($case:ident),+ $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn sqlite() {
                super::$case(&super::SqliteBackend::new()).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$case(&super::PgBackend::new().await).await;
            }
        }
    )+};
}

mod callbacks;
mod fulfilment;
mod inventory;
mod ledger;
mod outbox;
mod payouts;
mod tracking;

contract!(
    a_product_reads_back_as_it_was_inserted,
    a_taken_sku_or_idempotency_key_is_a_duplicate,
    a_product_update_changes_only_what_it_names,
    products_list_in_pages_by_id_and_by_merchant,
    a_sale_reads_back_and_lists_until_it_ends,
    a_ledger_rebuild_is_recorded_and_never_moves_back,
    a_sale_tally_counts_sold_owed_and_which_orders_are_written,
    a_redelivered_batch_creates_nothing_twice,
    requests_past_a_bound_become_failed_orders_never_oversold_ones,
    a_second_order_under_one_idempotency_key_is_refused_not_lost_silently,
    a_buyer_row_never_starts_above_the_limit,
    a_transition_moves_only_from_the_expected_state_and_gives_stock_back,
    unpaid_expired_finds_created_orders_past_their_window,
    keyed_orders_are_every_key_that_made_an_order_of_the_sale,
    orders_list_newest_first_per_customer_and_merchant,
    switches_survive_a_reopen,
    config_documents_survive_a_reopen,
    max_id_is_the_largest_minted_id_in_any_table,
);

// ---- builders --------------------------------------------------------------

fn new_product(merchant: i64, sku: &str) -> NewProduct {
    NewProduct {
        merchant_id: MerchantId::new(merchant),
        sku: Sku::from_trusted(sku.to_owned()),
        name: ProductName::from_trusted(format!("product {sku}")),
        price_cents: Cents::from_trusted(100),
        stock: Stock::from_trusted(5),
    }
}

/// A time the stores keep exactly (they keep milliseconds).
fn at_ms(ms: i64) -> OffsetDateTime {
    from_unix_ms(ms)
}

fn now_ms() -> OffsetDateTime {
    at_ms(unix_ms(OffsetDateTime::now_utc()))
}

/// Product 1 of merchant 1 and sale 10 of it, open for an hour.
async fn with_sale<S: Store>(store: &S, stock: i64, per_user_limit: u32) -> FlashSale {
    CatalogStore::insert(store, ProductId::new(1), &new_product(1, "S"), None, now_ms()).await.expect("product");
    // Enough for this sale and one more of the same size.
    store.set_stock(ProductId::new(1), Stock::from_trusted(2 * stock), now_ms()).await.expect("stock");
    let sale = FlashSale {
        id: SaleId::new(10),
        product_id: ProductId::new(1),
        merchant_id: MerchantId::new(1),
        stock,
        price_cents: Cents::from_trusted(1),
        starts_at: now_ms(),
        ends_at: now_ms() + Duration::hours(1),
        per_user_limit,
    };
    assert!(SaleStore::insert(store, &sale, now_ms()).await.expect("sale"), "the product holds the sale's stock");
    sale
}

/// A test's key, which the tests write well-formed.
fn key(raw: &str) -> IdempotencyKey {
    IdempotencyKey::parse(raw).expect("a well-formed key")
}

/// One unit of sale 10 for `user`.
fn request(id: i64, user: i64) -> OrderRequested {
    order_requested(id, 10, user)
}

fn ids(orders: &[surge_domain::order::Order]) -> Vec<i64> {
    orders.iter().map(|o| o.id.get()).collect()
}

async fn status_of<S: Store>(store: &S, id: i64) -> OrderStatus {
    OrderStore::get(store, OrderId::new(id)).await.expect("get").expect("written").status
}

// ---- catalog ---------------------------------------------------------------

async fn a_product_reads_back_as_it_was_inserted<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let now = now_ms();
    let inserted =
        CatalogStore::insert(&store, ProductId::new(7), &new_product(3, "S-1"), None, now).await.expect("insert");
    assert_eq!(inserted.id, ProductId::new(7));
    assert_eq!(inserted.merchant_id, MerchantId::new(3));
    assert_eq!(inserted.sku.as_str(), "S-1");
    assert_eq!(inserted.price_cents, Cents::from_trusted(100));
    assert_eq!(inserted.stock.get(), 5);
    assert_eq!(inserted.updated_at, now);
    let read = CatalogStore::get(&store, ProductId::new(7)).await.expect("get").expect("found");
    assert_eq!(*read, inserted);
    assert_eq!(CatalogStore::get(&store, ProductId::new(8)).await.expect("get missing"), None);
    store.ping().await.expect("ping");
}

async fn a_taken_sku_or_idempotency_key_is_a_duplicate<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let now = now_ms();
    let first = CatalogStore::insert(&store, ProductId::new(1), &new_product(1, "S"), Some("k"), now).await;
    let first = first.expect("first");
    let same_sku = CatalogStore::insert(&store, ProductId::new(2), &new_product(1, "S"), None, now).await;
    assert_eq!(same_sku, Err(StoreError::Duplicate("sku")));
    let same_key = CatalogStore::insert(&store, ProductId::new(3), &new_product(1, "T"), Some("k"), now).await;
    assert_eq!(same_key, Err(StoreError::Duplicate("idempotency_key")));
    // Both are per merchant.
    CatalogStore::insert(&store, ProductId::new(4), &new_product(2, "S"), Some("k"), now)
        .await
        .expect("other merchant");

    assert_eq!(store.find_by_idempotency_key(MerchantId::new(1), "k").await.expect("find"), Some(first));
    assert_eq!(store.find_by_idempotency_key(MerchantId::new(1), "other").await.expect("find"), None);
    assert_eq!(store.find_by_idempotency_key(MerchantId::new(4), "k").await.expect("find"), None);
}

async fn a_product_update_changes_only_what_it_names<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let (created, later, latest) = (at_ms(1_000), at_ms(2_000), at_ms(3_000));
    let id = ProductId::new(1);
    let product = CatalogStore::insert(&store, id, &new_product(1, "S"), None, created).await.expect("insert");

    let renamed = ProductPatch { name: Some(ProductName::from_trusted("renamed".into())), price_cents: None };
    let updated = CatalogStore::update(&store, id, &renamed, later).await.expect("update").expect("found");
    assert_eq!(updated.name.as_str(), "renamed");
    assert_eq!(updated.price_cents, product.price_cents);
    assert_eq!(updated.updated_at, later);

    let repriced = ProductPatch { name: None, price_cents: Some(Cents::from_trusted(250)) };
    let updated = CatalogStore::update(&store, id, &repriced, latest).await.expect("update").expect("found");
    assert_eq!((updated.name.as_str(), updated.price_cents), ("renamed", Cents::from_trusted(250)));

    let restocked = store.set_stock(id, Stock::from_trusted(42), latest).await.expect("set stock").expect("found");
    assert_eq!(restocked.stock.get(), 42);
    assert_eq!(restocked.name.as_str(), "renamed");
    assert_eq!(*CatalogStore::get(&store, id).await.expect("get").expect("found"), restocked);

    let missing = ProductId::new(2);
    assert_eq!(CatalogStore::update(&store, missing, &repriced, latest).await.expect("update missing"), None);
    assert_eq!(store.set_stock(missing, Stock::from_trusted(1), latest).await.expect("set stock missing"), None);
}

async fn products_list_in_pages_by_id_and_by_merchant<B: Backend>(backend: &B) {
    let store = backend.open().await;
    for id in 1..=5 {
        let merchant = if id % 2 == 0 { 2 } else { 1 };
        let new = new_product(merchant, &format!("S{id}"));
        CatalogStore::insert(&store, ProductId::new(id), &new, None, now_ms()).await.expect("insert");
    }
    let page_ids =
        |page: &surge_domain::catalog::ProductPage| page.items.iter().map(|p| p.id.get()).collect::<Vec<_>>();

    let first = CatalogStore::list(&store, None, None, 2).await.expect("list");
    assert_eq!((page_ids(&first), first.next_after), (vec![1, 2], Some(ProductId::new(2))));
    let second = CatalogStore::list(&store, None, first.next_after, 2).await.expect("list");
    assert_eq!((page_ids(&second), second.next_after), (vec![3, 4], Some(ProductId::new(4))));
    let last = CatalogStore::list(&store, None, second.next_after, 2).await.expect("list");
    assert_eq!((page_ids(&last), last.next_after), (vec![5], None));

    let merchant = CatalogStore::list(&store, Some(MerchantId::new(1)), None, 10).await.expect("list");
    assert_eq!((page_ids(&merchant), merchant.next_after), (vec![1, 3, 5], None));
    let exact = CatalogStore::list(&store, Some(MerchantId::new(2)), None, 2).await.expect("list");
    assert_eq!((page_ids(&exact), exact.next_after), (vec![2, 4], None), "a full last page says no more follow");
}

// ---- sales -----------------------------------------------------------------

async fn a_sale_reads_back_and_lists_until_it_ends<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let live = with_sale(&store, 3, 2).await;
    let ended = FlashSale { id: SaleId::new(11), starts_at: at_ms(1_000), ends_at: at_ms(2_000), ..live.clone() };
    assert!(SaleStore::insert(&store, &ended, now_ms()).await.expect("insert ended sale"));

    assert_eq!(SaleStore::get(&store, live.id).await.expect("get"), Some(live.clone()));
    assert_eq!(SaleStore::get(&store, ended.id).await.expect("get"), Some(ended.clone()));
    assert_eq!(SaleStore::get(&store, SaleId::new(12)).await.expect("get missing"), None);

    assert_eq!(store.list_unended(now_ms()).await.expect("list"), vec![live.clone()]);
    assert_eq!(store.list_unended(at_ms(1_999)).await.expect("list"), vec![live.clone(), ended]);
    assert_eq!(store.list_unended(live.ends_at).await.expect("list"), vec![], "a sale ends at its end");
}

async fn a_ledger_rebuild_is_recorded_and_never_moves_back<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let sale = with_sale(&store, 3, 2).await;
    assert_eq!(store.ledger_rebuilt_ms(sale.id).await.expect("read"), None, "never rebuilt");
    store.record_ledger_rebuilt(sale.id, 5_000).await.expect("record");
    assert_eq!(store.ledger_rebuilt_ms(sale.id).await.expect("read"), Some(5_000));
    // A node with a slower clock records an earlier time: the later stays.
    store.record_ledger_rebuilt(sale.id, 4_000).await.expect("record");
    assert_eq!(store.ledger_rebuilt_ms(sale.id).await.expect("read"), Some(5_000));
    store.record_ledger_rebuilt(sale.id, 6_000).await.expect("record");
    assert_eq!(store.ledger_rebuilt_ms(sale.id).await.expect("read"), Some(6_000));
    assert_eq!(store.ledger_rebuilt_ms(SaleId::new(404)).await.expect("read"), None, "no such sale");
}

// ---- orders ----------------------------------------------------------------

async fn a_redelivered_batch_creates_nothing_twice<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let sale = with_sale(&store, 5, 1).await;
    let batch = [request(1, 1), request(2, 2)];
    let (written_at, pay_by) = (at_ms(1_000), at_ms(2_000));
    let first = store.create_requested(&batch, pay_by, written_at).await.expect("first");
    assert_eq!(ids(&first.created), vec![1, 2]);
    for order in &first.created {
        assert_eq!(order.status, OrderStatus::Created);
        assert_eq!(order.pay_by, Some(pay_by));
        assert_eq!((order.created_at, order.updated_at), (written_at, written_at), "stamped with the time given");
        assert_eq!(OrderStore::get(&store, order.id).await.expect("get").as_ref(), Some(order));
    }
    let again = store.create_requested(&batch, pay_by, now_ms()).await.expect("again");
    assert_eq!(again, CreatedOrders::default(), "redelivery writes and refuses nothing");
    // A batch mixing old and new requests writes only the new ones.
    let mixed = store.create_requested(&[request(2, 2), request(3, 3)], pay_by, now_ms()).await.expect("mixed");
    assert_eq!(ids(&mixed.created), vec![3]);
    assert!(mixed.rejected.is_empty());
    let holdings = store.sale_holdings(sale.id).await.expect("holdings");
    assert_eq!(holdings.sold, 3);
    assert_eq!(holdings.per_user, vec![(UserId::new(1), 1), (UserId::new(2), 1), (UserId::new(3), 1)]);
    assert_eq!(store.create_requested(&[], pay_by, now_ms()).await.expect("empty"), CreatedOrders::default());
    // One event twice in a batch is one order.
    let twice = store.create_requested(&[request(4, 4), request(4, 4)], pay_by, now_ms()).await.expect("twice");
    assert_eq!((ids(&twice.created), twice.rejected), (vec![4], vec![]));
    assert_eq!(store.sale_holdings(sale.id).await.expect("holdings").sold, 4);
}

async fn requests_past_a_bound_become_failed_orders_never_oversold_ones<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let sale = with_sale(&store, 2, 1).await;
    // The ledger would never let these through; the store holds anyway.
    let batch = [request(1, 1), request(2, 1), request(3, 2), request(4, 3)];
    let outcome = store.create_requested(&batch, now_ms(), now_ms()).await.expect("create");
    assert!(outcome.rejected.is_empty());
    assert_eq!(ids(&outcome.created), vec![1, 3], "the second order of buyer 1 and the third unit fail");
    assert_eq!(outcome.failed, vec![OrderId::new(2), OrderId::new(4)], "and are reported");
    for failed in [2, 4] {
        let order = OrderStore::get(&store, OrderId::new(failed)).await.expect("get").expect("written");
        assert_eq!(order.status, OrderStatus::Failed);
        assert_eq!(order.pay_by, None, "a failed order has nothing to pay");
    }
    let holdings = store.sale_holdings(sale.id).await.expect("holdings");
    let held = vec![(UserId::new(1), 1), (UserId::new(2), 1)];
    assert_eq!(holdings, SaleHoldings { sold: 2, per_user: held, returned: vec![] });
    // Redelivered, the failed orders stay failed and nothing moves.
    assert_eq!(store.create_requested(&batch, now_ms(), now_ms()).await.expect("again"), CreatedOrders::default());
    assert_eq!(store.sale_holdings(sale.id).await.expect("holdings").sold, 2);
}

async fn a_second_order_under_one_idempotency_key_is_refused_not_lost_silently<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let sale = with_sale(&store, 5, 2).await;
    let keyed = |id| OrderRequested { idempotency_key: Some(key("k")), ..request(id, 1) };
    let pay_by = now_ms();
    assert_eq!(ids(&store.create_requested(&[keyed(1)], pay_by, now_ms()).await.expect("first").created), vec![1]);
    let outcome = store.create_requested(&[keyed(2), request(3, 2)], pay_by, now_ms()).await.expect("second");
    assert_eq!(outcome.rejected, vec![keyed(2)]);
    assert_eq!(ids(&outcome.created), vec![3]);
    assert_eq!(OrderStore::get(&store, OrderId::new(2)).await.expect("get"), None);
    // The same key to another buyer, or to the same buyer without it, is free.
    let other = OrderRequested { idempotency_key: Some(key("k")), ..request(4, 2) };
    let outcome = store.create_requested(&[other, request(5, 1)], pay_by, now_ms()).await.expect("third");
    assert_eq!((ids(&outcome.created), outcome.rejected), (vec![4, 5], vec![]));
    // Within one batch the first request with a key wins, whatever the ids.
    let late_key = |id| OrderRequested { idempotency_key: Some(key("z")), ..request(id, 3) };
    let outcome = store.create_requested(&[late_key(9), late_key(8)], pay_by, now_ms()).await.expect("fourth");
    assert_eq!((ids(&outcome.created), outcome.rejected), (vec![9], vec![late_key(8)]));
    assert_eq!(store.sale_holdings(sale.id).await.expect("holdings").sold, 5, "refused requests hold nothing");
}

async fn a_buyer_row_never_starts_above_the_limit<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let sale = with_sale(&store, 10, 2).await;
    let greedy =
        OrderRequested { quantity: Quantity::from_trusted(3), amount_cents: Cents::from_trusted(3), ..request(1, 1) };
    let outcome = store.create_requested(&[greedy], now_ms(), now_ms()).await.expect("create");
    assert_eq!(outcome, CreatedOrders { failed: vec![OrderId::new(1)], ..CreatedOrders::default() });
    assert_eq!(status_of(&store, 1).await, OrderStatus::Failed);
    assert_eq!(store.sale_holdings(sale.id).await.expect("holdings"), SaleHoldings::default());
    // Two units is the limit exactly.
    let two =
        OrderRequested { quantity: Quantity::from_trusted(2), amount_cents: Cents::from_trusted(2), ..request(2, 1) };
    assert_eq!(ids(&store.create_requested(&[two], now_ms(), now_ms()).await.expect("create").created), vec![2]);
    assert_eq!(store.sale_holdings(sale.id).await.expect("holdings").per_user, vec![(UserId::new(1), 2)]);
}

async fn a_transition_moves_only_from_the_expected_state_and_gives_stock_back<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let sale = with_sale(&store, 5, 1).await;
    store.create_requested(&[request(1, 1), request(2, 2)], now_ms(), now_ms()).await.expect("create");
    let (paid_at, cancelled_at) = (at_ms(5_000), at_ms(6_000));

    let paid = store.transition(OrderId::new(1), OrderStatus::Created, OrderStatus::Paid, paid_at).await;
    let paid = paid.expect("pay").expect("moved");
    assert_eq!((paid.status, paid.updated_at, paid.pay_by), (OrderStatus::Paid, paid_at, None));
    assert_eq!(OrderStore::get(&store, OrderId::new(1)).await.expect("get"), Some(paid));
    let twice = store.transition(OrderId::new(1), OrderStatus::Created, OrderStatus::Paid, paid_at).await;
    assert_eq!(twice.expect("pay again"), None, "someone moved it first");
    let missing = store.transition(OrderId::new(9), OrderStatus::Created, OrderStatus::Paid, paid_at).await;
    assert_eq!(missing.expect("pay missing"), None);

    // Paid to shipped still holds stock; cancelled gives it back.
    let shipped_at = at_ms(5_500);
    let shipped = store.transition(OrderId::new(1), OrderStatus::Paid, OrderStatus::Fulfilling, shipped_at).await;
    let shipped = shipped.expect("ship").expect("moved");
    assert_eq!((shipped.status, shipped.updated_at), (OrderStatus::Fulfilling, shipped_at));
    assert_eq!(status_of(&store, 1).await, OrderStatus::Fulfilling);
    let cancelled = store.transition(OrderId::new(2), OrderStatus::Created, OrderStatus::Cancelled, cancelled_at).await;
    assert_eq!(cancelled.expect("cancel").expect("moved").status, OrderStatus::Cancelled);
    let holdings = store.sale_holdings(sale.id).await.expect("holdings");
    let owed = vec![OrderId::new(2)];
    assert_eq!(holdings, SaleHoldings { sold: 1, per_user: vec![(UserId::new(1), 1)], returned: owed.clone() });

    // The cancel owes the ledger its units (the outbox) until that is done;
    // a pay or a ship owes nothing.
    let owed_ids = |orders: Vec<Order>| orders.into_iter().map(|order| order.id).collect::<Vec<_>>();
    let pending = store.give_backs_pending(cancelled_at, 10).await.expect("owed");
    assert_eq!(owed_ids(pending), owed);
    let too_new = store.give_backs_pending(at_ms(5_999), 10).await.expect("owed");
    assert_eq!(owed_ids(too_new), vec![], "changed after the cutoff");
    store.give_back_done(OrderId::new(2)).await.expect("done");
    assert_eq!(owed_ids(store.give_backs_pending(cancelled_at, 10).await.expect("owed")), vec![]);
    assert_eq!(store.sale_holdings(sale.id).await.expect("holdings").returned, vec![]);

    // The buyer whose order was cancelled may buy again.
    let outcome = store.create_requested(&[request(3, 2)], now_ms(), now_ms()).await.expect("buy again");
    assert_eq!(ids(&outcome.created), vec![3]);
    assert_eq!(store.sale_holdings(sale.id).await.expect("holdings").sold, 2);
}

async fn a_sale_tally_counts_sold_owed_and_which_orders_are_written<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let sale = with_sale(&store, 5, 2).await;
    store.create_requested(&[request(1, 1), request(2, 2), request(3, 3)], now_ms(), now_ms()).await.expect("create");
    let cancelled_at = at_ms(6_000);
    store
        .transition(OrderId::new(2), OrderStatus::Created, OrderStatus::Cancelled, cancelled_at)
        .await
        .expect("cancel");
    let among = [OrderId::new(1), OrderId::new(3), OrderId::new(404)];
    let tally = store.sale_tally(sale.id, &among).await.expect("tally");
    let mut written = tally.written.clone();
    written.sort_by_key(|order| order.get());
    assert_eq!(tally.sold, 2, "three written, one cancelled");
    assert_eq!(tally.owed, vec![(OrderId::new(2), 1)], "the cancel's give-back is owed");
    assert_eq!(written, vec![OrderId::new(1), OrderId::new(3)], "of those asked, the written ones");
    store.give_back_done(OrderId::new(2)).await.expect("done");
    assert_eq!(store.sale_tally(sale.id, &[]).await.expect("tally"), SaleTally { sold: 2, ..SaleTally::default() });
}

async fn unpaid_expired_finds_created_orders_past_their_window<B: Backend>(backend: &B) {
    let store = backend.open().await;
    with_sale(&store, 10, 5).await;
    let (early, late) = (at_ms(10_000), at_ms(20_000));
    store.create_requested(&[request(1, 1), request(2, 1)], late, now_ms()).await.expect("late batch");
    store.create_requested(&[request(3, 1), request(4, 1)], early, now_ms()).await.expect("early batch");
    store.transition(OrderId::new(4), OrderStatus::Created, OrderStatus::Paid, early).await.expect("pay");

    assert_eq!(ids(&store.unpaid_expired(at_ms(9_999), 10).await.expect("before")), Vec::<i64>::new());
    assert_eq!(ids(&store.unpaid_expired(early, 10).await.expect("at the window's close")), vec![3]);
    let all = store.unpaid_expired(late, 10).await.expect("after both");
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].id, OrderId::new(3), "oldest window first");
    assert_eq!(store.unpaid_expired(late, 2).await.expect("limited").len(), 2);
}

async fn keyed_orders_are_every_key_that_made_an_order_of_the_sale<B: Backend>(backend: &B) {
    let store = backend.open().await;
    let sale = with_sale(&store, 10, 5).await;
    let keyed = |id, user, key: &str| OrderRequested { idempotency_key: Some(self::key(key)), ..request(id, user) };
    let batch = [keyed(1, 1, "a"), keyed(2, 2, "a"), request(3, 1), keyed(4, 1, "b")];
    store.create_requested(&batch, now_ms(), now_ms()).await.expect("create");
    let mut keyed_orders = store.keyed_orders(sale.id).await.expect("keyed");
    keyed_orders.sort_by_key(|(_, _, id)| *id);
    assert_eq!(
        keyed_orders,
        vec![
            (UserId::new(1), "a".to_owned(), OrderId::new(1)),
            (UserId::new(2), "a".to_owned(), OrderId::new(2)),
            (UserId::new(1), "b".to_owned(), OrderId::new(4)),
        ]
    );
    assert_eq!(store.keyed_orders(SaleId::new(99)).await.expect("other sale"), vec![]);
    assert_eq!(store.sale_holdings(SaleId::new(99)).await.expect("no such sale"), SaleHoldings::default());
}

async fn orders_list_newest_first_per_customer_and_merchant<B: Backend>(backend: &B) {
    let store = backend.open().await;
    with_sale(&store, 10, 5).await;
    let other_merchant = |id, user| OrderRequested { merchant_id: MerchantId::new(2), ..request(id, user) };
    let batch = [request(1, 1), request(2, 2), request(3, 1), other_merchant(4, 1), request(5, 2)];
    store.create_requested(&batch, now_ms(), now_ms()).await.expect("create");

    let first = OrderStore::list(&store, OrderScope::All, None, 2).await.expect("list");
    assert_eq!((ids(&first.items), first.next_before), (vec![5, 4], Some(OrderId::new(4))));
    let second = OrderStore::list(&store, OrderScope::All, first.next_before, 2).await.expect("list");
    assert_eq!((ids(&second.items), second.next_before), (vec![3, 2], Some(OrderId::new(2))));
    let last = OrderStore::list(&store, OrderScope::All, second.next_before, 2).await.expect("list");
    assert_eq!((ids(&last.items), last.next_before), (vec![1], None));

    let customer = OrderStore::list(&store, OrderScope::Customer(UserId::new(1)), None, 10).await.expect("list");
    assert_eq!((ids(&customer.items), customer.next_before), (vec![4, 3, 1], None));
    let merchant = OrderStore::list(&store, OrderScope::Merchant(MerchantId::new(2)), None, 10).await.expect("list");
    assert_eq!(ids(&merchant.items), vec![4]);
    assert_eq!(OrderStore::get(&store, OrderId::new(6)).await.expect("get missing"), None);
}

// ---- operational settings --------------------------------------------------

async fn switches_survive_a_reopen<B: Backend>(backend: &B) {
    let store = backend.open().await;
    assert_eq!(store.load_switches().await.expect("load empty"), vec![]);
    let switch =
        |name: &str, enabled, reason: &str| StoredSwitch { name: name.to_owned(), enabled, reason: reason.to_owned() };
    store.save_switch(&switch("reviews", false, "db slow")).await.expect("save");
    store.save_switch(&switch("notify", false, "smtp down")).await.expect("save");
    store.save_switch(&switch("reviews", true, "recovered")).await.expect("overwrite");
    store.save_switch(&switch("search", false, "reindex")).await.expect("save");
    store.forget_switch("search").await.expect("forget");
    store.forget_switch("never-set").await.expect("forgetting an unknown switch is fine");
    store.close().await;

    let reopened = backend.open().await;
    assert_eq!(
        reopened.load_switches().await.expect("load"),
        vec![switch("notify", false, "smtp down"), switch("reviews", true, "recovered")],
        "by name, last write wins"
    );
}

async fn config_documents_survive_a_reopen<B: Backend>(backend: &B) {
    let store = backend.open().await;
    assert_eq!(store.load_config("limits").await.expect("load missing"), None);
    store.save_config("limits", r#"{"rps":10}"#).await.expect("save");
    store.save_config("limits", r#"{"rps":20}"#).await.expect("overwrite");
    store.save_config("flags", "{}").await.expect("save");
    store.close().await;

    let reopened = backend.open().await;
    assert_eq!(reopened.load_config("limits").await.expect("load"), Some(r#"{"rps":20}"#.to_owned()));
    assert_eq!(reopened.load_config("flags").await.expect("load"), Some("{}".to_owned()));
}

async fn max_id_is_the_largest_minted_id_in_any_table<B: Backend>(backend: &B) {
    let store = backend.open().await;
    assert_eq!(store.max_id().await.expect("empty"), 0);
    with_sale(&store, 5, 1).await;
    assert_eq!(store.max_id().await.expect("product and sale"), 10);
    store.create_requested(&[request(7, 1)], now_ms(), now_ms()).await.expect("create");
    assert_eq!(store.max_id().await.expect("below the sale"), 10);
    store.create_requested(&[request(42, 2)], now_ms(), now_ms()).await.expect("create");
    assert_eq!(store.max_id().await.expect("an order"), 42);
    CatalogStore::insert(&store, ProductId::new(50), &new_product(1, "T"), None, now_ms()).await.expect("product");
    assert_eq!(store.max_id().await.expect("a product"), 50);
}

// ---- PostgreSQL only: nodes racing -----------------------------------------

/// Two nodes' consumers write batches of one sale at once, round after round:
/// a redelivery racing the first delivery (overlapping, in opposite orders,
/// so that their locks cross) beside batches of other events. The sale never
/// oversells nor passes a buyer's bound, no request is written twice, and
/// every request ends CREATED or FAILED, reported as created by one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_never_oversell_nor_write_an_order_twice() {
    const ROUNDS: i64 = 4;
    const STOCK: i64 = 30;
    const REQUESTS: i64 = 80;
    let backend = PgBackend::new().await;
    let nodes = [Arc::new(backend.open().await), Arc::new(backend.open().await)];
    CatalogStore::insert(&*nodes[0], ProductId::new(1), &new_product(1, "S"), None, now_ms()).await.expect("product");
    nodes[0].set_stock(ProductId::new(1), Stock::from_trusted(STOCK * ROUNDS), now_ms()).await.expect("stock");

    for round in 0..ROUNDS {
        let sale = FlashSale {
            id: SaleId::new(100 + round),
            product_id: ProductId::new(1),
            merchant_id: MerchantId::new(1),
            stock: STOCK,
            price_cents: Cents::from_trusted(1),
            starts_at: now_ms(),
            ends_at: now_ms() + Duration::hours(1),
            per_user_limit: 2,
        };
        assert!(SaleStore::insert(&*nodes[0], &sale, now_ms()).await.expect("sale"));
        // Users 1..=20 send four requests each: the buyer bound is hit too,
        // and 40 units within it are more than the stock.
        let all: Vec<OrderRequested> =
            (1..=REQUESTS).map(|n| order_requested(round * 1_000 + n, sale.id.get(), 1 + (n - 1) % 20)).collect();
        let batches: [Vec<OrderRequested>; 4] =
            [all[..30].to_vec(), all[20..50].iter().rev().cloned().collect(), all[50..65].to_vec(), all[65..].to_vec()];
        let tasks: Vec<_> = batches
            .into_iter()
            .enumerate()
            .map(|(at, batch)| {
                let node = nodes[at % 2].clone();
                tokio::spawn(async move { node.create_requested(&batch, now_ms(), now_ms()).await })
            })
            .collect();
        let mut reported: HashSet<i64> = HashSet::new();
        for task in tasks {
            let outcome = task.await.expect("task").expect("the node writes its batch");
            assert!(outcome.rejected.is_empty(), "no request carries a key");
            for id in ids(&outcome.created) {
                assert!(reported.insert(id), "order {id} reported created twice");
            }
        }

        let mut created: HashSet<i64> = HashSet::new();
        let mut bought: HashMap<UserId, u32> = HashMap::new();
        for request in &all {
            let order =
                OrderStore::get(&*nodes[0], request.order_id).await.expect("get").expect("every request written");
            assert_eq!((order.flash_sale_id, order.user_id), (Some(sale.id), request.user_id));
            match order.status {
                OrderStatus::Created => {
                    created.insert(order.id.get());
                    *bought.entry(order.user_id).or_default() += order.quantity;
                }
                OrderStatus::Failed => {}
                other => panic!("order {} is {other:?}", order.id),
            }
        }
        assert_eq!(reported, created, "every CREATED order was reported created, and only those");

        let holdings = nodes[1].sale_holdings(sale.id).await.expect("holdings");
        assert_eq!(holdings.sold, STOCK, "the sale sells out, and no further");
        assert_eq!(holdings.sold, created.len() as i64);
        let mut expected: Vec<(UserId, u32)> = bought.into_iter().collect();
        expected.sort();
        assert_eq!(holdings.per_user, expected);
        assert!(holdings.per_user.iter().all(|(_, units)| *units <= sale.per_user_limit));
        let listed = OrderStore::list(&*nodes[0], OrderScope::All, None, 1_000).await.expect("list");
        let in_sale = listed.items.iter().filter(|o| o.flash_sale_id == Some(sale.id)).count();
        assert_eq!(in_sale as i64, REQUESTS, "no order written twice, none missing");
    }
    for node in nodes {
        node.close().await;
    }
}
