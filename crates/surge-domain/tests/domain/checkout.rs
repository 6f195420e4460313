//! The checkout service: who may check out, how a cart splits into one
//! order per merchant, and how the store's answer becomes the outcome. The
//! store's own all-or-nothing reservation is proven against SQLite and
//! PostgreSQL in the store contract; here it is a scripted port.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use surge_domain::catalog::{CreateProduct, Product, ProductName, Sku, Stock};
use surge_domain::flashsale::{OrderRequested, Quantity, Reservation};
use surge_domain::order::{
    Address, Checkout, CheckoutError, CheckoutLine, CheckoutStore, Checkouts, NewCheckout, Order, Placed, StockKeeper,
};
use surge_domain::{
    Cents, Clock, IdGenerator, IdempotencyKey, InvalidInput, OrderId, ProductId, Rule, SaleId, StoreError, UserId,
};

use crate::world::{PAYMENT_TIMEOUT, World, customer, key_of, merchant};

/// Answers every checkout with `answer` and keeps what it was asked.
#[derive(Default)]
struct ScriptedStore {
    answer: Mutex<Option<Placed>>,
    asked: Mutex<Vec<NewCheckout>>,
}

#[async_trait]
impl CheckoutStore for ScriptedStore {
    async fn place(&self, checkout: &NewCheckout) -> Result<Placed, StoreError> {
        self.asked.lock().expect("lock").push(checkout.clone());
        let answer = self.answer.lock().expect("lock").clone();
        answer.ok_or_else(|| StoreError::Unavailable("no answer scripted".into()))
    }
}

/// Keeps which products' stock a service said moved.
#[derive(Default)]
pub struct MovedLog(Mutex<Vec<ProductId>>);

impl MovedLog {
    pub fn moved(&self) -> Vec<ProductId> {
        self.0.lock().expect("lock").clone()
    }
}

