//! Orders: the aggregate, its state machine, its store port and use cases.

mod checkout;
mod ports;
mod service;
mod status;

pub use checkout::{
    Address, Checkout, CheckoutError, CheckoutLine, CheckoutStore, Checkouts, NewCheckout, NewCheckoutOrder, Placed,
};
pub use ports::{
    CreatedOrders, OrderPage, OrderScope, OrderStore, PendingOrders, SaleHoldings, SaleTally, StockKeeper,
};
pub use service::{Consumed, OrderError, Orders};
pub use status::{IllegalTransition, OrderEvent, OrderStatus};

use serde::Serialize;
use time::OffsetDateTime;

use crate::flashsale::OrderRequested;
use crate::ids::{MerchantId, OrderId, ProductId, SaleId, UserId};

/// How an order came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// One item, taken from a flash sale's allocation.
    FlashSale,
    /// A merchant's share of a cart, its units reserved from the products.
    Checkout,
}

impl OrderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderKind::FlashSale => "flash_sale",
            OrderKind::Checkout => "checkout",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "flash_sale" => Some(OrderKind::FlashSale),
            "checkout" => Some(OrderKind::Checkout),
            _ => None,
        }
    }
}

/// One line of an order, at the price it was bought for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderItem {
    pub product_id: ProductId,
    /// `None` only in the `PENDING` view of a flash-sale order, before the
    /// consumer has written it.
    pub sku: Option<String>,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub merchant_id: MerchantId,
    pub product_id: ProductId,
    pub flash_sale_id: Option<SaleId>,
    /// Units in all, over every item.
    pub quantity: u32,
    pub amount_cents: i64,
    pub status: OrderStatus,
    pub kind: OrderKind,
    /// What was bought; never empty. A flash-sale order has one item.
    pub items: Vec<OrderItem>,
    /// Where a checkout order goes; `None` for flash-sale orders.
    pub address: Option<Address>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When an unpaid order is cancelled; `None` once that no longer applies.
    #[serde(skip)]
    pub pay_by: Option<OffsetDateTime>,
}

impl Order {
    /// How an accepted request reads before the consumer has written it.
    pub fn pending(request: &OrderRequested) -> Self {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(request.requested_at_ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Order {
            id: request.order_id,
            user_id: request.user_id,
            merchant_id: request.merchant_id,
            product_id: request.product_id,
            flash_sale_id: Some(request.sale_id),
            quantity: request.quantity.get(),
            amount_cents: request.amount_cents.get(),
            status: OrderStatus::Pending,
            kind: OrderKind::FlashSale,
            items: vec![OrderItem {
                product_id: request.product_id,
                sku: None,
                quantity: request.quantity.get(),
                unit_price_cents: request.amount_cents.get() / i64::from(request.quantity.get().max(1)),
            }],
            address: None,
            created_at: at,
            updated_at: at,
            pay_by: None,
        }
    }
}
