//! `FulfilmentStore` for both relational adapters, as in `crate::sql`.
//!
//! Every transaction here opens with a write to the row it decides on (a
//! conditional `UPDATE ... RETURNING`): on PostgreSQL that locks the row
//! for the rest of the transaction, on SQLite it takes the write lock at
//! once, so no transaction reads a row and then loses a race to write it.
//! Dispatch is two conditional updates in one transaction: the courier's
//! load goes up only while it is on shift and under capacity (PostgreSQL
//! re-checks that condition on the locked row, so two nodes cannot both
//! take its last slot), and the parcel is assigned only while it is still
//! `awaiting_courier` (so it is never assigned twice); either failing
//! rolls both back.

/// `FulfilmentStore` for `$store`; the adapter's module imports what it uses.
macro_rules! fulfilment_store {
    ($store:ty, $db:ty) => {
        /// id, name, region, zone, capacity, on shift, assigned, updated at.
        type CourierRow = (i64, String, String, String, i64, bool, i64, i64);

        const COURIER_COLUMNS: &str = "id, name, region, zone, capacity, on_shift, assigned, updated_at_ms";

        fn courier((id, name, region, zone, capacity, on_shift, assigned, updated): CourierRow) -> Courier {
            Courier {
                id: CourierId::new(id),
                name,
                region,
                zone,
                capacity: u32::try_from(capacity).unwrap_or(0),
                on_shift,
                load: u32::try_from(assigned).unwrap_or(0),
                updated_at: from_unix_ms(updated),
            }
        }

        const SHIPMENT_COLUMNS: &str = "waybill, order_id, user_id, merchant_id, direction, status, courier_id, \
                                        region, zone, created_at_ms, updated_at_ms";

        fn shipments(rows: Vec<ShipmentRow>) -> Result<Vec<Shipment>, StoreError> {
            rows.into_iter().map(shipment).collect()
        }

        #[async_trait]
        impl FulfilmentStore for $store {
            async fn put_courier(&self, new: &NewCourier, now: OffsetDateTime) -> Result<Courier, StoreError> {
                let sql = format!(
                    "INSERT INTO couriers ({COURIER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, FALSE, 0, $6) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, region = excluded.region, \
                     zone = excluded.zone, capacity = excluded.capacity, updated_at_ms = excluded.updated_at_ms \
                     RETURNING {COURIER_COLUMNS}"
                );
                let row: CourierRow = sqlx::query_as(&sql)
                    .bind(new.id.get())
                    .bind(&new.name)
                    .bind(&new.region)
                    .bind(&new.zone)
                    .bind(i64::from(new.capacity))
                    .bind(unix_ms(now))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(courier(row))
            }

            async fn courier(&self, id: CourierId) -> Result<Option<Courier>, StoreError> {
                let sql = format!("SELECT {COURIER_COLUMNS} FROM couriers WHERE id = $1");
                let row: Option<CourierRow> =
                    sqlx::query_as(&sql).bind(id.get()).fetch_optional(&self.pool).await.map_err(store_error)?;
                Ok(row.map(courier))
            }

            async fn set_shift(
                &self,
                id: CourierId,
                on_shift: bool,
                zone: &str,
                now: OffsetDateTime,
            ) -> Result<Option<(Courier, Vec<String>)>, StoreError> {
                let now_ms = unix_ms(now);
                let shift = || async move {
                    let mut tx = self.pool.begin().await?;
                    if !on_shift {
                        lock_handed_back(&mut tx, id.get(), i64::MAX).await?;
                    }
                    let sql = format!(
                        "UPDATE couriers SET on_shift = $2, zone = $3, updated_at_ms = $4 WHERE id = $1 \
                         RETURNING {COURIER_COLUMNS}"
                    );
                    let row: Option<CourierRow> = sqlx::query_as(&sql)
                        .bind(id.get())
                        .bind(on_shift)
                        .bind(zone)
                        .bind(now_ms)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(mut row) = row else {
                        return Ok(None);
                    };
                    let mut released = Vec::new();
                    if !on_shift {
                        released = hand_back(&mut tx, id.get(), i64::MAX, now_ms).await?;
                        row.6 -= released.len() as i64;
                    }
                    tx.commit().await?;
                    Ok(Some((row, released)))
                };
                let shifted = crate::conflict::again_on_conflict("set_shift", shift).await.map_err(store_error)?;
                Ok(shifted.map(|(row, released)| (courier(row), released)))
            }

            async fn open_shipment(&self, new: &NewShipment, now: OffsetDateTime) -> Result<Shipment, StoreError> {
                insert_shipment(&self.pool, new, "created", unix_ms(now)).await.map_err(store_error)?;
                self.shipment(&new.waybill)
                    .await?
                    .ok_or_else(|| StoreError::Unavailable(format!("shipment {} vanished", new.waybill)))
            }

            async fn shipment(&self, waybill: &str) -> Result<Option<Shipment>, StoreError> {
                let sql = format!("SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE waybill = $1");
                let row: Option<ShipmentRow> =
                    sqlx::query_as(&sql).bind(waybill).fetch_optional(&self.pool).await.map_err(store_error)?;
                row.map(shipment).transpose()
            }

            async fn pack(&self, waybill: &str, now: OffsetDateTime) -> Result<Option<Shipment>, StoreError> {
                let now_ms = unix_ms(now);
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let sql = format!(
                    "UPDATE shipments SET status = 'awaiting_courier', updated_at_ms = $2 \
                     WHERE waybill = $1 AND status = 'created' RETURNING {SHIPMENT_COLUMNS}"
                );
                let row: Option<ShipmentRow> =
                    sqlx::query_as(&sql).bind(waybill).bind(now_ms).fetch_optional(&mut *tx).await.map_err(store_error)?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let packed = shipment(row)?;
                // The order's own parcel moves it; a parcel an after-sale
                // inspection sends back to the buyer does not.
                if packed.waybill == Shipment::forward_waybill(packed.order_id) {
                    let moved = sqlx::query(
                        "UPDATE orders SET status = 'FULFILLING', updated_at_ms = $2 WHERE id = $1 AND status = 'PAID'",
                    )
                    .bind(packed.order_id.get())
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                    if moved.rows_affected() == 0 {
                        // The order is not paid (any more): nothing ships.
                        return Ok(None);
                    }
                }
                tx.commit().await.map_err(store_error)?;
                Ok(Some(packed))
            }

            async fn assign(
                &self,
                waybill: &str,
                zones: &[String],
                now: OffsetDateTime,
            ) -> Result<Option<Shipment>, StoreError> {
                let now_ms = unix_ms(now);
                let assigned = crate::conflict::again_on_conflict("assign", || assign_in(self, waybill, zones, now_ms)).await;
                assigned.map_err(store_error)?.map(shipment).transpose()
            }

            async fn assign_many(
                &self,
                plan: &[(String, CourierId)],
                now: OffsetDateTime,
            ) -> Result<Vec<Shipment>, StoreError> {
                // A courier's parcels side by side, so a chunk mostly holds
                // all of them (a courier takes a chunk's parcels all or
                // none); each chunk locks its rows in key order itself.
                let mut pairs: Vec<(&str, i64)> = plan.iter().map(|(w, c)| (w.as_str(), c.get())).collect();
                pairs.sort_unstable_by_key(|&(waybill, courier)| (courier, waybill));
                let mut assigned = Vec::with_capacity(pairs.len());
                for chunk in pairs.chunks(PLAN_PER_COMMIT) {
                    let write = || assign_chunk(self, chunk, unix_ms(now));
                    let rows = crate::conflict::again_on_conflict("assign_many", write).await.map_err(store_error)?;
                    assigned.extend(shipments(rows)?);
                }
                Ok(assigned)
            }

            async fn couriers_with_room(&self, zones: &[String]) -> Result<Vec<Courier>, StoreError> {
                if zones.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {COURIER_COLUMNS} FROM couriers WHERE on_shift AND assigned < capacity AND zone IN ("
                ));
                let mut listed = query.separated(", ");
                for zone in zones {
                    listed.push_bind(zone.clone());
                }
                query.push(") ORDER BY id");
                let rows: Vec<CourierRow> =
                    query.build_query_as().fetch_all(&self.pool).await.map_err(store_error)?;
                Ok(rows.into_iter().map(courier).collect())
            }

            async fn awaiting(&self, limit: u32) -> Result<Vec<Shipment>, StoreError> {
                let sql = format!(
                    "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE status = 'awaiting_courier' \
                     ORDER BY updated_at_ms, waybill LIMIT $1"
                );
                let rows: Vec<ShipmentRow> =
                    sqlx::query_as(&sql).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(store_error)?;
                shipments(rows)
            }

            async fn awaiting_in(&self, zones: &[String], limit: u32) -> Result<Vec<Shipment>, StoreError> {
                if zones.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE status = 'awaiting_courier' AND zone IN ("
                ));
                let mut listed = query.separated(", ");
                for zone in zones {
                    listed.push_bind(zone.clone());
                }
                query.push(") ORDER BY updated_at_ms, waybill LIMIT ").push_bind(i64::from(limit));
                let rows: Vec<ShipmentRow> =
                    query.build_query_as().fetch_all(&self.pool).await.map_err(store_error)?;
                shipments(rows)
            }

            async fn zones_with_room(&self) -> Result<Vec<String>, StoreError> {
                sqlx::query_scalar("SELECT DISTINCT zone FROM couriers WHERE on_shift AND assigned < capacity")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)
            }

            async fn release_stale(
                &self,
                assigned_before: OffsetDateTime,
                limit: u32,
                now: OffsetDateTime,
            ) -> Result<Vec<String>, StoreError> {
                // Courier by courier: its parcels, then its row, as going
                // off shift and every assignment take them (parcels, then
                // couriers), so none waits on another in the opposite order.
                let couriers: Vec<i64> = sqlx::query_scalar(
                    "SELECT DISTINCT courier_id FROM shipments \
                     WHERE status = 'packed' AND assigned_at_ms < $1 AND courier_id IS NOT NULL LIMIT $2",
                )
                .bind(unix_ms(assigned_before))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
                let mut waybills = Vec::new();
                for courier in couriers {
                    let (before_ms, now_ms) = (unix_ms(assigned_before), unix_ms(now));
                    let release = || release_stale_of(self, courier, before_ms, now_ms);
                    let released = crate::conflict::again_on_conflict("release_stale", release).await.map_err(store_error)?;
                    waybills.extend(released);
                }
                Ok(waybills)
            }

            async fn scan(
                &self,
                waybill: &str,
                courier: CourierId,
                scan: &Scan,
                now: OffsetDateTime,
            ) -> Result<ScanOutcome, StoreError> {
                scan_in(self, waybill, courier.get(), scan, unix_ms(now)).await.map_err(store_error)
            }

            async fn tasks(&self, courier: CourierId) -> Result<Vec<Shipment>, StoreError> {
                let sql = format!(
                    "SELECT {SHIPMENT_COLUMNS} FROM shipments WHERE courier_id = $1 AND status <> 'delivered' \
                     ORDER BY created_at_ms, waybill LIMIT 1000"
                );
                let rows: Vec<ShipmentRow> =
                    sqlx::query_as(&sql).bind(courier.get()).fetch_all(&self.pool).await.map_err(store_error)?;
                shipments(rows)
            }

            async fn flush_scans(&self, scans: &[JournalScan], now: OffsetDateTime) -> Result<(), StoreError> {
                if scans.is_empty() {
                    return Ok(());
                }
                flush_scans_in(self, scans, unix_ms(now)).await.map_err(store_error)
            }

            async fn last_scan_seq(&self, waybill: &str) -> Result<i64, StoreError> {
                sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM scans WHERE waybill = $1")
                    .bind(waybill)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(store_error)
            }

            async fn scans(&self, waybill: &str) -> Result<Vec<Scan>, StoreError> {
                let rows: Vec<(String, i64, String, String)> = sqlx::query_as(
                    "SELECT kind, at_ms, location, note FROM scans WHERE waybill = $1 ORDER BY seq",
                )
                .bind(waybill)
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
                rows.into_iter()
                    .map(|(kind, at, location, note)| {
                        let kind = ScanKind::parse(&kind)
                            .ok_or_else(|| StoreError::Unavailable(format!("scan of {waybill}: unknown {kind}")))?;
                        Ok(Scan { kind, at: from_unix_ms(at), location, note })
                    })
                    .collect()
            }
        }
    };
}

pub(crate) use fulfilment_store;
