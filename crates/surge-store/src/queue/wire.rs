//! A queued request as it travels through a broker and rests in a log: a
//! type of the queue's own, not the domain's `OrderRequested`, so that the
//! domain type can change shape without breaking what a queue already
//! holds (during a rolling upgrade a node reads the previous version's
//! requests). The JSON is the one every version so far wrote; a field
//! added later must have a default.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use surge_domain::flashsale::{OrderRequested, Quantity};
use surge_domain::{Cents, IdempotencyKey};
use surge_domain::{MerchantId, OrderId, ProductId, SaleId, StoreError, UserId};

/// Borrows what it can from the request it encodes: an append on the
/// intake path copies nothing.
#[derive(Debug, Serialize, Deserialize)]
struct QueuedRequest<'a> {
    order_id: OrderId,
    sale_id: SaleId,
    user_id: UserId,
    product_id: ProductId,
    merchant_id: MerchantId,
    quantity: u32,
    amount_cents: i64,
    #[serde(default)]
    idempotency_key: Option<Cow<'a, str>>,
    /// Unix milliseconds.
    requested_at_ms: i64,
}

pub fn encode(request: &OrderRequested) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&QueuedRequest::from(request)).map_err(|e| StoreError::Unavailable(format!("queue: {e}")))
}

/// [`encode`] as text, for the embedded log's `TEXT` column.
pub fn encode_text(request: &OrderRequested) -> Result<String, StoreError> {
    serde_json::to_string(&QueuedRequest::from(request)).map_err(|e| StoreError::Unavailable(format!("queue: {e}")))
}

impl<'a> From<&'a OrderRequested> for QueuedRequest<'a> {
    fn from(request: &'a OrderRequested) -> Self {
        Self {
            order_id: request.order_id,
            sale_id: request.sale_id,
            user_id: request.user_id,
            product_id: request.product_id,
            merchant_id: request.merchant_id,
            quantity: request.quantity.get(),
            amount_cents: request.amount_cents.get(),
            idempotency_key: request.idempotency_key.as_deref().map(Cow::Borrowed),
            requested_at_ms: request.requested_at_ms,
        }
    }
}

pub fn decode(payload: &[u8]) -> Result<OrderRequested, serde_json::Error> {
    let queued: QueuedRequest = serde_json::from_slice(payload)?;
    // What intake wrote always reads back; anything else is set aside as
    // unreadable, never turned into an order.
    let quantity = Quantity::parse(i64::from(queued.quantity)).map_err(serde::de::Error::custom)?;
    let amount_cents = Cents::parse("amount_cents", queued.amount_cents)
        .or_else(|refused| Cents::from_legacy_amount(queued.amount_cents).ok_or(refused))
        .map_err(serde::de::Error::custom)?;
    let idempotency_key =
        queued.idempotency_key.map(|key| IdempotencyKey::parse(&key)).transpose().map_err(serde::de::Error::custom)?;
    Ok(OrderRequested {
        order_id: queued.order_id,
        sale_id: queued.sale_id,
        user_id: queued.user_id,
        product_id: queued.product_id,
        merchant_id: queued.merchant_id,
        quantity,
        amount_cents,
        idempotency_key,
        requested_at_ms: queued.requested_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a node of an earlier version put in a queue reads the same.
    #[test]
    fn a_request_written_by_an_earlier_version_reads_the_same() {
        let earlier = br#"{"order_id":"7","sale_id":"3","user_id":"42","product_id":"5","merchant_id":"9","quantity":1,"amount_cents":990,"idempotency_key":"k-1","requested_at_ms":1700000000000}"#;
        let request = decode(earlier).expect("readable");
        assert_eq!(request.order_id, OrderId::new(7));
        assert_eq!(request.idempotency_key.as_deref(), Some("k-1"));
        assert_eq!(decode(&encode(&request).expect("encodes")).expect("round trip"), request);
    }

    /// A request no intake could have written is unreadable, never an order.
    #[test]
    fn a_request_out_of_its_bounds_is_unreadable() {
        let with = |field: &str| {
            format!(
                r#"{{"order_id":"7","sale_id":"3","user_id":"42","product_id":"5","merchant_id":"9",{field},"requested_at_ms":1}}"#
            )
        };
        assert!(decode(with(r#""quantity":1,"amount_cents":990"#).as_bytes()).is_ok());
        // Past the largest amount: an older node's order, read as it was.
        let legacy = decode(with(r#""quantity":1000,"amount_cents":500000000000000"#).as_bytes()).expect("legacy");
        assert_eq!(legacy.amount_cents.get(), 500_000_000_000_000);
        for field in [
            r#""quantity":0,"amount_cents":990"#,
            r#""quantity":1,"amount_cents":-1"#,
            r#""quantity":1,"amount_cents":990,"idempotency_key":"a b""#,
        ] {
            assert!(decode(with(field).as_bytes()).is_err(), "{field}");
        }
    }
}
