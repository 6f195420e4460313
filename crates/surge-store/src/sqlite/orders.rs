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

use super::counters::{ROWS_PER_STATEMENT, counters_moved_within_bounds, give_back, take_within_bounds, write_failed};
use super::inventory::order_left_created;
use super::outbox::record_events;
use super::{SqliteStore, store_error};
use crate::rows::{ORDER_COLUMNS as COLUMNS, OrderRow, holding, one_page, unix_ms};
use crate::sql_outbox::placed;

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
                Written::Created(order) => outcome.created.push(*order),
                Written::Rejected => outcome.rejected.push(request.clone()),
                Written::Failed => outcome.failed.push(request.order_id),
                Written::Existing => {}
            }
        }
        record_events(&mut tx, &placed(&outcome.created, now)).await.map_err(store_error)?;
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
        if from == OrderStatus::Created {
            order_left_created(&mut tx, &order, to).await.map_err(store_error)?;
        }
        if from.holds_stock()
            && !to.holds_stock()
            && let Some(sale) = order.flash_sale_id
        {
            give_back(&mut tx, &order, sale).await?;
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
    let mut tx = pool.begin().await.map_err(store_error)?;
    let created = insert_batch(&mut tx, requests, pay_by, now).await?;
    let rejected = refused_by_key(&mut tx, requests, &created).await?;
    if !counters_moved_within_bounds(&mut tx, &created).await? {
        tx.rollback().await.map_err(store_error)?;
        return Ok(None);
    }
    record_events(&mut tx, &placed(&created, now)).await.map_err(store_error)?;
    tx.commit().await.map_err(store_error)?;
    Ok(Some(CreatedOrders { created, rejected, failed: Vec::new() }))
}

/// Inserts the batch's orders in multi-row statements; those that exist
/// already (redelivery, or a taken key) are skipped. Returns the orders
/// written now.
async fn insert_batch(
    tx: &mut Transaction<'_, Sqlite>,
    requests: &[OrderRequested],
    pay_by: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<Vec<Order>, StoreError> {
    let now = unix_ms(now);
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
                .push_bind(i64::from(request.quantity.get()))
                .push_bind(request.amount_cents.get())
                .push("'CREATED'")
                .push_bind(request.idempotency_key.as_deref())
                .push_bind(unix_ms(pay_by))
                .push_bind(now)
                .push_bind(now);
        });
        insert.push(" ON CONFLICT DO NOTHING RETURNING ").push(COLUMNS);
        let rows: Vec<OrderRow> = insert.build_query_as().fetch_all(&mut **tx).await.map_err(store_error)?;
        for row in rows {
            created.push(Order::try_from(row)?);
        }
    }
    Ok(created)
}

/// Requests neither written now nor already present by id: another order
/// holds their (sale, buyer, idempotency key).
async fn refused_by_key(
    tx: &mut Transaction<'_, Sqlite>,
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
    Created(Box<Order>),
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
    tx: &mut Transaction<'_, Sqlite>,
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
        .bind(i64::from(request.quantity.get()))
        .bind(request.amount_cents.get())
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
    let (bought, sold) = take_within_bounds(tx, request).await?;
    if bought == 1 && sold == 1 {
        return Ok(Written::Created(Box::new(order)));
    }
    tracing::error!(order_id = %request.order_id, sale_id = %request.sale_id, bought, sold,
        "order would break a sale bound; writing it as FAILED");
    write_failed(tx, request, bought == 1).await?;
    Ok(Written::Failed)
}
