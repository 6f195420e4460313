//! Returns in memory, moving their orders (and the shipments they open) as
//! the after-sale store does in one transaction; the refund saga's steps
//! are not kept (the store contract covers them).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use surge_domain::aftersale::{AfterSaleStore, NewReturn, Return, ReturnStatus, ReturnUnits};
use surge_domain::fulfilment::{FulfilmentStore, NewShipment, ShipmentStatus};
use surge_domain::order::{OrderStatus, OrderStore};
use surge_domain::{RefundId, ReturnId, StoreError};
use time::OffsetDateTime;

use super::{MemDepot, MemOrders, lock};

pub struct MemReturns {
    orders: Arc<MemOrders>,
    depot: Arc<MemDepot>,
    returns: Mutex<BTreeMap<ReturnId, (Return, Option<String>)>>,
}

impl MemReturns {
    pub fn new(orders: Arc<MemOrders>, depot: Arc<MemDepot>) -> Self {
        Self { orders, depot, returns: Mutex::default() }
    }

    /// The reverse parcel reached the merchant (its delivered scan).
    pub fn received(&self, id: ReturnId) {
        if let Some((found, _)) = lock(&self.returns).get_mut(&id) {
            found.status = ReturnStatus::Received;
        }
    }

    /// Moves a return from `from` to `to`, and its order from `order_from`
    /// to `order_to`, or nothing.
    async fn step(
        &self,
        id: ReturnId,
        from: ReturnStatus,
        to: ReturnStatus,
        (order_from, order_to): (OrderStatus, OrderStatus),
        now: OffsetDateTime,
    ) -> Result<Option<Return>, StoreError> {
        let Some(found) = lock(&self.returns).get(&id).map(|(found, _)| found.clone()).filter(|r| r.status == from)
        else {
            return Ok(None);
        };
        if self.orders.transition(found.order_id, order_from, order_to, now).await?.is_none() {
            return Ok(None);
        }
        let mut returns = lock(&self.returns);
        let Some((stored, _)) = returns.get_mut(&id) else { return Ok(None) };
        (stored.status, stored.updated_at) = (to, now);
        Ok(Some(stored.clone()))
    }
}

#[async_trait]
impl AfterSaleStore for MemReturns {
    async fn request(&self, new: &NewReturn, now: OffsetDateTime) -> Result<Option<Return>, StoreError> {
        let key = new.idempotency_key.as_deref().map(str::to_owned);
        let earlier = lock(&self.returns)
            .values()
            .find(|(found, k)| key.is_some() && *k == key && found.user_id == new.user_id)
            .map(|(found, _)| found.clone());
        if let Some(earlier) = earlier {
            return Ok(Some(earlier));
        }
        let moved = self.orders.transition(new.order_id, OrderStatus::Delivered, OrderStatus::ReturnRequested, now);
        if moved.await?.is_none() {
            return Ok(None);
        }
        let asked = Return {
            id: new.id,
            order_id: new.order_id,
            user_id: new.user_id,
            merchant_id: new.merchant_id,
            status: ReturnStatus::Requested,
            reason: new.reason.clone(),
            waybill: None,
            refund_cents: None,
            refund_id: None,
            attempt_refund_id: None,
            refund_attempts: 0,
            created_at: now,
            updated_at: now,
        };
        lock(&self.returns).insert(new.id, (asked.clone(), key));
        Ok(Some(asked))
    }

    async fn get(&self, id: ReturnId) -> Result<Option<Return>, StoreError> {
        Ok(lock(&self.returns).get(&id).map(|(found, _)| found.clone()))
    }

    async fn approve(
        &self,
        id: ReturnId,
        reverse: &NewShipment,
        now: OffsetDateTime,
    ) -> Result<Option<Return>, StoreError> {
        let approved = {
            let mut returns = lock(&self.returns);
            let Some((found, _)) = returns.get_mut(&id).filter(|(r, _)| r.status == ReturnStatus::Requested) else {
                return Ok(None);
            };
            (found.status, found.waybill, found.updated_at) =
                (ReturnStatus::Approved, Some(reverse.waybill.clone()), now);
            found.clone()
        };
        self.depot.open_shipment(reverse, now).await?;
        self.depot.set_status(&reverse.waybill, ShipmentStatus::AwaitingCourier, now);
        Ok(Some(approved))
    }

    async fn reject(&self, id: ReturnId, now: OffsetDateTime) -> Result<Option<Return>, StoreError> {
        let order = (OrderStatus::ReturnRequested, OrderStatus::Delivered);
        self.step(id, ReturnStatus::Requested, ReturnStatus::Rejected, order, now).await
    }

    async fn pass(
        &self,
        id: ReturnId,
        refund_cents: i64,
        _units: &ReturnUnits,
        now: OffsetDateTime,
    ) -> Result<Option<Return>, StoreError> {
        let order = (OrderStatus::ReturnRequested, OrderStatus::Returned);
        let passed = self.step(id, ReturnStatus::Received, ReturnStatus::Refunding, order, now).await?;
        let mut returns = lock(&self.returns);
        Ok(passed.and_then(|_| returns.get_mut(&id)).map(|(found, _)| {
            found.refund_cents = Some(refund_cents);
            found.clone()
        }))
    }

    async fn fail(&self, id: ReturnId, back: &NewShipment, now: OffsetDateTime) -> Result<Option<Return>, StoreError> {
        let order = (OrderStatus::ReturnRequested, OrderStatus::Delivered);
        let failed = self.step(id, ReturnStatus::Received, ReturnStatus::InspectionFailed, order, now).await?;
        if failed.is_some() {
            self.depot.open_shipment(back, now).await?;
        }
        Ok(failed)
    }

    async fn due_refunds(&self, _now: OffsetDateTime, _limit: u32) -> Result<Vec<ReturnId>, StoreError> {
        Ok(Vec::new())
    }

    async fn claim_refund(
        &self,
        _id: ReturnId,
        _now: OffsetDateTime,
        _lease_until: OffsetDateTime,
        _attempt: RefundId,
    ) -> Result<Option<Return>, StoreError> {
        Ok(None)
    }

    async fn refund_asked(&self, _id: ReturnId, _refund: RefundId, _now: OffsetDateTime) -> Result<(), StoreError> {
        Ok(())
    }

    async fn refund_retry(
        &self,
        _id: ReturnId,
        _failed: Option<RefundId>,
        _retry_at: OffsetDateTime,
        _now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn of_refund(&self, _refund: RefundId) -> Result<Option<Return>, StoreError> {
        Ok(None)
    }

    async fn refunded(&self, _refund: RefundId, _now: OffsetDateTime) -> Result<Option<Return>, StoreError> {
        Ok(None)
    }
}
