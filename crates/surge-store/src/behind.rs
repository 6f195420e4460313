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
//! such scans is bounded (`max_pending`, a slot taken before the journal
//! append): past half of it scans slow down, at it they are refused (503
//! `overloaded`) rather than growing memory. A scan's check, append and
//! apply run as one task the caller awaits: a caller that goes away (a
//! client hanging up) cannot leave a journaled scan out of its document.
//! Reads take the document before the store's row, so a flush between the
//! two cannot hide an acknowledged scan.
//!
//! Crash safety: a scan is answered only once the journal holds it; at
//! start the node flushes the whole journal before serving (a scan is
//! written once whatever is replayed: the store keys scans by waybill and
//! `seq`). The knobs are Hazelcast's and Redisson's write-behind ones:
//! `delay` (how often the flusher runs), `batch` (most scans per
//! transaction) and coalescing (always on: one shipment update per batch).
//!
//! One node's memory holds these documents, so this is the embedded mode's
//! write-behind; nodes sharing a store keep theirs in Redis
//! (`crate::redis::RedisTracking`), with the same knobs and guarantees.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use surge_domain::fulfilment::{
    FulfilmentStore, JournalScan, Scan, ScanOutcome, ScanRefused, Shipment, ShipmentStatus, TrackingDocs,
};
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
#[derive(Debug)]
struct Doc {
    shipment: Shipment,
    last_seq: i64,
    unflushed: Vec<(i64, Scan)>,
}

struct Inner {
    journal: Arc<dyn ScanJournal>,
    store: Arc<dyn FulfilmentStore>,
    config: BehindConfig,
    docs: Mutex<HashMap<String, Doc>>,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Scans journaled, or about to be, and not flushed.
    pending: AtomicUsize,
    /// The journal position flushed up to (the flusher's alone).
    flushed: AtomicI64,
}

pub struct WriteBehind {
    inner: Arc<Inner>,
}

impl WriteBehind {
    pub fn new(journal: Arc<dyn ScanJournal>, store: Arc<dyn FulfilmentStore>, config: BehindConfig) -> Self {
        let inner = Inner {
            journal,
            store,
            config,
            docs: Mutex::new(HashMap::new()),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            pending: AtomicUsize::new(0),
            flushed: AtomicI64::new(0),
        };
        Self { inner: Arc::new(inner) }
    }
}

impl Inner {
    fn stripe(&self, waybill: &str) -> &tokio::sync::Mutex<()> {
        let mut hasher = DefaultHasher::new();
        waybill.hash(&mut hasher);
        &self.stripes[(hasher.finish() % STRIPES as u64) as usize]
    }

    fn docs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Doc>> {
        self.docs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for one scan: refused at `max_pending`; past half of
    /// it, the scan waits up to `MAX_SLOWDOWN`, more the closer it is.
    async fn admit(&self) -> Result<(), ScanRefused> {
        let max = self.config.max_pending.max(2);
        let taken = self.pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        let Ok(before) = taken else {
            return Err(ScanRefused::Overloaded);
        };
        let wait = slowdown(before, max);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// The scan under its waybill's lock: checked against the document
    /// (loaded from the store when absent), journaled, applied.
    async fn take(
        &self,
        waybill: &str,
        courier: CourierId,
        scan: &Scan,
        now: OffsetDateTime,
    ) -> Result<ScanOutcome, ScanRefused> {
        let _serial = self.stripe(waybill).lock().await;
        // Where the parcel is and its last seq; not its unflushed scans.
        let known = self.docs().get(waybill).map(|doc| (doc.shipment.clone(), doc.last_seq));
        let (shipment, last_seq) = match known {
            Some(known) => known,
            None => {
                let Some(shipment) = self.store.shipment(waybill).await? else {
                    return Ok(ScanOutcome::NotFound);
                };
                let last_seq = self.store.last_scan_seq(waybill).await?;
                (shipment, last_seq)
            }
        };
        if shipment.courier_id != Some(courier) {
            return Ok(ScanOutcome::NotAssigned);
        }
        let to = match shipment.status.scan(scan.kind) {
            Ok(to) => to,
            Err(illegal) => return Ok(ScanOutcome::Illegal(illegal)),
        };
        let seq = last_seq + 1;
        let journaled =
            JournalScan { waybill: waybill.to_owned(), courier, seq, scan: scan.clone(), to, recorded_at: now };
        self.journal.append(&journaled).await?;
        let mut docs = self.docs();
        let doc = docs.entry(waybill.to_owned()).or_insert(Doc { shipment, last_seq, unflushed: Vec::new() });
        doc.last_seq = seq;
        doc.unflushed.push((seq, scan.clone()));
        doc.shipment.status = to;
        doc.shipment.updated_at = now;
        Ok(ScanOutcome::Applied(doc.shipment.clone()))
    }

    async fn flush_once(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let batch = self.journal.read(self.flushed.load(Ordering::Relaxed), self.config.batch).await?;
        let Some(&(upto, _)) = batch.last() else {
            return Ok(0);
        };
        let scans: Vec<JournalScan> = batch.into_iter().map(|(_, scan)| scan).collect();
        self.store.flush_scans(&scans, now).await?;
        self.journal.trim(upto).await?;
        self.flushed.store(upto, Ordering::Relaxed);
        let done = scans.len();
        // Saturating: at start the journal holds what an earlier run took.
        let _ = self.pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.saturating_sub(done)));
        for (waybill, seq) in last_seqs(&scans) {
            let _serial = self.stripe(waybill).lock().await;
            let mut docs = self.docs();
            if let Some(doc) = docs.get_mut(waybill) {
                doc.unflushed.retain(|(kept, _)| *kept > seq);
                if doc.unflushed.is_empty() {
                    docs.remove(waybill);
                }
            }
        }
        Ok(done)
    }
}

