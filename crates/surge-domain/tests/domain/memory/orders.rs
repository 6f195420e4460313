//! Orders, their sales' sold counts and their buyers' units, moved together
//! under one lock as the relational stores move them in one transaction:
//! a request past a bound is written `FAILED`, never oversold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use surge_domain::flashsale::OrderRequested;
use surge_domain::order::{
    CreatedOrders, Order, OrderKind, OrderPage, OrderScope, OrderStatus, OrderStore, SaleHoldings, SaleTally,
};
use surge_domain::outbox::{DomainEvent, EventRecord};
use surge_domain::{OrderId, SaleId, StoreError, UserId};
use time::OffsetDateTime;

use super::{MemSales, lock};

#[derive(Default)]
struct Book {
    orders: BTreeMap<OrderId, Order>,
    keys: HashMap<(SaleId, UserId, String), OrderId>,
    sold: HashMap<SaleId, i64>,
    bought: BTreeMap<(SaleId, UserId), u32>,
    /// Give-backs owed to the ledger.
    owed: BTreeSet<OrderId>,
    /// The outbox: events written with the changes they report.
    outbox: Vec<EventRecord>,
}

impl Book {
    /// Takes the request's units onto its sale and buyer if both bounds
    /// hold; whether it did.
    fn take_units(&mut self, request: &OrderRequested, bounds: Option<(i64, u32)>) -> bool {
        let Some((stock, per_user_limit)) = bounds else { return false };
        let sold = self.sold.get(&request.sale_id).copied().unwrap_or(0);
        let bought = self.bought.get(&(request.sale_id, request.user_id)).copied().unwrap_or(0);
        let quantity = request.quantity.get();
        if sold + i64::from(quantity) > stock || bought + quantity > per_user_limit {
            return false;
        }
        self.sold.insert(request.sale_id, sold + i64::from(quantity));
        self.bought.insert((request.sale_id, request.user_id), bought + quantity);
        true
    }

    fn give_units_back(&mut self, order: &Order) {
        let Some(sale) = order.flash_sale_id else { return };
        *self.sold.entry(sale).or_default() -= i64::from(order.quantity);
        let bought = self.bought.entry((sale, order.user_id)).or_default();
        *bought = bought.saturating_sub(order.quantity);
        self.owed.insert(order.id);
    }
}

pub struct MemOrders {
    book: Mutex<Book>,
    sales: Arc<MemSales>,
}

impl MemOrders {
    pub fn new(sales: Arc<MemSales>) -> Self {
        Self { book: Mutex::default(), sales }
    }

    pub fn count(&self) -> usize {
        lock(&self.book).orders.len()
    }

    /// The ids of the orders whose `OrderPlaced` is in the outbox, in order.
    pub fn placed_events(&self) -> Vec<OrderId> {
        let book = lock(&self.book);
        let placed = book.outbox.iter().filter_map(|record| match record.event {
            DomainEvent::OrderPlaced { order_id, .. } => Some(order_id),
            _ => None,
        });
        placed.collect()
    }
}

fn order_of(request: &OrderRequested, pay_by: OffsetDateTime, now: OffsetDateTime) -> Order {
    Order {
        id: request.order_id,
        user_id: request.user_id,
        merchant_id: request.merchant_id,
        product_id: request.product_id,
        flash_sale_id: Some(request.sale_id),
        quantity: request.quantity.get(),
        amount_cents: request.amount_cents.get(),
        status: OrderStatus::Created,
        kind: OrderKind::FlashSale,
        items: Order::pending(request).items,
        address: None,
        created_at: now,
        updated_at: now,
        pay_by: Some(pay_by),
    }
}

