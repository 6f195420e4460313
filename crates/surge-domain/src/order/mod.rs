//! Orders: the aggregate, its state machine, its store port and use cases.

mod ports;
mod service;
mod status;

pub use ports::{
    CreatedOrders, OrderPage, OrderScope, OrderStore, PendingOrders, SaleHoldings, SaleTally, StockKeeper,
};
pub use service::{Consumed, OrderError, Orders};
pub use status::{IllegalTransition, OrderEvent, OrderStatus};

use serde::Serialize;
use time::OffsetDateTime;

use crate::flashsale::OrderRequested;
use crate::ids::{MerchantId, OrderId, ProductId, SaleId, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub merchant_id: MerchantId,
    pub product_id: ProductId,
    pub flash_sale_id: Option<SaleId>,
    pub quantity: u32,
    pub amount_cents: i64,
    pub status: OrderStatus,
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
            quantity: request.quantity,
            amount_cents: request.amount_cents,
            status: OrderStatus::Pending,
            created_at: at,
            updated_at: at,
            pay_by: None,
        }
    }
}
