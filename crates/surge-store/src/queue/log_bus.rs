//! The embedded event bus: the outbox relay's events in the queue's own
//! SQLite file (`queue.db`, table `bus`), each consumer reading past its
//! own offset (`consumer_offsets`, named `bus:<consumer>`). A row is kept
//! for a day (a consumer that joins later reads that much history, as on
//! the brokers' streams), and longer while a consumer has not read it. One
//! node owns the file, so one reader per consumer is all there is.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::SqlitePool;
use surge_domain::StoreError;
use surge_domain::outbox::{BusDelivery, EventBus, EventStream, OutboxEntry};
use tokio::sync::Notify;

/// How long a published event is kept once every consumer has read it.
const RETENTION_MS: i64 = 24 * 3600 * 1000;

pub struct LogBus {
    pool: SqlitePool,
    published: Arc<Notify>,
}

impl LogBus {
    pub(super) fn new(pool: SqlitePool) -> Self {
        Self { pool, published: Arc::new(Notify::new()) }
    }
}

#[async_trait]
impl EventBus for LogBus {
    async fn publish(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        let now_ms = crate::rows::unix_ms(time::OffsetDateTime::now_utc());
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for chunk in entries.chunks(256) {
            let mut insert = sqlx::QueryBuilder::new("INSERT INTO bus (event_id, payload, appended_at_ms) ");
            insert.push_values(chunk, |mut row, entry| {
                row.push_bind(entry.event_id.as_str()).push_bind(entry.payload.as_str()).push_bind(now_ms);
            });
            // Not kept prepared: each row count is another statement.
            insert.build().persistent(false).execute(&mut *tx).await.map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        self.published.notify_waiters();
        Ok(())
    }

    /// A consumer new to the bus reads from what is still kept.
    async fn subscribe(&self, consumer: &str) -> Result<Box<dyn EventStream>, StoreError> {
        let name = format!("bus:{consumer}");
        sqlx::query("INSERT INTO consumer_offsets (consumer, acked) VALUES ($1, 0) ON CONFLICT DO NOTHING")
            .bind(&name)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        let acked: i64 = sqlx::query_scalar("SELECT acked FROM consumer_offsets WHERE consumer = $1")
            .bind(&name)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(Box::new(LogBusStream { pool: self.pool.clone(), name, acked, published: Arc::clone(&self.published) }))
    }
}

struct LogBusStream {
    pool: SqlitePool,
    name: String,
    acked: i64,
    published: Arc<Notify>,
}

#[async_trait]
impl EventStream for LogBusStream {
    /// Reads past the acknowledged offset: what a failed batch left
    /// unacknowledged is delivered again.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<BusDelivery>, StoreError> {
        let mut waited = false;
        loop {
            // Registered before the read, so a publish in between wakes it.
            let published = self.published.notified();
            let rows: Vec<(i64, String)> =
                sqlx::query_as("SELECT seq, payload FROM bus WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(self.acked)
                    .bind(i64::try_from(max).unwrap_or(i64::MAX))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?;
            if !rows.is_empty() || waited || wait.is_zero() {
                return Ok(rows
                    .into_iter()
                    .map(|(seq, payload)| BusDelivery {
                        token: u64::try_from(seq).unwrap_or(0),
                        event: crate::events_wire::decode(payload.as_bytes()),
                    })
                    .collect());
            }
            let _ = tokio::time::timeout(wait, published).await;
            waited = true;
        }
    }

    async fn ack(&mut self, token: u64) -> Result<(), StoreError> {
        let token = i64::try_from(token).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("UPDATE consumer_offsets SET acked = $1 WHERE consumer = $2 AND acked < $1")
            .bind(token)
            .bind(&self.name)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let now_ms = crate::rows::unix_ms(time::OffsetDateTime::now_utc());
        sqlx::query(
            "DELETE FROM bus WHERE appended_at_ms < $1 \
             AND seq <= (SELECT MIN(acked) FROM consumer_offsets WHERE consumer LIKE 'bus:%')",
        )
        .bind(now_ms - RETENTION_MS)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        self.acked = self.acked.max(token);
        Ok(())
    }
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("event bus: {error}"))
}

#[cfg(test)]
mod tests {
    use surge_domain::outbox::{DomainEvent, EventRecord};
    use surge_domain::{MerchantId, OrderId, UserId};

    use super::*;
    use crate::queue::log::{LogQueue, LogQueueConfig};

    fn entry(seq: i64) -> OutboxEntry {
        let event = DomainEvent::OrderCancelled {
            order_id: OrderId::new(seq),
            user_id: UserId::new(1),
            merchant_id: MerchantId::new(2),
        };
        let record = EventRecord::new(event, 5);
        OutboxEntry {
            seq,
            event_id: record.event_id.clone(),
            payload: crate::events_wire::encode(&record).expect("json"),
        }
    }

    /// Each consumer reads every event, past its own acknowledgement, and
    /// keeps its place across a reopen.
    #[tokio::test]
    async fn each_consumer_reads_every_event_once_acknowledged_across_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = LogQueue::open(dir.path(), LogQueueConfig::default()).await.expect("open");
        let bus = queue.bus();
        let mut first = bus.subscribe("a").await.expect("a");
        let mut second = bus.subscribe("b").await.expect("b");
        bus.publish(&[entry(1), entry(2), entry(3)]).await.expect("publish");
        let read = first.poll(2, Duration::ZERO).await.expect("poll");
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].event.as_ref().map(|record| record.event_id.as_str()), Ok("order_cancelled:1"));
        first.ack(read[1].token).await.expect("ack");
        assert_eq!(second.poll(10, Duration::ZERO).await.expect("poll").len(), 3, "b has read nothing yet");
        queue.close().await;

        let queue = LogQueue::open(dir.path(), LogQueueConfig::default()).await.expect("reopen");
        let mut first = queue.bus().subscribe("a").await.expect("a again");
        let rest = first.poll(10, Duration::ZERO).await.expect("poll");
        assert_eq!(
            rest.iter().map(|d| d.event.clone().map(|r| r.event_id)).collect::<Vec<_>>(),
            vec![Ok("order_cancelled:3".to_owned())]
        );
    }
}
