//! The distributed stock ledger: per sale, a counter of stock left, a hash
//! of units per buyer and a hash of open reservations (order → buyer, units,
//! when), changed only by Lua scripts, so the check of both and the
//! deduction are one atomic step on the Redis that owns the sale's slot,
//! whichever node calls.

use async_trait::async_trait;
use redis::Script;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use surge_domain::flashsale::{Deduction, FlashSale, KeyedDeduction, LedgerSnapshot, Reservation, StockLedger};
use surge_domain::order::SaleHoldings;
use surge_domain::{OrderId, SaleId, StoreError, UserId};

use super::events::{Event, RedisEvents};
use super::keys::{intake_key, settle_claim};
use super::{RedisConn, sale_key, unavailable};

/// The check-and-deduct (see the file): stock left after the deduction, or
/// -1 sold out, -2 over the buyer's limit, -3 not loaded.
const TRY_DEDUCT: &str = include_str!("try_deduct.lua");

/// The same for a keyed request, claiming its key (see the file).
const TRY_DEDUCT_CLAIMING: &str = include_str!("try_deduct_claiming.lua");

/// KEYS: stock, buyers, reservations, staged buyers, returned orders. ARGV:
/// only-if-absent (0/1), stock left, the number of returned orders, those
/// orders, then (user, units) pairs. The buyers are the staged hash (filled
/// in chunks before, see [`RedisLedger::load_counters`]) plus the pairs;
/// the returned orders are those whose give-back the loaded counts already
/// hold. Returns 1 when loaded, 0 when left as it was.
const LOAD: &str = r"
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[4])
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[5])
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('RENAME', KEYS[4], KEYS[2])
  redis.call('PERSIST', KEYS[2])
end
local returned = tonumber(ARGV[3])
for i = 4, 3 + returned do
  redis.call('SADD', KEYS[5], ARGV[i])
end
for i = 4 + returned, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
";

/// Buyers sent per command when a sale is loaded: a sale of a million
/// buyers must not become one command that blocks Redis (and every other
/// sale on it) while it runs.
const LOAD_CHUNK: usize = 1_000;

/// A staged buyers hash left by a loader that died expires after this.
const STAGING_TTL_MS: u64 = 60_000;

/// A forgotten sale's keys stay this long for nodes still finishing it
/// (a late cancel's give-back, a last look at its stock).
const FORGOTTEN_TTL_MS: u64 = 3_600_000;

/// Gives a buyer's units back to a loaded sale (KEYS: stock, buyers; ARGV:
/// user, quantity); a buyer's units never go below zero. Returns the stock
/// left after, or -1 when not loaded. The body of [`RESTORE`] and the tail
/// of [`RELEASE`].
macro_rules! give_back {
    () => {
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local left = redis.call('INCRBY', KEYS[1], ARGV[2])
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local quantity = tonumber(ARGV[2])
if held <= quantity then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HINCRBY', KEYS[2], ARGV[1], -quantity)
end
return left
"
    };
}

/// KEYS: stock, buyers, returned orders. ARGV: user, quantity, order. Only
/// a loaded sale is restored, and an order's units only once (the cluster
/// client resends a command whose reply was lost, and a timed-out give-back
/// may still run after its retry). Returns the stock left after, -1 when
/// not loaded, -2 when the order's units were back already.
const RESTORE: &str = concat!(
    r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('SADD', KEYS[3], ARGV[3]) == 0 then return -2 end
",
    give_back!()
);

/// KEYS: stock, buyers, reservations. ARGV: user, quantity, order, now.
/// Gives the stock back only while the reservation is open, and leaves a
/// tombstone (`x:<ms>`) so that a later settle knows the order's units were
/// returned, and a retried settle that it already ran. Twice is once.
/// Returns the stock left after, or -1 when nothing was given back.
const RELEASE: &str = concat!(
    r"
local open = redis.call('HGET', KEYS[3], ARGV[3])
if not open or string.sub(open, 1, 2) == 'x:' then return -1 end
redis.call('HSET', KEYS[3], ARGV[3], 'x:' .. ARGV[4])
",
    give_back!()
);

/// KEYS: stock, buyers, reservations. ARGV: (order, user, quantity)
/// triples. Closes each open reservation; one released before (a
/// tombstone) is deducted again, since its order exists, but never below
/// zero: what is missing means the units were sold twice, which the order
/// store's bounds catch and the reconciliation repairs. One already closed
/// (a retried settle) is left alone. Returns {deducted again, units short}.
const SETTLE: &str = r"
local again, short = 0, 0
for i = 1, #ARGV, 3 do
  local state = redis.call('HGET', KEYS[3], ARGV[i])
  if state then
    redis.call('HDEL', KEYS[3], ARGV[i])
    if string.sub(state, 1, 2) == 'x:' and redis.call('EXISTS', KEYS[1]) == 1 then
      local want = tonumber(ARGV[i + 2])
      local left = tonumber(redis.call('GET', KEYS[1]))
      local take = math.min(want, math.max(left, 0))
      if take > 0 then redis.call('DECRBY', KEYS[1], take) end
      redis.call('HINCRBY', KEYS[2], ARGV[i + 1], want)
      again = again + 1
      short = short + (want - take)
    end
  end
