//! `PaymentStore` on PostgreSQL (the statements are in `crate::sql_payments`).

use async_trait::async_trait;
use surge_domain::order::{Order, OrderStatus};
use surge_domain::outbox::{DomainEvent, EventRecord};
use surge_domain::payment::{
    Applied, EventKind, Payment, PaymentStatus, PaymentStore, ProviderEvent, ProviderRecord, Refund, RefundOutcome,
};
use surge_domain::{OrderId, PaymentId, ProductId, RefundId, StoreError};
use time::OffsetDateTime;

use super::inventory::order_left_created;
use super::ledger::{open_refund_transfer, open_transfer, post_payment, settle_refund_transfer, void_payment};
use super::outbox::record_events;
use super::{PgStore, store_error};
use crate::rows::{ORDER_COLUMNS, OrderRow, PAYMENT_COLUMNS, PaymentRow, REFUND_COLUMNS, RefundRow, unix_ms};

type Db = sqlx::Postgres;

crate::sql_payments::payment_store!(PgStore);

impl PgStore {
    /// One transaction per event: PostgreSQL takes concurrent writers.
    async fn apply_event(
        &self,
        provider: &str,
        event: &ProviderEvent,
        now: OffsetDateTime,
    ) -> Result<Applied, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let (applied, keep) = apply_in(&mut tx, provider, event, now).await?;
        if keep {
            tx.commit().await.map_err(store_error)?;
        }
        Ok(applied)
    }
}
