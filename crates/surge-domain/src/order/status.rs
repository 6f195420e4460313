//! The order state machine: every legal transition, nothing else.
//!
//! `PENDING → CREATED → PAID → FULFILLING → DELIVERED`,
//! `CREATED → CANCELLED` (buyer, admin or payment timeout; stock returned),
//! after-sale `DELIVERED → RETURN_REQUESTED → RETURNED → REFUNDED` (back
//! to `DELIVERED` when the return is rejected or fails inspection), and
//! `PENDING → FAILED` when an accepted request can't become an order.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Created,
    Paid,
    Fulfilling,
    Delivered,
    Cancelled,
    ReturnRequested,
    Returned,
    Refunded,
    Failed,
}

/// What happens to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEvent {
    Create,
    Pay,
    Cancel,
    Ship,
    Deliver,
    RequestReturn,
    /// The return was rejected, or the parcel failed inspection.
    DeclineReturn,
    ConfirmReturn,
    Refund,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {from:?} cannot {event:?}")]
pub struct IllegalTransition {
    pub from: OrderStatus,
    pub event: OrderEvent,
}

impl OrderStatus {
    pub fn apply(self, event: OrderEvent) -> Result<OrderStatus, IllegalTransition> {
        use OrderEvent as E;
        use OrderStatus as S;
        let next = match (self, event) {
            (S::Pending, E::Create) => S::Created,
            (S::Pending, E::Fail) => S::Failed,
            (S::Created, E::Pay) => S::Paid,
            (S::Created, E::Cancel) => S::Cancelled,
            (S::Paid, E::Ship) => S::Fulfilling,
            (S::Fulfilling, E::Deliver) => S::Delivered,
            (S::Delivered, E::RequestReturn) => S::ReturnRequested,
            (S::ReturnRequested, E::DeclineReturn) => S::Delivered,
            (S::ReturnRequested, E::ConfirmReturn) => S::Returned,
            (S::Returned, E::Refund) => S::Refunded,
            (from, event) => return Err(IllegalTransition { from, event }),
        };
        Ok(next)
    }

    /// Does an order in this state hold sale stock?
    pub fn holds_stock(self) -> bool {
        !matches!(self, OrderStatus::Cancelled | OrderStatus::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Created => "CREATED",
            OrderStatus::Paid => "PAID",
            OrderStatus::Fulfilling => "FULFILLING",
            OrderStatus::Delivered => "DELIVERED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::ReturnRequested => "RETURN_REQUESTED",
            OrderStatus::Returned => "RETURNED",
            OrderStatus::Refunded => "REFUNDED",
            OrderStatus::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        ALL.into_iter().find(|status| status.as_str() == text)
    }
}

const ALL: [OrderStatus; 10] = [
    OrderStatus::Pending,
    OrderStatus::Created,
    OrderStatus::Paid,
    OrderStatus::Fulfilling,
    OrderStatus::Delivered,
    OrderStatus::Cancelled,
    OrderStatus::ReturnRequested,
    OrderStatus::Returned,
    OrderStatus::Refunded,
    OrderStatus::Failed,
];

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: [OrderEvent; 10] = [
        OrderEvent::Create,
        OrderEvent::Pay,
        OrderEvent::Cancel,
        OrderEvent::Ship,
        OrderEvent::Deliver,
        OrderEvent::RequestReturn,
        OrderEvent::DeclineReturn,
        OrderEvent::ConfirmReturn,
        OrderEvent::Refund,
        OrderEvent::Fail,
    ];

    #[test]
    fn exactly_the_documented_transitions_are_legal() {
        let legal: Vec<(OrderStatus, OrderEvent)> = ALL
            .into_iter()
            .flat_map(|from| EVENTS.into_iter().map(move |event| (from, event)))
            .filter(|(from, event)| from.apply(*event).is_ok())
            .collect();
        assert_eq!(legal.len(), 10, "{legal:?}");
        assert_eq!(OrderStatus::Created.apply(OrderEvent::Pay), Ok(OrderStatus::Paid));
        assert_eq!(OrderStatus::Created.apply(OrderEvent::Cancel), Ok(OrderStatus::Cancelled));
        assert!(OrderStatus::Paid.apply(OrderEvent::Cancel).is_err());
        assert!(OrderStatus::Cancelled.apply(OrderEvent::Pay).is_err());
        assert!(OrderStatus::Pending.apply(OrderEvent::Pay).is_err());
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).expect("serialize");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
    }
}
