//! Intake idempotency shared by every node: one Redis key per
//! (sale, buyer, key). The first request claims it with `SET NX` as
//! "pending" for `claim_ttl`; when its intake succeeds the key holds the
//! order id (for `ttl`), when it fails the claim is deleted so the next try
//! runs its own intake. A repeat that finds a claim waits for the first
//! request's outcome, on any node.
//!
//! A node that dies between its append and writing the id leaves a claim
//! that expires after `claim_ttl`; a repeat after that runs a new intake,
//! and the order store's unique (sale, buyer, key) refuses the second order
//! and returns its stock (the consumer's backstop).

use std::time::Duration;

use async_trait::async_trait;
use surge_domain::flashsale::{IntakeError, IntakeFuture, IntakeKeys};
use surge_domain::{OrderId, SaleId, StoreError, UserId};

use super::{RedisConn, sale_key, unavailable};

/// A claim without an outcome yet: `pending` from [`IntakeKeys::once`],
/// `p:<order>` from the ledger's claiming deduction.
const PENDING: &str = "pending";

fn in_flight(held: &str) -> bool {
    held.starts_with('p')
}

/// KEYS: the intake key. ARGV: the claim (`p:<order>`), the outcome (the
/// order id, or empty to free the key), its TTL in ms. Changes the key only
/// while it still holds this claim: a claim that expired and was taken by
/// another request stays that request's.
const SETTLE_CLAIM: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