#[async_trait]
impl StockKeeper for MovedLog {
    async fn settled(&self, _written: &[Order]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn keys_written(&self, _requests: &[OrderRequested], _written: &[Order]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn released(&self, _sale: SaleId, _reservation: Reservation) -> Result<(), StoreError> {
        Ok(())
    }
    async fn products_moved(&self, products: &[ProductId]) {
        self.0.lock().expect("lock").extend_from_slice(products);
    }
    async fn stock_returned(&self, _: SaleId, _: OrderId, _: UserId, _: u32) -> Result<bool, StoreError> {
        Ok(false)
    }
}

struct Till {
    world: World,
    store: Arc<ScriptedStore>,
    moved: Arc<MovedLog>,
    checkouts: Checkouts,
}

impl Till {
    fn new() -> Self {
        let world = World::new();
        let (store, moved) = (Arc::new(ScriptedStore::default()), Arc::new(MovedLog::default()));
        let ids = Arc::new(IdGenerator::new(2).expect("node id in range"));
        let checkouts = Checkouts::new(
            world.products.clone(),
            store.clone(),
            moved.clone(),
            ids,
            world.clock.clone(),
            PAYMENT_TIMEOUT,
        );
        Self { world, store, moved, checkouts }
    }

    async fn product_of(&self, merchant_id: i64, sku: &str) -> Product {
        let request = CreateProduct {
            merchant_id: None,
            sku: Sku::parse(sku).expect("sku"),
            name: ProductName::parse("Tea").expect("name"),
            price_cents: Cents::parse("price_cents", 100).expect("price"),
            stock: Stock::parse(10).expect("stock"),
        };
        self.world.catalog.create(&merchant(merchant_id), request, None).await.expect("product")
    }

    fn answer(&self, placed: Placed) {
        *self.store.answer.lock().expect("lock") = Some(placed);
    }

    fn asked(&self) -> Vec<NewCheckout> {
        self.store.asked.lock().expect("lock").clone()
    }

    fn moved(&self) -> Vec<ProductId> {
        self.moved.moved()
    }
}

fn cart(products: &[&Product]) -> Checkout {
    let lines = products
        .iter()
        .map(|product| CheckoutLine { product_id: product.id, quantity: Quantity::from_trusted(2) })
        .collect();
    let address = Address::parse("north", "Harbin", "1 Main St", "150000", "+86 123").expect("address");
    Checkout::parse(lines, address).expect("a cart")
}

#[tokio::test]
async fn a_cart_splits_into_one_order_per_merchant_in_merchant_order_payable_until_the_timeout() {
    let till = Till::new();
    let (tea, cup, pot) =
        (till.product_of(9, "TEA").await, till.product_of(3, "CUP").await, till.product_of(9, "POT").await);
    till.answer(Placed::Created(vec![]));
    let key = key_of("cart-1");
    till.checkouts.place(&customer(5), &cart(&[&tea, &cup, &pot]), Some(&key)).await.expect("placed");

    let asked = till.asked();
    assert_eq!(asked.len(), 1);
    let new = &asked[0];
    assert_eq!(new.user, UserId::new(5));
    assert_eq!(new.idempotency_key.as_ref(), Some(&key));
    assert_eq!(new.now, till.world.clock.now());
    assert_eq!(new.pay_by, till.world.clock.now() + PAYMENT_TIMEOUT);
    let split: Vec<(i64, Vec<ProductId>)> = new
        .orders
        .iter()
        .map(|order| (order.merchant_id.get(), order.lines.iter().map(|line| line.product_id).collect()))
        .collect();
    assert_eq!(split, vec![(3, vec![cup.id]), (9, vec![tea.id, pot.id])], "merchant order, cart order within");
    assert_ne!(new.orders[0].id, new.orders[1].id, "an order id each");
    assert_eq!(till.moved(), vec![tea.id, cup.id, pot.id], "the cached stock of every line is told");
}

#[tokio::test]
async fn only_a_customer_checks_out_and_a_product_no_one_sells_reaches_no_store() {
    let till = Till::new();
    let tea = till.product_of(9, "TEA").await;
    till.answer(Placed::Created(vec![]));
    let refused = till.checkouts.place(&merchant(9), &cart(&[&tea]), None).await;
    assert_eq!(refused, Err(CheckoutError::Forbidden));

    let ghost = Product { id: ProductId::new(999_999), ..tea.clone() };
    let refused = till.checkouts.place(&customer(5), &cart(&[&tea, &ghost]), None).await;
    let named = InvalidInput::new(format!("product_id {}", ghost.id), Rule::NamesNo("product"));
    assert_eq!(refused, Err(CheckoutError::Invalid(named)));
    assert!(till.asked().is_empty(), "nothing was asked of the store");
    assert!(till.moved().is_empty());
}

#[tokio::test]
async fn the_stores_answer_is_the_outcome_and_only_a_new_checkout_moves_stock() {
    let till = Till::new();
    let tea = till.product_of(9, "TEA").await;
    let key: IdempotencyKey = key_of("again");

    till.answer(Placed::Replayed(vec![]));
    assert_eq!(till.checkouts.place(&customer(5), &cart(&[&tea]), Some(&key)).await, Ok(vec![]));
    till.answer(Placed::InsufficientStock(tea.id));
    let short = till.checkouts.place(&customer(5), &cart(&[&tea]), None).await;
    assert_eq!(short, Err(CheckoutError::InsufficientStock(tea.id)));
    till.answer(Placed::UnknownProduct(tea.id));
    let gone = till.checkouts.place(&customer(5), &cart(&[&tea]), None).await;
    assert!(matches!(gone, Err(CheckoutError::Invalid(InvalidInput { rule: Rule::NamesNo("product"), .. }))));
    assert!(till.moved().is_empty(), "a replay or a refusal moved nothing");
    assert_eq!(till.asked().len(), 3);
}
