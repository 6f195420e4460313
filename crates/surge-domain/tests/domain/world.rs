//! One embedded node: the three services wired to in-memory ports and a
//! paused clock, with the steps the tests take, by name.

use std::sync::Arc;
use std::time::Duration;

use surge_domain::catalog::{Catalog, CreateProduct, Product, ProductName, Sku, Stock};
use surge_domain::flashsale::{FlashSale, FlashSalePorts, FlashSales, IntakeError, NewSale, Quantity};
use surge_domain::order::{Consumed, Order, Orders, StockKeeper};
use surge_domain::{Actor, Cents, Clock, IdGenerator, MerchantId, OrderId, SaleId, UserId};

use crate::clock::{self, ManualClock};
use crate::memory::{MemCatalog, MemKeys, MemLedger, MemOrders, MemPending, MemQueue, MemSales};

pub const PAYMENT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
pub const SALE_LENGTH: Duration = Duration::from_secs(60 * 60);
/// The merchant whose products the sales sell.
pub const MERCHANT: i64 = 7;
pub const PRICE_CENTS: i64 = 250;

pub fn customer(id: i64) -> Actor {
    Actor::Customer(UserId::new(id))
}

pub fn merchant(id: i64) -> Actor {
    Actor::Merchant(MerchantId::new(id))
}

pub fn admin() -> Actor {
    Actor::Admin("ops".to_owned())
}

/// What outlives a restart of the node: the stores, the queue, the clock.
#[derive(Clone)]
struct Durable {
    clock: Arc<ManualClock>,
    products: Arc<MemCatalog>,
    sale_store: Arc<MemSales>,
    order_store: Arc<MemOrders>,
    queue: Arc<MemQueue>,
    pending: Arc<MemPending>,
}

pub struct World {
    durable: Durable,
    pub clock: Arc<ManualClock>,
    pub products: Arc<MemCatalog>,
    pub order_store: Arc<MemOrders>,
    pub queue: Arc<MemQueue>,
    pub pending: Arc<MemPending>,
    /// In-process: lost when the node restarts.
    pub ledger: Arc<MemLedger>,
    pub catalog: Catalog,
    pub sales: Arc<FlashSales>,
    pub orders: Arc<Orders>,
}

impl World {
    pub fn new() -> Self {
        let sale_store = Arc::new(MemSales::default());
        Self::on(Durable {
            clock: Arc::new(clock::paused()),
            products: Arc::new(MemCatalog::default()),
            order_store: Arc::new(MemOrders::new(Arc::clone(&sale_store))),
            sale_store,
            queue: Arc::new(MemQueue::default()),
            pending: Arc::new(MemPending::default()),
        })
    }

    /// The same node after a restart: the stores and the queue kept, the
    /// ledger and the intake keys empty until `recover` rebuilds them.
    pub fn restart(&self) -> Self {
        Self::on(self.durable.clone())
    }

    fn on(durable: Durable) -> Self {
        let ids = Arc::new(IdGenerator::new(1).expect("node id in range"));
        let ledger = Arc::new(MemLedger::default());
        let ports = FlashSalePorts {
            sales: durable.sale_store.clone(),
            catalog: durable.products.clone(),
            ledger: ledger.clone(),
            queue: durable.queue.clone(),
            orders: durable.order_store.clone(),
            pending: durable.pending.clone(),
            keys: Arc::new(MemKeys::default()),
        };
        let sales = Arc::new(FlashSales::new(ports, Arc::clone(&ids), durable.clock.clone()));
        let orders = Arc::new(Orders::new(
            durable.order_store.clone(),
            durable.pending.clone(),
            Arc::clone(&sales) as Arc<dyn StockKeeper>,
            PAYMENT_TIMEOUT,
            durable.clock.clone(),
        ));
        Self {
            catalog: Catalog::new(durable.products.clone(), ids, durable.clock.clone()),
            clock: Arc::clone(&durable.clock),
            products: Arc::clone(&durable.products),
            order_store: Arc::clone(&durable.order_store),
            queue: Arc::clone(&durable.queue),
            pending: Arc::clone(&durable.pending),
            ledger,
            sales,
            orders,
            durable,
        }
    }

    pub async fn product(&self, sku: &str) -> Product {
        let request = CreateProduct {
            merchant_id: None,
            sku: Sku::parse(sku).expect("sku"),
            name: ProductName::parse("Tea").expect("name"),
            price_cents: Cents::parse("price_cents", PRICE_CENTS).expect("price"),
            stock: Stock::parse(100).expect("stock"),
        };
        self.catalog.create(&merchant(MERCHANT), request, None).await.expect("product created")
    }

    /// A sale of a new product, open from now for [`SALE_LENGTH`].
    pub async fn open_sale(&self, stock: i64, per_user_limit: u32) -> FlashSale {
        self.sale_starting_in(Duration::ZERO, stock, per_user_limit).await
    }

    pub async fn sale_starting_in(&self, wait: Duration, stock: i64, per_user_limit: u32) -> FlashSale {
        let product = self.product(&format!("S-{}", self.products.len())).await;
        let starts_at = self.clock.now() + wait;
        let new = NewSale {
            product_id: product.id,
            stock,
            price_cents: Cents::parse("price_cents", PRICE_CENTS).expect("price"),
            starts_at,
            ends_at: starts_at + SALE_LENGTH,
            per_user_limit,
        };
        self.sales.create(&admin(), new).await.expect("sale created")
    }

    pub async fn place(&self, user: i64, sale: &FlashSale, quantity: u32) -> Result<OrderId, IntakeError> {
        self.sales.place_order(&customer(user), sale.id, Quantity::from_trusted(quantity), None).await
    }

    pub async fn place_keyed(&self, user: i64, sale: &FlashSale, key: &str) -> Result<OrderId, IntakeError> {
        self.sales.place_order(&customer(user), sale.id, Quantity::from_trusted(1), Some(&key_of(key))).await
    }

    /// One consumer step over everything queued.
    pub async fn consume(&self) -> Consumed {
        self.orders.consume(&*self.queue, 1_000, Duration::ZERO).await.expect("consumed")
    }

    pub async fn stock_left(&self, sale: SaleId) -> i64 {
        self.sales.view(sale).await.expect("sale view").stock_left
    }

    pub async fn order(&self, user: i64, id: OrderId) -> Order {
        self.orders.get(&customer(user), id).await.expect("the buyer reads the order")
    }
}

/// A test's key, which the tests write well-formed.
pub fn key_of(raw: &str) -> surge_domain::IdempotencyKey {
    surge_domain::IdempotencyKey::parse(raw).expect("a well-formed key")
}
