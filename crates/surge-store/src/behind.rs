//! Tracking documents written behind the cache (write-behind), the storage
//! pattern of JD Logistics for its write-heavy order-relation documents.
//!
//! A parcel's scans after pickup are the write-heavy part of its life. With
//! write-behind, a scan is checked against the parcel's document held here
//! (its shipment and the scans not yet in the store), appended to a durable
//! journal, applied to the document, and answered; a flusher writes the
//! journal to the store in batches, one transaction per batch, coalescing
//! each shipment's moves into one update. Reads overlay the document on
//! the store, so a caller sees its scan at once.
//!
//! The `picked_up` scan is written through: it is the one the store's own
//! work (dispatch, the pick-up timeout, a courier leaving) races with. From
//! then on only the flusher writes the parcel, so a document missing here
//! (never loaded, or flushed and dropped) is exactly what the store holds.
//! A document with scans not yet flushed is never dropped; the number of
//! such scans is bounded (`max_pending`): past half of it scans slow down,
//! at it they are refused (503 `overloaded`) rather than growing memory.
//!
//! Crash safety: a scan is answered only once the journal holds it; at
//! start the node flushes the whole journal before serving (a scan is
//! written once whatever is replayed: the store keys scans by waybill and
//! `seq`). The knobs are Hazelcast's and Redisson's write-behind ones:
//! `delay` (how often the flusher runs), `batch` (most scans per
//! transaction) and coalescing (always on: one shipment update per batch).
//!
//! One node's memory holds the documents, so write-behind is for a single
//! node (the embedded mode); nodes sharing a store write scans through.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use surge_domain::fulfilment::{FulfilmentStore, JournalScan, Scan, ScanOutcome, ScanRefused, Shipment, TrackingDocs};
use surge_domain::{CourierId, StoreError};
use time::OffsetDateTime;

/// The durable log of scans taken behind the cache: `append` answers once
/// the scan is on disk; the flusher reads in order and trims what the
/// store holds.
#[async_trait]
pub trait ScanJournal: Send + Sync + 'static {
    async fn append(&self, scan: &JournalScan) -> Result<(), StoreError>;

    /// Up to `max` scans after position `after`, oldest first, each with
    /// its position.
    async fn read(&self, after: i64, max: usize) -> Result<Vec<(i64, JournalScan)>, StoreError>;

    /// Forgets the scans up to and including position `upto`.
    async fn trim(&self, upto: i64) -> Result<(), StoreError>;
}

/// The write-behind knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BehindConfig {
    /// How long the flusher waits when the journal has less than a batch.
    pub delay: Duration,
    /// Most scans one flush writes.
    pub batch: usize,
    /// Most scans taken and not yet flushed; past half, scans slow down.
    pub max_pending: usize,
}

/// Locks that serialise the scans of one waybill (a waybill hashes to one).
const STRIPES: usize = 1024;
/// The longest a scan is slowed down, at `max_pending` scans behind.
const MAX_SLOWDOWN: Duration = Duration::from_millis(20);

/// A parcel's document: its shipment as the scans left it, and the scans
/// not yet in the store (with their `seq`).
#[derive(Debug, Clone)]
struct Doc {
    shipment: Shipment,
    last_seq: i64,
    unflushed: Vec<(i64, Scan)>,
}

pub struct WriteBehind {
    journal: Arc<dyn ScanJournal>,
    store: Arc<dyn FulfilmentStore>,
    config: BehindConfig,
    docs: Mutex<HashMap<String, Doc>>,
    stripes: Vec<tokio::sync::Mutex<()>>,
    pending: AtomicUsize,
    /// The journal position flushed up to (the flusher's alone).
    flushed: AtomicI64,
}

impl WriteBehind {
    pub fn new(journal: Arc<dyn ScanJournal>, store: Arc<dyn FulfilmentStore>, config: BehindConfig) -> Self {
        Self {
            journal,
            store,
            config,
            docs: Mutex::new(HashMap::new()),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            pending: AtomicUsize::new(0),
            flushed: AtomicI64::new(0),
        }
    }

