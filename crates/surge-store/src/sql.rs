//! The statements the two relational adapters share: SQLite and PostgreSQL
//! read the same SQL here (`$n` placeholders, `ON CONFLICT`, `RETURNING`),
//! so each port whose statements don't differ is written once, as a macro
//! that each adapter expands for its own store type. The expansion resolves
//! names at the call site: the adapter's module imports what the impl uses,
//! including its own `store_error`.

/// `CatalogStore` for `$store` (a type with a `pool` field).
macro_rules! catalog_store {
    ($store:ty) => {
        #[async_trait]
        impl CatalogStore for $store {
            async fn insert(
                &self,
                id: ProductId,
                new: &NewProduct,
                idempotency_key: Option<&str>,
                now: OffsetDateTime,
            ) -> Result<Product, StoreError> {
                let now_ms = unix_ms(now);
                let sql = format!(
                    "INSERT INTO products (id, merchant_id, sku, name, price_cents, stock, idempotency_key, created_at_ms, \
                     updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING {COLUMNS}"
                );
                let row: ProductRow = sqlx::query_as(&sql)
                    .bind(id.get())
                    .bind(new.merchant_id.get())
                    .bind(new.sku.as_str())
                    .bind(new.name.as_str())
                    .bind(new.price_cents.get())
                    .bind(new.stock.get())
                    .bind(idempotency_key)
                    .bind(now_ms)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(row.into())
            }

            async fn find_by_idempotency_key(&self, merchant: MerchantId, key: &str) -> Result<Option<Product>, StoreError> {
                let sql = format!("SELECT {COLUMNS} FROM products WHERE merchant_id = $1 AND idempotency_key = $2");
                let row: Option<ProductRow> = sqlx::query_as(&sql)
                    .bind(merchant.get())
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(row.map(Into::into))
            }

            async fn get(&self, id: ProductId) -> Result<Option<Arc<Product>>, StoreError> {
                let sql = format!("SELECT {COLUMNS} FROM products WHERE id = $1");
                let row: Option<ProductRow> =
                    sqlx::query_as(&sql).bind(id.get()).fetch_optional(&self.pool).await.map_err(store_error)?;
                Ok(row.map(|row| Arc::new(row.into())))
            }

            async fn update(
                &self,
                id: ProductId,
                patch: &ProductPatch,
                now: OffsetDateTime,
            ) -> Result<Option<Product>, StoreError> {
                let sql = format!(
                    "UPDATE products SET name = COALESCE($1, name), price_cents = COALESCE($2, price_cents), \
                     updated_at_ms = $3 WHERE id = $4 RETURNING {COLUMNS}"
                );
                let row: Option<ProductRow> = sqlx::query_as(&sql)
                    .bind(patch.name.as_ref().map(ProductName::as_str))
                    .bind(patch.price_cents.map(Cents::get))
                    .bind(unix_ms(now))
                    .bind(id.get())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(row.map(Into::into))
            }

            async fn set_stock(&self, id: ProductId, stock: Stock, now: OffsetDateTime) -> Result<Option<Product>, StoreError> {
                let sql = format!("UPDATE products SET stock = $1, updated_at_ms = $2 WHERE id = $3 RETURNING {COLUMNS}");
                let row: Option<ProductRow> = sqlx::query_as(&sql)
                    .bind(stock.get())
                    .bind(unix_ms(now))
                    .bind(id.get())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(row.map(Into::into))
            }

            async fn list(
                &self,
                merchant: Option<MerchantId>,
                after: Option<ProductId>,
                limit: u32,
            ) -> Result<ProductPage, StoreError> {
                // One row more than asked tells whether another page follows.
                let sql = format!(
                    "SELECT {COLUMNS} FROM products WHERE ($1 IS NULL OR merchant_id = $1) AND id > $2 \
                     ORDER BY id LIMIT $3"
                );
                let rows: Vec<ProductRow> = sqlx::query_as(&sql)
                    .bind(merchant.map(MerchantId::get))
                    .bind(after.map_or(-1, ProductId::get))
                    .bind(i64::from(limit) + 1)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                let items: Vec<Product> = rows.into_iter().map(Into::into).collect();
                let (items, next_after) = one_page(items, limit, |p| p.id);
                Ok(ProductPage { items, next_after })
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await.map_err(store_error)?;
                Ok(())
            }
        }
    };
}