#[async_trait]
impl TrackingDocs for WriteBehind {
    async fn scan(
        &self,
        waybill: &str,
        courier: CourierId,
        scan: &Scan,
        now: OffsetDateTime,
    ) -> Result<ScanOutcome, ScanRefused> {
        let inner = Arc::clone(&self.inner);
        inner.admit().await?;
        let (waybill, scan) = (waybill.to_owned(), scan.clone());
        // One task from the lock to the document: not cancelled with the
        // request that asked for it.
        let taken = tokio::spawn(async move {
            let taken = inner.take(&waybill, courier, &scan, now).await;
            if !matches!(taken, Ok(ScanOutcome::Applied(_))) {
                inner.pending.fetch_sub(1, Ordering::AcqRel);
            }
            taken
        });
        taken.await.map_err(|error| ScanRefused::Unavailable(StoreError::Unavailable(error.to_string())))?
    }

    async fn shipment(&self, waybill: &str) -> Result<Option<Shipment>, StoreError> {
        Ok(self.inner.docs().get(waybill).map(|doc| doc.shipment.clone()))
    }

    async fn tasks(&self, courier: CourierId) -> Result<Vec<Shipment>, StoreError> {
        // The documents first (a flush drops them): a flush between the two
        // reads hides nothing.
        let written_behind: HashMap<String, Shipment> = {
            let docs = self.inner.docs();
            let of_courier = docs.iter().filter(|(_, doc)| doc.shipment.courier_id == Some(courier));
            of_courier.map(|(waybill, doc)| (waybill.clone(), doc.shipment.clone())).collect()
        };
        let stored = self.inner.store.tasks(courier).await?;
        Ok(overlay(stored, |waybill| written_behind.get(waybill).cloned()))
    }

    async fn unflushed(&self, waybill: &str) -> Result<Vec<(i64, Scan)>, StoreError> {
        Ok(self.inner.docs().get(waybill).map(|doc| doc.unflushed.clone()).unwrap_or_default())
    }
}

#[async_trait]
impl TrackingFlusher for WriteBehind {
    async fn flush_once(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        self.inner.flush_once(now).await
    }

    async fn pending(&self) -> Result<usize, StoreError> {
        Ok(self.inner.pending.load(Ordering::Relaxed))
    }

    fn delay(&self) -> Duration {
        self.inner.config.delay
    }

    fn batch(&self) -> usize {
        self.inner.config.batch
    }
}

/// How long a scan waits when it finds `waiting` scans not yet flushed,
/// of at most `bound`: nothing up to half of it, then up to `MAX_SLOWDOWN`,
/// more the closer it is.
pub(crate) fn slowdown(waiting: usize, bound: usize) -> Duration {
    let half = bound / 2;
    if waiting <= half {
        return Duration::ZERO;
    }
    let share = (waiting - half) as f64 / (bound - half).max(1) as f64;
    MAX_SLOWDOWN.mul_f64(share.min(1.0))
}

/// The last `seq` of each waybill among flushed scans, in waybill order.
pub(crate) fn last_seqs<'a>(scans: impl IntoIterator<Item = &'a JournalScan>) -> BTreeMap<&'a str, i64> {
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for scan in scans {
        let seq = last.entry(scan.waybill.as_str()).or_default();
        *seq = (*seq).max(scan.seq);
    }
    last
}

/// A courier's parcels from the store, each replaced by its document where
/// it has one, the delivered ones left out.
pub(crate) fn overlay(stored: Vec<Shipment>, document: impl Fn(&str) -> Option<Shipment>) -> Vec<Shipment> {
    stored
        .into_iter()
        .map(|stored| document(&stored.waybill).unwrap_or(stored))
        .filter(|shipment| shipment.status != ShipmentStatus::Delivered)
        .collect()
}

/// The flusher's side of write-behind, whichever holds the documents.
#[async_trait]
pub trait TrackingFlusher: Send + Sync + 'static {
    /// Writes up to a batch of the journal to the store: how many scans it
    /// wrote.
    async fn flush_once(&self, now: OffsetDateTime) -> Result<usize, StoreError>;

    /// Flushes until nothing is left that this node may flush (at start,
    /// before serving, and at shutdown): how many scans it wrote.
    async fn flush_all(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let done = self.flush_once(now).await?;
            total += done;
            if done == 0 {
                return Ok(total);
            }
        }
    }

    /// Scans taken and not yet flushed.
    async fn pending(&self) -> Result<usize, StoreError>;

    /// How long the flusher waits when less than a batch is waiting.
    fn delay(&self) -> Duration;

    /// Most scans one flush writes: a flush that wrote as many may have
    /// left more.
    fn batch(&self) -> usize;

    /// Hands this node's share of the flushing to the others (at shutdown).
    async fn release(&self) {}
}
