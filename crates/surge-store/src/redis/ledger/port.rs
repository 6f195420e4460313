//! The `StockLedger` port on the scripts.

use std::time::Duration;

use async_trait::async_trait;
use surge_domain::flashsale::{Deduction, FlashSale, KeyedDeduction, LedgerSnapshot, Reservation, StockLedger};
use surge_domain::order::SaleHoldings;
use surge_domain::{OrderId, SaleId, StoreError, UserId};

use std::collections::HashMap;

use super::super::events::Event;
use super::super::keys::{intake_key, settle_claim};
use super::super::unavailable;
use super::{FORGOTTEN_TTL_MS, RedisLedger, TOMBSTONE_TTL_MS, now_ms, open_reservation};

#[async_trait]
impl StockLedger for RedisLedger {
    fn is_shared(&self) -> bool {
        true
    }

    async fn load(&self, sale: &FlashSale, holdings: &SaleHoldings) -> Result<(), StoreError> {
        self.load_counters(sale, holdings, false).await
    }

    async fn load_if_absent(&self, sale: &FlashSale, holdings: &SaleHoldings) -> Result<(), StoreError> {
        self.load_counters(sale, holdings, true).await
    }

    async fn try_deduct(
        &self,
        sale: SaleId,
        reservation: Reservation,
        per_user_limit: u32,
    ) -> Result<Deduction, StoreError> {
        self.resting(sale)?;
        let [stock, buyers, reserved] = self.keys(sale);
        let mut conn = self.conn.clone();
        let outcome: i64 = self
            .try_deduct
            .key(stock)
            .key(buyers)
            .key(reserved)
            .arg(reservation.user.get())
            .arg(reservation.quantity)
            .arg(per_user_limit)
            .arg(reservation.order.get())
            .arg(now_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if outcome >= 0 {
            self.replicated(sale, reservation).await?;
        }
        if outcome == 0 {
            self.announce(Event::SoldOut(sale));
        }
        Ok(match outcome {
            -1 => Deduction::SoldOut,
            -2 => Deduction::LimitExceeded,
            -3 => Deduction::NotLoaded,
            stock_left => Deduction::Done { stock_left },
        })
    }

    async fn try_deduct_claiming(
        &self,
        sale: SaleId,
        reservation: Reservation,
        per_user_limit: u32,
        key: &str,
    ) -> Result<Option<KeyedDeduction>, StoreError> {
        let Some(claim_ttl) = self.claim_ttl else { return Ok(None) };
        self.resting(sale)?;
        let [stock, buyers, reserved] = self.keys(sale);
        let intake_key = intake_key(&self.namespace, sale, reservation.user, key);
        let mut conn = self.conn.clone();
        let (kind, value): (i64, String) = self
            .try_deduct_claiming
            .key(stock)
            .key(buyers)
            .key(reserved)
            .key(&intake_key)
            .arg(reservation.user.get())
            .arg(reservation.quantity)
            .arg(per_user_limit)
            .arg(reservation.order.get())
            .arg(now_ms())
            .arg(claim_ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let number = || value.parse::<i64>().map_err(|_| StoreError::Unavailable(format!("redis: bad reply {value}")));
        let outcome = match kind {
            0 => {
                let stock_left = number()?;
                if let Err(error) = self.replicated(sale, reservation).await {
                    // The stock went back: free the key, if still ours.
                    let _ = settle_claim(&self.conn, &intake_key, reservation.order, None).await;
                    return Err(error);
                }
                if stock_left == 0 {
                    self.announce(Event::SoldOut(sale));
                }
                KeyedDeduction::Claimed { stock_left }
            }
            1 => KeyedDeduction::Refused(Deduction::SoldOut),
            2 => KeyedDeduction::Refused(Deduction::LimitExceeded),
            3 => KeyedDeduction::Refused(Deduction::NotLoaded),
            4 => KeyedDeduction::InFlight,
            5 => KeyedDeduction::Replay(OrderId::new(number()?)),
            other => return Err(StoreError::Unavailable(format!("redis: unknown deduction outcome {other}"))),
        };
        Ok(Some(outcome))
    }

    async fn release(&self, sale: SaleId, reservation: Reservation) -> Result<(), StoreError> {
        let [stock, buyers, reserved] = self.keys(sale);
        let mut conn = self.conn.clone();
        let left = self
            .release
            .key(stock)
            .key(buyers)
            .key(reserved)
            .arg(reservation.user.get())
            .arg(reservation.quantity)
            .arg(reservation.order.get())
            .arg(now_ms())
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(unavailable)?;
        self.returned(sale, left, reservation.quantity);
        Ok(())
    }

    async fn settle(&self, sale: SaleId, written: &[Reservation]) -> Result<(), StoreError> {
        let [stock, buyers, reserved] = self.keys(sale);
        let mut conn = self.conn.clone();
        for chunk in written.chunks(1_000) {
            let mut invocation = self.settle.key(&stock);
            invocation.key(&buyers).key(&reserved);
            for reservation in chunk {
                invocation.arg(reservation.order.get()).arg(reservation.user.get()).arg(reservation.quantity);
            }
            let (again, short): (i64, i64) = invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
            if again > 0 {
                tracing::warn!(sale_id = %sale, again, "orders written after their reservation was reaped");
            }
            if short > 0 {
                tracing::error!(sale_id = %sale, short, "units sold twice: stock left would have gone below zero");
            }
        }
        Ok(())
    }

    async fn stale_reservations(&self, sale: SaleId, older_than: Duration) -> Result<Vec<Reservation>, StoreError> {
        let [_, _, reserved] = self.keys(sale);
        let mut conn = self.conn.clone();
        let open: HashMap<i64, String> =
            redis::cmd("HGETALL").arg(&reserved).query_async(&mut conn).await.map_err(unavailable)?;
        let before = now_ms() - older_than.as_millis() as i64;
        let expired: Vec<i64> = open
            .iter()
            .filter(|(_, value)| {
                value
                    .strip_prefix("x:")
                    .and_then(|at| at.parse::<i64>().ok())
                    .is_some_and(|at| at < now_ms() - TOMBSTONE_TTL_MS)
            })
            .map(|(order, _)| *order)
            .collect();
        if !expired.is_empty() {
            let _: Result<(), _> = redis::cmd("HDEL").arg(&reserved).arg(&expired).query_async(&mut conn).await;
        }
        Ok(open
            .into_iter()
            .filter_map(|(order, value)| open_reservation(order, &value))
            .filter(|(_, at)| *at < before)
            .map(|(reservation, _)| reservation)
            .collect())
    }

    async fn snapshot(&self, sale: SaleId, owed: &[OrderId]) -> Result<Option<LedgerSnapshot>, StoreError> {
        let [stock, _, reserved] = self.keys(sale);
        let mut conn = self.conn.clone();
        let mut invocation = self.snapshot.key(stock);
        invocation.key(reserved).key(self.returned_key(sale));
        for order in owed {
            invocation.arg(order.get());
        }
        let seen: Option<(i64, Vec<(i64, String)>, Vec<i64>)> =
            invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(seen.map(|(stock_left, reservations, back)| LedgerSnapshot {
            stock_left,
            open: reservations
                .into_iter()
                .filter_map(|(order, value)| open_reservation(order, &value))
                .map(|(reservation, _)| reservation)
                .collect(),
            returned: owed.iter().zip(back).filter(|(_, back)| *back == 1).map(|(order, _)| *order).collect(),
        }))
    }

    async fn adjust(&self, sale: SaleId, seen: i64, by: i64) -> Result<bool, StoreError> {
        let [stock, ..] = self.keys(sale);
        let mut conn = self.conn.clone();
        let left: Option<i64> =
            self.adjust.key(stock).arg(seen).arg(by).invoke_async(&mut conn).await.map_err(unavailable)?;
        if let Some(left) = left
            && by > 0
            && left > 0
        {
            self.announce(Event::Restocked(sale));
        }
        Ok(left.is_some())
    }

    async fn restore(&self, sale: SaleId, order: OrderId, user: UserId, quantity: u32) -> Result<bool, StoreError> {
        let [stock, buyers, _] = self.keys(sale);
        let mut conn = self.conn.clone();
        let left = self
            .restore
            .key(stock)
            .key(buyers)
            .key(self.returned_key(sale))
            .arg(user.get())
            .arg(quantity)
            .arg(order.get())
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(unavailable)?;
        match left {
            -1 => Ok(false),
            -2 => Ok(true),
            left => {
                self.returned(sale, left, quantity);
                Ok(true)
            }
        }
    }

    async fn stock_left(&self, sale: SaleId) -> Result<Option<i64>, StoreError> {
        let [stock, ..] = self.keys(sale);
        let mut conn = self.conn.clone();
        redis::cmd("GET").arg(stock).query_async(&mut conn).await.map_err(unavailable)
    }

    async fn forget(&self, sale: SaleId) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for key in self.keys(sale).into_iter().chain([self.returned_key(sale)]) {
            pipe.cmd("PEXPIRE").arg(key).arg(FORGOTTEN_TTL_MS).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)?;
        self.rest_over(sale);
        Ok(())
    }
}
