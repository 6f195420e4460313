//! The embedded durable queue: an append-only log in its own SQLite file
//! (`queue.db`, WAL, `synchronous = FULL`), so appends never wait on the
//! order store's write lock.
//!
//! **Group commit.** Appends go through a channel to one writer task, which
//! takes everything waiting (up to `batch_max`), writes it in one
//! transaction, and answers every caller after the commit's fsync. A caller
//! gets `Ok` only once its event is on disk; under load one fsync covers a
//! whole batch, so durability costs little per request.
//!
//! One consumer reads past its acknowledged offset (at-least-once delivery;
//! the consumer is idempotent) and acknowledges after processing, which also
//! deletes what it acknowledged.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use surge_domain::StoreError;
use surge_domain::flashsale::{Delivery, OrderQueue, OrderRequested};
use tokio::sync::{Notify, mpsc, oneshot};

/// File name of the queue database inside the data dir.
pub const QUEUE_FILE: &str = "queue.db";
const CONSUMER: &str = "orders";

#[derive(Debug, Clone, Copy)]
pub struct LogQueueConfig {
    /// Most events written by one commit.
    pub batch_max: usize,
    /// Appends waiting for the writer; callers beyond it wait for room.
    pub capacity: usize,
    /// SQLite's page cache per connection, in KiB (as the store's).
    pub page_cache_kib: u32,
}

impl Default for LogQueueConfig {
    fn default() -> Self {
        Self { batch_max: 1024, capacity: 65_536, page_cache_kib: 2048 }
    }
}

pub(super) struct Append {
    pub(super) payload: String,
    pub(super) done: oneshot::Sender<Result<(), StoreError>>,
}

pub struct LogQueue {
    pool: SqlitePool,
    appends: mpsc::Sender<Append>,
    /// The scan journal's appends, written by a writer of their own.
    journal_appends: mpsc::Sender<Append>,
    appended: Arc<Notify>,
    acked: AtomicU64,
}

