//! The scan journal of write-behind tracking, in the embedded log's file
//! (`queue.db`, WAL, `synchronous = FULL`): appends go through a writer of
//! their own with group commit (see `log`), so a scan is answered once it
//! is on disk and one fsync covers every scan waiting.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use surge_domain::fulfilment::{JournalScan, Scan, ScanKind, ShipmentStatus};
use surge_domain::{CourierId, StoreError};
use tokio::sync::{mpsc, oneshot};

use super::log::{Append, unavailable};
use crate::behind::ScanJournal;
use crate::rows::{from_unix_ms, unix_ms};

/// A journaled scan as it rests in the file.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    waybill: String,
    courier: i64,
    seq: i64,
    kind: String,
    at_ms: i64,
    location: String,
    note: String,
    to: String,
    recorded_at_ms: i64,
}

impl From<&JournalScan> for Wire {
    fn from(scan: &JournalScan) -> Self {
        Self {
            waybill: scan.waybill.clone(),
            courier: scan.courier.get(),
            seq: scan.seq,
            kind: scan.scan.kind.as_str().to_owned(),
            at_ms: unix_ms(scan.scan.at),
            location: scan.scan.location.clone(),
            note: scan.scan.note.clone(),
            to: scan.to.as_str().to_owned(),
            recorded_at_ms: unix_ms(scan.recorded_at),
        }
    }
}

impl TryFrom<Wire> for JournalScan {
    type Error = StoreError;

    fn try_from(wire: Wire) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Unavailable(format!("scan journal: unknown {what}"));
        Ok(JournalScan {
            scan: Scan {
                kind: ScanKind::parse(&wire.kind).ok_or_else(|| corrupt("scan kind"))?,
                at: from_unix_ms(wire.at_ms),
                location: wire.location,
                note: wire.note,
            },
            to: ShipmentStatus::parse(&wire.to).ok_or_else(|| corrupt("status"))?,
            waybill: wire.waybill,
            courier: CourierId::new(wire.courier),
            seq: wire.seq,
            recorded_at: from_unix_ms(wire.recorded_at_ms),
        })
    }
}

/// A journaled scan as JSON text (the embedded journal's rows, the Redis
/// documents and streams of the distributed write-behind).
pub(crate) fn encode(scan: &JournalScan) -> Result<String, StoreError> {
    serde_json::to_string(&Wire::from(scan)).map_err(|error| StoreError::Unavailable(format!("scan journal: {error}")))
}

/// The scan [`encode`] wrote.
pub(crate) fn decode(payload: &str) -> Result<JournalScan, StoreError> {
    serde_json::from_str::<Wire>(payload)
        .map_err(|error| StoreError::Unavailable(error.to_string()))
        .and_then(JournalScan::try_from)
}

pub struct LogJournal {
    pool: SqlitePool,
    appends: mpsc::Sender<Append>,
}

impl LogJournal {
    pub(super) fn new(pool: SqlitePool, appends: mpsc::Sender<Append>) -> Self {
        Self { pool, appends }
    }

    /// An entry the flusher cannot read moves aside (logged), rather than
    /// stopping every scan behind it.
    async fn dead_letter(&self, seq: i64, payload: &str, error: &StoreError) -> Result<(), StoreError> {
        tracing::error!(seq, %error, "unreadable scan journal entry moved to scan_dead_letters");
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO scan_dead_letters (seq, payload, error, moved_at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(seq)
        .bind(payload)
        .bind(error.to_string())
        .bind(unix_ms(time::OffsetDateTime::now_utc()))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query("DELETE FROM scan_journal WHERE seq = $1")
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }
}

#[async_trait]
impl ScanJournal for LogJournal {
    async fn append(&self, scan: &JournalScan) -> Result<(), StoreError> {
        let payload = encode(scan)?;
        let (done, committed) = oneshot::channel();
        let stopped = || StoreError::Unavailable("scan journal writer stopped".to_owned());
        self.appends.send(Append { payload, done }).await.map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?
    }

    async fn read(&self, after: i64, max: usize) -> Result<Vec<(i64, JournalScan)>, StoreError> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, payload FROM scan_journal WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after)
                .bind(i64::try_from(max).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        let mut scans = Vec::with_capacity(rows.len());
        for (seq, payload) in rows {
            let read = decode(&payload);
            match read {
                Ok(scan) => scans.push((seq, scan)),
                Err(error) => self.dead_letter(seq, &payload, &error).await?,
            }
        }
        Ok(scans)
    }

    async fn trim(&self, upto: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM scan_journal WHERE seq <= $1")
            .bind(upto)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(unavailable)
    }
}
