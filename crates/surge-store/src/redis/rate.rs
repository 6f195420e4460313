//! Cluster-wide rate limiting: the four algorithms of `surge-guard::rate`,
//! each one Lua script on the Redis that owns the limited key, so every node
//! counts against the same budget. Time is Redis's own clock (`TIME`), not
//! the nodes'.
//!
//! - fixed window: a counter that expires with its window;
//! - sliding window: a log (sorted set of admission times), exact;
//! - leaky bucket: a meter that spaces admissions `interval` apart and lets
//!   a call wait up to `max_wait` for its slot (a smoother);
//! - token bucket: `capacity` tokens, refilled at `per_sec`.
//!
//! A limited key `k` of limiter `name` lives at `<namespace>:rl:{<name>:<k>}`,
//! so one key's state is one slot in a cluster.

use std::time::Duration;

use redis::Script;
use surge_domain::StoreError;
use surge_guard::rate::{Decision, LimiterUnavailable, SharedLimiter};

use super::{RedisConn, unavailable};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    FixedWindow { limit: u32, window: Duration },
    SlidingLog { limit: u32, window: Duration },
    LeakyBucket { interval: Duration, max_wait: Duration },
    TokenBucket { capacity: u32, per_sec: f64 },
}

/// What the limiter says about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead after waiting this long (zero but for the leaky bucket).
    Admitted {
        wait: Duration,
    },
    Rejected {
        retry_after: Duration,
    },
}

const FIXED_WINDOW: &str = r"
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if count > tonumber(ARGV[1]) then return {0, math.max(1, redis.call('PTTL', KEYS[1]))} end
return {1, 0}
";

const SLIDING_LOG: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.max(1, tonumber(oldest[2]) + window - now)}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return {1, 0}
";

const LEAKY_BUCKET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
local wait = slot - now
if wait > tonumber(ARGV[2]) then return {0, wait - tonumber(ARGV[2])} end
redis.call('SET', KEYS[1], slot + interval, 'PX', wait + interval + 1000)
return {1, wait}
";

const TOKEN_BUCKET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * per_ms)
if tokens < 1 then return {0, math.max(1, math.ceil((1 - tokens) / per_ms))} end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / per_ms) + 1000)
return {1, 0}
";

pub struct RedisRateLimiter {
    conn: RedisConn,
    prefix: String,
    algorithm: Algorithm,
    script: Script,
}

impl RedisRateLimiter {
    pub fn new(conn: RedisConn, namespace: &str, name: &str, algorithm: Algorithm) -> Self {
        let source = match algorithm {
            Algorithm::FixedWindow { .. } => FIXED_WINDOW,
            Algorithm::SlidingLog { .. } => SLIDING_LOG,
            Algorithm::LeakyBucket { .. } => LEAKY_BUCKET,
            Algorithm::TokenBucket { .. } => TOKEN_BUCKET,
        };
        Self { conn, prefix: format!("{namespace}:rl:{{{name}:"), algorithm, script: Script::new(source) }
    }

    /// Asks for one admission of `key` (a route, a user, a SKU...).
    pub async fn acquire(&self, key: &str) -> Result<Admission, StoreError> {
        let redis_key = format!("{}{key}}}", self.prefix);
        let mut invocation = self.script.key(redis_key);
        match self.algorithm {
            Algorithm::FixedWindow { limit, window } => invocation.arg(limit).arg(millis(window)),
            Algorithm::SlidingLog { limit, window } => {
                invocation.arg(limit).arg(millis(window)).arg(rand::random::<u64>())
            }
            Algorithm::LeakyBucket { interval, max_wait } => invocation.arg(millis(interval)).arg(millis(max_wait)),
            Algorithm::TokenBucket { capacity, per_sec } => invocation.arg(capacity).arg(per_sec),
        };
        let mut conn = self.conn.clone();
        let (admitted, ms): (i64, i64) = invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
        let ms = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        Ok(if admitted == 1 { Admission::Admitted { wait: ms } } else { Admission::Rejected { retry_after: ms } })
    }

    /// As `acquire`, and sleeps an admitted call's wait (the leaky bucket's
    /// spacing) before returning.
    pub async fn acquire_and_wait(&self, key: &str) -> Result<Admission, StoreError> {
        let admission = self.acquire(key).await?;
        if let Admission::Admitted { wait } = admission
            && !wait.is_zero()
        {
            tokio::time::sleep(wait).await;
        }
        Ok(admission)
    }
}

