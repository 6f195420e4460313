//! Tracking documents written behind Redis (write-behind, distributed
//! mode): the pattern of `crate::behind` with the documents and the journal
//! in Redis, shared by every node.
//!
//! Waybills hash to one of [`PARTITIONS`] partitions; a partition's keys
//! carry the hash tag `{t:<p>}`, so one script updates a parcel's document
//! and appends to its partition's stream in one atomic step, in one
//! cluster slot:
//!
//! - `…:doc:<waybill>`, a hash: `s` the shipment as its scans left it,
//!   `seq` its last scan's place in the timeline, and `u:<seq>` each scan
//!   not yet in the store;
//! - `…:scans`, a stream: the journal, one entry per scan taken;
//! - `…:lease`, the node that flushes the partition, for a few seconds.
//!
//! A scan reads the document (or, when Redis has none, the store's
//! shipment and last `seq`), checks it in Rust (assigned courier, legal
//! step), and runs [`TAKE`], which writes only if the document is still as
//! read (its `seq`, or still absent): two nodes scanning one parcel at once
//! cannot both take the same `seq`; the loser reads again. The script also
//! refuses past the partition's bound (`max_pending` / [`PARTITIONS`]), and
//! past half of it the scan is slowed down, as in the embedded mode.
//!
//! The flusher: each node takes the leases of the partitions nobody holds
//! (renewed every pass), reads up to a batch from their streams, writes it
//! to the store in one transaction (`FulfilmentStore::flush_scans`, each
//! scan once by waybill and `seq`, no shipment moved back by a late
//! replay), then [`SETTLE`] drops the entries and the documents' flushed
//! scans. A flushed document stays for [`FLUSHED_TTL`] rather than being
//! deleted: its `seq` is what keeps a scan racing the flush from reusing a
//! `seq` the store holds. A node that dies leaves its leases to expire and
//! another node flushes what it left; replays write nothing twice.
//!
//! Durability is Redis's: with `appendfsync always` a scan answered 202 is
//! on the Redis server's disk (Redis 7.0 has no `WAITAOF`); with replicas,
//! `redis.wait_replicas` makes a scan wait for them as deductions do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use surge_domain::fulfilment::{FulfilmentStore, JournalScan, Scan, ScanOutcome, ScanRefused, Shipment, TrackingDocs};
use surge_domain::{CourierId, StoreError};
use time::OffsetDateTime;

use super::{Durability, RedisConn, unavailable};
use crate::behind::{BehindConfig, TrackingFlusher, last_seqs, overlay, slowdown};
use crate::queue::journal;
use crate::rows::{ShipmentRow, shipment, shipment_row, unix_ms};

/// How many streams (and flush leases) the scans spread over.
pub const PARTITIONS: usize = 16;
/// How long a flushed document stays in Redis: far longer than a scan's
/// read-then-write (bounded by the request's deadline), short enough that
/// the documents of a busy hour do not pile up.
pub const FLUSHED_TTL: Duration = Duration::from_secs(300);
/// How long a node holds a partition's flushing without renewing it, at
/// least (three flush delays when longer).
const LEASE: Duration = Duration::from_secs(10);
/// Reads of a document that changed meanwhile before giving up.
const ATTEMPTS: usize = 16;

/// KEYS: document, stream. ARGV: the `seq` read ('' when there was no
/// document), the new `seq`, the shipment, the journaled scan, the
/// partition's bound, the scan's identity. Returns the entries waiting in
/// the stream with this one, -1 when the document changed since it was
/// read, -2 at the bound, -3 when the document's last scan is this one
/// already (a retry of a call whose answer was lost).
const TAKE: &str = r"
if redis.call('HGET', KEYS[1], 'last') == ARGV[6] then return -3 end
local seq = redis.call('HGET', KEYS[1], 'seq')
if ARGV[1] == '' then
  if seq then return -1 end
elseif seq ~= ARGV[1] then
  return -1
end
local waiting = redis.call('XLEN', KEYS[2])
if waiting >= tonumber(ARGV[5]) then return -2 end
redis.call('XADD', KEYS[2], '*', 'j', ARGV[4])
redis.call('HSET', KEYS[1], 'seq', ARGV[2], 's', ARGV[3], 'u:' .. ARGV[2], ARGV[4], 'last', ARGV[6])
redis.call('PERSIST', KEYS[1])
return waiting + 1
";

