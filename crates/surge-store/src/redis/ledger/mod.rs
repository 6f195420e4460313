//! The distributed stock ledger: per sale, a counter of stock left, a hash
//! of units per buyer and a hash of open reservations (order → buyer, units,
//! when), changed only by Lua scripts, so the check of both and the
//! deduction are one atomic step on the Redis that owns the sale's slot,
//! whichever node calls.

mod port;
mod scripts;

use redis::Script;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use surge_domain::flashsale::{FlashSale, Reservation, StockLedger};
use surge_domain::order::SaleHoldings;
use surge_domain::{OrderId, SaleId, StoreError, UserId};

use self::scripts::{ADJUST, LOAD, RELEASE, RESTORE, SETTLE, SNAPSHOT, TRY_DEDUCT, TRY_DEDUCT_CLAIMING};
use super::events::{Event, RedisEvents};
use super::{RedisConn, sale_key, unavailable};

/// Buyers sent per command when a sale is loaded: a sale of a million
/// buyers must not become one command that blocks Redis (and every other
/// sale on it) while it runs.
const LOAD_CHUNK: usize = 1_000;

/// A staged buyers hash left by a loader that died expires after this.
const STAGING_TTL_MS: u64 = 60_000;

/// A forgotten sale's keys stay this long for nodes still finishing it
/// (a late cancel's give-back, a last look at its stock).
const FORGOTTEN_TTL_MS: u64 = 3_600_000;
/// An open reservation as the ledger keeps it (`user:units:ms`), with when
/// it was made; `None` for a tombstone (`x:ms`) or anything unreadable.
fn open_reservation(order: i64, value: &str) -> Option<(Reservation, i64)> {
    let mut parts = value.split(':').map(str::parse::<i64>);
    let (Some(Ok(user)), Some(Ok(quantity)), Some(Ok(at))) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let quantity = u32::try_from(quantity).ok()?;
    Some((Reservation { order: OrderId::new(order), user: UserId::new(user), quantity }, at))
}

/// How long intake refuses a sale at once after its master lacked replicas.
const RESTING: Duration = Duration::from_secs(1);

/// Tombstones of released reservations are kept this long, for an order
/// that lands late.
const TOMBSTONE_TTL_MS: i64 = 24 * 3600 * 1000;

pub struct RedisLedger {
    conn: RedisConn,
    namespace: String,
    try_deduct: Script,
    try_deduct_claiming: Script,
    load: Script,
    restore: Script,
    release: Script,
    settle: Script,
    snapshot: Script,
    adjust: Script,
    durability: Durability,
    /// Where sell-outs and returns of stock are announced to every node.
    events: Option<RedisEvents>,
    /// How long a key claimed by a deduction waits for its outcome; `None`:
    /// keyed requests claim through the intake keys instead.
    claim_ttl: Option<Duration>,
    /// Sales whose master lacked replicas, and until when intake rests.
    unreplicated: Mutex<HashMap<SaleId, Instant>>,
    /// Is any sale in `unreplicated`? Spares the lock on every intake.
    any_resting: AtomicBool,
}

/// How many replicas must hold a deduction before it counts, and how long
/// to wait for them. With none (the default) a failover can lose the last
/// deductions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Durability {
    pub replicas: u32,
    pub timeout: std::time::Duration,
}

impl RedisLedger {
    pub fn new(conn: RedisConn, namespace: &str) -> Self {
        Self::with_durability(conn, namespace, Durability::default())
    }

    pub fn with_durability(conn: RedisConn, namespace: &str, durability: Durability) -> Self {
        Self {
            durability,
            conn,
            namespace: namespace.to_owned(),
            try_deduct: Script::new(TRY_DEDUCT),
            try_deduct_claiming: Script::new(TRY_DEDUCT_CLAIMING),
            load: Script::new(LOAD),
            restore: Script::new(RESTORE),
            release: Script::new(RELEASE),
            settle: Script::new(SETTLE),
            snapshot: Script::new(SNAPSHOT),
            adjust: Script::new(ADJUST),
            events: None,
            claim_ttl: None,
            unreplicated: Mutex::default(),
            any_resting: AtomicBool::new(false),
        }
    }

    /// Keyed requests claim their key in the deduction's script; the
    /// [`super::RedisIntakeKeys`] on the same namespace settle the claims.
    pub fn with_claims(mut self, claim_ttl: Duration) -> Self {
        self.claim_ttl = Some(claim_ttl);
        self
    }

    /// Waits for the replicas when asked to; if they don't confirm, the
    /// deduction is given back and the intake refused.
    async fn replicated(&self, sale: SaleId, reservation: Reservation) -> Result<(), StoreError> {
        if self.durability.replicas == 0 {
            return Ok(());
        }
        let Durability { replicas, timeout } = self.durability;
        let [stock, ..] = self.keys(sale);
        let acked = self.conn.wait_for_replicas(&stock, replicas, timeout).await;
        if matches!(acked, Ok(n) if n >= replicas) {
            self.rest_over(sale);
            return Ok(());
        }
        self.rest(sale);
        // A failover now could lose it: give it back and refuse.
        let _ = self.release(sale, reservation).await;
        Err(StoreError::Unavailable(format!("redis: deduction not replicated ({acked:?})")))
    }

