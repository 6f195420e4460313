//! Notification: SMS / e-mail after a purchase and after a refund. Non-core
//! and always degradable: the notification context hears of them from the
//! outbox (`OrderPlaced`, `RefundSucceeded`, `ParcelScanned` at pickup,
//! out for delivery and delivery), never from the order or
//! payment path, so a slow or dead sink never slows or fails an order;
//! the adapter queues each notice (bounded) and delivers in the background.

use std::sync::Arc;

use async_trait::async_trait;

use crate::fulfilment::ScanKind;
use crate::ids::{OrderId, UserId};
use crate::order::{Order, OrderStore};
use crate::outbox::{DomainEvent, EventHandler, EventRecord};
use crate::payment::{PaymentStore, Refund};
use crate::store::StoreError;

pub trait Notifier: Send + Sync + 'static {
    /// An order was written: the buyer hears of the purchase. Handed over
    /// without waiting.
    fn order_created(&self, order: &Order);

    /// A refund went through: the buyer hears of the money coming back.
    /// Handed over without waiting.
    fn refund_succeeded(&self, refund: &Refund);

    /// The buyer's parcel was picked up, is out for delivery, or was
    /// delivered. Handed over without waiting.
    fn parcel_moved(&self, parcel: &ParcelMoved);
}

/// Where the buyer's parcel is now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParcelMoved {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub waybill: String,
    /// The scan's place in the waybill's timeline.
    pub seq: i64,
    pub scan: ScanKind,
}

/// The outbox's consumer that tells buyers: it reads the order or refund
/// an event names and hands the notice to the [`Notifier`].
pub struct Notifications {
    pub orders: Arc<dyn OrderStore>,
    pub payments: Arc<dyn PaymentStore>,
    pub notifier: Arc<dyn Notifier>,
}

impl Notifications {
    pub const CONSUMER: &'static str = "notifications";
}

#[async_trait]
impl EventHandler for Notifications {
    fn consumer(&self) -> &'static str {
        Self::CONSUMER
    }

    fn wants(&self, event: &DomainEvent) -> bool {
        matches!(event, DomainEvent::OrderPlaced { .. } | DomainEvent::RefundSucceeded { .. })
            || matches!(event, DomainEvent::ParcelScanned { scan, .. }
                if matches!(scan, ScanKind::PickedUp | ScanKind::OutForDelivery | ScanKind::Delivered))
    }

    async fn apply(&self, record: &EventRecord) -> Result<(), StoreError> {
        match record.event {
            DomainEvent::OrderPlaced { order_id, .. } => {
                if let Some(order) = self.orders.get(order_id).await? {
                    self.notifier.order_created(&order);
                }
            }
            DomainEvent::RefundSucceeded { refund_id, .. } => {
                if let Some(refund) = self.payments.refund(refund_id).await? {
                    self.notifier.refund_succeeded(&refund);
                }
            }
            DomainEvent::ParcelScanned { order_id, user_id, ref waybill, seq, scan }
                if matches!(scan, ScanKind::PickedUp | ScanKind::OutForDelivery | ScanKind::Delivered) =>
            {
                self.notifier.parcel_moved(&ParcelMoved { order_id, user_id, waybill: waybill.clone(), seq, scan });
            }
            _ => {}
        }
        Ok(())
    }
}
