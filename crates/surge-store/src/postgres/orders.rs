//! `OrderStore` on PostgreSQL. Writing an order and moving its sale's sold
//! counters happen in one transaction, so the store never disagrees with
//! itself about how much of a sale is sold, whichever nodes write at once.
//!
//! Two consumers may write overlapping batches (a redelivery racing the
//! first delivery): `INSERT ... ON CONFLICT DO NOTHING` makes the second wait
//! for the first's order rows and then skip them, and each counter moves by
//! one conditional row update, re-checked by PostgreSQL on the row's newest
//! version, so only the orders a transaction really wrote move counters and
//! no interleaving passes a bound.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::{PgPool, Postgres, Transaction};
use surge_domain::flashsale::OrderRequested;
use surge_domain::order::{
    CreatedOrders, Order, OrderPage, OrderScope, OrderStatus, OrderStore, SaleHoldings, SaleTally,
};
use surge_domain::{OrderId, SaleId, StoreError, UserId};
use time::OffsetDateTime;

use super::counters::{move_one_by_one, moved_all, take_from_buyer};
use super::inventory::{back_to_sale, order_left_created};
use super::outbox::record_events;
use super::{PgStore, store_error, with_conflict_retry};
use crate::conflict::TxError;
use crate::rows::{ORDER_COLUMNS as COLUMNS, OrderRow, holding, one_page, unix_ms};
use crate::sql_outbox::placed;

// The reads both stores share are written once (`crate::sql`); these
// differ.
crate::sql::order_store!(PgStore, {
    async fn create_requested(
        &self,
        requests: &[OrderRequested],
        pay_by: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<CreatedOrders, StoreError> {
        with_conflict_retry("create_requested", || create_all(&self.pool, requests, pay_by, now)).await
    }

    async fn transition(
        &self,
        id: OrderId,
        from: OrderStatus,
        to: OrderStatus,
        now: OffsetDateTime,
    ) -> Result<Option<Order>, StoreError> {
        with_conflict_retry("transition", || transition_once(&self.pool, id, from, to, now)).await
    }

    /// One snapshot (a repeatable-read transaction): the total, the
    /// per-buyer counts and the give-backs still owed agree even while other
    /// nodes write.
    async fn sale_holdings(&self, sale: SaleId) -> Result<SaleHoldings, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let rows: Vec<(i64, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT s.sold, b.user_id, b.bought FROM flash_sales s \
             LEFT JOIN sale_buyers b ON b.sale_id = s.id AND b.bought > 0 \
             WHERE s.id = $1 ORDER BY b.user_id",
        )
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
        let sold = rows.first().map_or(0, |(sold, _, _)| *sold);
        let per_user = rows.into_iter().filter_map(|(_, user, bought)| Some(holding((user?, bought?)))).collect();
        Ok(SaleHoldings { sold, per_user, returned: owed.into_iter().map(OrderId::new).collect() })
    }

    async fn sale_tally(&self, sale: SaleId, among: &[OrderId]) -> Result<SaleTally, StoreError> {
        let mut tx = self.pool.begin().await.map_err(store_error)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
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
        let among: Vec<i64> = among.iter().map(|order| order.get()).collect();
        let written: Vec<i64> = sqlx::query_scalar("SELECT id FROM orders WHERE id = ANY($1)")
            .bind(among)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        let owed = owed.into_iter().map(|(order, units)| (OrderId::new(order), u32::try_from(units).unwrap_or(0)));
        Ok(SaleTally {
            sold: sold.unwrap_or(0),
            owed: owed.collect(),
            written: written.into_iter().map(OrderId::new).collect(),
        })
    }
});

