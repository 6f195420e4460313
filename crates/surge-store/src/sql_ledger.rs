//! The double-entry ledger's statements, shared by both relational adapters
//! (see `surge_domain::settlement` for the accounts and what posts to
//! them). Every posting runs inside the payment's own transaction, after
//! the payment's row is updated (on PostgreSQL that row's lock orders all
//! postings of one payment), and moves the accounts it touches in
//! ascending name order, so two transactions never wait on each other's
//! accounts in opposite orders.

/// `LedgerStore` for `$store`, and the postings for `$conn` (the driver's
/// connection type); the adapter's module imports what they use.
macro_rules! ledger_store {
    ($store:ty, $conn:ty) => {
        #[async_trait]
        impl LedgerStore for $store {
            async fn accounts(&self) -> Result<Vec<AccountTotals>, StoreError> {
                let rows: Vec<(String, i64, i64)> =
                    sqlx::query_as("SELECT name, debits_posted, credits_posted FROM ledger_accounts ORDER BY name")
                        .fetch_all(&self.pool)
                        .await
                        .map_err(store_error)?;
                Ok(rows
                    .into_iter()
                    .map(|(name, debit_cents, credit_cents)| AccountTotals { name, debit_cents, credit_cents })
                    .collect())
            }

            async fn merchant_balance(&self, merchant: MerchantId) -> Result<MerchantBalance, StoreError> {
                // One statement: a payout moves the account and adds its
                // row in one transaction, and this reads both in one snapshot.
                let row: Option<(i64, i64, i64, i64, i64)> = sqlx::query_as(
                    "SELECT debits_pending, credits_pending, debits_posted, credits_posted, \
                     (SELECT CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) FROM payouts WHERE merchant_id = $2) \
                     FROM ledger_accounts WHERE name = $1",
                )
                .bind(merchant_payable(merchant))
                .bind(merchant.get())
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
                let Some((debits_pending, credits_pending, debits_posted, credits_posted, paid_out_cents)) = row else {
                    return Ok(MerchantBalance::default());
                };
                // A refund on its way out is no longer available (as a
                // provider takes a refund from the balance when it is asked);
                // payouts are posted debits, so they left `available` too.
                Ok(MerchantBalance {
                    pending_cents: credits_pending,
                    available_cents: credits_posted - debits_posted - debits_pending,
                    paid_out_cents,
                })
            }
        }

        #[async_trait]
        impl ReconciliationStore for $store {
            async fn reconcile(&self, limit: u32) -> Result<Reconciliation, StoreError> {
                // One transaction: one snapshot on SQLite; on PostgreSQL
                // (read committed) a write between two checks may show in
                // one and not the other, and the next pass settles it.
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let paid = "('PAID', 'FULFILLING', 'DELIVERED', 'RETURN_REQUESTED', 'RETURNED', 'REFUNDED')";
                let checks = [
                    (
                        MismatchKind::PaidWithoutCapture,
                        format!(
                            "SELECT o.id, o.status FROM orders o WHERE o.status IN {paid} AND NOT EXISTS \
                             (SELECT 1 FROM payments p WHERE p.order_id = o.id AND p.status = 'succeeded') \
                             ORDER BY o.id LIMIT $1"
                        ),
                    ),
                    (
                        MismatchKind::CaptureWithoutPaidOrder,
                        format!(
                            "SELECT p.order_id, 'payment ' || CAST(p.id AS TEXT) || ' captured; the order is ' || o.status \
                             FROM payments p JOIN orders o ON o.id = p.order_id \
                             WHERE p.status = 'succeeded' AND o.status NOT IN {paid} ORDER BY p.order_id LIMIT $1"
                        ),
                    ),
                    (
                        MismatchKind::AmountDiffers,
                        "SELECT p.order_id, 'payment ' || CAST(p.amount_cents AS TEXT) || ', order ' \
                         || CAST(o.amount_cents AS TEXT) FROM payments p JOIN orders o ON o.id = p.order_id \
                         WHERE p.status = 'succeeded' AND p.amount_cents <> o.amount_cents ORDER BY p.order_id LIMIT $1"
                            .to_owned(),
                    ),
                    (
                        MismatchKind::CapturedTwice,
                        "SELECT order_id, CAST(COUNT(*) AS TEXT) || ' payments captured' FROM payments \
                         WHERE status = 'succeeded' GROUP BY order_id HAVING COUNT(*) > 1 ORDER BY order_id LIMIT $1"
                            .to_owned(),
                    ),
                    (
                        MismatchKind::CaptureWithoutLedgerEntry,
                        "SELECT p.order_id, 'payment ' || CAST(p.id AS TEXT) FROM payments p \
                         WHERE p.status = 'succeeded' AND p.amount_cents > 0 AND NOT EXISTS (SELECT 1 FROM \
                         ledger_transfers t WHERE t.payment_id = p.id AND t.code = 'capture' AND t.status = 'posted') \
                         ORDER BY p.order_id LIMIT $1"
                            .to_owned(),
                    ),
                    (
                        MismatchKind::RefundWithoutLedgerEntry,
                        "SELECT r.order_id, 'refund ' || CAST(r.id AS TEXT) FROM refunds r \
                         WHERE r.status = 'succeeded' AND NOT EXISTS (SELECT 1 FROM ledger_transfers t \
                         WHERE t.payment_id = r.payment_id AND t.code = 'refund:' || CAST(r.id AS TEXT) \
                         AND t.status = 'posted') ORDER BY r.order_id LIMIT $1"
                            .to_owned(),
                    ),
                    (
                        MismatchKind::ReturnRefundOutstanding,
                        "SELECT order_id, 'return ' || CAST(id AS TEXT) || ': ' || CAST(refund_attempts AS TEXT) \
                         || ' refund attempts failed' FROM returns WHERE status = 'refunding' \
                         AND refund_attempts > 0 ORDER BY order_id LIMIT $1"
                            .to_owned(),
                    ),
                ];
                let mut mismatches = Vec::new();
                for (kind, sql) in checks {
                    let rows: Vec<(i64, String)> =
                        sqlx::query_as(&sql).bind(i64::from(limit)).fetch_all(&mut *tx).await.map_err(store_error)?;
                    mismatches.extend(rows.into_iter().map(|(order, detail)| Mismatch {
                        kind,
                        order_id: Some(OrderId::new(order)),
                        detail,
                    }));
                }
                let sql = format!(
                    "SELECT (SELECT COUNT(*) FROM orders WHERE status IN {paid}) + (SELECT COUNT(*) FROM payments)"
                );
                let checked: i64 = sqlx::query_scalar(&sql).fetch_one(&mut *tx).await.map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok(Reconciliation { checked: u64::try_from(checked).unwrap_or(0), mismatches })
            }
        }

        /// How one posting moves one account.
        #[derive(Default, Clone, Copy)]
        struct Deltas {
            debits_pending: i64,
            credits_pending: i64,
            debits_posted: i64,
            credits_posted: i64,
        }

        /// Moves the accounts, in ascending name order, each by its deltas
        /// (created empty at its first posting: a row proposed with a
        /// negative delta would fail the CHECK before any conflict is seen).
        async fn move_accounts(conn: &mut $conn, mut moves: Vec<(String, Deltas)>) -> Result<(), sqlx::Error> {
            moves.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, d) in moves {
                sqlx::query("INSERT INTO ledger_accounts (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
                    .bind(&name)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(
                    "UPDATE ledger_accounts SET debits_pending = debits_pending + $2, \
                     credits_pending = credits_pending + $3, debits_posted = debits_posted + $4, \
                     credits_posted = credits_posted + $5 WHERE name = $1",
                )
                .bind(name)
                .bind(d.debits_pending)
                .bind(d.credits_pending)
                .bind(d.debits_posted)
                .bind(d.credits_posted)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        async fn insert_transfer(
            conn: &mut $conn,
            payment: PaymentId,
            code: &str,
            (debit, credit): (&str, &str),
            amount: i64,
            status: &str,
            now_ms: i64,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO ledger_transfers (payment_id, code, debit_account, credit_account, amount_cents, status, \
                 created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(payment.get())
            .bind(code)
            .bind(debit)
            .bind(credit)
            .bind(amount)
            .bind(status)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map(drop)
        }

        /// A payment was opened: its amount is pending from the provider's
        /// clearing account to the merchant's payable one.
        pub(super) async fn open_transfer(conn: &mut $conn, payment: &Payment, now_ms: i64) -> Result<(), sqlx::Error> {
            let amount = payment.amount_cents;
            if amount == 0 {
                return Ok(());
            }
            let payable = merchant_payable(payment.merchant_id);
            move_accounts(
                conn,
                vec![
                    (PROVIDER_CLEARING.to_owned(), Deltas { debits_pending: amount, ..Deltas::default() }),
                    (payable.clone(), Deltas { credits_pending: amount, ..Deltas::default() }),
                ],
            )
            .await?;
            insert_transfer(conn, payment.id, "capture", (PROVIDER_CLEARING, &payable), amount, "pending", now_ms).await
        }

        /// A transfer's status, if there is one.
        async fn transfer_status(
            conn: &mut $conn,
            payment: PaymentId,
            code: &str,
        ) -> Result<Option<String>, sqlx::Error> {
            sqlx::query_scalar("SELECT status FROM ledger_transfers WHERE payment_id = $1 AND code = $2")
                .bind(payment.get())
                .bind(code)
                .fetch_optional(&mut *conn)
                .await
        }

        async fn set_transfer_status(
            conn: &mut $conn,
            payment: PaymentId,
            code: &str,
            status: &str,
            now_ms: i64,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "UPDATE ledger_transfers SET status = $1, updated_at_ms = $2 WHERE payment_id = $3 AND code = $4",
            )
            .bind(status)
            .bind(now_ms)
            .bind(payment.get())
            .bind(code)
            .execute(&mut *conn)
            .await
            .map(drop)
        }

        /// The payment was captured: its transfer posts (from pending, or
        /// from voided when a failure came first), and the commission goes
        /// from the merchant's payable account to the platform's.
        pub(super) async fn post_payment(conn: &mut $conn, payment: &Payment, now_ms: i64) -> Result<(), sqlx::Error> {
            let amount = payment.amount_cents;
            if amount == 0 {
                return Ok(());
            }
            let payable = merchant_payable(payment.merchant_id);
            let was_pending = transfer_status(conn, payment.id, "capture").await?.as_deref() == Some("pending");
            let released = if was_pending { amount } else { 0 };
            let commission = payment.commission_cents;
            let moves = vec![
                (
                    PROVIDER_CLEARING.to_owned(),
                    Deltas { debits_pending: -released, debits_posted: amount, ..Deltas::default() },
                ),
                (
                    payable.clone(),
                    Deltas {
                        credits_pending: -released,
                        credits_posted: amount,
                        debits_posted: commission,
                        ..Deltas::default()
                    },
                ),
                (PLATFORM_COMMISSION.to_owned(), Deltas { credits_posted: commission, ..Deltas::default() }),
            ];
            move_accounts(conn, moves).await?;
            set_transfer_status(conn, payment.id, "capture", "posted", now_ms).await?;
            if commission > 0 {
                insert_transfer(
                    conn,
                    payment.id,
                    "commission",
                    (&payable, PLATFORM_COMMISSION),
                    commission,
                    "posted",
                    now_ms,
                )
                .await?;
            }
            Ok(())
        }

        /// The payment failed: its pending transfer is voided.
        pub(super) async fn void_payment(conn: &mut $conn, payment: &Payment, now_ms: i64) -> Result<(), sqlx::Error> {
            if transfer_status(conn, payment.id, "capture").await?.as_deref() != Some("pending") {
                return Ok(());
            }
            let amount = payment.amount_cents;
            let moves = vec![
                (PROVIDER_CLEARING.to_owned(), Deltas { debits_pending: -amount, ..Deltas::default() }),
                (merchant_payable(payment.merchant_id), Deltas { credits_pending: -amount, ..Deltas::default() }),
            ];
            move_accounts(conn, moves).await?;
            set_transfer_status(conn, payment.id, "capture", "voided", now_ms).await
        }

        fn refund_code(refund: &Refund) -> String {
            format!("refund:{}", refund.id)
        }

        /// A refund was asked for: its amount is pending from the
        /// merchant's payable account back to the provider's clearing one.
        pub(super) async fn open_refund_transfer(
            conn: &mut $conn,
            refund: &Refund,
            now_ms: i64,
        ) -> Result<(), sqlx::Error> {
            let amount = refund.amount_cents;
            let payable = merchant_payable(refund.merchant_id);
            let moves = vec![
                (payable.clone(), Deltas { debits_pending: amount, ..Deltas::default() }),
                (PROVIDER_CLEARING.to_owned(), Deltas { credits_pending: amount, ..Deltas::default() }),
            ];
            move_accounts(conn, moves).await?;
            let code = refund_code(refund);
            insert_transfer(conn, refund.payment_id, &code, (&payable, PROVIDER_CLEARING), amount, "pending", now_ms)
                .await
        }

        /// The refund went through (`posted`) or not (`voided`): its pending
        /// transfer settles either way.
        pub(super) async fn settle_refund_transfer(
            conn: &mut $conn,
            refund: &Refund,
            posted: bool,
            now_ms: i64,
        ) -> Result<(), sqlx::Error> {
            let code = refund_code(refund);
            if transfer_status(conn, refund.payment_id, &code).await?.as_deref() != Some("pending") {
                return Ok(());
            }
            let amount = refund.amount_cents;
            let kept = if posted { amount } else { 0 };
            let moves = vec![
                (
                    merchant_payable(refund.merchant_id),
                    Deltas { debits_pending: -amount, debits_posted: kept, ..Deltas::default() },
                ),
                (
                    PROVIDER_CLEARING.to_owned(),
                    Deltas { credits_pending: -amount, credits_posted: kept, ..Deltas::default() },
                ),
            ];
            move_accounts(conn, moves).await?;
            set_transfer_status(conn, refund.payment_id, &code, if posted { "posted" } else { "voided" }, now_ms).await
        }
    };
}

pub(crate) use ledger_store;
