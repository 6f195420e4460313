//! What after-sale needs from a store.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::Return;
use crate::fulfilment::NewShipment;
use crate::ids::{MerchantId, OrderId, ProductId, RefundId, ReturnId, UserId};
use crate::store::StoreError;

/// A return to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReturn {
    pub id: ReturnId,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub merchant_id: MerchantId,
    pub reason: String,
    /// The buyer's `Idempotency-Key`: the same key names the same return.
    pub idempotency_key: Option<String>,
}

/// The units a passed inspection puts back in stock, by product.
pub type ReturnUnits = [(ProductId, u32)];

#[async_trait]
pub trait AfterSaleStore: Send + Sync + 'static {
    /// In one transaction: the order goes `DELIVERED → RETURN_REQUESTED`
    /// and the return is written `requested`. A key the buyer used before
    /// returns that return, unchanged; `None` when the order is not
    /// `DELIVERED` (nothing written).
    async fn request(&self, new: &NewReturn, now: OffsetDateTime) -> Result<Option<Return>, StoreError>;

    async fn get(&self, id: ReturnId) -> Result<Option<Return>, StoreError>;

    /// A `requested` return is `approved` and its reverse shipment written
    /// `awaiting_courier`, in one transaction; `None` when it is not
    /// `requested` any more.
    async fn approve(
        &self,
        id: ReturnId,
        reverse: &NewShipment,
        now: OffsetDateTime,
    ) -> Result<Option<Return>, StoreError>;

    /// A `requested` return is `rejected` and its order `DELIVERED` again.
    async fn reject(&self, id: ReturnId, now: OffsetDateTime) -> Result<Option<Return>, StoreError>;

    /// A `received` return passed inspection, in one transaction: it is
    /// `refunding` (due at once), the order `RETURNED`, the units back in
    /// their products' stock, and a `ReturnAccepted` event in the outbox.
    async fn pass(
        &self,
        id: ReturnId,
        refund_cents: i64,
        units: &ReturnUnits,
        now: OffsetDateTime,
    ) -> Result<Option<Return>, StoreError>;

    /// A `received` return failed inspection: `inspection_failed`, the
    /// order `DELIVERED` again, and the parcel's shipment back to the buyer
    /// written `created` (the merchant packs it).
    async fn fail(&self, id: ReturnId, back: &NewShipment, now: OffsetDateTime) -> Result<Option<Return>, StoreError>;

    /// Returns `refunding` with no refund asked and due by `now`.
    async fn due_refunds(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<ReturnId>, StoreError>;

    /// Takes a due return for asking its refund: no other node or task
    /// does before `lease_until` (a conditional update). `None` when it is
    /// not due, or another has it.
    async fn claim_refund(
        &self,
        id: ReturnId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Option<Return>, StoreError>;

    /// The refund asked for a claimed return.
    async fn refund_asked(&self, id: ReturnId, refund: RefundId, now: OffsetDateTime) -> Result<(), StoreError>;

    /// Asking failed, or the refund asked failed: one more attempt, due at
    /// `retry_at`. `refund` names the failed refund (`None`: none was
    /// made); a return asking another refund by now is left alone.
    async fn refund_retry(
        &self,
        id: ReturnId,
        refund: Option<RefundId>,
        retry_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// The return whose refund this is, if any.
    async fn of_refund(&self, refund: RefundId) -> Result<Option<Return>, StoreError>;

    /// The refund went through: the return is `refunded` and its order
    /// `REFUNDED`, in one transaction. `None` when no `refunding` return
    /// asked it.
    async fn refunded(&self, refund: RefundId, now: OffsetDateTime) -> Result<Option<Return>, StoreError>;
}