impl LogQueue {
    pub async fn open(data_dir: &Path, config: LogQueueConfig) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}", data_dir.join(QUEUE_FILE).display());
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(unavailable)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .pragma("cache_size", format!("-{}", config.page_cache_kib));
        let pool = SqlitePoolOptions::new().max_connections(3).connect_with(options).await.map_err(unavailable)?;
        sqlx::migrate!("./migrations/queue").run(&pool).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
        sqlx::query("INSERT INTO consumer_offsets (consumer, acked) VALUES ($1, 0) ON CONFLICT DO NOTHING")
            .bind(CONSUMER)
            .execute(&pool)
            .await
            .map_err(unavailable)?;
        let acked: i64 = sqlx::query_scalar("SELECT acked FROM consumer_offsets WHERE consumer = $1")
            .bind(CONSUMER)
            .fetch_one(&pool)
            .await
            .map_err(unavailable)?;

        let (appends, receiver) = mpsc::channel(config.capacity.max(1));
        let appended = Arc::new(Notify::new());
        tokio::spawn(write_loop(pool.clone(), receiver, config.batch_max.max(1), Arc::clone(&appended), "events"));
        let (journal_appends, receiver) = mpsc::channel(config.capacity.max(1));
        let journaled = Arc::new(Notify::new());
        tokio::spawn(write_loop(pool.clone(), receiver, config.batch_max.max(1), journaled, "scan_journal"));
        let acked = AtomicU64::new(u64::try_from(acked).unwrap_or(0));
        Ok(Self { pool, appends, journal_appends, appended, acked })
    }

    /// Events appended and not yet acknowledged.
    pub async fn backlog(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE seq > $1")
            .bind(self.acked_offset())
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn acked_offset(&self) -> i64 {
        i64::try_from(self.acked.load(Ordering::Acquire)).unwrap_or(i64::MAX)
    }

    /// The scan journal kept in the same file (write-behind of tracking).
    pub fn journal(&self) -> super::journal::LogJournal {
        super::journal::LogJournal::new(self.pool.clone(), self.journal_appends.clone())
    }

    /// The event bus kept in the same file.
    pub fn bus(&self) -> super::log_bus::LogBus {
        super::log_bus::LogBus::new(self.pool.clone())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl OrderQueue for LogQueue {
    async fn append(&self, request: &OrderRequested) -> Result<(), StoreError> {
        let payload = super::wire::encode_text(request)?;
        let (done, committed) = oneshot::channel();
        self.appends
            .send(Append { payload, done })
            .await
            .map_err(|_| StoreError::Unavailable("queue writer stopped".to_owned()))?;
        committed.await.map_err(|_| StoreError::Unavailable("queue writer stopped".to_owned()))?
    }

    async fn oldest_unacked_ms(&self) -> Result<Option<i64>, StoreError> {
        let payload: Option<String> =
            sqlx::query_scalar("SELECT payload FROM events WHERE seq > $1 ORDER BY seq LIMIT 1")
                .bind(self.acked_offset())
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        payload
            .map(|payload| {
                super::wire::decode(payload.as_bytes())
                    .map(|request| request.requested_at_ms)
                    .map_err(|e| StoreError::Unavailable(format!("queue: unreadable event: {e}")))
            })
            .transpose()
    }

    async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StoreError> {
        let mut waited = false;
        loop {
            let rows: Vec<(i64, String)> =
                sqlx::query_as("SELECT seq, payload FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(self.acked_offset())
                    .bind(i64::try_from(max).unwrap_or(i64::MAX))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?;
            if !rows.is_empty() || waited {
                return self.readable(rows).await;
            }
            let _ = tokio::time::timeout(wait, self.appended.notified()).await;
            waited = true;
        }
    }

    async fn ack(&self, offset: u64) -> Result<(), StoreError> {
        let offset_i64 = i64::try_from(offset).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("UPDATE consumer_offsets SET acked = $1 WHERE consumer = $2 AND acked < $1")
            .bind(offset_i64)
            .bind(CONSUMER)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query("DELETE FROM events WHERE seq <= $1")
            .bind(offset_i64)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        self.acked.fetch_max(offset, Ordering::AcqRel);
        Ok(())
    }
}

impl LogQueue {
    /// The rows as deliveries. An unreadable row moves to `dead_letters`
    /// (logged) instead of blocking the queue; unreadable rows before the
    /// first readable one are acknowledged at once, later ones are covered
    /// by the consumer's acknowledgement of what follows them.
    async fn readable(&self, rows: Vec<(i64, String)>) -> Result<Vec<Delivery>, StoreError> {
        let mut deliveries = Vec::with_capacity(rows.len());
        for (seq, payload) in rows {
            let offset = u64::try_from(seq).unwrap_or(0);
            match super::wire::decode(payload.as_bytes()) {
                Ok(request) => deliveries.push(Delivery { offset, request }),
                Err(error) => {
                    tracing::error!(seq, %error, "unreadable queue event moved to dead_letters");
                    sqlx::query(
                        "INSERT INTO dead_letters (seq, payload, error, moved_at_ms) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(seq)
                    .bind(&payload)
                    .bind(error.to_string())
                    .bind(crate::rows::unix_ms(time::OffsetDateTime::now_utc()))
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                    if deliveries.is_empty() {
                        self.ack(offset).await?;
                    }
                }
            }
        }
        Ok(deliveries)
    }
}

/// The single writer of `table`: one transaction (one fsync) per batch of
/// appends.
async fn write_loop(
    pool: SqlitePool,
    mut receiver: mpsc::Receiver<Append>,
    batch_max: usize,
    appended: Arc<Notify>,
    table: &'static str,
) {
    let mut batch = Vec::with_capacity(batch_max);
    while receiver.recv_many(&mut batch, batch_max).await > 0 {
        let result = write_batch(&pool, &batch, table).await;
        if let Err(error) = &result {
            tracing::error!(%error, events = batch.len(), "queue append failed");
        }
        for append in batch.drain(..) {
            let _ = append.done.send(result.clone());
        }
        if result.is_ok() {
            appended.notify_one();
        }
    }
}

/// Rows per INSERT statement: each statement is one round trip to the
/// SQLite worker thread, so a batch goes in a few statements, not one each.
const ROWS_PER_STATEMENT: usize = 256;

async fn write_batch(pool: &SqlitePool, batch: &[Append], table: &str) -> Result<(), StoreError> {
    let now_ms = crate::rows::unix_ms(time::OffsetDateTime::now_utc());
    let mut tx = pool.begin().await.map_err(unavailable)?;
    for chunk in batch.chunks(ROWS_PER_STATEMENT) {
        let mut insert = sqlx::QueryBuilder::new(format!("INSERT INTO {table} (payload, appended_at_ms) "));
        insert.push_values(chunk, |mut row, append| {
            row.push_bind(append.payload.as_str()).push_bind(now_ms);
        });
        insert.build().execute(&mut *tx).await.map_err(unavailable)?;
    }
    tx.commit().await.map_err(unavailable)
}

pub(super) fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: i64) -> OrderRequested {
        crate::testing::order_requested(id, 1, 1)
    }

    #[tokio::test]
    async fn appended_events_survive_a_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = LogQueue::open(dir.path(), LogQueueConfig::default()).await.expect("open");
        for id in 1..=3 {
            queue.append(&request(id)).await.expect("append");
        }
        let first = queue.poll(2, Duration::ZERO).await.expect("poll");
        assert_eq!(first.iter().map(|d| d.request.order_id.get()).collect::<Vec<_>>(), vec![1, 2]);
        queue.ack(first[1].offset).await.expect("ack");
        queue.close().await;

        let reopened = LogQueue::open(dir.path(), LogQueueConfig::default()).await.expect("reopen");
        let rest = reopened.poll(10, Duration::ZERO).await.expect("poll");
        assert_eq!(rest.iter().map(|d| d.request.order_id.get()).collect::<Vec<_>>(), vec![3]);
        assert_eq!(reopened.backlog().await.expect("backlog"), 1);
    }

    #[tokio::test]
    async fn an_unreadable_event_is_set_aside_and_does_not_block_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = LogQueue::open(dir.path(), LogQueueConfig::default()).await.expect("open");
        sqlx::query("INSERT INTO events (payload, appended_at_ms) VALUES ('{not json', 0)")
            .execute(&queue.pool)
            .await
            .expect("insert garbage");
        queue.append(&request(7)).await.expect("append");
        let delivered = queue.poll(10, Duration::ZERO).await.expect("poll");
        assert_eq!(delivered.iter().map(|d| d.request.order_id.get()).collect::<Vec<_>>(), vec![7]);
        let dead: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters").fetch_one(&queue.pool).await.expect("count");
        assert_eq!(dead, 1);
    }
}
