//! The sale and buyer counters an order moves, on PostgreSQL: the fast
//! path for a whole batch inside a savepoint, and one by one (in lock
//! order) when a bound refused the batch. Every move is a conditional row
//! update, re-checked by PostgreSQL on the row's newest version, so no
//! interleaving of writers passes a bound.

use sqlx::{Connection as _, PgConnection, Postgres, Transaction};
use surge_domain::order::Order;
use surge_domain::{OrderId, SaleId, UserId};

use crate::rows::CounterMoves;

/// The fast path: every written order's units onto its buyer and its sale
/// in two statements per sale at most, inside a savepoint. `false`, with
/// nothing moved, when a sale or buyer bound would break.
pub(super) async fn moved_all(tx: &mut Transaction<'_, Postgres>, written: &[Order]) -> Result<bool, sqlx::Error> {
    let moves = CounterMoves::of(written);
    let mut savepoint = tx.begin().await?;
    if add_to_buyers(&mut savepoint, &moves).await? && add_to_sales(&mut savepoint, &moves).await? {
        savepoint.commit().await?;
        return Ok(true);
    }
    savepoint.rollback().await?;
    Ok(false)
}

/// Adds the batch's units to its buyers' rows, in key order; `false` when
/// some buyer would pass the sale's per-user limit.
pub(super) async fn add_to_buyers(conn: &mut PgConnection, moves: &CounterMoves) -> Result<bool, sqlx::Error> {
    if moves.per_buyer.is_empty() {
        return Ok(true);
    }
    let (sales, users): (Vec<i64>, Vec<i64>) = moves.per_buyer.keys().copied().unzip();
    let units: Vec<i64> = moves.per_buyer.values().copied().collect();
    // A new row takes no more than the limit; an existing one grows only
    // while it stays within it.
    let moved = sqlx::query(
        "INSERT INTO sale_buyers (sale_id, user_id, bought, per_user_limit) \
         SELECT b.sale_id, b.user_id, b.bought, s.per_user_limit \
         FROM UNNEST($1::int8[], $2::int8[], $3::int8[]) AS b(sale_id, user_id, bought) \
         JOIN flash_sales s ON s.id = b.sale_id \
         WHERE b.bought <= s.per_user_limit \
         ORDER BY b.sale_id, b.user_id \
         ON CONFLICT (sale_id, user_id) DO UPDATE SET bought = sale_buyers.bought + excluded.bought \
         WHERE sale_buyers.bought + excluded.bought <= sale_buyers.per_user_limit",
    )
    .bind(sales)
    .bind(users)
    .bind(units)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(moved == moves.per_buyer.len() as u64)
}

/// Adds the batch's units to its sales' sold counts, in id order; `false`
/// when some sale would oversell.
pub(super) async fn add_to_sales(conn: &mut PgConnection, moves: &CounterMoves) -> Result<bool, sqlx::Error> {
    for (sale, quantity) in &moves.per_sale {
        if !add_to_sale(conn, *sale, *quantity).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(super) async fn add_to_sale(conn: &mut PgConnection, sale: i64, quantity: i64) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE flash_sales SET sold = sold + $1 WHERE id = $2 AND sold + $1 <= stock AND closed_at_ms IS NULL",
    )
    .bind(quantity)
    .bind(sale)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

/// A bound would break somewhere in the batch: move the counters order by
/// order, in the order the requests came, so the same orders fail as when
/// the SQLite adapter writes them one by one. The sale's `sold` and the
/// buyer's `bought` move only within their bounds; an order that would break
/// either (which the ledger should have made impossible) is written `FAILED`
/// rather than overselling, and logged. Returns the orders left `CREATED`
/// and the ids of those written `FAILED`.
///
/// Every buyer row is locked first, in key order, and the sale row only
/// after: the order in which the fast path and the cancel path take them.
pub(super) async fn move_one_by_one(
    tx: &mut Transaction<'_, Postgres>,
    written: Vec<Order>,
) -> Result<(Vec<Order>, Vec<OrderId>), sqlx::Error> {
    lock_buyers(tx, &CounterMoves::of(&written)).await?;
    let mut created = Vec::with_capacity(written.len());
    let mut failed = Vec::new();
    for order in written {
        let Some(sale) = order.flash_sale_id else {
            created.push(order);
            continue;
        };
        let quantity = i64::from(order.quantity);
        let bought = add_to_buyer(tx, sale, order.user_id, quantity).await?;
        let sold = bought && add_to_sale(tx, sale.get(), quantity).await?;
        if sold {
            created.push(order);
            continue;
        }
        tracing::error!(order_id = %order.id, sale_id = %sale, bought, sold,
            "order would break a sale bound; writing it as FAILED");
        if bought {
            take_from_buyer(tx, sale, order.user_id, quantity).await?;
        }
        sqlx::query("UPDATE orders SET status = 'FAILED', pay_by_ms = NULL WHERE id = $1")
            .bind(order.id.get())
            .execute(&mut **tx)
            .await?;
        failed.push(order.id);
    }
    Ok((created, failed))
}

/// Makes sure every buyer row of the batch exists and holds its lock, in
/// key order (a new row starts at nothing bought, as if its buyer had
/// cancelled everything).
pub(super) async fn lock_buyers(tx: &mut Transaction<'_, Postgres>, moves: &CounterMoves) -> Result<(), sqlx::Error> {
    let (sales, users): (Vec<i64>, Vec<i64>) = moves.per_buyer.keys().copied().unzip();
    sqlx::query(
        "INSERT INTO sale_buyers (sale_id, user_id, bought, per_user_limit) \
         SELECT b.sale_id, b.user_id, 0, s.per_user_limit \
         FROM UNNEST($1::int8[], $2::int8[]) AS b(sale_id, user_id) \
         JOIN flash_sales s ON s.id = b.sale_id \
         ORDER BY b.sale_id, b.user_id \
         ON CONFLICT (sale_id, user_id) DO UPDATE SET bought = sale_buyers.bought",
    )
    .bind(sales)
    .bind(users)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds units to a buyer's (locked, existing) row if it stays within the
/// sale's per-user limit.
pub(super) async fn add_to_buyer(
    tx: &mut Transaction<'_, Postgres>,
    sale: SaleId,
    user: UserId,
    quantity: i64,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE sale_buyers SET bought = bought + $1 \
         WHERE sale_id = $2 AND user_id = $3 AND bought + $1 <= per_user_limit",
    )
    .bind(quantity)
    .bind(sale.get())
    .bind(user.get())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

pub(super) async fn take_from_buyer(
    tx: &mut Transaction<'_, Postgres>,
    sale: SaleId,
    user: UserId,
    quantity: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sale_buyers SET bought = bought - $1 WHERE sale_id = $2 AND user_id = $3")
        .bind(quantity)
        .bind(sale.get())
        .bind(user.get())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
