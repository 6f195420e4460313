//! After-sale, the reverse flow: a buyer asks to return a delivered order;
//! the merchant (or a rule) approves or rejects; an approved return is a
//! reverse shipment the dispatcher gives a courier, who brings it to the
//! merchant's warehouse; the merchant inspects it. Passed: the units go
//! back to stock and a refund follows; failed: no refund, the parcel goes
//! back to the buyer.
//!
//! The order moves `DELIVERED → RETURN_REQUESTED → RETURNED → REFUNDED`
//! (back to `DELIVERED` when the return is rejected or fails inspection),
//! each step in the same transaction as the return's own. The refund is a
//! saga kept on the return's row: `refunding` until the payment context
//! reports the refund through; a refund that could not be asked for, or
//! that the provider failed, is asked for again with backoff and shows in
//! reconciliation until it goes through.

mod ports;
mod saga;
mod service;

pub use ports::{AfterSaleStore, NewReturn, ReturnUnits};
pub use saga::ReturnSaga;
pub use service::{AfterSale, AfterSaleError, AfterSalePorts, MAX_REASON, ReturnPolicy};

use serde::Serialize;
use time::OffsetDateTime;

use crate::ids::{MerchantId, OrderId, RefundId, ReturnId, UserId};

/// Where a return is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnStatus {
    /// Asked for; the merchant has not decided.
    Requested,
    /// The merchant said no; the order is `DELIVERED` again.
    Rejected,
    /// Approved: a reverse shipment brings the parcel back.
    Approved,
    /// The parcel is at the merchant's warehouse, not inspected yet.
    Received,
    /// Inspected and passed; the refund is asked for (or will be again).
    Refunding,
    /// The refund went through.
    Refunded,
    /// Inspected and failed: no refund; the parcel goes back to the buyer.
    InspectionFailed,
}

impl ReturnStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReturnStatus::Requested => "requested",
            ReturnStatus::Rejected => "rejected",
            ReturnStatus::Approved => "approved",
            ReturnStatus::Received => "received",
            ReturnStatus::Refunding => "refunding",
            ReturnStatus::Refunded => "refunded",
            ReturnStatus::InspectionFailed => "inspection_failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "requested" => ReturnStatus::Requested,
            "rejected" => ReturnStatus::Rejected,
            "approved" => ReturnStatus::Approved,
            "received" => ReturnStatus::Received,
            "refunding" => ReturnStatus::Refunding,
            "refunded" => ReturnStatus::Refunded,
            "inspection_failed" => ReturnStatus::InspectionFailed,
            _ => return None,
        })
    }
}

/// A buyer's return of a delivered order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Return {
    pub id: ReturnId,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub merchant_id: MerchantId,
    pub status: ReturnStatus,
    pub reason: String,
    /// The reverse shipment's waybill, once approved.
    pub waybill: Option<String>,
    /// What the inspection passed for refunding.
    pub refund_cents: Option<i64>,
    /// The refund asked for last (a failed one is asked for again).
    pub refund_id: Option<RefundId>,
    /// The id the current refund attempt asks under: kept until that
    /// refund is known failed, so an attempt asked twice asks for one
    /// refund.
    pub attempt_refund_id: Option<RefundId>,
    /// Refunds asked for that did not go through.
    pub refund_attempts: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Return {
    /// The reverse shipment's waybill: one per return.
    pub fn reverse_waybill(id: ReturnId) -> String {
        format!("SR{id}")
    }

    /// The waybill of a parcel that failed inspection, going back to the
    /// buyer.
    pub fn back_to_buyer_waybill(id: ReturnId) -> String {
        format!("SB{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::ReturnStatus;

    #[test]
    fn names_round_trip() {
        for status in [
            ReturnStatus::Requested,
            ReturnStatus::Rejected,
            ReturnStatus::Approved,
            ReturnStatus::Received,
            ReturnStatus::Refunding,
            ReturnStatus::Refunded,
            ReturnStatus::InspectionFailed,
        ] {
            assert_eq!(ReturnStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(ReturnStatus::parse("lost"), None);
    }
}