#[async_trait::async_trait]
impl SharedLimiter for RedisRateLimiter {
    async fn decide(&self, key: &str) -> Result<Decision, LimiterUnavailable> {
        Ok(match self.acquire(key).await.map_err(|e| LimiterUnavailable(e.to_string()))? {
            Admission::Admitted { wait } if wait.is_zero() => Decision::Admit,
            Admission::Admitted { wait } => Decision::AdmitAfter(wait),
            Admission::Rejected { retry_after } => Decision::Reject { retry_after },
        })
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().max(1) as u64
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::flow_contract::redis_conns;

    fn admitted(outcomes: &[Admission]) -> usize {
        outcomes.iter().filter(|a| matches!(a, Admission::Admitted { .. })).count()
    }

    /// Two nodes (two connections) share each limit; 2 × 30 concurrent calls.
    async fn shared_by_two_nodes(algorithm: Algorithm) -> Vec<(&'static str, Vec<Admission>)> {
        let mut runs = Vec::new();
        for ((name, first, namespace), (_, second, _)) in redis_conns().await.into_iter().zip(redis_conns().await) {
            let nodes = [
                Arc::new(RedisRateLimiter::new(first, &namespace, "test", algorithm)),
                Arc::new(RedisRateLimiter::new(second, &namespace, "test", algorithm)),
            ];
            let calls: Vec<_> = (0..60)
                .map(|n| {
                    let node = Arc::clone(&nodes[n % 2]);
                    tokio::spawn(async move { node.acquire("sku-1").await.expect("acquire") })
                })
                .collect();
            let mut outcomes = Vec::new();
            for call in calls {
                outcomes.push(call.await.expect("task"));
            }
            runs.push((name, outcomes));
        }
        runs
    }

    #[tokio::test]
    async fn a_fixed_window_admits_its_limit_across_nodes_and_says_when_to_retry() {
        let algorithm = Algorithm::FixedWindow { limit: 10, window: Duration::from_secs(5) };
        for (name, outcomes) in shared_by_two_nodes(algorithm).await {
            assert_eq!(admitted(&outcomes), 10, "{name}");
            assert!(
                outcomes.iter().any(|a| matches!(a, Admission::Rejected { retry_after } if !retry_after.is_zero())),
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn a_sliding_log_admits_its_limit_across_nodes() {
        let algorithm = Algorithm::SlidingLog { limit: 10, window: Duration::from_secs(5) };
        for (name, outcomes) in shared_by_two_nodes(algorithm).await {
            assert_eq!(admitted(&outcomes), 10, "{name}");
        }
    }

    #[tokio::test]
    async fn a_token_bucket_admits_its_burst_then_refills() {
        let algorithm = Algorithm::TokenBucket { capacity: 5, per_sec: 20.0 };
        for (name, outcomes) in shared_by_two_nodes(algorithm).await {
            // The burst, plus at most what refilled while the calls ran.
            let count = admitted(&outcomes);
            assert!((5..=8).contains(&count), "{name}: {count} admitted");
        }
        for (name, conn, namespace) in redis_conns().await {
            let limiter = RedisRateLimiter::new(conn, &namespace, "refill", algorithm);
            for _ in 0..5 {
                limiter.acquire("k").await.expect("acquire");
            }
            let empty = limiter.acquire("k").await.expect("acquire");
            let Admission::Rejected { retry_after } = empty else { panic!("{name}: an empty bucket admitted") };
            tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
            assert!(matches!(limiter.acquire("k").await, Ok(Admission::Admitted { .. })), "{name}: refilled");
        }
    }

    #[tokio::test]
    async fn a_leaky_bucket_spaces_calls_and_refuses_past_the_longest_wait() {
        let algorithm =
            Algorithm::LeakyBucket { interval: Duration::from_millis(100), max_wait: Duration::from_millis(250) };
        for (name, conn, namespace) in redis_conns().await {
            let limiter = RedisRateLimiter::new(conn, &namespace, "meter", algorithm);
            let mut waits = Vec::new();
            for _ in 0..4 {
                match limiter.acquire("k").await.expect("acquire") {
                    Admission::Admitted { wait } => waits.push(wait.as_millis() as i64),
                    Admission::Rejected { .. } => break,
                }
            }
            // 0, ~100, ~200 ms apart; the 4th would wait ~300 ms > 250 ms.
            assert_eq!(waits.len(), 3, "{name}: {waits:?}");
            for (n, wait) in waits.iter().enumerate() {
                assert!((wait - 100 * n as i64).abs() <= 30, "{name}: {waits:?}");
            }
        }
    }
}