end
return {again, short}
";

/// KEYS: stock, reservations, returned orders. ARGV: orders whose
/// give-back the store owes. One instant of the sale: false when not
/// loaded, else {stock left, the reservations (order, state, ...), for each
/// owed order 1 if its units are back}.
const SNAPSHOT: &str = r"
local left = redis.call('GET', KEYS[1])
if not left then return false end
local back = {}
for i = 1, #ARGV do
  back[i] = redis.call('SISMEMBER', KEYS[3], ARGV[i])
end
return {left, redis.call('HGETALL', KEYS[2]), back}
";

/// KEYS: stock. ARGV: the stock left as last seen, the move. Moves the
/// stock only if nothing changed it since. Returns the stock left after,
/// or false.
const ADJUST: &str = r"
local left = redis.call('GET', KEYS[1])
if not left or left ~= ARGV[1] then return false end
return redis.call('INCRBY', KEYS[1], ARGV[2])
";

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

#[async_trait]
impl StockLedger for RedisLedger {
    fn is_shared(&self) -> bool {
        true
    }

    async fn load(&self, sale: &FlashSale, holdings: &SaleHoldings) -> Result<(), StoreError> {
        self.load_counters(sale, holdings, false).await
    }

    async fn load_if_absent(&self, sale: &FlashSale, holdings: &SaleHoldings) -> Result<(), StoreError> {
        self.load_counters(sale, holdings, true).await
    }

