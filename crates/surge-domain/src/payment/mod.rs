//! The payment context: a buyer pays an order through a provider; the
//! provider's signed callbacks decide the outcome, each applied exactly once
//! however often and in whatever order it is delivered.
//!
//! A payment is `pending` until its provider says `succeeded` or `failed`.
//! `succeeded` is final (money was captured: no later event takes it back);
//! `failed` may still turn `succeeded` (a retried capture went through).
//! Applying a success pays the order, in the same transaction.

mod ports;
mod service;

pub use ports::{
    Applied, CallbackError, EventKind, Intent, PaymentProvider, PaymentStore, ProviderEvent, ProviderRecord,
    RefundOutcome,
};
pub use service::{PaymentError, Payments, ProviderBooks};

use serde::Serialize;
use time::OffsetDateTime;

use crate::ids::{MerchantId, OrderId, PaymentId, RefundId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "pending" => Some(PaymentStatus::Pending),
            "succeeded" => Some(PaymentStatus::Succeeded),
            "failed" => Some(PaymentStatus::Failed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payment {
    pub id: PaymentId,
    pub order_id: OrderId,
    /// The payer.
    pub user_id: UserId,
    pub merchant_id: MerchantId,
    pub amount_cents: i64,
    /// The platform's share of `amount_cents`, fixed when it is opened.
    pub commission_cents: i64,
    /// Refunds pending or succeeded; never above `amount_cents`.
    pub refunded_cents: i64,
    pub status: PaymentStatus,
    /// The provider's name (`sandbox`).
    pub provider: String,
    /// The provider's id of this payment; its callbacks name it.
    pub provider_ref: String,
    /// Where the buyer completes the payment with the provider.
    pub pay_url: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A refund of part or all of a captured payment. It is `pending` until the
/// provider says `succeeded` or `failed`, and both are final; a failed
/// refund's amount may be refunded again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refund {
    pub id: RefundId,
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub merchant_id: MerchantId,
    pub amount_cents: i64,
    pub reason: String,
    pub status: PaymentStatus,
    pub provider: String,
    pub provider_ref: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}
