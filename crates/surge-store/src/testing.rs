//! Builders shared by this crate's unit tests.

use surge_domain::flashsale::OrderRequested;
use surge_domain::{MerchantId, OrderId, ProductId, SaleId, UserId};

/// One unit of product 1 (merchant 1) in `sale`, for `user`, without a key.
pub(crate) fn order_requested(id: i64, sale: i64, user: i64) -> OrderRequested {
    OrderRequested {
        order_id: OrderId::new(id),
        sale_id: SaleId::new(sale),
        user_id: UserId::new(user),
        product_id: ProductId::new(1),
        merchant_id: MerchantId::new(1),
        quantity: 1,
        amount_cents: 1,
        idempotency_key: None,
        requested_at_ms: 0,
    }
}
