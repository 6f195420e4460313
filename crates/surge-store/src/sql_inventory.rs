//! The inventory's statements, shared by SQLite and PostgreSQL as in
//! `crate::sql`: closing ended sales, checkout, and the moves of a
//! product's units that an order's transition makes in its transaction.
//!
//! Every move is one conditional row update (`stock >= q`), which
//! PostgreSQL re-checks on the row's newest version after waiting for its
//! lock and SQLite runs under its single writer; a batch of checkouts
//! (`crate::sql_checkout`) reads its products' rows locked for the rest of
//! its transaction (`FOR UPDATE`; on SQLite, the writer's lock) and updates
//! them by what that read allows. So no interleaving of writers can sell a
//! unit twice; the CHECKs (`stock >= 0`, `reserved >= 0`) stand behind.
//! Rows are taken in one order: an order, then buyer rows, then a sale,
//! then products in ascending id.

/// `InventoryStore` for `$store` (a type with a `pool` field); the
/// adapter's module imports what it uses. Both adapters' `CheckoutStore`
/// places waiting checkouts many to a transaction (`crate::sql_checkout`);
/// [`place_on`](inventory_moves) places one alone.
macro_rules! inventory_store {
    ($store:ty) => {
        #[async_trait]
        impl InventoryStore for $store {
            async fn close_ended_sales(
                &self,
                ended_before: OffsetDateTime,
                now: OffsetDateTime,
                limit: u32,
            ) -> Result<Vec<ClosedSale>, StoreError> {
                let due: Vec<i64> = sqlx::query_scalar(
                    "SELECT id FROM flash_sales WHERE allocated AND closed_at_ms IS NULL AND ends_at_ms <= $1 \
                     ORDER BY ends_at_ms LIMIT $2",
                )
                .bind(unix_ms(ended_before))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
                let mut closed = Vec::with_capacity(due.len());
                for sale in due {
                    let mut tx = self.pool.begin().await.map_err(store_error)?;
                    // Once: a second closer finds it closed and moves nothing.
                    let row: Option<(i64, i64)> = sqlx::query_as(
                        "UPDATE flash_sales SET closed_at_ms = $1 WHERE id = $2 AND closed_at_ms IS NULL \
                         RETURNING product_id, stock - sold",
                    )
                    .bind(unix_ms(now))
                    .bind(sale)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(store_error)?;
                    let Some((product, unsold)) = row else { continue };
                    release_units(&mut *tx, product, unsold, false, unix_ms(now)).await.map_err(store_error)?;
                    tx.commit().await.map_err(store_error)?;
                    closed.push(ClosedSale {
                        sale: SaleId::new(sale),
                        product: ProductId::new(product),
                        returned: unsold,
                    });
                }
                Ok(closed)
            }
        }
    };
}

