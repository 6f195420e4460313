//! The sale and buyer counters an order moves, on SQLite: each move is a
//! conditional update within its bound (`sold <= stock`, `bought <=
//! per_user_limit`), in the order buyer then sale, inside the caller's
//! transaction.

use sqlx::{QueryBuilder, Sqlite, Transaction};
use surge_domain::flashsale::OrderRequested;
use surge_domain::order::Order;
use surge_domain::{SaleId, StoreError};

use super::inventory::back_to_sale;
use super::store_error;
use crate::rows::CounterMoves;

/// Rows per multi-row statement (12 parameters each for an order).
pub(super) const ROWS_PER_STATEMENT: usize = 200;

/// Moves the buyers' `bought` and the sales' `sold` by the orders written
/// now; false, with the moves to be rolled back, when a bound would break.
pub(super) async fn counters_moved_within_bounds(
    tx: &mut Transaction<'_, Sqlite>,
    created: &[Order],
) -> Result<bool, StoreError> {
    // Only orders written now move the counters (redelivery moves nothing).
    let CounterMoves { per_buyer, per_sale } = CounterMoves::of(created);
    let buyers: Vec<((i64, i64), i64)> = per_buyer.into_iter().collect();
    for chunk in buyers.chunks(ROWS_PER_STATEMENT) {
        let mut upsert = QueryBuilder::new("INSERT INTO sale_buyers (sale_id, user_id, bought) ");
        upsert.push_values(chunk, |mut row, ((sale, user), bought)| {
            row.push_bind(*sale).push_bind(*user).push_bind(*bought);
        });
        upsert.push(" ON CONFLICT (sale_id, user_id) DO UPDATE SET bought = sale_buyers.bought + excluded.bought");
        upsert.build().execute(&mut **tx).await.map_err(store_error)?;

        let mut over = QueryBuilder::new(
            "SELECT COUNT(*) FROM sale_buyers b JOIN flash_sales s ON s.id = b.sale_id \
             WHERE b.bought > s.per_user_limit AND (b.sale_id, b.user_id) IN (",
        );
        over.push_values(chunk, |mut row, ((sale, user), _)| {
            row.push_bind(*sale).push_bind(*user);
        });
        over.push(")");
        let over: i64 = over.build_query_scalar().fetch_one(&mut **tx).await.map_err(store_error)?;
        if over > 0 {
            return Ok(false);
        }
    }
    for (sale, quantity) in per_sale {
        let moved = sqlx::query(
            "UPDATE flash_sales SET sold = sold + $1 WHERE id = $2 AND sold + $1 <= stock AND closed_at_ms IS NULL",
        )
        .bind(quantity)
        .bind(sale)
        .execute(&mut **tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if moved != 1 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Takes the request's units from its buyer's allowance, then from its
/// sale's stock, each only within its bound. Returns the rows each moved
/// (1 or 0); the sale is not tried when the buyer's bound refused.
pub(super) async fn take_within_bounds(
    tx: &mut Transaction<'_, Sqlite>,
    request: &OrderRequested,
) -> Result<(u64, u64), StoreError> {
    let quantity = i64::from(request.quantity.get());
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
        sqlx::query(
            "UPDATE flash_sales SET sold = sold + $1 WHERE id = $2 AND sold + $1 <= stock AND closed_at_ms IS NULL",
        )
        .bind(quantity)
        .bind(request.sale_id.get())
        .execute(&mut **tx)
        .await
        .map_err(store_error)?
        .rows_affected()
    } else {
        0
    };
    Ok((bought, sold))
}

/// Writes the order `FAILED` (a bound would have broken), handing back the
/// buyer's units if they were taken.
pub(super) async fn write_failed(
    tx: &mut Transaction<'_, Sqlite>,
    request: &OrderRequested,
    bought: bool,
) -> Result<(), StoreError> {
    let quantity = i64::from(request.quantity.get());
    if bought {
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
    Ok(())
}

/// A cancelled order's units go back to its buyer and its sale (or past a
/// closed sale to its product), touching the rows in the consumer's order
/// (buyer, then sale) so that the two can never deadlock on a database
/// with row locks.
pub(super) async fn give_back(tx: &mut Transaction<'_, Sqlite>, order: &Order, sale: SaleId) -> Result<(), StoreError> {
    sqlx::query("UPDATE sale_buyers SET bought = bought - $1 WHERE sale_id = $2 AND user_id = $3")
        .bind(i64::from(order.quantity))
        .bind(sale.get())
        .bind(order.user_id.get())
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    back_to_sale(tx, order, sale).await.map_err(store_error)
}
