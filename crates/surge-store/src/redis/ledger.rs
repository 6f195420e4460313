//! The distributed stock ledger: per sale, a counter of stock left and a
//! hash of units per buyer, changed only by Lua scripts, so the check of
//! both and the deduction are one atomic step on the Redis that owns the
//! sale's slot, whichever node calls.

use async_trait::async_trait;
use redis::Script;
use surge_domain::flashsale::{Deduction, FlashSale, StockLedger};
use surge_domain::order::SaleHoldings;
use surge_domain::{SaleId, StoreError, UserId};

use super::{RedisConn, sale_key, unavailable};

/// The check-and-deduct (see the file): stock left after the deduction, or
/// -1 sold out, -2 over the buyer's limit, -3 not loaded.
const TRY_DEDUCT: &str = include_str!("try_deduct.lua");

/// KEYS: stock, buyers. ARGV: only-if-absent (0/1), stock left, then
/// (user, units) pairs. Returns 1 when loaded, 0 when left as it was.
const LOAD: &str = r"
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
";

/// KEYS: stock, buyers. ARGV: user, quantity. Only a loaded sale is
/// restored; a buyer's units never go below zero.
const RESTORE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[2])
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local quantity = tonumber(ARGV[2])
if held <= quantity then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HINCRBY', KEYS[2], ARGV[1], -quantity)
end
return 1
";

pub struct RedisLedger {
    conn: RedisConn,
    namespace: String,
    try_deduct: Script,
    load: Script,
    restore: Script,
}

impl RedisLedger {
    pub fn new(conn: RedisConn, namespace: &str) -> Self {
        Self {
            conn,
            namespace: namespace.to_owned(),
            try_deduct: Script::new(TRY_DEDUCT),
            load: Script::new(LOAD),
            restore: Script::new(RESTORE),
        }
    }

    fn keys(&self, sale: SaleId) -> [String; 2] {
        [sale_key(&self.namespace, sale, "stock"), sale_key(&self.namespace, sale, "buyers")]
    }

    async fn load_counters(
        &self,
        sale: &FlashSale,
        holdings: &SaleHoldings,
        if_absent: bool,
    ) -> Result<(), StoreError> {
        let [stock, buyers] = self.keys(sale.id);
        let mut invocation = self.load.key(stock);
        invocation.key(buyers).arg(u8::from(if_absent)).arg((sale.stock - holdings.sold).max(0));
        for (user, units) in &holdings.per_user {
            invocation.arg(user.get()).arg(*units);
        }
        let mut conn = self.conn.clone();
        invocation.invoke_async::<i64>(&mut conn).await.map(drop).map_err(unavailable)
    }
}

#[async_trait]
impl StockLedger for RedisLedger {
    async fn load(&self, sale: &FlashSale, holdings: &SaleHoldings) -> Result<(), StoreError> {
        self.load_counters(sale, holdings, false).await
    }

    async fn load_if_absent(&self, sale: &FlashSale, holdings: &SaleHoldings) -> Result<(), StoreError> {
        self.load_counters(sale, holdings, true).await
    }

    async fn try_deduct(
        &self,
        sale: SaleId,
        user: UserId,
        quantity: u32,
        per_user_limit: u32,
    ) -> Result<Deduction, StoreError> {
        let [stock, buyers] = self.keys(sale);
        let mut conn = self.conn.clone();
        let outcome: i64 = self
            .try_deduct
            .key(stock)
            .key(buyers)
            .arg(user.get())
            .arg(quantity)
            .arg(per_user_limit)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(match outcome {
            -1 => Deduction::SoldOut,
            -2 => Deduction::LimitExceeded,
            -3 => Deduction::NotLoaded,
            stock_left => Deduction::Done { stock_left },
        })
    }

    async fn restore(&self, sale: SaleId, user: UserId, quantity: u32) -> Result<(), StoreError> {
        let [stock, buyers] = self.keys(sale);
        let mut conn = self.conn.clone();
        self.restore
            .key(stock)
            .key(buyers)
            .arg(user.get())
            .arg(quantity)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn stock_left(&self, sale: SaleId) -> Result<Option<i64>, StoreError> {
        let [stock, _] = self.keys(sale);
        let mut conn = self.conn.clone();
        redis::cmd("GET").arg(stock).query_async(&mut conn).await.map_err(unavailable)
    }
}