/// The steps the adapters' transactions share, for `$conn` (the driver's
/// connection type): reserving a checkout line, writing a checkout order,
/// and moving an order's units when it leaves `CREATED`.
macro_rules! inventory_moves {
    ($conn:ty) => {
        /// What reserving one checkout line found.
        pub(super) enum Reserved {
            /// Reserved, at this SKU and unit price.
            Priced(String, i64),
            Short,
            Missing,
        }

        /// A whole checkout on `conn`, inside the caller's transaction: the
        /// key claimed, every line reserved, one order per merchant written
        /// with its `order_placed` event. Anything but `Created` leaves
        /// writes the caller must roll back (a replay wrote nothing).
        pub(crate) async fn place_on(conn: &mut $conn, checkout: &NewCheckout) -> Result<Placed, StoreError> {
            let NewCheckout { checkout_id, user, orders, address, idempotency_key, pay_by, now } = checkout;
            let (checkout_id, user, pay_by, now) = (*checkout_id, *user, *pay_by, *now);
            if let Some(key) = idempotency_key.as_deref() {
                let claimed = sqlx::query(
                    "INSERT INTO checkouts (user_id, idempotency_key, id, created_at_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(user.get())
                .bind(key)
                .bind(checkout_id)
                .bind(unix_ms(now))
                .execute(&mut *conn)
                .await
                .map_err(store_error)?
                .rows_affected();
                if claimed == 0 {
                    // Taken by an earlier checkout: committed, or earlier in
                    // this very transaction.
                    return Ok(Placed::Replayed(checkout_orders_on(conn, user, key).await?));
                }
            }
            let mut lines: Vec<_> = orders.iter().flat_map(|order| order.lines.iter()).collect();
            lines.sort_by_key(|line| line.product_id);
            let mut priced = std::collections::HashMap::with_capacity(lines.len());
            for line in lines {
                match reserve_units(&mut *conn, line, unix_ms(now)).await.map_err(store_error)? {
                    Reserved::Priced(sku, price) => {
                        priced.insert(line.product_id, (sku, price));
                    }
                    Reserved::Short => return Ok(Placed::InsufficientStock(line.product_id)),
                    Reserved::Missing => return Ok(Placed::UnknownProduct(line.product_id)),
                }
            }
            let address = serde_json::to_string(&AddressDoc::from(address))
                .map_err(|error| StoreError::Unavailable(error.to_string()))?;
            let mut written = Vec::with_capacity(orders.len());
            for order in orders {
                let row = insert_checkout_order(&mut *conn, checkout_id, user, order, &priced, &address, pay_by, now)
                    .await
                    .map_err(store_error)?;
                written.push(Order::try_from(row)?);
            }
            record_events(&mut *conn, &crate::sql_outbox::placed(&written, now)).await.map_err(store_error)?;
            Ok(Placed::Created(written))
        }

        /// The orders of the checkout the buyer made under `key`, in
        /// merchant order.
        async fn checkout_orders_on(conn: &mut $conn, user: UserId, key: &str) -> Result<Vec<Order>, StoreError> {
            let sql = format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE checkout_id = \
                 (SELECT id FROM checkouts WHERE user_id = $1 AND idempotency_key = $2) ORDER BY merchant_id"
            );
            let rows: Vec<OrderRow> =
                sqlx::query_as(&sql).bind(user.get()).bind(key).fetch_all(&mut *conn).await.map_err(store_error)?;
            rows.into_iter().map(Order::try_from).collect()
        }

        /// Moves a line's units from its product's `stock` to `reserved` if
        /// that many are left.
        pub(super) async fn reserve_units(
            conn: &mut $conn,
            line: &CheckoutLine,
            now_ms: i64,
        ) -> Result<Reserved, sqlx::Error> {
            let quantity = i64::from(line.quantity.get());
            let row: Option<(String, i64)> = sqlx::query_as(
                "UPDATE products SET stock = stock - $1, reserved = reserved + $1, updated_at_ms = $2 \
                 WHERE id = $3 AND stock >= $1 RETURNING sku, price_cents",
            )
            .bind(quantity)
            .bind(now_ms)
            .bind(line.product_id.get())
            .fetch_optional(&mut *conn)
            .await?;
            if let Some((sku, price)) = row {
                return Ok(Reserved::Priced(sku, price));
            }
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM products WHERE id = $1")
                .bind(line.product_id.get())
                .fetch_optional(&mut *conn)
                .await?;
            Ok(if exists.is_some() { Reserved::Short } else { Reserved::Missing })
        }

        /// Writes one merchant's order of a checkout, `CREATED`, at the
        /// prices its units were reserved at.
        #[allow(clippy::too_many_arguments)]
        pub(super) async fn insert_checkout_order(
            conn: &mut $conn,
            checkout_id: i64,
            user: UserId,
            order: &NewCheckoutOrder,
            priced: &std::collections::HashMap<ProductId, (String, i64)>,
            address: &str,
            pay_by: OffsetDateTime,
            now: OffsetDateTime,
        ) -> Result<OrderRow, sqlx::Error> {
            let values = crate::sql_checkout::OrderValues::of(order, |product| {
                priced.get(&product).map(|(sku, price)| (sku.as_str(), *price))
            })
            .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
            let sql = format!(
                "INSERT INTO orders (id, user_id, merchant_id, product_id, quantity, amount_cents, status, pay_by_ms, \
                 created_at_ms, updated_at_ms, kind, items, address, checkout_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'CREATED', $7, $8, $8, 'checkout', $9, $10, $11) \
                 RETURNING {ORDER_COLUMNS}"
            );
            sqlx::query_as(&sql)
                .bind(order.id.get())
                .bind(user.get())
                .bind(order.merchant_id.get())
                .bind(values.first_product)
                .bind(values.quantity)
                .bind(values.amount_cents)
                .bind(unix_ms(pay_by))
                .bind(unix_ms(now))
                .bind(values.items)
                .bind(address)
                .bind(checkout_id)
                .fetch_one(&mut *conn)
                .await
        }

        /// Units leave a product's `reserved`: sold for good (`paid`) or
        /// back to its `stock`.
        pub(super) async fn release_units(
            conn: &mut $conn,
            product: i64,
            quantity: i64,
            paid: bool,
            now_ms: i64,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "UPDATE products SET reserved = reserved - $1, \
                 stock = stock + CASE WHEN $2 THEN 0 ELSE $1 END, updated_at_ms = $3 WHERE id = $4",
            )
            .bind(quantity)
            .bind(paid)
            .bind(now_ms)
            .bind(product)
            .execute(&mut *conn)
            .await
            .map(drop)
        }

        /// A `CREATED` order was just moved to `to`: what its units do.
        /// A checkout order's leave `reserved`, for good when paid, back to
        /// `stock` when not. A paid flash-sale order's leave the `reserved`
        /// its sale's allocation put them in (sales made before inventory
        /// owned stock allocated nothing); a cancelled one's go back to the
        /// sale (see the adapter's `give_back`), or to the product once the
        /// sale is closed.
        pub(super) async fn order_left_created(
            conn: &mut $conn,
            order: &Order,
            to: OrderStatus,
        ) -> Result<(), sqlx::Error> {
            let paid = to == OrderStatus::Paid;
            let now_ms = unix_ms(order.updated_at);
            if let Some(event) = DomainEvent::left_created(order, to) {
                record_events(&mut *conn, &[EventRecord::new(event, now_ms)]).await?;
            }
            match (order.kind, order.flash_sale_id) {
                (OrderKind::FlashSale, Some(sale)) => {
                    if !paid {
                        return Ok(());
                    }
                    let allocated: Option<bool> = sqlx::query_scalar("SELECT allocated FROM flash_sales WHERE id = $1")
                        .bind(sale.get())
                        .fetch_optional(&mut *conn)
                        .await?;
                    if allocated == Some(true) {
                        release_units(conn, order.product_id.get(), i64::from(order.quantity), true, now_ms).await?;
                    }
                    Ok(())
                }
                _ => {
                    let mut items: Vec<_> = order.items.iter().collect();
                    items.sort_by_key(|item| item.product_id);
                    for item in items {
                        release_units(conn, item.product_id.get(), i64::from(item.quantity), paid, now_ms).await?;
                    }
                    Ok(())
                }
            }
        }

        /// A cancelled flash-sale order's units go back to its sale's sold
        /// count; once the sale is closed they go on to the product, and
        /// the shared ledger (which forgot the sale) is owed nothing.
        pub(super) async fn back_to_sale(conn: &mut $conn, order: &Order, sale: SaleId) -> Result<(), sqlx::Error> {
            let quantity = i64::from(order.quantity);
            let closed: Option<bool> = sqlx::query_scalar(
                "UPDATE flash_sales SET sold = sold - $1 WHERE id = $2 \
                 RETURNING allocated AND closed_at_ms IS NOT NULL",
            )
            .bind(quantity)
            .bind(sale.get())
            .fetch_optional(&mut *conn)
            .await?;
            if closed == Some(true) {
                release_units(conn, order.product_id.get(), quantity, false, unix_ms(order.updated_at)).await?;
                sqlx::query("UPDATE orders SET give_back_pending = FALSE WHERE id = $1")
                    .bind(order.id.get())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        }
    };
}

pub(crate) use {inventory_moves, inventory_store};
