//! The transactional outbox and the consumers' inbox for both relational
//! adapters, as in `crate::sql`. `outbox_moves!` writes events inside the
//! transactions of the changes they report (order, payment and refund
//! statements call it); `outbox_store!` is the relay's side.
//!
//! A relay claims rows by a lease rather than by holding row locks across
//! its publish: on PostgreSQL the claiming `UPDATE` skips rows another
//! node's claim has locked (`FOR UPDATE SKIP LOCKED`), and a claim whose
//! relay died expires and is taken again (at-least-once).

use surge_domain::order::Order;
use surge_domain::outbox::{DomainEvent, EventRecord};
use time::OffsetDateTime;

/// The `OrderPlaced` events of orders written now.
pub(crate) fn placed(orders: &[Order], now: OffsetDateTime) -> Vec<EventRecord> {
    let now_ms = crate::rows::unix_ms(now);
    orders.iter().map(|order| EventRecord::new(DomainEvent::placed(order), now_ms)).collect()
}

/// What the change statements call: `record_events(conn, records)`.
macro_rules! outbox_moves {
    ($conn:ty, $db:ty) => {
        /// Writes the events into the outbox, each once under its id (a
        /// change written again writes nothing new).
        pub(crate) async fn record_events(
            conn: &mut $conn,
            records: &[surge_domain::outbox::EventRecord],
        ) -> Result<(), sqlx::Error> {
            for chunk in records.chunks(500) {
                let mut insert =
                    sqlx::QueryBuilder::<$db>::new("INSERT INTO outbox (event_id, kind, payload, created_at_ms) ");
                let mut encoded = Vec::with_capacity(chunk.len());
                for record in chunk {
                    let payload =
                        crate::events_wire::encode(record).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
                    encoded.push((record, payload));
                }
                insert.push_values(encoded, |mut row, (record, payload)| {
                    row.push_bind(record.event_id.clone())
                        .push_bind(record.event.kind())
                        .push_bind(payload)
                        .push_bind(record.occurred_at_ms);
                });
                insert.push(" ON CONFLICT (event_id) DO NOTHING");
                // Not kept prepared: each row count is another statement,
                // and a connection's cache of them would only grow.
                insert.build().persistent(false).execute(&mut *conn).await?;
            }
            Ok(())
        }
    };
}

/// `OutboxStore` and `Inbox` for `$store` (a type with a `pool` field);
/// `$lock` is what the claiming subquery adds to lock its rows.
macro_rules! outbox_store {
    ($store:ty, $db:ty, $lock:literal) => {
        #[async_trait]
        impl surge_domain::outbox::OutboxStore for $store {
            async fn claim(
                &self,
                limit: u32,
                lease: std::time::Duration,
                now_ms: i64,
            ) -> Result<Vec<surge_domain::outbox::OutboxEntry>, StoreError> {
                let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
                let sql = concat!(
                    "UPDATE outbox SET claimed_until_ms = $1 WHERE seq IN (SELECT seq FROM outbox \
                     WHERE published_at_ms IS NULL AND (claimed_until_ms IS NULL OR claimed_until_ms < $2) \
                     ORDER BY seq LIMIT $3 ",
                    $lock,
                    ") RETURNING seq, event_id, payload"
                );
                let mut rows: Vec<(i64, String, String)> = sqlx::query_as(sql)
                    .bind(until)
                    .bind(now_ms)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                rows.sort_unstable_by_key(|row| row.0);
                Ok(rows
                    .into_iter()
                    .map(|(seq, event_id, payload)| surge_domain::outbox::OutboxEntry { seq, event_id, payload })
                    .collect())
            }

            async fn mark_published(&self, seqs: &[i64], now_ms: i64) -> Result<(), StoreError> {
                for chunk in seqs.chunks(500) {
                    let mut update = sqlx::QueryBuilder::<$db>::new("UPDATE outbox SET published_at_ms = ");
                    update.push_bind(now_ms).push(" WHERE seq IN (");
                    let mut list = update.separated(", ");
                    for seq in chunk {
                        list.push_bind(*seq);
                    }
                    update.push(")");
                    update.build().persistent(false).execute(&self.pool).await.map_err(store_error)?;
                }
                Ok(())
            }

            async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
                let pruned = sqlx::query("DELETE FROM outbox WHERE published_at_ms < $1")
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?
                    .rows_affected();
                // An event that old is not delivered again.
                sqlx::query("DELETE FROM inbox WHERE received_at_ms < $1")
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(pruned)
            }

            async fn backlog(&self) -> Result<surge_domain::outbox::OutboxBacklog, StoreError> {
                // Both from the unpublished rows' partial index: the count
                // without reading a row, the oldest as the next the relay
                // publishes (the first by `seq`) rather than the smallest
                // `created_at_ms` of them all, which read every row of the
                // backlog every second while it was long.
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at_ms IS NULL")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(store_error)?;
                let oldest: Option<i64> = sqlx::query_scalar(
                    "SELECT created_at_ms FROM outbox WHERE published_at_ms IS NULL ORDER BY seq LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(surge_domain::outbox::OutboxBacklog {
                    unpublished: u64::try_from(count).unwrap_or(0),
                    oldest_ms: oldest,
                })
            }
        }

        #[async_trait]
        impl surge_domain::outbox::Inbox for $store {
            async fn seen(&self, consumer: &str, event_id: &str) -> Result<bool, StoreError> {
                let seen: Option<i64> =
                    sqlx::query_scalar("SELECT received_at_ms FROM inbox WHERE consumer = $1 AND event_id = $2")
                        .bind(consumer)
                        .bind(event_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(store_error)?;
                Ok(seen.is_some())
            }

            async fn seen_among(
                &self,
                consumer: &str,
                event_ids: &[String],
            ) -> Result<std::collections::HashSet<String>, StoreError> {
                let mut seen = std::collections::HashSet::new();
                for chunk in event_ids.chunks(500) {
                    let mut select = sqlx::QueryBuilder::<$db>::new("SELECT event_id FROM inbox WHERE consumer = ");
                    select.push_bind(consumer).push(" AND event_id IN (");
                    let mut ids = select.separated(", ");
                    for event_id in chunk {
                        ids.push_bind(event_id.as_str());
                    }
                    select.push(")");
                    let rows: Vec<String> = select
                        .build_query_scalar()
                        .persistent(false)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(store_error)?;
                    seen.extend(rows);
                }
                Ok(seen)
            }

            async fn record(&self, consumer: &str, event_ids: &[String], now_ms: i64) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                for chunk in event_ids.chunks(500) {
                    let mut insert =
                        sqlx::QueryBuilder::<$db>::new("INSERT INTO inbox (consumer, event_id, received_at_ms) ");
                    insert.push_values(chunk, |mut row, event_id| {
                        row.push_bind(consumer).push_bind(event_id.as_str()).push_bind(now_ms);
                    });
                    insert.push(" ON CONFLICT DO NOTHING");
                    insert.build().persistent(false).execute(&mut *tx).await.map_err(store_error)?;
                }
                tx.commit().await.map_err(store_error)
            }
        }
    };
}

pub(crate) use {outbox_moves, outbox_store};
