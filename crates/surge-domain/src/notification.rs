//! Notification: SMS / e-mail after a purchase. Non-core and always
//! degradable: handing a notification over never waits and never fails the
//! order; the adapter queues it (bounded) and delivers in the background.

use crate::order::Order;
use crate::payment::Refund;

pub trait Notifier: Send + Sync + 'static {
    /// An order was written: the buyer hears of the purchase. Handed over
    /// without waiting.
    fn order_created(&self, order: &Order);

    /// A refund went through: the buyer hears of the money coming back.
    /// Handed over without waiting.
    fn refund_succeeded(&self, refund: &Refund);
}
