//! `OrderStore` on SQLite. Writing an order and moving its sale's sold
//! counters happen in one transaction, so the store never disagrees with
//! itself about how much of a sale is sold.

use async_trait::async_trait;

use sqlx::{QueryBuilder, Sqlite, Transaction};
use surge_domain::flashsale::OrderRequested;
use surge_domain::order::{
    CreatedOrders, Order, OrderPage, OrderScope, OrderStatus, OrderStore, SaleHoldings, SaleTally,
};
use surge_domain::{OrderId, SaleId, StoreError, UserId};
use time::OffsetDateTime;

use super::{SqliteStore, store_error};
use crate::rows::{CounterMoves, ORDER_COLUMNS as COLUMNS, OrderRow, holding, one_page, unix_ms};

// The reads both stores share are written once (`crate::sql`); these
// differ.
crate::sql::order_store!(SqliteStore, {
    async fn create_requested(
        &self,
        requests: &[OrderRequested],
        pay_by: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<CreatedOrders, StoreError> {
        if let Some(outcome) = create_batch(&self.pool, requests, pay_by, now).await? {
            return Ok(outcome);
        }
        // A bound would break somewhere in the batch: find where, one by one.
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let mut outcome = CreatedOrders::default();
        for request in requests {
            match create_one(&mut tx, request, pay_by, now).await? {
                Written::Created(order) => outcome.created.push(order),
                Written::Rejected => outcome.rejected.push(request.clone()),
                Written::Failed => outcome.failed.push(request.order_id),
                Written::Existing => {}
            }
        }
        tx.commit().await.map_err(store_error)?;
        Ok(outcome)
    }

    async fn transition(
        &self,
        id: OrderId,
        from: OrderStatus,
        to: OrderStatus,
        now: OffsetDateTime,
    ) -> Result<Option<Order>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let sql = format!(
            "UPDATE orders SET status = $1, updated_at_ms = $2, \
             pay_by_ms = CASE WHEN $1 = 'CREATED' THEN pay_by_ms ELSE NULL END, \
             give_back_pending = CASE WHEN $5 AND flash_sale_id IS NOT NULL THEN TRUE ELSE give_back_pending END \
             WHERE id = $3 AND status = $4 RETURNING {COLUMNS}"
        );
        let row: Option<OrderRow> = sqlx::query_as(&sql)
            .bind(to.as_str())
            .bind(unix_ms(now))
            .bind(id.get())
            .bind(from.as_str())
            // Its units leave the order: the ledger is owed them.
            .bind(from.holds_stock() && !to.holds_stock())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        let Some(order) = row.map(Order::try_from).transpose()? else {
            return Ok(None);
        };
        if from.holds_stock()
            && !to.holds_stock()
            && let Some(sale) = order.flash_sale_id
        {
            give_back(&mut tx, sale, order.user_id, order.quantity).await?;
        }
        tx.commit().await.map_err(store_error)?;
        Ok(Some(order))
    }

    /// The reads in one transaction: one snapshot, so the total, the
    /// per-buyer counts and the give-backs still owed agree.
    async fn sale_holdings(&self, sale: SaleId) -> Result<SaleHoldings, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let sold: Option<i64> = sqlx::query_scalar("SELECT sold FROM flash_sales WHERE id = $1")
            .bind(sale.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        let buyers: Vec<(i64, i64)> =
            sqlx::query_as("SELECT user_id, bought FROM sale_buyers WHERE sale_id = $1 AND bought > 0")
                .bind(sale.get())
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
        let owed: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM orders WHERE flash_sale_id = $1 AND give_back_pending = TRUE")
                .bind(sale.get())
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        let per_user = buyers.into_iter().map(holding).collect();
        let returned = owed.into_iter().map(OrderId::new).collect();
        Ok(SaleHoldings { sold: sold.unwrap_or(0), per_user, returned })
    }

    async fn sale_tally(&self, sale: SaleId, among: &[OrderId]) -> Result<SaleTally, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        let sold: Option<i64> = sqlx::query_scalar("SELECT sold FROM flash_sales WHERE id = $1")
            .bind(sale.get())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        let owed: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, quantity FROM orders WHERE flash_sale_id = $1 AND give_back_pending = TRUE ORDER BY id",
        )
        .bind(sale.get())
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut written = Vec::new();
        for chunk in among.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::new("SELECT id FROM orders WHERE id IN (");
            let mut ids = query.separated(", ");
            for order in chunk {
                ids.push_bind(order.get());
            }
            query.push(")");
            let found: Vec<i64> = query.build_query_scalar().fetch_all(&mut *tx).await.map_err(store_error)?;
            written.extend(found.into_iter().map(OrderId::new));
        }
        tx.commit().await.map_err(store_error)?;
        let owed = owed.into_iter().map(|(order, units)| (OrderId::new(order), u32::try_from(units).unwrap_or(0)));
        Ok(SaleTally { sold: sold.unwrap_or(0), owed: owed.collect(), written })
    }
});

