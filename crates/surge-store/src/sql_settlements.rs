//! `StatementStore` for both relational adapters, as in `crate::sql`: a
//! settlement run sums the ledger's posted transfers per merchant and UTC
//! day and writes one statement per (merchant, day), `ON CONFLICT DO
//! NOTHING`, so racing runs close each day once. A payout marks a
//! merchant's closed statements `paid` by a conditional update and posts
//! their net from its payable account in the same transaction, only while
//! the account's available balance covers it.

/// `StatementStore` for `$store`; the adapter's module imports what it uses.
macro_rules! statement_store {
    ($store:ty) => {
        /// A statement as a row: id, merchant, period start and end, gross,
        /// refunds, commission, net, status, payout.
        type StatementRow = (i64, i64, i64, i64, i64, i64, i64, i64, String, Option<i64>);

        const STATEMENT_COLUMNS: &str = "id, merchant_id, period_start_ms, period_end_ms, gross_cents, refunds_cents, \
                                         commission_cents, net_cents, status, payout_id";

        /// A payout as a row: id, merchant, amount, statements, status,
        /// created at.
        type PayoutRow = (i64, i64, i64, i64, String, i64);

        const PAYOUT_COLUMNS: &str = "id, merchant_id, amount_cents, statements, status, created_at_ms";

        fn payout((id, merchant, amount, statements, status, created): PayoutRow) -> Payout {
            Payout {
                id: PayoutId::new(id),
                merchant_id: MerchantId::new(merchant),
                amount_cents: amount,
                statements: u32::try_from(statements).unwrap_or(u32::MAX),
                status,
                created_at: from_unix_ms(created),
            }
        }

        /// Pays the merchant's closed statements in one transaction, or
        /// nothing (their net is not positive, the balance does not cover
        /// it, or a racing run took them first).
        async fn pay_merchant(
            store: &$store,
            merchant: i64,
            id: i64,
            now_ms: i64,
        ) -> Result<Option<Payout>, sqlx::Error> {
            let mut tx = store.pool.begin().await?;
            let nets: Vec<i64> = sqlx::query_scalar(
                "UPDATE settlements SET status = 'paid', payout_id = $1 \
                 WHERE merchant_id = $2 AND status = 'closed' RETURNING net_cents",
            )
            .bind(id)
            .bind(merchant)
            .fetch_all(&mut *tx)
            .await?;
            let amount: i64 = nets.iter().sum();
            if amount <= 0 {
                return Ok(None);
            }
            let payable = merchant_payable(MerchantId::new(merchant));
            let covered = sqlx::query(
                "UPDATE ledger_accounts SET debits_posted = debits_posted + $2 \
                 WHERE name = $1 AND credits_posted - debits_posted - debits_pending >= $2",
            )
            .bind(&payable)
            .bind(amount)
            .execute(&mut *tx)
            .await?;
            if covered.rows_affected() == 0 {
                return Ok(None);
            }
            sqlx::query("UPDATE ledger_accounts SET credits_posted = credits_posted + $2 WHERE name = $1")
                .bind(PROVIDER_CLEARING)
                .bind(amount)
                .execute(&mut *tx)
                .await?;
            let sql = format!(
                "INSERT INTO payouts ({PAYOUT_COLUMNS}, debit_account, credit_account) \
                 VALUES ($1, $2, $3, $4, 'paid', $5, $6, $7) RETURNING {PAYOUT_COLUMNS}"
            );
            let row: PayoutRow = sqlx::query_as(&sql)
                .bind(id)
                .bind(merchant)
                .bind(amount)
                .bind(nets.len() as i64)
                .bind(now_ms)
                .bind(&payable)
                .bind(PROVIDER_CLEARING)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(payout(row)))
        }

        const DAY_MS: i64 = 86_400_000;

        const STATEMENTS_PER_COMMIT: usize = 256;

        fn statement(
            (id, merchant, start, end, gross, refunds, commission, net, status, payout): StatementRow,
        ) -> Statement {
            Statement {
                id: SettlementId::new(id),
                merchant_id: MerchantId::new(merchant),
                period_start: from_unix_ms(start),
                period_end: from_unix_ms(end),
                gross_cents: gross,
                refunds_cents: refunds,
                commission_cents: commission,
                net_cents: net,
                status,
                payout_id: payout.map(PayoutId::new),
            }
        }

        #[async_trait]
        impl StatementStore for $store {
            async fn close_statements(
                &self,
                until: OffsetDateTime,
                ids: &IdGenerator,
                now: OffsetDateTime,
            ) -> Result<Vec<Statement>, StoreError> {
                // Every day before the last one closed was closed for every
                // merchant with postings in it (a run closes all of them):
                // only what follows is read, with a day of margin.
                let last: Option<i64> = sqlx::query_scalar("SELECT MAX(period_end_ms) FROM settlements")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(store_error)?;
                let from = last.map_or(0, |end| (end - DAY_MS).max(0));
                let days: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
                    "SELECT p.merchant_id, t.updated_at_ms / 86400000, \
                     CAST(SUM(CASE WHEN t.code = 'capture' THEN t.amount_cents ELSE 0 END) AS BIGINT), \
                     CAST(SUM(CASE WHEN t.code LIKE 'refund:%' THEN t.amount_cents ELSE 0 END) AS BIGINT), \
                     CAST(SUM(CASE WHEN t.code = 'commission' THEN t.amount_cents ELSE 0 END) AS BIGINT) \
                     FROM ledger_transfers t JOIN payments p ON p.id = t.payment_id \
                     WHERE t.status = 'posted' AND t.updated_at_ms >= $1 AND t.updated_at_ms < $2 \
                     GROUP BY p.merchant_id, t.updated_at_ms / 86400000 ORDER BY 2, 1",
                )
                .bind(from)
                .bind(unix_ms(until))
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
                // A few hundred statements per transaction: one commit (one
                // fsync) for many, and never a long hold on SQLite's one
                // writer lock.
                let mut closed = Vec::new();
                for chunk in days.chunks(STATEMENTS_PER_COMMIT) {
                    let mut tx = self.pool.begin().await.map_err(store_error)?;
                    for &(merchant, day, gross, refunds, commission) in chunk {
                        let sql = format!(
                            "INSERT INTO settlements ({STATEMENT_COLUMNS}, created_at_ms) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'closed', NULL, $9) \
                             ON CONFLICT (merchant_id, period_start_ms) DO NOTHING RETURNING {STATEMENT_COLUMNS}"
                        );
                        let row: Option<StatementRow> = sqlx::query_as(&sql)
                            .bind(ids.next_id())
                            .bind(merchant)
                            .bind(day * DAY_MS)
                            .bind((day + 1) * DAY_MS)
                            .bind(gross)
                            .bind(refunds)
                            .bind(commission)
                            .bind(gross - refunds - commission)
                            .bind(unix_ms(now))
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(store_error)?;
                        closed.extend(row.map(statement));
                    }
                    tx.commit().await.map_err(store_error)?;
                }
                Ok(closed)
            }

            async fn statements(
                &self,
                merchant: MerchantId,
                before: Option<i64>,
                limit: u32,
            ) -> Result<Vec<Statement>, StoreError> {
                let sql = format!(
                    "SELECT {STATEMENT_COLUMNS} FROM settlements WHERE merchant_id = $1 AND period_start_ms < $2 \
                     ORDER BY period_start_ms DESC LIMIT $3"
                );
                let rows: Vec<StatementRow> = sqlx::query_as(&sql)
                    .bind(merchant.get())
                    .bind(before.unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(rows.into_iter().map(statement).collect())
            }

            async fn pay_out(&self, ids: &IdGenerator, now: OffsetDateTime) -> Result<Vec<Payout>, StoreError> {
                let merchants: Vec<i64> = sqlx::query_scalar(
                    "SELECT DISTINCT merchant_id FROM settlements WHERE status = 'closed' ORDER BY merchant_id",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
                let mut paid = Vec::new();
                for merchant in merchants {
                    let made = pay_merchant(self, merchant, ids.next_id(), unix_ms(now)).await.map_err(store_error)?;
                    paid.extend(made);
                }
                Ok(paid)
            }

            async fn payouts(
                &self,
                merchant: MerchantId,
                before: Option<PayoutId>,
                limit: u32,
            ) -> Result<Vec<Payout>, StoreError> {
                let sql = format!(
                    "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE merchant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
                );
                let rows: Vec<PayoutRow> = sqlx::query_as(&sql)
                    .bind(merchant.get())
                    .bind(before.map_or(i64::MAX, PayoutId::get))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(rows.into_iter().map(payout).collect())
            }
        }
    };
}

pub(crate) use statement_store;