/// KEYS: stream, then the documents flushed. ARGV: the TTL of a flushed
/// document (ms), the number of documents n, each document's last `seq`
/// flushed, then the stream entries flushed. Drops the documents' scans up
/// to that `seq` (a document left with none expires after the TTL) and
/// the entries.
const SETTLE: &str = r"
local n = tonumber(ARGV[2])
for i = 1, n do
  local doc = KEYS[i + 1]
  local upto = tonumber(ARGV[2 + i])
  local left = 0
  local fields = redis.call('HKEYS', doc)
  for _, field in ipairs(fields) do
    if string.sub(field, 1, 2) == 'u:' then
      if tonumber(string.sub(field, 3)) <= upto then
        redis.call('HDEL', doc, field)
      else
        left = left + 1
      end
    end
  end
  if left == 0 and #fields > 0 then redis.call('PEXPIRE', doc, ARGV[1]) end
end
local ids = {}
for i = 3 + n, #ARGV do
  ids[#ids + 1] = ARGV[i]
  if #ids == 500 then
    redis.call('XDEL', KEYS[1], unpack(ids))
    ids = {}
  end
end
if #ids > 0 then redis.call('XDEL', KEYS[1], unpack(ids)) end
return 1
";

/// KEYS: lease. ARGV: this node, the lease (ms). Takes or renews the
/// lease: 1 when this node holds it.
const LEASE_TAKE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// KEYS: lease. ARGV: this node. Gives the lease up if this node holds it.
const LEASE_DROP: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
";

/// A shipment as a document keeps it: its row, as JSON.
fn encode_shipment(shipment: &Shipment) -> Result<String, StoreError> {
    serde_json::to_string(&shipment_row(shipment))
        .map_err(|error| StoreError::Unavailable(format!("tracking document: {error}")))
}

fn decode_shipment(payload: &str) -> Result<Shipment, StoreError> {
    let row: ShipmentRow = serde_json::from_str(payload)
        .map_err(|error| StoreError::Unavailable(format!("tracking document: {error}")))?;
    shipment(row)
}

/// The partition of a waybill: FNV-1a, the same on every node and build.
pub fn partition(waybill: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in waybill.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % PARTITIONS as u64) as usize
}

pub struct RedisTracking {
    conn: RedisConn,
    namespace: String,
    store: std::sync::Arc<dyn FulfilmentStore>,
    config: BehindConfig,
    durability: Durability,
    /// This node, as its leases name it.
    node: String,
    take: Script,
    settle: Script,
    lease_take: Script,
    lease_drop: Script,
    /// Where the next flush starts, so every partition gets its turn.
    next: AtomicUsize,
}

impl RedisTracking {
    pub fn new(
        conn: RedisConn,
        namespace: &str,
        store: std::sync::Arc<dyn FulfilmentStore>,
        config: BehindConfig,
        durability: Durability,
    ) -> Self {
        Self {
            conn,
            namespace: namespace.to_owned(),
            store,
            config,
            durability,
            node: format!("{}-{}", std::process::id(), OffsetDateTime::now_utc().unix_timestamp_nanos()),
            take: Script::new(TAKE),
            settle: Script::new(SETTLE),
            lease_take: Script::new(LEASE_TAKE),
            lease_drop: Script::new(LEASE_DROP),
            next: AtomicUsize::new(0),
        }
    }

    fn key(&self, partition: usize, what: &str) -> String {
        format!("{}:{{t:{partition}}}:{what}", self.namespace)
    }

    fn doc_key(&self, waybill: &str) -> String {
        self.key(partition(waybill), &format!("doc:{waybill}"))
    }

    /// Most entries one partition's stream holds.
    fn bound(&self) -> usize {
        (self.config.max_pending / PARTITIONS).max(1)
    }

    /// The document's shipment and `seq`, when Redis has it.
    async fn document(&self, waybill: &str) -> Result<Option<(Shipment, i64)>, StoreError> {
        let mut conn = self.conn.clone();
        let (shipment, seq): (Option<String>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.doc_key(waybill))
            .arg("s")
            .arg("seq")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match (shipment, seq) {
            (Some(shipment), Some(seq)) => Ok(Some((decode_shipment(&shipment)?, seq))),
            _ => Ok(None),
        }
    }