/// Rows per multi-row statement (12 parameters each).
const ROWS_PER_STATEMENT: usize = 200;

/// The fast path: the whole batch in a handful of statements (each one a
/// round trip to SQLite's worker thread). Returns `None`, having written
/// nothing, when a sale or buyer bound would break, so that the caller can
/// fall back to [`create_one`] per request.
async fn create_batch(
    pool: &sqlx::SqlitePool,
    requests: &[OrderRequested],
    pay_by: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<Option<CreatedOrders>, StoreError> {
    let now = unix_ms(now);
    let mut tx = pool.begin().await.map_err(store_error)?;
    let mut created = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::new(
            "INSERT INTO orders (id, user_id, merchant_id, product_id, flash_sale_id, quantity, amount_cents, \
             status, idempotency_key, pay_by_ms, created_at_ms, updated_at_ms) ",
        );
        insert.push_values(chunk, |mut row, request| {
            row.push_bind(request.order_id.get())
                .push_bind(request.user_id.get())
                .push_bind(request.merchant_id.get())
                .push_bind(request.product_id.get())
                .push_bind(request.sale_id.get())
                .push_bind(i64::from(request.quantity))
                .push_bind(request.amount_cents)
                .push("'CREATED'")
                .push_bind(request.idempotency_key.as_deref())
                .push_bind(unix_ms(pay_by))
                .push_bind(now)
                .push_bind(now);
        });
        insert.push(" ON CONFLICT DO NOTHING RETURNING ").push(COLUMNS);
        let rows: Vec<OrderRow> = insert.build_query_as().fetch_all(&mut *tx).await.map_err(store_error)?;
        for row in rows {
            created.push(Order::try_from(row)?);
        }
    }
    let rejected = refused_by_key(&mut tx, requests, &created).await?;

    // Only orders written now move the counters (redelivery moves nothing).
    let CounterMoves { per_buyer, per_sale } = CounterMoves::of(&created);
    let buyers: Vec<((i64, i64), i64)> = per_buyer.into_iter().collect();
    for chunk in buyers.chunks(ROWS_PER_STATEMENT) {
        let mut upsert = QueryBuilder::new("INSERT INTO sale_buyers (sale_id, user_id, bought) ");
        upsert.push_values(chunk, |mut row, ((sale, user), bought)| {
            row.push_bind(*sale).push_bind(*user).push_bind(*bought);
        });
        upsert.push(" ON CONFLICT (sale_id, user_id) DO UPDATE SET bought = sale_buyers.bought + excluded.bought");
        upsert.build().execute(&mut *tx).await.map_err(store_error)?;

        let mut over = QueryBuilder::new(
            "SELECT COUNT(*) FROM sale_buyers b JOIN flash_sales s ON s.id = b.sale_id \
             WHERE b.bought > s.per_user_limit AND (b.sale_id, b.user_id) IN (",
        );
        over.push_values(chunk, |mut row, ((sale, user), _)| {
            row.push_bind(*sale).push_bind(*user);
        });
        over.push(")");
        let over: i64 = over.build_query_scalar().fetch_one(&mut *tx).await.map_err(store_error)?;
        if over > 0 {
            tx.rollback().await.map_err(store_error)?;
            return Ok(None);
        }
    }
    for (sale, quantity) in per_sale {
        let moved = sqlx::query("UPDATE flash_sales SET sold = sold + $1 WHERE id = $2 AND sold + $1 <= stock")
            .bind(quantity)
            .bind(sale)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        if moved != 1 {
            tx.rollback().await.map_err(store_error)?;
            return Ok(None);
        }
    }
    tx.commit().await.map_err(store_error)?;
    Ok(Some(CreatedOrders { created, rejected, failed: Vec::new() }))
}

/// Requests neither written now nor already present by id: another order
/// holds their (sale, buyer, idempotency key).
async fn refused_by_key(
    tx: &mut Transaction<'static, Sqlite>,
    requests: &[OrderRequested],
    created: &[Order],
) -> Result<Vec<OrderRequested>, StoreError> {
    let written: std::collections::HashSet<OrderId> = created.iter().map(|o| o.id).collect();
    let skipped: Vec<&OrderRequested> = requests.iter().filter(|r| !written.contains(&r.order_id)).collect();
    if skipped.is_empty() {
        return Ok(Vec::new());
    }
    let mut refused = Vec::new();
    for chunk in skipped.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::new("SELECT id FROM orders WHERE id IN (");
        let mut ids = query.separated(", ");
        for request in chunk {
            ids.push_bind(request.order_id.get());
        }
        query.push(")");
        let existing: Vec<i64> = query.build_query_scalar().fetch_all(&mut **tx).await.map_err(store_error)?;
        refused.extend(chunk.iter().filter(|r| !existing.contains(&r.order_id.get())).map(|r| (*r).clone()));
    }
    Ok(refused)
}