/// One attempt at a whole `create_requested`, in one transaction: write the
/// new orders, then move the counters for all of them in a few statements,
/// or, when a bound would break, order by order (see [`move_one_by_one`]).
async fn create_all(
    pool: &PgPool,
    requests: &[OrderRequested],
    pay_by: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<CreatedOrders, TxError> {
    let mut tx = pool.begin().await?;
    let rows = insert_orders(&mut tx, requests, pay_by, now).await?;
    let written = in_request_order(rows.into_iter().map(Order::try_from).collect::<Result<_, _>>()?, requests);
    let rejected = refused_by_key(&mut tx, requests, &written).await?;
    // Only orders written now move the counters (redelivery moves nothing).
    let (created, failed) = if moved_all(&mut tx, &written).await? {
        (written, Vec::new())
    } else {
        move_one_by_one(&mut tx, written).await?
    };
    record_events(&mut tx, &placed(&created, now)).await?;
    tx.commit().await?;
    Ok(CreatedOrders { created, rejected, failed })
}

/// Inserts the batch as `CREATED` orders in ascending id order (so that two
/// overlapping batches lock their common rows in the same order), skipping
/// any whose id or (sale, buyer, key) is taken; returns the rows written.
///
/// Within the batch the first request with an id or a (sale, buyer, key)
/// wins, as it does when the requests are written in the order they came:
/// later ones are not even offered, and [`refused_by_key`] sorts them out.
async fn insert_orders(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[OrderRequested],
    pay_by: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<Vec<OrderRow>, sqlx::Error> {
    let mut seen_ids = HashSet::new();
    let mut seen_keys = HashSet::new();
    let mut offered: Vec<&OrderRequested> = requests
        .iter()
        .filter(|r| seen_ids.insert(r.order_id))
        .filter(|r| r.idempotency_key.as_deref().is_none_or(|key| seen_keys.insert((r.sale_id, r.user_id, key))))
        .collect();
    offered.sort_by_key(|r| r.order_id);
    let column = |get: fn(&OrderRequested) -> i64| offered.iter().map(|r| get(r)).collect::<Vec<i64>>();
    let keys: Vec<Option<&str>> = offered.iter().map(|r| r.idempotency_key.as_deref()).collect();
    let sql = format!(
        "INSERT INTO orders (id, user_id, merchant_id, product_id, flash_sale_id, quantity, amount_cents, status, \
         idempotency_key, pay_by_ms, created_at_ms, updated_at_ms) \
         SELECT r.id, r.user_id, r.merchant_id, r.product_id, r.sale_id, r.quantity, r.amount_cents, 'CREATED', \
         r.idempotency_key, $9, $10, $10 \
         FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], \
         $8::text[]) WITH ORDINALITY AS r(id, user_id, merchant_id, product_id, sale_id, quantity, amount_cents, \
         idempotency_key, position) \
         ORDER BY r.position \
         ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(column(|r| r.order_id.get()))
        .bind(column(|r| r.user_id.get()))
        .bind(column(|r| r.merchant_id.get()))
        .bind(column(|r| r.product_id.get()))
        .bind(column(|r| r.sale_id.get()))
        .bind(column(|r| i64::from(r.quantity.get())))
        .bind(column(|r| r.amount_cents.get()))
        .bind(keys)
        .bind(unix_ms(pay_by))
        .bind(unix_ms(now))
        .fetch_all(&mut **tx)
        .await
}

/// Orders as their requests came (the order the SQLite adapter reports
/// them in), not in the id order they were written in.
fn in_request_order(mut written: Vec<Order>, requests: &[OrderRequested]) -> Vec<Order> {
    let position: HashMap<OrderId, usize> =
        requests.iter().enumerate().rev().map(|(at, request)| (request.order_id, at)).collect();
    written.sort_by_key(|order| position.get(&order.id).copied().unwrap_or(usize::MAX));
    written
}

/// Requests neither written now nor already present by id: another order
/// holds their (sale, buyer, idempotency key).
async fn refused_by_key(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[OrderRequested],
    written: &[Order],
) -> Result<Vec<OrderRequested>, sqlx::Error> {
    let written: HashSet<OrderId> = written.iter().map(|o| o.id).collect();
    let skipped: Vec<&OrderRequested> = requests.iter().filter(|r| !written.contains(&r.order_id)).collect();
    if skipped.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = skipped.iter().map(|r| r.order_id.get()).collect();
    let existing: HashSet<i64> = sqlx::query_scalar("SELECT id FROM orders WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    Ok(skipped.into_iter().filter(|r| !existing.contains(&r.order_id.get())).cloned().collect())
}

/// One attempt at a transition: the order row first, then (when the new
/// state holds no stock) its buyer's row and its sale's row, the order in
/// which `create_requested` locks them.
async fn transition_once(
    pool: &PgPool,
    id: OrderId,
    from: OrderStatus,
    to: OrderStatus,
    now: OffsetDateTime,
) -> Result<Option<Order>, TxError> {
    let mut tx = pool.begin().await?;
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
        .await?;
    let Some(order) = row.map(Order::try_from).transpose()? else {
        return Ok(None);
    };
    if from == OrderStatus::Created {
        order_left_created(&mut tx, &order, to).await?;
    }
    if from.holds_stock()
        && !to.holds_stock()
        && let Some(sale) = order.flash_sale_id
    {
        give_back(&mut tx, &order, sale).await?;
    }
    tx.commit().await?;
    Ok(Some(order))
}

/// A cancelled order's units go back to its buyer and its sale (or past a
/// closed sale to its product), buyer row first, sale row second, as
/// `create_requested` takes them.
async fn give_back(tx: &mut Transaction<'_, Postgres>, order: &Order, sale: SaleId) -> Result<(), sqlx::Error> {
    take_from_buyer(tx, sale, order.user_id, i64::from(order.quantity)).await?;
    back_to_sale(tx, order, sale).await
}
