//! `AfterSaleStore` for both relational adapters, as in `crate::sql`.
//!
//! Each step is one transaction opening with a conditional `UPDATE` of the
//! return it decides on (`... WHERE status = 'requested'`): of two racing
//! decisions one moves it and the other finds nothing to move, and the
//! order, the shipment, the stock and the outbox move in the same
//! transaction as the return.

use surge_domain::aftersale::{Return, ReturnStatus};
use surge_domain::{MerchantId, OrderId, RefundId, ReturnId, StoreError, UserId};

use crate::rows::from_unix_ms;

/// id, order, buyer, merchant, status, reason, waybill, refund cents,
/// refund, attempt's refund, attempts, created at, updated at.
pub(crate) type ReturnRow =
    (i64, i64, i64, i64, String, String, Option<String>, Option<i64>, Option<i64>, Option<i64>, i64, i64, i64);

pub(crate) const RETURN_COLUMNS: &str = "id, order_id, user_id, merchant_id, status, reason, waybill, \
                                         refund_cents, refund_id, attempt_refund_id, refund_attempts, \
                                         created_at_ms, updated_at_ms";

pub(crate) fn return_of(
    (id, order, user, merchant, status, reason, waybill, cents, refund, attempt, attempts, created, updated): ReturnRow,
) -> Result<Return, StoreError> {
    Ok(Return {
        status: ReturnStatus::parse(&status)
            .ok_or_else(|| StoreError::Unavailable(format!("return {id}: unknown status {status}")))?,
        id: ReturnId::new(id),
        order_id: OrderId::new(order),
        user_id: UserId::new(user),
        merchant_id: MerchantId::new(merchant),
        reason,
        waybill,
        refund_cents: cents,
        refund_id: refund.map(RefundId::new),
        attempt_refund_id: attempt.map(RefundId::new),
        refund_attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        created_at: from_unix_ms(created),
        updated_at: from_unix_ms(updated),
    })
}

