//! What after-sale needs from a store.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::Return;
use crate::fulfilment::NewShipment;
use crate::idempotency::IdempotencyKey;
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
    pub idempotency_key: Option<IdempotencyKey>,
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

    /// Returns `refunding` whose refund is due by `now` (never asked, or
    /// asked and failed, past its backoff).
    async fn due_refunds(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<ReturnId>, StoreError>;

    /// Takes a due return for asking its refund: no other node or task
    /// does before `lease_until` (a conditional update). Its attempt's
    /// refund id is `attempt` unless it has one already. `None` when it is
    /// not due, or another has it.
    async fn claim_refund(
        &self,
        id: ReturnId,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        attempt: RefundId,
    ) -> Result<Option<Return>, StoreError>;

    /// The attempt's refund is asked and pending: the return waits for the
    /// provider's word. Nothing changes unless `refund` is still its
    /// attempt's (a decision that came first stands).
    async fn refund_asked(&self, id: ReturnId, refund: RefundId, now: OffsetDateTime) -> Result<(), StoreError>;

    /// One more attempt, due at `retry_at`. `failed` is the attempt's
    /// refund the provider failed (the next attempt asks under a new id;
    /// nothing changes unless it is still the attempt's); `None`: the
    /// refund could not be asked for (the same id is asked again).
    async fn refund_retry(
        &self,
        id: ReturnId,
        failed: Option<RefundId>,
        retry_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// The `refunding` return whose current attempt asks under `refund`.
    async fn of_refund(&self, refund: RefundId) -> Result<Option<Return>, StoreError>;

    /// The refund went through: the return whose attempt asked it is
    /// `refunded` and its order `REFUNDED`, in one transaction. `None` when
    /// no `refunding` return asked it.
    async fn refunded(&self, refund: RefundId, now: OffsetDateTime) -> Result<Option<Return>, StoreError>;
}