    /// Refuses at once while the sale's master recently lacked the replicas
    /// a deduction waits for. Every WAIT then runs its whole timeout, and
    /// it runs on the connection every command to that master shares, so a
    /// WAIT per intake would hold up reads and scripts behind it; one probe
    /// per [`RESTING`] finds out when the replicas are back. Without a sale
    /// at rest (nearly always) this takes no lock.
    fn resting(&self, sale: SaleId) -> Result<(), StoreError> {
        if !self.any_resting.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut unreplicated = self.unreplicated.lock().unwrap_or_else(PoisonError::into_inner);
        match unreplicated.get(&sale) {
            Some(until) if Instant::now() < *until => {
                Err(StoreError::Unavailable("redis: the sale's master lacks replicas; retry later".to_owned()))
            }
            Some(_) => {
                // This call is the probe; the others keep refusing meanwhile.
                unreplicated.insert(sale, Instant::now() + RESTING);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The sale's master lacked replicas: intake for it rests.
    fn rest(&self, sale: SaleId) {
        let mut unreplicated = self.unreplicated.lock().unwrap_or_else(PoisonError::into_inner);
        unreplicated.insert(sale, Instant::now() + RESTING);
        self.any_resting.store(true, Ordering::Release);
    }

    /// A deduction was replicated: the sale no longer rests.
    fn rest_over(&self, sale: SaleId) {
        if !self.any_resting.load(Ordering::Acquire) {
            return;
        }
        let mut unreplicated = self.unreplicated.lock().unwrap_or_else(PoisonError::into_inner);
        unreplicated.remove(&sale);
        self.any_resting.store(!unreplicated.is_empty(), Ordering::Release);
    }

    /// Announces on the deployment's channel when a sale sells out and when
    /// a sold-out sale gets stock back, so every node sets or clears its
    /// flag at once.
    pub fn with_events(mut self, events: RedisEvents) -> Self {
        self.events = Some(events);
        self
    }

    fn announce(&self, event: Event) {
        if let Some(events) = &self.events {
            events.announce(event);
        }
    }

    /// Stock came back: if the sale was sold out before, say so.
    fn returned(&self, sale: SaleId, left: i64, quantity: u32) {
        if left > 0 && left <= i64::from(quantity) {
            self.announce(Event::Restocked(sale));
        }
    }

    fn keys(&self, sale: SaleId) -> [String; 3] {
        [
            sale_key(&self.namespace, sale, "stock"),
            sale_key(&self.namespace, sale, "buyers"),
            sale_key(&self.namespace, sale, "reserved"),
        ]
    }

    async fn load_counters(
        &self,
        sale: &FlashSale,
        holdings: &SaleHoldings,
        if_absent: bool,
    ) -> Result<(), StoreError> {
        let [stock, buyers, reserved] = self.keys(sale.id);
        let staged = self.staging_key(sale.id);
        let mut conn = self.conn.clone();
        let inline: &[(UserId, u32)] = if holdings.per_user.len() <= LOAD_CHUNK {
            &holdings.per_user
        } else {
            // Staged chunk by chunk, then swapped in by the script in one step.
            for chunk in holdings.per_user.chunks(LOAD_CHUNK) {
                let mut pipe = redis::pipe();
                let mut hset = redis::cmd("HSET");
                hset.arg(&staged);
                for (user, units) in chunk {
                    hset.arg(user.get()).arg(*units);
                }
                pipe.add_command(hset).ignore();
                pipe.cmd("PEXPIRE").arg(&staged).arg(STAGING_TTL_MS).ignore();
                pipe.query_async::<()>(&mut conn).await.map_err(unavailable)?;
            }
            &[]
        };
        let mut invocation = self.load.key(stock);
        invocation.key(buyers).key(reserved).key(staged).key(self.returned_key(sale.id));
        invocation.arg(u8::from(if_absent)).arg((sale.stock - holdings.sold).max(0));
        invocation.arg(holdings.returned.len());
        for order in &holdings.returned {
            invocation.arg(order.get());
        }
        for (user, units) in inline {
            invocation.arg(user.get()).arg(*units);
        }
        invocation.invoke_async::<i64>(&mut conn).await.map(drop).map_err(unavailable)
    }

    /// The orders whose units came back, in the sale's slot.
    fn returned_key(&self, sale: SaleId) -> String {
        sale_key(&self.namespace, sale, "returned")
    }

    /// A hash of this load's own, in the sale's slot.
    fn staging_key(&self, sale: SaleId) -> String {
        static LOADS: AtomicU64 = AtomicU64::new(0);
        let load = LOADS.fetch_add(1, Ordering::Relaxed);
        sale_key(&self.namespace, sale, &format!("buyers-loading:{}:{}:{load}", std::process::id(), now_ms()))
    }
}
fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
