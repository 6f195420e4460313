//! Writing scans taken behind the cache (`crate::behind`) to the store, for
//! both relational adapters, as in `crate::sql`.

/// `flush_scans_in` for `$store`, beside the fulfilment steps (it ends a
/// delivered parcel's run with their `delivered`).
macro_rules! tracking_flush {
    ($store:ty, $db:ty) => {
        /// One transaction: the scans (each once, by waybill and `seq`),
        /// then each shipment moved once, to its last scan's status, with
        /// the scans' `parcel_scanned` events (the outbox keeps each once)
        /// and, when it reaches `delivered`, the delivered step. A shipment
        /// delivered already, or with a later scan written already (a late
        /// replay of an older batch), is not moved again.
        async fn flush_scans_in(store: &$store, scans: &[JournalScan], now_ms: i64) -> Result<(), sqlx::Error> {
            let mut tx = store.pool.begin().await?;
            for chunk in scans.chunks(200) {
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO scans (waybill, seq, kind, at_ms, location, note, courier_id, recorded_at_ms) ",
                );
                insert.push_values(chunk, |mut row, journaled| {
                    row.push_bind(journaled.waybill.clone())
                        .push_bind(journaled.seq)
                        .push_bind(journaled.scan.kind.as_str())
                        .push_bind(unix_ms(journaled.scan.at))
                        .push_bind(journaled.scan.location.clone())
                        .push_bind(journaled.scan.note.clone())
                        .push_bind(journaled.courier.get())
                        .push_bind(unix_ms(journaled.recorded_at));
                });
                insert.push(" ON CONFLICT (waybill, seq) DO NOTHING");
                insert.build().persistent(false).execute(&mut *tx).await?;
            }
            // Each waybill's scans, in journal order (coalesced below); the
            // waybills in key order.
            let mut by_waybill: std::collections::BTreeMap<&str, Vec<&JournalScan>> = Default::default();
            for journaled in scans {
                by_waybill.entry(journaled.waybill.as_str()).or_default().push(journaled);
            }
            let mut events = Vec::with_capacity(scans.len());
            for (waybill, of_waybill) in by_waybill {
                let Some(last) = of_waybill.last() else { continue };
                let sql = format!(
                    "UPDATE shipments SET status = $2, updated_at_ms = $3 WHERE waybill = $1 \
                     AND status <> 'delivered' \
                     AND NOT EXISTS (SELECT 1 FROM scans WHERE scans.waybill = $1 AND scans.seq > $4) \
                     RETURNING {SHIPMENT_COLUMNS}"
                );
                let row: Option<ShipmentRow> = sqlx::query_as(&sql)
                    .bind(waybill)
                    .bind(last.to.as_str())
                    .bind(unix_ms(last.recorded_at))
                    .bind(last.seq)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(moved) = row.map(shipment).transpose().map_err(|e| sqlx::Error::Protocol(e.to_string()))?
                else {
                    continue;
                };
                events.extend(of_waybill.iter().map(|journaled| {
                    let scanned = DomainEvent::ParcelScanned {
                        order_id: moved.order_id,
                        user_id: moved.user_id,
                        waybill: waybill.to_owned(),
                        seq: journaled.seq,
                        scan: journaled.scan.kind,
                    };
                    EventRecord::new(scanned, unix_ms(journaled.recorded_at))
                }));
                if last.to == ShipmentStatus::Delivered {
                    delivered(&mut tx, &moved, last.courier.get(), now_ms).await?;
                }
            }
            record_events(&mut *tx, &events).await?;
            tx.commit().await
        }
    };
}

pub(crate) use tracking_flush;