    async fn try_deduct(
        &self,
        sale: SaleId,
        reservation: Reservation,
        per_user_limit: u32,
    ) -> Result<Deduction, StoreError> {
        self.resting(sale)?;
        let [stock, buyers, reserved] = self.keys(sale);
        let mut conn = self.conn.clone();
        let outcome: i64 = self
            .try_deduct
            .key(stock)
            .key(buyers)
            .key(reserved)
            .arg(reservation.user.get())
            .arg(reservation.quantity)
            .arg(per_user_limit)
            .arg(reservation.order.get())
            .arg(now_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if outcome >= 0 {
            self.replicated(sale, reservation).await?;
        }
        if outcome == 0 {
            self.announce(Event::SoldOut(sale));
        }
        Ok(match outcome {
            -1 => Deduction::SoldOut,
            -2 => Deduction::LimitExceeded,
            -3 => Deduction::NotLoaded,
            stock_left => Deduction::Done { stock_left },
        })
    }

    async fn try_deduct_claiming(
        &self,
        sale: SaleId,
        reservation: Reservation,
        per_user_limit: u32,
        key: &str,
    ) -> Result<Option<KeyedDeduction>, StoreError> {
        let Some(claim_ttl) = self.claim_ttl else { return Ok(None) };
        self.resting(sale)?;
        let [stock, buyers, reserved] = self.keys(sale);
        let intake_key = intake_key(&self.namespace, sale, reservation.user, key);
        let mut conn = self.conn.clone();
        let (kind, value): (i64, String) = self
            .try_deduct_claiming
            .key(stock)
            .key(buyers)
            .key(reserved)
            .key(&intake_key)
            .arg(reservation.user.get())
            .arg(reservation.quantity)
            .arg(per_user_limit)
            .arg(reservation.order.get())
            .arg(now_ms())
            .arg(claim_ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let number = || value.parse::<i64>().map_err(|_| StoreError::Unavailable(format!("redis: bad reply {value}")));
        let outcome = match kind {
            0 => {
                let stock_left = number()?;
                if let Err(error) = self.replicated(sale, reservation).await {
                    // The stock went back: free the key, if still ours.
                    let _ = settle_claim(&self.conn, &intake_key, reservation.order, None).await;
                    return Err(error);
                }
                if stock_left == 0 {
                    self.announce(Event::SoldOut(sale));
                }
                KeyedDeduction::Claimed { stock_left }
            }
            1 => KeyedDeduction::Refused(Deduction::SoldOut),
            2 => KeyedDeduction::Refused(Deduction::LimitExceeded),
            3 => KeyedDeduction::Refused(Deduction::NotLoaded),
            4 => KeyedDeduction::InFlight,
            5 => KeyedDeduction::Replay(OrderId::new(number()?)),
            other => return Err(StoreError::Unavailable(format!("redis: unknown deduction outcome {other}"))),
        };
        Ok(Some(outcome))
    }

    async fn release(&self, sale: SaleId, reservation: Reservation) -> Result<(), StoreError> {
        let [stock, buyers, reserved] = self.keys(sale);
        let mut conn = self.conn.clone();
        let left = self
            .release
            .key(stock)
            .key(buyers)
            .key(reserved)
            .arg(reservation.user.get())
            .arg(reservation.quantity)
            .arg(reservation.order.get())
            .arg(now_ms())
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(unavailable)?;
        self.returned(sale, left, reservation.quantity);
        Ok(())
    }

    async fn settle(&self, sale: SaleId, written: &[Reservation]) -> Result<(), StoreError> {
        let [stock, buyers, reserved] = self.keys(sale);
        let mut conn = self.conn.clone();
        for chunk in written.chunks(1_000) {
            let mut invocation = self.settle.key(&stock);
            invocation.key(&buyers).key(&reserved);
            for reservation in chunk {
                invocation.arg(reservation.order.get()).arg(reservation.user.get()).arg(reservation.quantity);
            }
            let (again, short): (i64, i64) = invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
            if again > 0 {
                tracing::warn!(sale_id = %sale, again, "orders written after their reservation was reaped");
            }
            if short > 0 {
                tracing::error!(sale_id = %sale, short, "units sold twice: stock left would have gone below zero");
            }
        }
        Ok(())
    }

    async fn stale_reservations(&self, sale: SaleId, older_than: Duration) -> Result<Vec<Reservation>, StoreError> {
        let [_, _, reserved] = self.keys(sale);
        let mut conn = self.conn.clone();
        let open: HashMap<i64, String> =
            redis::cmd("HGETALL").arg(&reserved).query_async(&mut conn).await.map_err(unavailable)?;
        let before = now_ms() - older_than.as_millis() as i64;
        let expired: Vec<i64> = open
            .iter()
            .filter(|(_, value)| {
                value
                    .strip_prefix("x:")
                    .and_then(|at| at.parse::<i64>().ok())
                    .is_some_and(|at| at < now_ms() - TOMBSTONE_TTL_MS)
            })
            .map(|(order, _)| *order)
            .collect();
        if !expired.is_empty() {
            let _: Result<(), _> = redis::cmd("HDEL").arg(&reserved).arg(&expired).query_async(&mut conn).await;
        }
        Ok(open
            .into_iter()
            .filter_map(|(order, value)| open_reservation(order, &value))
            .filter(|(_, at)| *at < before)
            .map(|(reservation, _)| reservation)
            .collect())
    }

    async fn snapshot(&self, sale: SaleId, owed: &[OrderId]) -> Result<Option<LedgerSnapshot>, StoreError> {
        let [stock, _, reserved] = self.keys(sale);
        let mut conn = self.conn.clone();
        let mut invocation = self.snapshot.key(stock);
        invocation.key(reserved).key(self.returned_key(sale));
        for order in owed {
            invocation.arg(order.get());
        }
        let seen: Option<(i64, Vec<(i64, String)>, Vec<i64>)> =
            invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(seen.map(|(stock_left, reservations, back)| LedgerSnapshot {
            stock_left,
            open: reservations
                .into_iter()
                .filter_map(|(order, value)| open_reservation(order, &value))
                .map(|(reservation, _)| reservation)
                .collect(),
            returned: owed.iter().zip(back).filter(|(_, back)| *back == 1).map(|(order, _)| *order).collect(),
        }))
    }

    async fn adjust(&self, sale: SaleId, seen: i64, by: i64) -> Result<bool, StoreError> {
        let [stock, ..] = self.keys(sale);
        let mut conn = self.conn.clone();
        let left: Option<i64> =
            self.adjust.key(stock).arg(seen).arg(by).invoke_async(&mut conn).await.map_err(unavailable)?;
        if let Some(left) = left
            && by > 0
            && left > 0
        {
            self.announce(Event::Restocked(sale));
        }
        Ok(left.is_some())
    }

    async fn restore(&self, sale: SaleId, order: OrderId, user: UserId, quantity: u32) -> Result<bool, StoreError> {
        let [stock, buyers, _] = self.keys(sale);
        let mut conn = self.conn.clone();
        let left = self
            .restore
            .key(stock)
            .key(buyers)
            .key(self.returned_key(sale))
            .arg(user.get())
            .arg(quantity)
            .arg(order.get())
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(unavailable)?;
        match left {
            -1 => Ok(false),
            -2 => Ok(true),
            left => {
                self.returned(sale, left, quantity);
                Ok(true)
            }
        }
    }

    async fn stock_left(&self, sale: SaleId) -> Result<Option<i64>, StoreError> {
        let [stock, ..] = self.keys(sale);
        let mut conn = self.conn.clone();
        redis::cmd("GET").arg(stock).query_async(&mut conn).await.map_err(unavailable)
    }

    async fn forget(&self, sale: SaleId) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for key in self.keys(sale).into_iter().chain([self.returned_key(sale)]) {
            pipe.cmd("PEXPIRE").arg(key).arg(FORGOTTEN_TTL_MS).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)?;
        self.rest_over(sale);
        Ok(())
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
