//! `PaymentStore` for both relational adapters, as in `crate::sql`.
//!
//! A callback is applied in one transaction: the event is recorded under
//! its id first (the inbox: a concurrent redelivery waits on that row and
//! then finds it taken), then the payment moves by a conditional update
//! (`succeeded` from anything but itself, `failed` only from `pending`), so
//! no order of arrival moves it backwards, and a success pays the order if
//! it is still `CREATED`. The ledger follows in the same transaction
//! (`crate::sql_ledger`): an opened payment's amount goes pending, a
//! success posts it with its commission, a failure voids it; the outbox
//! gets the event other contexts hear (`crate::sql_outbox`). Rows are taken
//! payment, ledger accounts, order, products.

/// `PaymentStore` for `$store` (a type with a `pool` field); the adapter's
/// module imports what it uses, `order_left_created` included.
macro_rules! payment_store {
    ($store:ty) => {
        #[async_trait]
        impl PaymentStore for $store {
            /// With the payment, its amount goes pending in the ledger.
            async fn insert(&self, payment: &Payment) -> Result<Payment, StoreError> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let sql = format!(
                    "INSERT INTO payments (id, order_id, user_id, merchant_id, amount_cents, commission_cents, status, \
                     provider, provider_ref, pay_url, created_at_ms, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
                     ON CONFLICT DO NOTHING RETURNING {PAYMENT_COLUMNS}"
                );
                let row: Option<PaymentRow> = sqlx::query_as(&sql)
                    .bind(payment.id.get())
                    .bind(payment.order_id.get())
                    .bind(payment.user_id.get())
                    .bind(payment.merchant_id.get())
                    .bind(payment.amount_cents)
                    .bind(payment.commission_cents)
                    .bind(payment.status.as_str())
                    .bind(&payment.provider)
                    .bind(&payment.provider_ref)
                    .bind(&payment.pay_url)
                    .bind(unix_ms(payment.created_at))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let Some(row) = row else {
                    // The order has a pending payment already: that one.
                    drop(tx);
                    return self.pending_of(payment.order_id).await?.ok_or(StoreError::Duplicate("payment"));
                };
                let written = Payment::try_from(row)?;
                open_transfer(&mut tx, &written, unix_ms(payment.created_at)).await.map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok(written)
            }

            async fn get(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
                let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1");
                let row: Option<PaymentRow> =
                    sqlx::query_as(&sql).bind(id.get()).fetch_optional(&self.pool).await.map_err(store_error)?;
                row.map(Payment::try_from).transpose()
            }

            async fn pending_of(&self, order: OrderId) -> Result<Option<Payment>, StoreError> {
                let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 AND status = 'pending'");
                let row: Option<PaymentRow> =
                    sqlx::query_as(&sql).bind(order.get()).fetch_optional(&self.pool).await.map_err(store_error)?;
                row.map(Payment::try_from).transpose()
            }

            async fn refund_by_key(&self, order: OrderId, key: &str) -> Result<Option<Refund>, StoreError> {
                let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE order_id = $1 AND idempotency_key = $2");
                let row: Option<RefundRow> = sqlx::query_as(&sql)
                    .bind(order.get())
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?;
                row.map(Refund::try_from).transpose()
            }

            async fn refund(&self, id: RefundId) -> Result<Option<Refund>, StoreError> {
                let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1");
                let row: Option<RefundRow> =
                    sqlx::query_as(&sql).bind(id.get()).fetch_optional(&self.pool).await.map_err(store_error)?;
                row.map(Refund::try_from).transpose()
            }

            async fn provider_records(&self, provider: &str) -> Result<Vec<ProviderRecord>, StoreError> {
                let rows: Vec<(String, i64, String, i64)> = sqlx::query_as(
                    "SELECT provider_ref, amount_cents, status, order_id FROM payments WHERE provider = $1 \
                     UNION ALL SELECT provider_ref, amount_cents, status, order_id FROM refunds WHERE provider = $1",
                )
                .bind(provider)
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
                rows.into_iter()
                    .map(|(provider_ref, amount_cents, status, order)| {
                        let status = PaymentStatus::parse(&status)
                            .ok_or_else(|| StoreError::Unavailable(format!("unknown payment status {status:?}")))?;
                        Ok(ProviderRecord { provider_ref, amount_cents, status, order_id: Some(OrderId::new(order)) })
                    })
                    .collect()
            }

            async fn captured_of(&self, order: OrderId) -> Result<Option<Payment>, StoreError> {
                let sql = format!(
                    "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 AND status = 'succeeded' ORDER BY id LIMIT 1"
                );
                let row: Option<PaymentRow> =
                    sqlx::query_as(&sql).bind(order.get()).fetch_optional(&self.pool).await.map_err(store_error)?;
                row.map(Payment::try_from).transpose()
            }

            async fn insert_refund(
                &self,
                refund: &Refund,
                idempotency_key: Option<&str>,
            ) -> Result<RefundOutcome, StoreError> {
                if let Some(key) = idempotency_key
                    && let Some(earlier) = self.refund_by_key(refund.order_id, key).await?
                {
                    return Ok(RefundOutcome::Replayed(earlier));
                }
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let taken = sqlx::query(
                    "UPDATE payments SET refunded_cents = refunded_cents + $1, updated_at_ms = $2 \
                     WHERE id = $3 AND status = 'succeeded' AND refunded_cents + $1 <= amount_cents",
                )
                .bind(refund.amount_cents)
                .bind(unix_ms(refund.created_at))
                .bind(refund.payment_id.get())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
                if taken == 0 {
                    drop(tx);
                    let payment = PaymentStore::get(self, refund.payment_id).await?;
                    let refundable = payment
                        .filter(|payment| payment.status == PaymentStatus::Succeeded)
                        .map_or(0, |payment| payment.amount_cents - payment.refunded_cents);
                    return Ok(RefundOutcome::ExceedsPayment { refundable_cents: refundable });
                }
                let sql = format!(
                    "INSERT INTO refunds (id, payment_id, order_id, merchant_id, amount_cents, reason, status, provider, \
                     provider_ref, idempotency_key, created_at_ms, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
                     ON CONFLICT DO NOTHING RETURNING {REFUND_COLUMNS}"
                );
                let row: Option<RefundRow> = sqlx::query_as(&sql)
                    .bind(refund.id.get())
                    .bind(refund.payment_id.get())
                    .bind(refund.order_id.get())
                    .bind(refund.merchant_id.get())
                    .bind(refund.amount_cents)
                    .bind(&refund.reason)
                    .bind(refund.status.as_str())
                    .bind(&refund.provider)
                    .bind(&refund.provider_ref)
                    .bind(idempotency_key)
                    .bind(unix_ms(refund.created_at))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let Some(written) = row.map(Refund::try_from).transpose()? else {
                    // A concurrent refund under the same key won: that one.
                    drop(tx);
                    let key = idempotency_key.unwrap_or_default();
                    let earlier = self.refund_by_key(refund.order_id, key).await?;
                    return earlier.map(RefundOutcome::Replayed).ok_or(StoreError::Duplicate("refund"));
                };
                open_refund_transfer(&mut tx, &written, unix_ms(refund.created_at)).await.map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok(RefundOutcome::Created(written))
            }

            async fn apply(
                &self,
                provider: &str,
                event: &ProviderEvent,
                now: OffsetDateTime,
            ) -> Result<Applied, StoreError> {
                // Each adapter runs `apply_in` in a transaction its way
                // (SQLite: group-committed with other writes).
                self.apply_event(provider, event, now).await
            }
        }

        /// Applies a provider event inside `tx`: what it did, and whether
        /// to keep its writes (`false`: roll them back; the event is not
        /// recorded as seen).
        pub(super) async fn apply_in(
            tx: &mut sqlx::Transaction<'_, Db>,
            provider: &str,
            event: &ProviderEvent,
            now: OffsetDateTime,
        ) -> Result<(Applied, bool), StoreError> {
                if event.kind.is_refund() {
                    return apply_refund_in(tx, provider, event, now).await;
                }
                let recorded = record_event(tx, provider, event, now).await.map_err(store_error)?;
                let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE provider = $1 AND provider_ref = $2");
                let row: Option<PaymentRow> = sqlx::query_as(&sql)
                    .bind(provider)
                    .bind(&event.provider_ref)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(store_error)?;
                let Some(payment) = row.map(Payment::try_from).transpose()? else {
                    return Ok((Applied::UnknownRef, false));
                };
                if payment.amount_cents != event.amount_cents {
                    return Ok((Applied::AmountMismatch(payment), false));
                }
                if recorded == 0 {
                    return Ok((Applied::Repeat(payment), false));
                }
                let (to, from) = match event.kind {
                    EventKind::PaymentSucceeded => (PaymentStatus::Succeeded, "status <> 'succeeded'"),
                    _ => (PaymentStatus::Failed, "status = 'pending'"),
                };
                let sql = format!(
                    "UPDATE payments SET status = $1, updated_at_ms = $2 WHERE id = $3 AND {from} \
                     RETURNING {PAYMENT_COLUMNS}"
                );
                let moved: Option<PaymentRow> = sqlx::query_as(&sql)
                    .bind(to.as_str())
                    .bind(unix_ms(now))
                    .bind(payment.id.get())
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(store_error)?;
                let Some(moved) = moved.map(Payment::try_from).transpose()? else {
                    // Seen, and kept as seen; the payment stays as it is.
                    return Ok((Applied::Stale(payment), true));
                };
                let (payment_id, order_id, amount_cents) = (moved.id, moved.order_id, moved.amount_cents);
                let (products, event) = match to {
                    PaymentStatus::Succeeded => {
                        post_payment(tx, &moved, unix_ms(now)).await.map_err(store_error)?;
                        let products = pay_order(tx, &moved, now).await.map_err(store_error)?;
                        (products, DomainEvent::PaymentSucceeded { payment_id, order_id, amount_cents })
                    }
                    _ => {
                        void_payment(tx, &moved, unix_ms(now)).await.map_err(store_error)?;
                        (Vec::new(), DomainEvent::PaymentFailed { payment_id, order_id, amount_cents })
                    }
                };
                record_events(&mut **tx, &[EventRecord::new(event, unix_ms(now))]).await.map_err(store_error)?;
                Ok((Applied::Moved { payment: moved, products, refund: None }, true))
        }


        /// A refund event, as `apply_in`: recorded once; `pending` moves to
        /// `succeeded` (the ledger posts it) or `failed` (its amount may be
        /// refunded again; the ledger voids it); both are final.
        async fn apply_refund_in(
            tx: &mut sqlx::Transaction<'_, Db>,
            provider: &str,
            event: &ProviderEvent,
            now: OffsetDateTime,
        ) -> Result<(Applied, bool), StoreError> {
                let recorded = record_event(tx, provider, event, now).await.map_err(store_error)?;
                let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE provider = $1 AND provider_ref = $2");
                let row: Option<RefundRow> = sqlx::query_as(&sql)
                    .bind(provider)
                    .bind(&event.provider_ref)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(store_error)?;
                let Some(refund) = row.map(Refund::try_from).transpose()? else {
                    return Ok((Applied::UnknownRef, false));
                };
                let payment = payment_in(tx, refund.payment_id).await?;
                if refund.amount_cents != event.amount_cents {
                    return Ok((Applied::AmountMismatch(payment), false));
                }
                if recorded == 0 {
                    return Ok((Applied::Repeat(payment), false));
                }
                let succeeded = event.kind == EventKind::RefundSucceeded;
                let to = if succeeded { PaymentStatus::Succeeded } else { PaymentStatus::Failed };
                let sql = format!(
                    "UPDATE refunds SET status = $1, updated_at_ms = $2 WHERE id = $3 AND status = 'pending' \
                     RETURNING {REFUND_COLUMNS}"
                );
                let moved: Option<RefundRow> = sqlx::query_as(&sql)
                    .bind(to.as_str())
                    .bind(unix_ms(now))
                    .bind(refund.id.get())
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(store_error)?;
                let Some(moved) = moved.map(Refund::try_from).transpose()? else {
                    return Ok((Applied::Stale(payment), true));
                };
                if !succeeded {
                    sqlx::query("UPDATE payments SET refunded_cents = refunded_cents - $1, updated_at_ms = $2 WHERE id = $3")
                        .bind(refund.amount_cents)
                        .bind(unix_ms(now))
                        .bind(refund.payment_id.get())
                        .execute(&mut **tx)
                        .await
                        .map_err(store_error)?;
                }
                settle_refund_transfer(tx, &refund, succeeded, unix_ms(now)).await.map_err(store_error)?;
                let (refund_id, payment_id, order_id, amount_cents) =
                    (refund.id, refund.payment_id, refund.order_id, refund.amount_cents);
                let event = if succeeded {
                    DomainEvent::RefundSucceeded { refund_id, payment_id, order_id, amount_cents }
                } else {
                    DomainEvent::RefundFailed { refund_id, payment_id, order_id, amount_cents }
                };
                record_events(&mut **tx, &[EventRecord::new(event, unix_ms(now))]).await.map_err(store_error)?;
                let payment = payment_in(tx, refund.payment_id).await?;
                Ok((Applied::Moved { payment, products: Vec::new(), refund: Some(moved) }, true))
        }


        async fn payment_in(tx: &mut sqlx::Transaction<'_, Db>, id: PaymentId) -> Result<Payment, StoreError> {
            let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1");
            let row: PaymentRow = sqlx::query_as(&sql).bind(id.get()).fetch_one(&mut **tx).await.map_err(store_error)?;
            Payment::try_from(row)
        }

        /// Records the event under its id, for the payment it names; whether
        /// it is new (0: seen before, or no such payment). The write comes
        /// first in its transaction: SQLite then takes its write lock at once
        /// (waiting its busy timeout) instead of failing to upgrade a read;
        /// a transaction returning early rolls it back.
        async fn record_event(
            tx: &mut sqlx::Transaction<'_, Db>,
            provider: &str,
            event: &ProviderEvent,
            now: OffsetDateTime,
        ) -> Result<u64, sqlx::Error> {
            // A refund's reference names a refund, of a payment.
            let (payment, source) = if event.kind.is_refund() { ("payment_id", "refunds") } else { ("id", "payments") };
            let sql = format!(
                "INSERT INTO payment_events (provider, event_id, payment_id, kind, amount_cents, received_at_ms) \
                 SELECT $1, $2, {payment}, $4, $5, $6 FROM {source} WHERE provider = $1 AND provider_ref = $3 \
                 ON CONFLICT DO NOTHING"
            );
            let recorded = sqlx::query(&sql)
            .bind(provider)
            .bind(&event.event_id)
            .bind(&event.provider_ref)
            .bind(event.kind.as_str())
            .bind(event.amount_cents)
            .bind(unix_ms(now))
            .execute(&mut **tx)
            .await?;
            Ok(recorded.rows_affected())
        }

        /// A captured payment pays its order if the order still waits for it
        /// (its units leave `reserved`); the products whose units moved. An
        /// order cancelled meanwhile stays cancelled, with money captured:
        /// logged, for reconciliation and a refund.
        async fn pay_order(
            tx: &mut sqlx::Transaction<'_, Db>,
            payment: &Payment,
            now: OffsetDateTime,
        ) -> Result<Vec<ProductId>, sqlx::Error> {
            let sql = format!(
                "UPDATE orders SET status = 'PAID', pay_by_ms = NULL, updated_at_ms = $1 \
                 WHERE id = $2 AND status = 'CREATED' RETURNING {ORDER_COLUMNS}"
            );
            let row: Option<OrderRow> =
                sqlx::query_as(&sql).bind(unix_ms(now)).bind(payment.order_id.get()).fetch_optional(&mut **tx).await?;
            let Some(order) = row.map(Order::try_from).transpose().map_err(|error| sqlx::Error::Decode(Box::new(error)))?
            else {
                tracing::warn!(payment_id = %payment.id, order_id = %payment.order_id,
                    "payment captured for an order that is no longer CREATED; it needs a refund");
                return Ok(Vec::new());
            };
            order_left_created(tx, &order, OrderStatus::Paid).await?;
            Ok(order.items.iter().map(|item| item.product_id).collect())
        }
    };
}

pub(crate) use payment_store;
