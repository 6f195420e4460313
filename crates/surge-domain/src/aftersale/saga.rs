//! The refund saga's consumer of the outbox: after a passed inspection the
//! return asks for its refund, and the payment context's word on that
//! refund ends the return or schedules another attempt.

use std::sync::Arc;

use async_trait::async_trait;

use super::service::AfterSale;
use crate::outbox::{DomainEvent, EventHandler, EventRecord};
use crate::store::StoreError;

/// The refund saga's consumer of the outbox ("after-sale"): a passed
/// inspection asks for its refund; the payment context's word on the
/// refund ends the return or schedules another attempt.
pub struct ReturnSaga {
    pub after_sale: Arc<AfterSale>,
}

#[async_trait]
impl EventHandler for ReturnSaga {
    fn consumer(&self) -> &'static str {
        "after-sale"
    }

    fn wants(&self, event: &DomainEvent) -> bool {
        matches!(
            event,
            DomainEvent::ReturnAccepted { .. } | DomainEvent::RefundSucceeded { .. } | DomainEvent::RefundFailed { .. }
        )
    }

    async fn apply(&self, record: &EventRecord) -> Result<(), StoreError> {
        let sale = &self.after_sale;
        match &record.event {
            DomainEvent::ReturnAccepted { return_id, .. } => sale.push_refund(*return_id).await,
            DomainEvent::RefundSucceeded { refund_id, .. } => {
                if let Some(done) = sale.store.refunded(*refund_id, sale.clock.now()).await? {
                    tracing::info!(return_id = %done.id, order_id = %done.order_id, "return refunded");
                }
                Ok(())
            }
            DomainEvent::RefundFailed { refund_id, .. } => match sale.store.of_refund(*refund_id).await? {
                Some(found) => {
                    tracing::warn!(return_id = %found.id, attempts = found.refund_attempts + 1,
                        "a return's refund failed at the provider; asking again later");
                    sale.refund_failed(&found, Some(*refund_id)).await
                }
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::service::backoff;
    use std::time::Duration;

    #[test]
    fn refund_attempts_back_off_to_ten_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(40), Duration::from_secs(600));
    }
}