    /// One attempt at the scan: `None` when the document changed between
    /// its read and the write.
    async fn try_take(
        &self,
        waybill: &str,
        courier: CourierId,
        scan: &Scan,
        now: OffsetDateTime,
    ) -> Result<Option<ScanOutcome>, ScanRefused> {
        let (shipment, last_seq, read) = match self.document(waybill).await? {
            Some((shipment, seq)) => (shipment, seq, seq.to_string()),
            None => {
                let Some(shipment) = self.store.shipment(waybill).await? else {
                    return Ok(Some(ScanOutcome::NotFound));
                };
                let seq = self.store.last_scan_seq(waybill).await?;
                (shipment, seq, String::new())
            }
        };
        if shipment.courier_id != Some(courier) {
            return Ok(Some(ScanOutcome::NotAssigned));
        }
        let to = match shipment.status.scan(scan.kind) {
            Ok(to) => to,
            Err(illegal) => return Ok(Some(ScanOutcome::Illegal(illegal))),
        };
        let seq = last_seq + 1;
        let journaled =
            JournalScan { waybill: waybill.to_owned(), courier, seq, scan: scan.clone(), to, recorded_at: now };
        let moved = Shipment { status: to, updated_at: now, ..shipment };
        // What tells this scan from another: a call retried after its answer
        // was lost (by this loop or by the client library) finds it taken.
        let identity = format!(
            "{}|{}|{}|{}|{}|{}",
            courier.get(),
            scan.kind.as_str(),
            unix_ms(scan.at),
            unix_ms(now),
            scan.location,
            scan.note
        );
        let p = partition(waybill);
        let mut conn = self.conn.clone();
        let waiting: i64 = self
            .take
            .key(self.doc_key(waybill))
            .key(self.key(p, "scans"))
            .arg(read)
            .arg(seq)
            .arg(encode_shipment(&moved)?)
            .arg(journal::encode(&journaled)?)
            .arg(self.bound())
            .arg(identity)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match waiting {
            -1 => return Ok(None),
            -2 => return Err(ScanRefused::Overloaded),
            -3 => {
                let taken = self.document(waybill).await?.map(|(shipment, _)| shipment);
                let taken =
                    taken.ok_or_else(|| StoreError::Unavailable(format!("tracking document {waybill} gone")))?;
                return Ok(Some(ScanOutcome::Applied(taken)));
            }
            _ => {}
        }
        if self.durability.replicas > 0 {
            let Durability { replicas, timeout } = self.durability;
            let acked = self.conn.wait_for_replicas(&self.doc_key(waybill), replicas, timeout).await?;
            if acked < replicas {
                return Err(ScanRefused::Unavailable(StoreError::Unavailable(format!(
                    "redis: scan held by {acked} of {replicas} replicas"
                ))));
            }
        }
        let wait = slowdown(usize::try_from(waiting).unwrap_or(0), self.bound());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(Some(ScanOutcome::Applied(moved)))
    }

    /// Takes or renews the partition's flush lease.
    async fn lease(&self, partition: usize) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let held: i64 = self
            .lease_take
            .key(self.key(partition, "lease"))
            .arg(&self.node)
            .arg(LEASE.max(self.config.delay * 3).as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
    }

    /// Up to `max` entries of the partition's stream, oldest first: (entry
    /// id, scan); an entry that cannot be read is moved to the partition's
    /// `dead` stream and dropped.
    async fn read(&self, partition: usize, max: usize) -> Result<Vec<(String, JournalScan)>, StoreError> {
        let mut conn = self.conn.clone();
        let stream = self.key(partition, "scans");
        // Each entry: its id and its fields and values, flat.
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut scans = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let payload = fields.chunks(2).find(|pair| pair[0] == "j").and_then(|pair| pair.get(1)).cloned();
            match payload.as_deref().map(journal::decode) {
                Some(Ok(scan)) => scans.push((id, scan)),
                read => {
                    tracing::error!(%id, ?read, "unreadable scan moved to the dead stream");
                    let dead = self.key(partition, "dead");
                    let payload = payload.unwrap_or_default();
                    redis::cmd("XADD")
                        .arg(&dead)
                        .arg("*")
                        .arg("j")
                        .arg(payload)
                        .query_async::<()>(&mut conn)
                        .await
                        .map_err(unavailable)?;
                    redis::cmd("XDEL").arg(&stream).arg(&id).query_async::<()>(&mut conn).await.map_err(unavailable)?;
                }
            }
        }
        Ok(scans)
    }

    /// Drops what a flush wrote: the entries and the documents' scans.
    async fn settle(&self, partition: usize, flushed: &[(String, JournalScan)]) -> Result<(), StoreError> {
        let last = last_seqs(flushed.iter().map(|(_, scan)| scan));
        let mut invocation = self.settle.key(self.key(partition, "scans"));
        for waybill in last.keys() {
            invocation.key(self.doc_key(waybill));
        }
        invocation.arg(FLUSHED_TTL.as_millis() as u64).arg(last.len());
        for seq in last.values() {
            invocation.arg(*seq);
        }
        for (id, _) in flushed {
            invocation.arg(id);
        }
        let mut conn = self.conn.clone();
        invocation.invoke_async::<i64>(&mut conn).await.map(drop).map_err(unavailable)
    }
}

