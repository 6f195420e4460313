//! The transactions behind `crate::sql_fulfilment`'s dispatch and scans,
//! for both relational adapters: taking a courier's slot, assigning a
//! parcel, giving parcels back, and applying a scan. Each opens with a
//! write to the row it decides on (see `crate::sql_fulfilment`).

/// The steps for `$store` on `$db` (`$row_lock`: what locks selected rows,
/// empty where the store has one writer); the adapter's module imports
/// what they use, and `fulfilment_store!` calls them.
macro_rules! fulfilment_steps {
    ($store:ty, $db:ty, $row_lock:literal) => {
        /// On PostgreSQL, locks `courier`'s parcels assigned before
        /// `before_ms` and not picked up, before the caller locks the
        /// courier, as every step takes parcels, then couriers (a deadlock
        /// left is run again: `crate::conflict`). SQLite has one writer.
        async fn lock_handed_back(
            tx: &mut sqlx::Transaction<'_, $db>,
            courier: i64,
            before_ms: i64,
        ) -> Result<(), sqlx::Error> {
            if !$row_lock.is_empty() {
                let lock = format!(
                    "SELECT waybill FROM shipments WHERE courier_id = $1 AND status = 'packed' \
                     AND assigned_at_ms < $2 ORDER BY waybill{}",
                    $row_lock
                );
                sqlx::query(&lock).bind(courier).bind(before_ms).execute(&mut **tx).await?;
            }
            Ok(())
        }

        /// Hands back `courier`'s parcels assigned before `before_ms` and
        /// not picked up (`i64::MAX`: all), and lowers its load by as many;
        /// the caller locked them ([`lock_handed_back`]), then the courier.
        async fn hand_back(
            tx: &mut sqlx::Transaction<'_, $db>,
            courier: i64,
            before_ms: i64,
            now_ms: i64,
        ) -> Result<Vec<String>, sqlx::Error> {
            let released: Vec<String> = sqlx::query_scalar(
                "UPDATE shipments SET status = 'awaiting_courier', courier_id = NULL, assigned_at_ms = NULL, \
                 updated_at_ms = $3 WHERE courier_id = $1 AND status = 'packed' AND assigned_at_ms < $2 \
                 RETURNING waybill",
            )
            .bind(courier)
            .bind(before_ms)
            .bind(now_ms)
            .fetch_all(&mut **tx)
            .await?;
            if !released.is_empty() {
                sqlx::query(
                    "UPDATE couriers SET assigned = assigned - $2, updated_at_ms = $3 \
                     WHERE id = $1 AND assigned >= $2",
                )
                .bind(courier)
                .bind(released.len() as i64)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
            }
            Ok(released)
        }

        /// Takes a slot of an on-shift courier of `zone`, least loaded
        /// first: its id, or `None` when nobody there has one.
        async fn take_slot(
            tx: &mut sqlx::Transaction<'_, $db>,
            zone: &str,
            now_ms: i64,
        ) -> Result<Option<i64>, sqlx::Error> {
            // The candidate is chosen by the subquery; the outer conditions
            // are checked again on the row as it is locked, so a slot
            // another transaction took meanwhile is not taken twice. Then
            // the next candidate is tried.
            for _ in 0..8 {
                let candidate: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM couriers WHERE zone = $1 AND on_shift AND assigned < capacity \
                     ORDER BY assigned, id LIMIT 1",
                )
                .bind(zone)
                .fetch_optional(&mut **tx)
                .await?;
                let Some(candidate) = candidate else {
                    return Ok(None);
                };
                let taken: Option<i64> = sqlx::query_scalar(
                    "UPDATE couriers SET assigned = assigned + 1, updated_at_ms = $2 \
                     WHERE id = $1 AND on_shift AND assigned < capacity RETURNING id",
                )
                .bind(candidate)
                .bind(now_ms)
                .fetch_optional(&mut **tx)
                .await?;
                if taken.is_some() {
                    return Ok(taken);
                }
            }
            Ok(None)
        }

        async fn assign_in(
            store: &$store,
            waybill: &str,
            zones: &[String],
            now_ms: i64,
        ) -> Result<Option<ShipmentRow>, sqlx::Error> {
            let mut tx = store.pool.begin().await?;
            // The parcel first: locked (and, on SQLite, the write lock
            // taken) before any courier is read.
            let waiting: Option<String> = sqlx::query_scalar(
                "UPDATE shipments SET updated_at_ms = $2 WHERE waybill = $1 AND status = 'awaiting_courier' \
                 RETURNING waybill",
            )
            .bind(waybill)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            if waiting.is_none() {
                return Ok(None);
            }
            for zone in zones {
                if let Some(courier) = take_slot(&mut tx, zone, now_ms).await? {
                    let sql = format!(
                        "UPDATE shipments SET status = 'packed', courier_id = $2, assigned_at_ms = $3, \
                         updated_at_ms = $3 WHERE waybill = $1 AND status = 'awaiting_courier' \
                         RETURNING {SHIPMENT_COLUMNS}"
                    );
                    let row: Option<ShipmentRow> =
                        sqlx::query_as(&sql).bind(waybill).bind(courier).bind(now_ms).fetch_optional(&mut *tx).await?;
                    if row.is_some() {
                        tx.commit().await?;
                    }
                    return Ok(row);
                }
            }
            Ok(None)
        }

        /// One courier's parcels assigned before `before_ms` and not picked
        /// up go back to waiting, in one transaction that locks them, then
        /// the courier (the order every step takes).
        async fn release_stale_of(
            store: &$store,
            courier: i64,
            before_ms: i64,
            now_ms: i64,
        ) -> Result<Vec<String>, sqlx::Error> {
            let mut tx = store.pool.begin().await?;
            lock_handed_back(&mut tx, courier, before_ms).await?;
            sqlx::query("UPDATE couriers SET updated_at_ms = $2 WHERE id = $1")
                .bind(courier)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            let released = hand_back(&mut tx, courier, before_ms, now_ms).await?;
            tx.commit().await?;
            Ok(released)
        }

        /// Assignments per transaction of a dispatch plan.
        const PLAN_PER_COMMIT: usize = 500;

        /// One transaction of a plan, set-based: each courier takes all
        /// its parcels of the chunk or none (one conditional update of
        /// every courier), then the parcels still waiting are assigned
        /// (one of every parcel); a courier whose parcel another node took
        /// meanwhile gets that slot back. On PostgreSQL the parcels, then
        /// the couriers, are locked in key order first, as every step
        /// takes them, so nodes of either mode queue rather than deadlock.
        async fn assign_chunk(
            store: &$store,
            pairs: &[(&str, i64)],
            now_ms: i64,
        ) -> Result<Vec<ShipmentRow>, sqlx::Error> {
            let mut wanted: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
            for &(_, courier) in pairs {
                *wanted.entry(courier).or_default() += 1;
            }
            let mut tx = store.pool.begin().await?;
            let mut waybills: Vec<&str> = pairs.iter().map(|(waybill, _)| *waybill).collect();
            waybills.sort_unstable();
            lock_parcels(&mut tx, &waybills).await?;
            let granted = take_slots(&mut tx, &wanted, now_ms).await?;
            let mut taken: Vec<(&str, i64)> =
                pairs.iter().copied().filter(|(_, courier)| granted.contains(courier)).collect();
            if taken.is_empty() {
                return Ok(Vec::new());
            }
            taken.sort_unstable();
            let assigned = assign_parcels(&mut tx, &taken, now_ms).await?;
            let mut got: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
            for row in &assigned {
                *got.entry(row.6.unwrap_or_default()).or_default() += 1;
            }
            for courier in &granted {
                let short = wanted[courier] - got.get(courier).copied().unwrap_or(0);
                if short > 0 {
                    sqlx::query("UPDATE couriers SET assigned = assigned - $2 WHERE id = $1")
                        .bind(*courier)
                        .bind(short)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            Ok(assigned)
        }

        /// Each courier of `wanted` (id → parcels) takes that many slots,
        /// or none: the couriers that did.
        async fn take_slots(
            tx: &mut sqlx::Transaction<'_, $db>,
            wanted: &std::collections::BTreeMap<i64, i64>,
            now_ms: i64,
        ) -> Result<std::collections::BTreeSet<i64>, sqlx::Error> {
            if !$row_lock.is_empty() {
                let mut lock = sqlx::QueryBuilder::<$db>::new("SELECT id FROM couriers WHERE id IN (");
                let mut listed = lock.separated(", ");
                for courier in wanted.keys() {
                    listed.push_bind(*courier);
                }
                lock.push(") ORDER BY id").push($row_lock);
                lock.build().execute(&mut **tx).await?;
            }
            let mut slots =
                sqlx::QueryBuilder::<$db>::new("UPDATE couriers SET assigned = assigned + v.column2, updated_at_ms = ");
            slots.push_bind(now_ms).push(" FROM (VALUES ");
            let mut rows = slots.separated(", ");
            for (courier, count) in wanted {
                rows.push("(CAST(").push_bind_unseparated(*courier).push_unseparated(" AS BIGINT), CAST(");
                rows.push_bind_unseparated(*count).push_unseparated(" AS BIGINT))");
            }
            slots.push(
                ") AS v WHERE couriers.id = v.column1 AND couriers.on_shift \
                 AND couriers.assigned + v.column2 <= couriers.capacity RETURNING couriers.id",
            );
            Ok(slots.build_query_scalar::<i64>().fetch_all(&mut **tx).await?.into_iter().collect())
        }

        /// Locks the chunk's parcels (sorted) on PostgreSQL, whatever their
        /// status; SQLite has one writer.
        async fn lock_parcels(tx: &mut sqlx::Transaction<'_, $db>, waybills: &[&str]) -> Result<(), sqlx::Error> {
            if !$row_lock.is_empty() && !waybills.is_empty() {
                let mut lock = sqlx::QueryBuilder::<$db>::new("SELECT waybill FROM shipments WHERE waybill IN (");
                let mut listed = lock.separated(", ");
                for waybill in waybills {
                    listed.push_bind(*waybill);
                }
                lock.push(") ORDER BY waybill").push($row_lock);
                lock.build().execute(&mut **tx).await?;
            }
            Ok(())
        }

        /// The (parcel, courier) pairs whose parcel still waits, assigned
        /// (their rows locked already).
        async fn assign_parcels(
            tx: &mut sqlx::Transaction<'_, $db>,
            taken: &[(&str, i64)],
            now_ms: i64,
        ) -> Result<Vec<ShipmentRow>, sqlx::Error> {
            let mut parcels = sqlx::QueryBuilder::<$db>::new(
                "UPDATE shipments SET status = 'packed', courier_id = v.column2, assigned_at_ms = ",
            );
            parcels.push_bind(now_ms).push(", updated_at_ms = ").push_bind(now_ms).push(" FROM (VALUES ");
            let mut rows = parcels.separated(", ");
            for (waybill, courier) in taken {
                rows.push("(CAST(").push_bind_unseparated(*waybill).push_unseparated(" AS TEXT), CAST(");
                rows.push_bind_unseparated(*courier).push_unseparated(" AS BIGINT))");
            }
            parcels.push(format!(
                ") AS v WHERE shipments.waybill = v.column1 AND shipments.status = 'awaiting_courier' \
                 RETURNING {SHIPMENT_COLUMNS}"
            ));
            parcels.build_query_as().fetch_all(&mut **tx).await
        }

        /// Writes a shipment in `status`, once per waybill (a second write
        /// of the same waybill writes nothing).
        pub(super) async fn insert_shipment<'e, E>(
            executor: E,
            new: &NewShipment,
            status: &str,
            now_ms: i64,
        ) -> Result<(), sqlx::Error>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            sqlx::query(
                "INSERT INTO shipments (waybill, order_id, user_id, merchant_id, direction, status, region, \
                 zone, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                 ON CONFLICT (waybill) DO NOTHING",
            )
            .bind(&new.waybill)
            .bind(new.order_id.get())
            .bind(new.user_id.get())
            .bind(new.merchant_id.get())
            .bind(new.direction.as_str())
            .bind(status)
            .bind(&new.region)
            .bind(&new.zone)
            .bind(now_ms)
            .execute(executor)
            .await
            .map(drop)
        }

        /// What the delivered scan also moves: the courier's slot frees;
        /// a forward parcel's order is `DELIVERED`, a reverse parcel's
        /// return is `received` at the merchant's warehouse.
        async fn delivered(
            tx: &mut sqlx::Transaction<'_, $db>,
            shipment: &Shipment,
            courier: i64,
            now_ms: i64,
        ) -> Result<(), sqlx::Error> {
            sqlx::query("UPDATE couriers SET assigned = assigned - 1, updated_at_ms = $2 WHERE id = $1 AND assigned > 0")
                .bind(courier)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
            if shipment.direction == Direction::Forward {
                sqlx::query(
                    "UPDATE orders SET status = 'DELIVERED', updated_at_ms = $2 WHERE id = $1 AND status = 'FULFILLING'",
                )
                .bind(shipment.order_id.get())
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
            } else {
                sqlx::query(
                    "UPDATE returns SET status = 'received', updated_at_ms = $2 WHERE waybill = $1 AND status = 'approved'",
                )
                .bind(&shipment.waybill)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        }

        async fn scan_in(
            store: &$store,
            waybill: &str,
            courier: i64,
            scan: &Scan,
            now_ms: i64,
        ) -> Result<ScanOutcome, sqlx::Error> {
            let mut tx = store.pool.begin().await?;
            let sql =
                format!("UPDATE shipments SET updated_at_ms = $2 WHERE waybill = $1 RETURNING {SHIPMENT_COLUMNS}");
            let row: Option<ShipmentRow> =
                sqlx::query_as(&sql).bind(waybill).bind(now_ms).fetch_optional(&mut *tx).await?;
            let Some(row) = row else {
                return Ok(ScanOutcome::NotFound);
            };
            let current = shipment(row).map_err(|error| sqlx::Error::Protocol(error.to_string()))?;
            if current.courier_id != Some(CourierId::new(courier)) {
                return Ok(ScanOutcome::NotAssigned);
            }
            let next = match current.status.scan(scan.kind) {
                Ok(next) => next,
                Err(illegal) => return Ok(ScanOutcome::Illegal(illegal)),
            };
            let seq: i64 = sqlx::query_scalar(
                "INSERT INTO scans (waybill, seq, kind, at_ms, location, note, courier_id, recorded_at_ms) \
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6, $7 FROM scans WHERE waybill = $1 \
                 RETURNING seq",
            )
            .bind(waybill)
            .bind(scan.kind.as_str())
            .bind(unix_ms(scan.at))
            .bind(&scan.location)
            .bind(&scan.note)
            .bind(courier)
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await?;
            // The buyer hears of it through the outbox, written with the scan.
            let scanned = DomainEvent::ParcelScanned {
                order_id: current.order_id,
                user_id: current.user_id,
                waybill: waybill.to_owned(),
                seq,
                scan: scan.kind,
            };
            record_events(&mut *tx, &[EventRecord::new(scanned, now_ms)]).await?;
            let sql = format!("UPDATE shipments SET status = $2 WHERE waybill = $1 RETURNING {SHIPMENT_COLUMNS}");
            let row: ShipmentRow = sqlx::query_as(&sql).bind(waybill).bind(next.as_str()).fetch_one(&mut *tx).await?;
            if next == ShipmentStatus::Delivered {
                delivered(&mut tx, &current, courier, now_ms).await?;
            }
            tx.commit().await?;
            let applied = shipment(row).map_err(|error| sqlx::Error::Protocol(error.to_string()))?;
            Ok(ScanOutcome::Applied(applied))
        }
    };
}

pub(crate) use fulfilment_steps;
