//! The intake, the hot path: `place_order` read top to bottom, each step a
//! named call. Stock is deducted in the ledger and the request appended to
//! the durable queue; the relational store is never touched on the way to
//! the 202.

use std::sync::atomic::Ordering;

use super::{FlashSales, IntakeError, LiveSale};
use crate::actor::Actor;
use crate::flashsale::ports::{Deduction, KeyedDeduction, Reservation};
use crate::flashsale::sale::{OrderRequested, Quantity};
use crate::idempotency::IdempotencyKey;
use crate::ids::{OrderId, SaleId, UserId};
use crate::money::Cents;
use crate::order::StockKeeper as _;
use crate::store::StoreError;

impl FlashSales {
    /// The intake. Returns the id of the accepted order; the order itself is
    /// written later by the consumer.
    pub async fn place_order(
        &self,
        actor: &Actor,
        sale_id: SaleId,
        quantity: Quantity,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<OrderId, IntakeError> {
        let Actor::Customer(user) = actor else {
            return Err(IntakeError::Forbidden);
        };
        let live = self.live_sale(sale_id).await?.ok_or(IntakeError::NotFound)?;
        if !live.sale.is_open(self.clock.now()) {
            return Err(IntakeError::NotActive);
        }
        // A sale is refused at creation when its price times its per-buyer
        // limit passes the largest amount, so only a sale made before that
        // rule gets here with such a quantity: more than it can sell a buyer.
        let amount = live.sale.price_cents.times(quantity.get()).ok_or(IntakeError::LimitExceeded)?;
        if live.sold_out.load(Ordering::Relaxed) {
            // Refused without touching the ledger; a replay of a keyed request
            // still gets its order, even if that first request is in flight.
            return match idempotency_key {
                Some(key) => self.ports.keys.replay(sale_id, *user, key).await?.ok_or(IntakeError::SoldOut),
                None => Err(IntakeError::SoldOut),
            };
        }
        match idempotency_key {
            None => self.accept(&live, *user, quantity, amount, None).await,
            Some(key) => self.accept_keyed(&live, *user, quantity, amount, key).await,
        }
    }

    /// Deduct, then append durably; undo the deduction if the append fails.
    async fn accept(
        &self,
        live: &LiveSale,
        user: UserId,
        quantity: Quantity,
        amount: Cents,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<OrderId, IntakeError> {
        let sale = &live.sale;
        let reservation = Reservation { order: OrderId::new(self.ids.next_id()), user, quantity: quantity.get() };
        let deduction = self.ports.ledger.try_deduct(sale.id, reservation, sale.per_user_limit).await?;
        self.after_deduction(live, reservation, amount, deduction, idempotency_key).await
    }

    /// A keyed intake: one outcome per key. Where the ledger holds the keys
    /// too, the claim and the deduction are one step; elsewhere the keys
    /// port runs the intake once.
    async fn accept_keyed(
        &self,
        live: &LiveSale,
        user: UserId,
        quantity: Quantity,
        amount: Cents,
        key: &IdempotencyKey,
    ) -> Result<OrderId, IntakeError> {
        let sale = &live.sale;
        // A claim in flight whose request then fails frees the key for the
        // next; three rounds of that in a row means something is stuck.
        for _ in 0..3 {
            let reservation = Reservation { order: OrderId::new(self.ids.next_id()), user, quantity: quantity.get() };
            let claimed = self.ports.ledger.try_deduct_claiming(sale.id, reservation, sale.per_user_limit, key).await?;
            let stock_left = match claimed {
                None => {
                    let intake = Box::pin(self.accept(live, user, quantity, amount, Some(key)));
                    return self.ports.keys.once(sale.id, user, key, intake).await;
                }
                Some(KeyedDeduction::Replay(order)) => return Ok(order),
                Some(KeyedDeduction::InFlight) => match self.ports.keys.replay(sale.id, user, key).await? {
                    Some(order) => return Ok(order),
                    None => continue,
                },
                Some(KeyedDeduction::Refused(refusal)) => {
                    return self.after_deduction(live, reservation, amount, refusal, Some(key)).await;
                }
                Some(KeyedDeduction::Claimed { stock_left }) => stock_left,
            };
            let deduction = Deduction::Done { stock_left };
            let outcome = self.after_deduction(live, reservation, amount, deduction, Some(key)).await;
            if matches!(outcome, Err(IntakeError::Unavailable(StoreError::Indeterminate(_)))) {
                // The request may be in the queue: the claim stays in flight,
                // so a retry with the key waits for its order instead of
                // making a second one. The consumer settles it when it
                // writes the order; otherwise it expires with the reservation.
                return outcome;
            }
            let settled = self.ports.keys.settle_claim(sale.id, user, key, reservation.order, outcome.is_ok()).await;
            if let Err(error) = settled {
                // The claim expires on its own; the order (if any) is durable.
                tracing::warn!(%error, "could not record an intake key's outcome");
            }
            return outcome;
        }
        Err(IntakeError::KeyContended)
    }

    /// What follows the deduction: a refusal is answered (and a sell-out
    /// flagged); a deduction is appended durably, and undone if the append
    /// fails.
    async fn after_deduction(
        &self,
        live: &LiveSale,
        reservation: Reservation,
        amount_cents: Cents,
        deduction: Deduction,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<OrderId, IntakeError> {
        let sale = &live.sale;
        let (order_id, user, quantity) = (reservation.order, reservation.user, reservation.quantity);
        match deduction {
            Deduction::Done { stock_left } if stock_left <= 0 => self.flag_sold_out(live).await,
            Deduction::Done { .. } => {}
            Deduction::SoldOut => {
                self.flag_sold_out(live).await;
                return Err(IntakeError::SoldOut);
            }
            Deduction::LimitExceeded => return Err(IntakeError::LimitExceeded),
            // The sale is open (checked before), so its counters were lost
            // (a flush, a failover that lost writes): the buyer retries once
            // they are rebuilt.
            Deduction::NotLoaded => {
                self.rebuild_lost(live).await?;
                return Err(IntakeError::CountersRebuilding);
            }
        }
        let request = OrderRequested {
            order_id,
            sale_id: sale.id,
            user_id: user,
            product_id: sale.product_id,
            merchant_id: sale.merchant_id,
            quantity: Quantity::from_trusted(quantity),
            amount_cents,
            idempotency_key: idempotency_key.cloned(),
            requested_at_ms: self.clock.now_ms(),
        };
        match self.enqueue(&request).await {
            Ok(()) => Ok(request.order_id),
            // It may have landed: its order may yet be written, so its stock
            // stays reserved; the reaper gives it back once the queue proves
            // it is not there.
            Err(error @ StoreError::Indeterminate(_)) => {
                tracing::warn!(order_id = %order_id, %error, "append unconfirmed; the reservation stays for the reaper");
                Err(error.into())
            }
            Err(error) => {
                self.released(sale.id, reservation).await?;
                Err(error.into())
            }
        }
    }

    /// The sold-out flag only spares the ledger calls: failing to set it
    /// must not fail (or strand) the request that found the sale sold out.
    async fn flag_sold_out(&self, live: &LiveSale) {
        if let Err(error) = self.mark_sold_out(live).await {
            tracing::warn!(%error, sale_id = %live.sale.id, "sold-out flag not confirmed");
        }
    }

    /// Sets the local sold-out flag, then looks again: stock returned (a
    /// cancel) between the deduction and the flag must not stay unsellable.
    pub(super) async fn mark_sold_out(&self, live: &LiveSale) -> Result<(), StoreError> {
        live.sold_out.store(true, Ordering::SeqCst);
        if self.ports.ledger.stock_left(live.sale.id).await?.is_some_and(|left| left > 0) {
            live.sold_out.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn enqueue(&self, request: &OrderRequested) -> Result<(), StoreError> {
        self.ports.pending.insert(request).await?;
        match self.ports.queue.append(request).await {
            Ok(()) => Ok(()),
            // Landed or not, the view says PENDING until the order is
            // written or the entry expires.
            Err(error @ StoreError::Indeterminate(_)) => Err(error),
            Err(error) => {
                let _ = self.ports.pending.remove(&[request.order_id]).await;
                Err(error)
            }
        }
    }
}