/// `SaleStore` for `$store`.
macro_rules! sale_store {
    ($store:ty) => {
        #[async_trait]
        impl SaleStore for $store {
            async fn insert(&self, sale: &FlashSale, now: OffsetDateTime) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                // The product's is the only existing row this takes: no
                // lock order to keep with the writers of sale rows.
                let taken = sqlx::query(
                    "UPDATE products SET stock = stock - $1, reserved = reserved + $1, updated_at_ms = $2 \
                     WHERE id = $3 AND stock >= $1",
                )
                .bind(sale.stock)
                .bind(unix_ms(now))
                .bind(sale.product_id.get())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
                if taken != 1 {
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO flash_sales (id, product_id, merchant_id, stock, price_cents, starts_at_ms, ends_at_ms, \
                     per_user_limit, created_at_ms, allocated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, TRUE)",
                )
                .bind(sale.id.get())
                .bind(sale.product_id.get())
                .bind(sale.merchant_id.get())
                .bind(sale.stock)
                .bind(sale.price_cents.get())
                .bind(unix_ms(sale.starts_at))
                .bind(unix_ms(sale.ends_at))
                .bind(i64::from(sale.per_user_limit))
                .bind(unix_ms(now))
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok(true)
            }

            async fn get(&self, id: SaleId) -> Result<Option<FlashSale>, StoreError> {
                let sql = format!("SELECT {COLUMNS} FROM flash_sales WHERE id = $1");
                let row: Option<SaleRow> =
                    sqlx::query_as(&sql).bind(id.get()).fetch_optional(&self.pool).await.map_err(store_error)?;
                Ok(row.map(Into::into))
            }

            async fn list_unended(&self, now: OffsetDateTime) -> Result<Vec<FlashSale>, StoreError> {
                let sql = format!("SELECT {COLUMNS} FROM flash_sales WHERE ends_at_ms > $1 ORDER BY id");
                let rows: Vec<SaleRow> =
                    sqlx::query_as(&sql).bind(unix_ms(now)).fetch_all(&self.pool).await.map_err(store_error)?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn ledger_rebuilt_ms(&self, id: SaleId) -> Result<Option<i64>, StoreError> {
                let rebuilt: Option<Option<i64>> =
                    sqlx::query_scalar("SELECT ledger_rebuilt_ms FROM flash_sales WHERE id = $1")
                        .bind(id.get())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(store_error)?;
                Ok(rebuilt.flatten())
            }

            async fn record_ledger_rebuilt(&self, id: SaleId, at_ms: i64) -> Result<(), StoreError> {
                // Never back in time: a node with a slow clock can't hide a
                // later rebuild.
                sqlx::query(
                    "UPDATE flash_sales SET ledger_rebuilt_ms = $1 \
                     WHERE id = $2 AND (ledger_rebuilt_ms IS NULL OR ledger_rebuilt_ms < $1)",
                )
                .bind(at_ms)
                .bind(id.get())
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(())
            }
        }
    };
}

/// `SwitchStore` and `ConfigStore` for `$store`: single-row upserts, so the
/// last writer among the nodes wins.
macro_rules! runtime_config_store {
    ($store:ty) => {
        #[async_trait]
        impl SwitchStore for $store {
            async fn load_switches(&self) -> Result<Vec<StoredSwitch>, StoreError> {
                let rows: Vec<(String, bool, String)> =
                    sqlx::query_as("SELECT name, enabled, reason FROM switches ORDER BY name")
                        .fetch_all(&self.pool)
                        .await
                        .map_err(store_error)?;
                Ok(rows.into_iter().map(|(name, enabled, reason)| StoredSwitch { name, enabled, reason }).collect())
            }

            async fn save_switch(&self, switch: &StoredSwitch) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO switches (name, enabled, reason, updated_at_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, reason = excluded.reason, \
                     updated_at_ms = excluded.updated_at_ms",
                )
                .bind(&switch.name)
                .bind(switch.enabled)
                .bind(&switch.reason)
                .bind(unix_ms(OffsetDateTime::now_utc()))
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(())
            }

            async fn forget_switch(&self, name: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM switches WHERE name = $1")
                    .bind(name)
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(())
            }
        }

        #[async_trait]
        impl ConfigStore for $store {
            async fn load_config(&self, name: &str) -> Result<Option<String>, StoreError> {
                sqlx::query_scalar("SELECT value FROM runtime_config WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)
            }

            async fn save_config(&self, name: &str, value: &str) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO runtime_config (name, value, updated_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at_ms = excluded.updated_at_ms",
                )
                .bind(name)
                .bind(value)
                .bind(unix_ms(OffsetDateTime::now_utc()))
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(())
            }
        }
    };
}