    /// Scans taken and not yet flushed.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    fn stripe(&self, waybill: &str) -> &tokio::sync::Mutex<()> {
        let mut hasher = DefaultHasher::new();
        waybill.hash(&mut hasher);
        &self.stripes[(hasher.finish() % STRIPES as u64) as usize]
    }

    fn doc(&self, waybill: &str) -> Option<Doc> {
        self.docs.lock().unwrap_or_else(PoisonError::into_inner).get(waybill).cloned()
    }

    /// Past half of `max_pending`, a scan waits up to `MAX_SLOWDOWN`, more
    /// the closer it is; at `max_pending` it is refused.
    async fn admit(&self) -> Result<(), ScanRefused> {
        let (pending, max) = (self.pending(), self.config.max_pending.max(2));
        if pending >= max {
            return Err(ScanRefused::Overloaded);
        }
        let half = max / 2;
        if pending > half {
            let share = (pending - half) as f64 / (max - half) as f64;
            tokio::time::sleep(MAX_SLOWDOWN.mul_f64(share)).await;
        }
        Ok(())
    }

    /// Writes up to a batch of the journal to the store and drops the
    /// documents it completes: how many scans it wrote.
    pub async fn flush_once(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let batch = self.journal.read(self.flushed.load(Ordering::Relaxed), self.config.batch).await?;
        let Some(&(upto, _)) = batch.last() else {
            return Ok(0);
        };
        let scans: Vec<JournalScan> = batch.into_iter().map(|(_, scan)| scan).collect();
        self.store.flush_scans(&scans, now).await?;
        self.journal.trim(upto).await?;
        self.flushed.store(upto, Ordering::Relaxed);
        let done = scans.len();
        let _ = self.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(done)));
        let mut flushed: HashMap<&str, i64> = HashMap::new();
        for scan in &scans {
            let seq = flushed.entry(scan.waybill.as_str()).or_default();
            *seq = (*seq).max(scan.seq);
        }
        for (waybill, seq) in flushed {
            let _serial = self.stripe(waybill).lock().await;
            let mut docs = self.docs.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(doc) = docs.get_mut(waybill) {
                doc.unflushed.retain(|(kept, _)| *kept > seq);
                if doc.unflushed.is_empty() {
                    docs.remove(waybill);
                }
            }
        }
        Ok(done)
    }

    /// Flushes until the journal is empty (at start, before serving, and
    /// at shutdown): how many scans it wrote.
    pub async fn flush_all(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let done = self.flush_once(now).await?;
            total += done;
            if done == 0 {
                return Ok(total);
            }
        }
    }

    pub fn delay(&self) -> Duration {
        self.config.delay
    }

    /// A flush wrote a whole batch: there may be more at once.
    pub fn batch(&self) -> usize {
        self.config.batch
    }
}

#[async_trait]
impl TrackingDocs for WriteBehind {
    /// Takes `courier`'s scan of a picked-up parcel: checked against its
    /// document, journaled, applied to the document. The answer, as the
    /// store's `scan` gives it.
    async fn scan(
        &self,
        waybill: &str,
        courier: CourierId,
        scan: &Scan,
        now: OffsetDateTime,
    ) -> Result<ScanOutcome, ScanRefused> {
        self.admit().await?;
        let _serial = self.stripe(waybill).lock().await;
        let doc = match self.doc(waybill) {
            Some(doc) => doc,
            None => {
                let Some(shipment) = self.store.shipment(waybill).await? else {
                    return Ok(ScanOutcome::NotFound);
                };
                let last_seq = self.store.scans(waybill).await?.len() as i64;
                Doc { shipment, last_seq, unflushed: Vec::new() }
            }
        };
        if doc.shipment.courier_id != Some(courier) {
            return Ok(ScanOutcome::NotAssigned);
        }
        let to = match doc.shipment.status.scan(scan.kind) {
            Ok(to) => to,
            Err(illegal) => return Ok(ScanOutcome::Illegal(illegal)),
        };
        let seq = doc.last_seq + 1;
        let journaled =
            JournalScan { waybill: waybill.to_owned(), courier, seq, scan: scan.clone(), to, recorded_at: now };
        self.journal.append(&journaled).await?;
        self.pending.fetch_add(1, Ordering::Relaxed);
        let mut docs = self.docs.lock().unwrap_or_else(PoisonError::into_inner);
        let doc = docs.entry(waybill.to_owned()).or_insert(doc);
        doc.last_seq = seq;
        doc.unflushed.push((seq, scan.clone()));
        doc.shipment.status = to;
        doc.shipment.updated_at = now;
        Ok(ScanOutcome::Applied(doc.shipment.clone()))
    }

    /// The shipment as its scans left it (the store's until a scan is
    /// taken here).
    fn overlay(&self, shipment: Shipment) -> Shipment {
        self.doc(&shipment.waybill).map_or(shipment, |doc| doc.shipment)
    }

    /// Reads `waybill` with what is not yet flushed: the shipment, and its
    /// scans in order. The document is read first, so a flush between the
    /// two reads leaves no scan out.
    async fn tracking(&self, shipment: Shipment) -> Result<(Shipment, Vec<Scan>), StoreError> {
        let doc = self.doc(&shipment.waybill);
        let mut scans = self.store.scans(&shipment.waybill).await?;
        let Some(doc) = doc else {
            return Ok((shipment, scans));
        };
        let stored = scans.len() as i64;
        scans.extend(doc.unflushed.into_iter().filter(|(seq, _)| *seq > stored).map(|(_, scan)| scan));
        Ok((doc.shipment, scans))
    }
}
