//! Notification: SMS / e-mail after a purchase. Non-core and always
//! degradable: handing a notification over never waits and never fails the
//! order; the adapter queues it (bounded) and delivers in the background.

use crate::order::Order;

pub trait Notifier: Send + Sync + 'static {
    /// Hands the notification over without waiting.
    fn order_created(&self, order: &Order);
}