/// `AfterSaleStore` for `$store`; the adapter's module imports what it uses
/// (the fulfilment steps' `insert_shipment` among it).
macro_rules! aftersale_store {
    ($store:ty, $db:ty) => {
        use $crate::sql_aftersale::{RETURN_COLUMNS, ReturnRow, return_of};

        /// Moves the return `id` from `from` by `set` (an SQL `SET` list
        /// whose `$2` is `now`), the first write of its transaction.
        async fn move_return(
            tx: &mut sqlx::Transaction<'_, $db>,
            id: ReturnId,
            from: &str,
            set: &str,
            now_ms: i64,
        ) -> Result<Option<Return>, StoreError> {
            let sql = format!(
                "UPDATE returns SET {set}, updated_at_ms = $2 WHERE id = $1 AND status = '{from}' \
                 RETURNING {RETURN_COLUMNS}"
            );
            let row: Option<ReturnRow> = sqlx::query_as(&sql)
                .bind(id.get())
                .bind(now_ms)
                .fetch_optional(&mut **tx)
                .await
                .map_err(store_error)?;
            row.map(return_of).transpose()
        }

        /// The order `from` → `to`, if it is still `from`.
        async fn move_order(
            tx: &mut sqlx::Transaction<'_, $db>,
            order: OrderId,
            from: &str,
            to: &str,
            now_ms: i64,
        ) -> Result<(), StoreError> {
            sqlx::query("UPDATE orders SET status = $3, updated_at_ms = $4 WHERE id = $1 AND status = $2")
                .bind(order.get())
                .bind(from)
                .bind(to)
                .bind(now_ms)
                .execute(&mut **tx)
                .await
                .map(drop)
                .map_err(store_error)
        }

        impl $store {
            async fn return_by_key(&self, user: UserId, key: &str) -> Result<Option<Return>, StoreError> {
                let sql = format!("SELECT {RETURN_COLUMNS} FROM returns WHERE user_id = $1 AND idempotency_key = $2");
                let row: Option<ReturnRow> = sqlx::query_as(&sql)
                    .bind(user.get())
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?;
                row.map(return_of).transpose()
            }
        }

        #[async_trait]
        impl AfterSaleStore for $store {
            async fn request(&self, new: &NewReturn, now: OffsetDateTime) -> Result<Option<Return>, StoreError> {
                let key = new.idempotency_key.as_deref();
                if let Some(key) = key
                    && let Some(first) = self.return_by_key(new.user_id, key).await?
                {
                    return Ok(Some(first));
                }
                let now_ms = unix_ms(now);
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let moved = sqlx::query(
                    "UPDATE orders SET status = 'RETURN_REQUESTED', updated_at_ms = $2 \
                     WHERE id = $1 AND status = 'DELIVERED'",
                )
                .bind(new.order_id.get())
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                if moved.rows_affected() == 0 {
                    drop(tx);
                    // A racing request with the same key may have won.
                    return match key {
                        Some(key) => self.return_by_key(new.user_id, key).await,
                        None => Ok(None),
                    };
                }
                let sql = format!(
                    "INSERT INTO returns (id, order_id, user_id, merchant_id, status, reason, idempotency_key, \
                     created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, 'requested', $5, $6, $7, $7) \
                     ON CONFLICT DO NOTHING RETURNING {RETURN_COLUMNS}"
                );
                let row: Option<ReturnRow> = sqlx::query_as(&sql)
                    .bind(new.id.get())
                    .bind(new.order_id.get())
                    .bind(new.user_id.get())
                    .bind(new.merchant_id.get())
                    .bind(&new.reason)
                    .bind(key)
                    .bind(now_ms)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let Some(row) = row else {
                    // The buyer's key, taken meanwhile by a request for
                    // another order: that return (the caller tells).
                    drop(tx);
                    return match key {
                        Some(key) => self.return_by_key(new.user_id, key).await,
                        None => Ok(None),
                    };
                };
                tx.commit().await.map_err(store_error)?;
                return_of(row).map(Some)
            }

            async fn get(&self, id: ReturnId) -> Result<Option<Return>, StoreError> {
                let sql = format!("SELECT {RETURN_COLUMNS} FROM returns WHERE id = $1");
                let row: Option<ReturnRow> =
                    sqlx::query_as(&sql).bind(id.get()).fetch_optional(&self.pool).await.map_err(store_error)?;
                row.map(return_of).transpose()
            }

            async fn approve(
                &self,
                id: ReturnId,
                reverse: &NewShipment,
                now: OffsetDateTime,
            ) -> Result<Option<Return>, StoreError> {
                let now_ms = unix_ms(now);
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let Some(mut approved) = move_return(&mut tx, id, "requested", "status = 'approved'", now_ms).await?
                else {
                    return Ok(None);
                };
                sqlx::query("UPDATE returns SET waybill = $2 WHERE id = $1")
                    .bind(id.get())
                    .bind(&reverse.waybill)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                approved.waybill = Some(reverse.waybill.clone());
                insert_shipment(&mut *tx, reverse, "awaiting_courier", now_ms).await.map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok(Some(approved))
            }

            async fn reject(&self, id: ReturnId, now: OffsetDateTime) -> Result<Option<Return>, StoreError> {
                let now_ms = unix_ms(now);
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let Some(rejected) = move_return(&mut tx, id, "requested", "status = 'rejected'", now_ms).await? else {
                    return Ok(None);
                };
                move_order(&mut tx, rejected.order_id, "RETURN_REQUESTED", "DELIVERED", now_ms).await?;
                tx.commit().await.map_err(store_error)?;
                Ok(Some(rejected))
            }

            async fn pass(
                &self,
                id: ReturnId,
                refund_cents: i64,
                units: &ReturnUnits,
                now: OffsetDateTime,
            ) -> Result<Option<Return>, StoreError> {
                let now_ms = unix_ms(now);
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let set = format!("status = 'refunding', refund_cents = {refund_cents}, next_refund_at_ms = $2");
                let Some(passed) = move_return(&mut tx, id, "received", &set, now_ms).await? else {
                    return Ok(None);
                };
                move_order(&mut tx, passed.order_id, "RETURN_REQUESTED", "RETURNED", now_ms).await?;
                let mut units = units.to_vec();
                units.sort_unstable();
                for (product, quantity) in units {
                    sqlx::query("UPDATE products SET stock = stock + $1, updated_at_ms = $2 WHERE id = $3")
                        .bind(i64::from(quantity))
                        .bind(now_ms)
                        .bind(product.get())
                        .execute(&mut *tx)
                        .await
                        .map_err(store_error)?;
                }
                let accepted =
                    DomainEvent::ReturnAccepted { return_id: passed.id, order_id: passed.order_id, refund_cents };
                record_events(&mut *tx, &[EventRecord::new(accepted, now_ms)]).await.map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok(Some(passed))
            }

            async fn fail(
                &self,
                id: ReturnId,
                back: &NewShipment,
                now: OffsetDateTime,
            ) -> Result<Option<Return>, StoreError> {
                let now_ms = unix_ms(now);
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let Some(failed) = move_return(&mut tx, id, "received", "status = 'inspection_failed'", now_ms).await?
                else {
                    return Ok(None);
                };
                move_order(&mut tx, failed.order_id, "RETURN_REQUESTED", "DELIVERED", now_ms).await?;
                insert_shipment(&mut *tx, back, "created", now_ms).await.map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok(Some(failed))
            }

            async fn due_refunds(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<ReturnId>, StoreError> {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT id FROM returns WHERE status = 'refunding' AND next_refund_at_ms <= $1 \
                     ORDER BY next_refund_at_ms LIMIT $2",
                )
                .bind(unix_ms(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(ids.into_iter().map(ReturnId::new).collect())
            }

            async fn claim_refund(
                &self,
                id: ReturnId,
                now: OffsetDateTime,
                lease_until: OffsetDateTime,
                attempt: RefundId,
            ) -> Result<Option<Return>, StoreError> {
                let sql = format!(
                    "UPDATE returns SET next_refund_at_ms = $3, attempt_refund_id = COALESCE(attempt_refund_id, $4) \
                     WHERE id = $1 AND status = 'refunding' AND next_refund_at_ms <= $2 RETURNING {RETURN_COLUMNS}"
                );
                let row: Option<ReturnRow> = sqlx::query_as(&sql)
                    .bind(id.get())
                    .bind(unix_ms(now))
                    .bind(unix_ms(lease_until))
                    .bind(attempt.get())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?;
                row.map(return_of).transpose()
            }

            async fn refund_asked(&self, id: ReturnId, refund: RefundId, now: OffsetDateTime) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE returns SET refund_id = $2, next_refund_at_ms = NULL, updated_at_ms = $3 \
                     WHERE id = $1 AND status = 'refunding' AND attempt_refund_id = $2",
                )
                .bind(id.get())
                .bind(refund.get())
                .bind(unix_ms(now))
                .execute(&self.pool)
                .await
                .map(drop)
                .map_err(store_error)
            }

            async fn refund_retry(
                &self,
                id: ReturnId,
                failed: Option<RefundId>,
                retry_at: OffsetDateTime,
                now: OffsetDateTime,
            ) -> Result<(), StoreError> {
                let query = match failed {
                    Some(failed) => sqlx::query(
                        "UPDATE returns SET refund_id = NULL, attempt_refund_id = NULL, \
                         refund_attempts = refund_attempts + 1, next_refund_at_ms = $2, updated_at_ms = $3 \
                         WHERE id = $1 AND status = 'refunding' AND attempt_refund_id = $4",
                    )
                    .bind(id.get())
                    .bind(unix_ms(retry_at))
                    .bind(unix_ms(now))
                    .bind(failed.get()),
                    None => sqlx::query(
                        "UPDATE returns SET refund_attempts = refund_attempts + 1, next_refund_at_ms = $2, \
                         updated_at_ms = $3 WHERE id = $1 AND status = 'refunding'",
                    )
                    .bind(id.get())
                    .bind(unix_ms(retry_at))
                    .bind(unix_ms(now)),
                };
                query.execute(&self.pool).await.map(drop).map_err(store_error)
            }

            async fn of_refund(&self, refund: RefundId) -> Result<Option<Return>, StoreError> {
                let sql = format!(
                    "SELECT {RETURN_COLUMNS} FROM returns WHERE attempt_refund_id = $1 AND status = 'refunding'"
                );
                let row: Option<ReturnRow> =
                    sqlx::query_as(&sql).bind(refund.get()).fetch_optional(&self.pool).await.map_err(store_error)?;
                row.map(return_of).transpose()
            }

            async fn refunded(&self, refund: RefundId, now: OffsetDateTime) -> Result<Option<Return>, StoreError> {
                let now_ms = unix_ms(now);
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let sql = format!(
                    "UPDATE returns SET status = 'refunded', refund_id = $1, next_refund_at_ms = NULL, \
                     updated_at_ms = $2 WHERE attempt_refund_id = $1 AND status = 'refunding' \
                     RETURNING {RETURN_COLUMNS}"
                );
                let row: Option<ReturnRow> = sqlx::query_as(&sql)
                    .bind(refund.get())
                    .bind(now_ms)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let Some(done) = row.map(return_of).transpose()? else {
                    return Ok(None);
                };
                move_order(&mut tx, done.order_id, "RETURNED", "REFUNDED", now_ms).await?;
                tx.commit().await.map_err(store_error)?;
                Ok(Some(done))
            }
        }
    };
}

pub(crate) use aftersale_store;