#[async_trait]
impl OrderStore for MemOrders {
    async fn create_requested(
        &self,
        requests: &[OrderRequested],
        pay_by: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<CreatedOrders, StoreError> {
        let mut book = lock(&self.book);
        let mut outcome = CreatedOrders::default();
        for request in requests {
            if book.orders.contains_key(&request.order_id) {
                continue; // redelivered
            }
            let key = request.idempotency_key.as_deref().map(|key| (request.sale_id, request.user_id, key.to_owned()));
            if key.as_ref().is_some_and(|key| book.keys.contains_key(key)) {
                outcome.rejected.push(request.clone());
                continue;
            }
            let mut order = order_of(request, pay_by, now);
            if book.take_units(request, self.sales.bounds(request.sale_id)) {
                book.outbox.push(EventRecord::new(DomainEvent::placed(&order), now.unix_timestamp() * 1000));
                outcome.created.push(order.clone());
            } else {
                (order.status, order.pay_by) = (OrderStatus::Failed, None);
                outcome.failed.push(order.id);
            }
            if let Some(key) = key {
                book.keys.insert(key, order.id);
            }
            book.orders.insert(order.id, order);
        }
        Ok(outcome)
    }

    async fn get(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
        Ok(lock(&self.book).orders.get(&id).cloned())
    }

    async fn list(&self, scope: OrderScope, before: Option<OrderId>, limit: u32) -> Result<OrderPage, StoreError> {
        let book = lock(&self.book);
        let in_scope = |order: &&Order| match scope {
            OrderScope::Customer(user) => order.user_id == user,
            OrderScope::Merchant(merchant) => order.merchant_id == merchant,
            OrderScope::All => true,
        };
        let mut items: Vec<Order> = book
            .orders
            .values()
            .rev()
            .filter(|order| before.is_none_or(|before| order.id < before))
            .filter(in_scope)
            .take(limit as usize + 1)
            .cloned()
            .collect();
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_before = if more { items.last().map(|order| order.id) } else { None };
        Ok(OrderPage { items, next_before })
    }

    async fn transition(
        &self,
        id: OrderId,
        from: OrderStatus,
        to: OrderStatus,
        now: OffsetDateTime,
    ) -> Result<Option<Order>, StoreError> {
        let mut book = lock(&self.book);
        let Some(order) = book.orders.get_mut(&id).filter(|order| order.status == from) else {
            return Ok(None);
        };
        order.status = to;
        order.updated_at = now;
        if to != OrderStatus::Created {
            order.pay_by = None;
        }
        let order = order.clone();
        if from.holds_stock() && !to.holds_stock() {
            book.give_units_back(&order);
        }
        Ok(Some(order))
    }

    async fn unpaid_expired(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<Order>, StoreError> {
        let book = lock(&self.book);
        let mut expired: Vec<Order> = book
            .orders
            .values()
            .filter(|order| order.status == OrderStatus::Created && order.pay_by.is_some_and(|by| by <= now))
            .cloned()
            .collect();
        expired.sort_by_key(|order| order.pay_by);
        expired.truncate(limit as usize);
        Ok(expired)
    }

    async fn give_backs_pending(&self, changed_before: OffsetDateTime, limit: u32) -> Result<Vec<Order>, StoreError> {
        let book = lock(&self.book);
        let mut owed: Vec<Order> = book
            .owed
            .iter()
            .filter_map(|id| book.orders.get(id))
            .filter(|order| order.updated_at <= changed_before)
            .cloned()
            .collect();
        owed.sort_by_key(|order| order.updated_at);
        owed.truncate(limit as usize);
        Ok(owed)
    }

    async fn give_back_done(&self, id: OrderId) -> Result<(), StoreError> {
        lock(&self.book).owed.remove(&id);
        Ok(())
    }

    async fn keyed_orders(&self, sale: SaleId) -> Result<Vec<(UserId, String, OrderId)>, StoreError> {
        let book = lock(&self.book);
        let keyed = book.keys.iter().filter(|((of, ..), _)| *of == sale);
        Ok(keyed.map(|((_, user, key), order)| (*user, key.clone(), *order)).collect())
    }

    async fn sale_holdings(&self, sale: SaleId) -> Result<SaleHoldings, StoreError> {
        let book = lock(&self.book);
        let per_user = book.bought.iter().filter(|((of, _), units)| *of == sale && **units > 0);
        let returned = book.owed.iter().filter(|id| book.orders.get(id).is_some_and(|o| o.flash_sale_id == Some(sale)));
        Ok(SaleHoldings {
            sold: book.sold.get(&sale).copied().unwrap_or(0),
            per_user: per_user.map(|((_, user), units)| (*user, *units)).collect(),
            returned: returned.copied().collect(),
        })
    }

    async fn sale_tally(&self, sale: SaleId, among: &[OrderId]) -> Result<SaleTally, StoreError> {
        let book = lock(&self.book);
        let owed = book.owed.iter().filter_map(|id| book.orders.get(id)).filter(|o| o.flash_sale_id == Some(sale));
        Ok(SaleTally {
            sold: book.sold.get(&sale).copied().unwrap_or(0),
            owed: owed.map(|order| (order.id, order.quantity)).collect(),
            written: among.iter().copied().filter(|id| book.orders.contains_key(id)).collect(),
        })
    }
}