/// `OrderStore` for `$store` (a type with a `pool` field): the methods
/// given, which differ between the stores, and the reads (and the owed
/// mark's clearing) that read the same on both.
macro_rules! order_store {
    ($store:ty, { $($own:tt)* }) => {
        #[async_trait]
        impl OrderStore for $store {
            $($own)*

            async fn get(&self, id: OrderId) -> Result<Option<Order>, StoreError> {
                let sql = format!("SELECT {COLUMNS} FROM orders WHERE id = $1");
                let row: Option<OrderRow> =
                    sqlx::query_as(&sql).bind(id.get()).fetch_optional(&self.pool).await.map_err(store_error)?;
                row.map(Order::try_from).transpose()
            }

            async fn list(&self, scope: OrderScope, before: Option<OrderId>, limit: u32) -> Result<OrderPage, StoreError> {
                let (filter, owner) = match scope {
                    OrderScope::Customer(user) => ("user_id = $1", user.get()),
                    OrderScope::Merchant(merchant) => ("merchant_id = $1", merchant.get()),
                    OrderScope::All => ("$1 = $1", 0),
                };
                let sql = format!("SELECT {COLUMNS} FROM orders WHERE {filter} AND id < $2 ORDER BY id DESC LIMIT $3");
                let rows: Vec<OrderRow> = sqlx::query_as(&sql)
                    .bind(owner)
                    .bind(before.map_or(i64::MAX, OrderId::get))
                    .bind(i64::from(limit) + 1)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                let items = rows.into_iter().map(Order::try_from).collect::<Result<Vec<_>, _>>()?;
                let (items, next_before) = one_page(items, limit, |o| o.id);
                Ok(OrderPage { items, next_before })
            }

            async fn unpaid_expired(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<Order>, StoreError> {
                let sql = format!(
                    "SELECT {COLUMNS} FROM orders WHERE status = 'CREATED' AND pay_by_ms <= $1 ORDER BY pay_by_ms LIMIT $2"
                );
                let rows: Vec<OrderRow> = sqlx::query_as(&sql)
                    .bind(unix_ms(now))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                rows.into_iter().map(Order::try_from).collect()
            }

            async fn give_backs_pending(&self, changed_before: OffsetDateTime, limit: u32) -> Result<Vec<Order>, StoreError> {
                let sql = format!(
                    "SELECT {COLUMNS} FROM orders WHERE give_back_pending = TRUE AND updated_at_ms <= $1 \
                     ORDER BY updated_at_ms LIMIT $2"
                );
                let rows: Vec<OrderRow> = sqlx::query_as(&sql)
                    .bind(unix_ms(changed_before))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                rows.into_iter().map(Order::try_from).collect()
            }

            async fn give_back_done(&self, id: OrderId) -> Result<(), StoreError> {
                sqlx::query("UPDATE orders SET give_back_pending = FALSE WHERE id = $1")
                    .bind(id.get())
                    .execute(&self.pool)
                    .await
                    .map(drop)
                    .map_err(store_error)
            }

            async fn keyed_orders(&self, sale: SaleId) -> Result<Vec<(UserId, String, OrderId)>, StoreError> {
                let rows: Vec<(i64, String, i64)> = sqlx::query_as(
                    "SELECT user_id, idempotency_key, id FROM orders \
                     WHERE flash_sale_id = $1 AND idempotency_key IS NOT NULL",
                )
                .bind(sale.get())
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(rows.into_iter().map(|(user, key, id)| (UserId::new(user), key, OrderId::new(id))).collect())
            }
        }
    };
}

/// `RelationalStore` for `$store` (a type with a `pool` field).
macro_rules! relational_store {
    ($store:ty) => {
        #[async_trait]
        impl crate::RelationalStore for $store {
            async fn max_id(&self) -> Result<i64, StoreError> {
                let max: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(id) FROM (SELECT MAX(id) AS id FROM products UNION ALL SELECT MAX(id) FROM flash_sales \
                     UNION ALL SELECT MAX(id) FROM orders UNION ALL SELECT MAX(id) FROM payments \
                     UNION ALL SELECT MAX(id) FROM refunds UNION ALL SELECT MAX(id) FROM settlements \
                     UNION ALL SELECT MAX(id) FROM returns) AS minted",
                )
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(max.unwrap_or(0))
            }

            async fn close(&self) {
                self.pool.close().await;
            }
        }
    };
}

pub(crate) use {catalog_store, order_store, relational_store, runtime_config_store, sale_store};