#[async_trait]
impl TrackingDocs for RedisTracking {
    async fn scan(
        &self,
        waybill: &str,
        courier: CourierId,
        scan: &Scan,
        now: OffsetDateTime,
    ) -> Result<ScanOutcome, ScanRefused> {
        for _ in 0..ATTEMPTS {
            if let Some(outcome) = self.try_take(waybill, courier, scan, now).await? {
                return Ok(outcome);
            }
        }
        Err(ScanRefused::Unavailable(StoreError::Unavailable(format!("tracking document {waybill} kept changing"))))
    }

    async fn shipment(&self, waybill: &str) -> Result<Option<Shipment>, StoreError> {
        Ok(self.document(waybill).await?.map(|(shipment, _)| shipment))
    }

    async fn tasks(&self, courier: CourierId) -> Result<Vec<Shipment>, StoreError> {
        // The store first: a flushed document stays (FLUSHED_TTL), so a
        // flush between the two reads hides nothing.
        let stored = self.store.tasks(courier).await?;
        let reads = stored.iter().map(|shipment| self.document(&shipment.waybill));
        let mut documents = HashMap::new();
        for document in futures::future::try_join_all(reads).await?.into_iter().flatten() {
            documents.insert(document.0.waybill.clone(), document.0);
        }
        Ok(overlay(stored, |waybill| documents.get(waybill).cloned()))
    }

    async fn unflushed(&self, waybill: &str) -> Result<Vec<(i64, Scan)>, StoreError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> =
            redis::cmd("HGETALL").arg(self.doc_key(waybill)).query_async(&mut conn).await.map_err(unavailable)?;
        let mut scans = Vec::new();
        for (field, payload) in fields {
            if field.starts_with("u:") {
                let scan = journal::decode(&payload)?;
                scans.push((scan.seq, scan.scan));
            }
        }
        scans.sort_by_key(|(seq, _)| *seq);
        Ok(scans)
    }
}

#[async_trait]
impl TrackingFlusher for RedisTracking {
    /// Up to a batch from the partitions this node holds (taking the free
    /// ones), in one store transaction.
    async fn flush_once(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut taken: Vec<(usize, Vec<(String, JournalScan)>)> = Vec::new();
        let mut room = self.config.batch;
        for p in (0..PARTITIONS).map(|i| (start + i) % PARTITIONS) {
            if room == 0 {
                break;
            }
            if !self.lease(p).await? {
                continue;
            }
            let scans = self.read(p, room).await?;
            if !scans.is_empty() {
                room -= scans.len();
                taken.push((p, scans));
            }
        }
        let mut scans: Vec<JournalScan> =
            taken.iter().flat_map(|(_, scans)| scans.iter().map(|(_, scan)| scan.clone())).collect();
        if scans.is_empty() {
            return Ok(0);
        }
        // In key order: two nodes replaying one partition (a lease that
        // lapsed) insert the same rows in the same order, never crosswise.
        scans.sort_by(|a, b| (a.waybill.as_str(), a.seq).cmp(&(b.waybill.as_str(), b.seq)));
        // Renewed right before the write: a slow read does not leave the
        // lease lapsing during it.
        for (p, _) in &taken {
            if !self.lease(*p).await? {
                tracing::warn!(partition = p, "a tracking flush lease passed to another node; flushing anyway");
            }
        }
        self.store.flush_scans(&scans, now).await?;
        for (p, flushed) in &taken {
            self.settle(*p, flushed).await?;
        }
        Ok(scans.len())
    }

    /// Flushes what waits now, not what other nodes keep adding: at most
    /// as many passes as the streams' length at the call needs (plus one).
    async fn flush_all(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let passes = self.pending().await?.div_ceil(self.config.batch.max(1)) + 1;
        let mut total = 0;
        for _ in 0..passes {
            let done = self.flush_once(now).await?;
            total += done;
            if done == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// Every partition's stream length (the scans of all nodes).
    async fn pending(&self) -> Result<usize, StoreError> {
        let lengths = (0..PARTITIONS).map(|p| {
            let mut conn = self.conn.clone();
            let stream = self.key(p, "scans");
            async move { redis::cmd("XLEN").arg(stream).query_async::<usize>(&mut conn).await }
        });
        let lengths = futures::future::try_join_all(lengths).await.map_err(unavailable)?;
        Ok(lengths.into_iter().sum())
    }

    fn delay(&self) -> Duration {
        self.config.delay
    }

    fn batch(&self) -> usize {
        self.config.batch
    }

    async fn release(&self) {
        for p in 0..PARTITIONS {
            let mut conn = self.conn.clone();
            let dropped =
                self.lease_drop.key(self.key(p, "lease")).arg(&self.node).invoke_async::<i64>(&mut conn).await;
            if let Err(error) = dropped {
                tracing::warn!(%error, partition = p, "could not give up a tracking flush lease");
            }
        }
    }
}