/// What writing one request did.
enum Written {
    Created(Order),
    /// Redelivery: the order exists.
    Existing,
    /// Another order holds the request's idempotency key.
    Rejected,
    /// Written as FAILED: a sale or buyer bound would have broken.
    Failed,
}

/// Writes one order unless it exists. The sale's `sold` and the buyer's
/// `bought` move only within their bounds; if either bound would break (which
/// the ledger should have made impossible) the order is written `FAILED`
/// rather than overselling, and logged.
async fn create_one(
    tx: &mut Transaction<'static, Sqlite>,
    request: &OrderRequested,
    pay_by: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<Written, StoreError> {
    let sql = format!(
        "INSERT INTO orders (id, user_id, merchant_id, product_id, flash_sale_id, quantity, amount_cents, status, \
         idempotency_key, pay_by_ms, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'CREATED', $8, $9, $10, $10) \
         ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
    );
    let row: Option<OrderRow> = sqlx::query_as(&sql)
        .bind(request.order_id.get())
        .bind(request.user_id.get())
        .bind(request.merchant_id.get())
        .bind(request.product_id.get())
        .bind(request.sale_id.get())
        .bind(i64::from(request.quantity))
        .bind(request.amount_cents)
        .bind(request.idempotency_key.as_deref())
        .bind(unix_ms(pay_by))
        .bind(unix_ms(now))
        .fetch_optional(&mut **tx)
        .await
        .map_err(store_error)?;
    let Some(order) = row.map(Order::try_from).transpose()? else {
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM orders WHERE id = $1")
            .bind(request.order_id.get())
            .fetch_optional(&mut **tx)
            .await
            .map_err(store_error)?;
        return Ok(if exists.is_some() { Written::Existing } else { Written::Rejected });
    };
    let quantity = i64::from(request.quantity);
    // The bound holds for a new buyer row too: the insert takes no more than
    // the limit, the update only while the sum stays within it.
    let bought = sqlx::query(
        "INSERT INTO sale_buyers (sale_id, user_id, bought) \
         SELECT $1, $2, $3 WHERE $3 <= (SELECT per_user_limit FROM flash_sales WHERE id = $1) \
         ON CONFLICT (sale_id, user_id) DO UPDATE SET bought = sale_buyers.bought + excluded.bought \
         WHERE sale_buyers.bought + excluded.bought <= (SELECT per_user_limit FROM flash_sales WHERE id = $1)",
    )
    .bind(request.sale_id.get())
    .bind(request.user_id.get())
    .bind(quantity)
    .execute(&mut **tx)
    .await
    .map_err(store_error)?
    .rows_affected();
    let sold = if bought == 1 {
        sqlx::query("UPDATE flash_sales SET sold = sold + $1 WHERE id = $2 AND sold + $1 <= stock")
            .bind(quantity)
            .bind(request.sale_id.get())
            .execute(&mut **tx)
            .await
            .map_err(store_error)?
            .rows_affected()
    } else {
        0
    };
    if bought == 1 && sold == 1 {
        return Ok(Written::Created(order));
    }
    tracing::error!(order_id = %request.order_id, sale_id = %request.sale_id, bought, sold,
        "order would break a sale bound; writing it as FAILED");
    if bought == 1 {
        sqlx::query("UPDATE sale_buyers SET bought = bought - $1 WHERE sale_id = $2 AND user_id = $3")
            .bind(quantity)
            .bind(request.sale_id.get())
            .bind(request.user_id.get())
            .execute(&mut **tx)
            .await
            .map_err(store_error)?;
    }
    sqlx::query("UPDATE orders SET status = 'FAILED', pay_by_ms = NULL WHERE id = $1")
        .bind(request.order_id.get())
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    Ok(Written::Failed)
}

/// A cancelled order's units go back to its buyer and its sale, touching
/// the rows in the consumer's order (buyer, then sale) so that the two can
/// never deadlock on a database with row locks.
async fn give_back(
    tx: &mut Transaction<'static, Sqlite>,
    sale: SaleId,
    user: UserId,
    quantity: u32,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE sale_buyers SET bought = bought - $1 WHERE sale_id = $2 AND user_id = $3")
        .bind(i64::from(quantity))
        .bind(sale.get())
        .bind(user.get())
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    sqlx::query("UPDATE flash_sales SET sold = sold - $1 WHERE id = $2")
        .bind(i64::from(quantity))
        .bind(sale.get())
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    Ok(())
}