/// KEYS: intake keys of one sale. ARGV: for each, its order id; then the
/// TTL in ms. A key still claimed for its order (`p:<order>`) now names it.
const ORDERS_WRITTEN: &str = r"
local ttl = ARGV[#ARGV]
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == 'p:' .. ARGV[i] then
    redis.call('SET', key, ARGV[i], 'PX', ttl)
  end
end
return 0
";

/// Ends the claim of `order` on `redis_key`: it names the order for `ttl`
/// (`Some`), or is freed. Returns whether the claim was still this order's.
pub(super) async fn settle_claim(
    conn: &RedisConn,
    redis_key: &str,
    order: OrderId,
    outcome: Option<(OrderId, Duration)>,
) -> Result<bool, StoreError> {
    let (value, ttl) = match outcome {
        Some((order, ttl)) => (order.get().to_string(), ttl.as_millis().max(1) as u64),
        None => (String::new(), 0),
    };
    let changed: i64 = redis::Script::new(SETTLE_CLAIM)
        .key(redis_key)
        .arg(format!("p:{}", order.get()))
        .arg(value)
        .arg(ttl)
        .invoke_async(&mut conn.clone())
        .await
        .map_err(unavailable)?;
    Ok(changed == 1)
}

/// The Redis key of one (sale, buyer, key), in the sale's slot: the ledger's
/// claiming deduction writes it in the same script as the counters.
pub(super) fn intake_key(namespace: &str, sale: SaleId, user: UserId, key: &str) -> String {
    sale_key(namespace, sale, &format!("key:{}:{key}", user.get()))
}
/// How often a waiting repeat looks again.
const WAIT_STEP: Duration = Duration::from_millis(10);

pub struct RedisIntakeKeys {
    conn: RedisConn,
    namespace: String,
    /// How long a claim lives without an outcome.
    claim_ttl: Duration,
    /// How long an outcome is remembered.
    ttl: Duration,
}

impl RedisIntakeKeys {
    pub fn new(conn: RedisConn, namespace: &str, claim_ttl: Duration, ttl: Duration) -> Self {
        Self { conn, namespace: namespace.to_owned(), claim_ttl, ttl }
    }

    fn key(&self, sale: SaleId, user: UserId, key: &str) -> String {
        intake_key(&self.namespace, sale, user, key)
    }

    /// Reads the key with `read` until no request with it is in flight, for
    /// at most `claim_ttl`: `None` (free, or claimed by `read` itself) or
    /// the order id it holds.
    async fn once_settled<F, Fut>(&self, read: F) -> Result<Option<String>, IntakeError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, StoreError>>,
    {
        let waited_until = tokio::time::Instant::now() + self.claim_ttl;
        loop {
            match read().await? {
                Some(held) if in_flight(&held) => {
                    if tokio::time::Instant::now() >= waited_until {
                        return Err(StoreError::Unavailable("an earlier request with this key is stuck".into()).into());
                    }
                    tokio::time::sleep(WAIT_STEP).await;
                }
                settled => return Ok(settled),
            }
        }
    }

    /// Claims the key, or returns what it holds: `None` when claimed.
    async fn claim(&self, redis_key: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        // SET NX GET: the old value, or nil when this call set it.
        redis::cmd("SET")
            .arg(redis_key)
            .arg(PENDING)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(self.claim_ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl IntakeKeys for RedisIntakeKeys {
    async fn once<'a>(
        &'a self,
        sale: SaleId,
        user: UserId,
        key: &'a str,
        intake: IntakeFuture<'a>,
    ) -> Result<OrderId, IntakeError> {
        let redis_key = self.key(sale, user, key);
        if let Some(held) = self.once_settled(|| self.claim(&redis_key)).await? {
            return parse_order(&held);
        }
        let outcome = intake.await;
        let mut conn = self.conn.clone();
        let written: Result<(), _> = match &outcome {
            Ok(id) => {
                redis::cmd("SET")
                    .arg(&redis_key)
                    .arg(id.get())
                    .arg("PX")
                    .arg(self.ttl.as_millis() as u64)
                    .query_async(&mut conn)
                    .await
            }
            Err(_) => redis::cmd("DEL").arg(&redis_key).query_async(&mut conn).await,
        };
        if let Err(error) = written {
            // The claim expires on its own; the order (if any) is durable.
            tracing::warn!(%error, "could not record an intake key's outcome");
        }
        outcome
    }

    async fn settle_claim(
        &self,
        sale: SaleId,
        user: UserId,
        key: &str,
        order: OrderId,
        produced: bool,
    ) -> Result<(), StoreError> {
        let outcome = produced.then_some((order, self.ttl));
        settle_claim(&self.conn, &self.key(sale, user, key), order, outcome).await.map(drop)
    }

    /// One script per sale (its keys share the sale's slot).
    async fn orders_written(&self, sale: SaleId, written: &[(UserId, &str, OrderId)]) -> Result<(), StoreError> {
        let script = redis::Script::new(ORDERS_WRITTEN);
        let mut conn = self.conn.clone();
        for chunk in written.chunks(500) {
            let mut invocation = script.prepare_invoke();
            for (user, key, _) in chunk {
                invocation.key(self.key(sale, *user, key));
            }
            for (_, _, order) in chunk {
                invocation.arg(order.get());
            }
            invocation.arg(self.ttl.as_millis() as u64);
            invocation.invoke_async::<i64>(&mut conn).await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// One `GET` (the claim and the delete of `once` cost two round trips),
    /// then more only while a request with the key is in flight.
    async fn replay(&self, sale: SaleId, user: UserId, key: &str) -> Result<Option<OrderId>, IntakeError> {
        let redis_key = self.key(sale, user, key);
        let read = || async {
            let mut conn = self.conn.clone();
            redis::cmd("GET").arg(&redis_key).query_async(&mut conn).await.map_err(unavailable)
        };
        self.once_settled(read).await?.map(|held| parse_order(&held)).transpose()
    }

    async fn preload(&self, sale: SaleId, keyed: Vec<(UserId, String, OrderId)>) {
        let mut conn = self.conn.clone();
        for chunk in keyed.chunks(500) {
            let mut pipe = redis::pipe();
            for (user, key, order) in chunk {
                pipe.cmd("SET")
                    .arg(self.key(sale, *user, key))
                    .arg(order.get())
                    .arg("PX")
                    .arg(self.ttl.as_millis() as u64)
                    .ignore();
            }
            if let Err(error) = pipe.query_async::<()>(&mut conn).await {
                tracing::warn!(%error, sale = sale.get(), "could not preload intake keys");
            }
        }
    }

    /// Every key expires on its own (`ttl`).
    async fn forget(&self, _sale: SaleId) {}
}

fn parse_order(held: &str) -> Result<OrderId, IntakeError> {
    let id = held.parse().map_err(|_| StoreError::Unavailable(format!("bad intake key {held}")))?;
    Ok(OrderId::new(id))
}
