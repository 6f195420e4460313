//! The four algorithms. Each keeps per-key state in a `DashMap` (sharded
//! locks: keys on different shards never contend).

use std::collections::VecDeque;
use std::hash::Hash;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use super::{Decision, Limiter};

/// At most `limit` admissions per window of `window`, windows aligned to the
/// limiter's creation.
pub struct FixedWindow<K> {
    limit: u32,
    window: Duration,
    origin: Instant,
    /// Per key: (window number, admitted in it).
    counts: DashMap<K, (u64, u32)>,
}

impl<K: Hash + Eq> FixedWindow<K> {
    pub fn new(limit: u32, window: Duration, now: Instant) -> Self {
        assert!(!window.is_zero(), "a window has a length");
        Self { limit, window, origin: now, counts: DashMap::new() }
    }

    fn window_of(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / self.window.as_nanos()) as u64
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Limiter<K> for FixedWindow<K> {
    fn decide(&self, key: &K, now: Instant) -> Decision {
        let current = self.window_of(now);
        let mut entry = self.counts.entry(key.clone()).or_insert((current, 0));
        if entry.0 != current {
            *entry = (current, 0);
        }
        if entry.1 < self.limit {
            entry.1 += 1;
            return Decision::Admit;
        }
        let next_window = self.origin + self.window * u32::try_from(current + 1).unwrap_or(u32::MAX);
        Decision::Reject { retry_after: next_window.saturating_duration_since(now) }
    }

    fn forget_idle(&self, now: Instant) {
        let current = self.window_of(now);
        self.counts.retain(|_, (window, _)| *window == current);
    }

    fn tracked_keys(&self) -> usize {
        self.counts.len()
    }
}

/// At most `limit` admissions in any `window`: an exact log of admission
/// times per key (at most `limit` entries).
pub struct SlidingLog<K> {
    limit: u32,
    window: Duration,
    logs: DashMap<K, VecDeque<Instant>>,
}

impl<K: Hash + Eq> SlidingLog<K> {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window, logs: DashMap::new() }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Limiter<K> for SlidingLog<K> {
    fn decide(&self, key: &K, now: Instant) -> Decision {
        let mut log = self.logs.entry(key.clone()).or_default();
        while log.front().is_some_and(|at| now.saturating_duration_since(*at) >= self.window) {
            log.pop_front();
        }
        if (log.len() as u64) < u64::from(self.limit) {
            log.push_back(now);
            return Decision::Admit;
        }
        let oldest = log.front().copied().unwrap_or(now);
        Decision::Reject { retry_after: (oldest + self.window).saturating_duration_since(now) }
    }

    fn forget_idle(&self, now: Instant) {
        self.logs.retain(|_, log| log.back().is_some_and(|at| now.saturating_duration_since(*at) < self.window));
    }

    fn tracked_keys(&self) -> usize {
        self.logs.len()
    }
}

/// One admission per `interval`; a request arriving early waits for its slot
/// (smoothing bursts) unless that wait would pass `max_wait`.
pub struct LeakyBucket<K> {
    interval: Duration,
    max_wait: Duration,
    /// Per key: when the next slot is free.
    next_free: DashMap<K, Instant>,
}

impl<K: Hash + Eq> LeakyBucket<K> {
    pub fn new(interval: Duration, max_wait: Duration) -> Self {
        Self { interval, max_wait, next_free: DashMap::new() }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Limiter<K> for LeakyBucket<K> {
    fn decide(&self, key: &K, now: Instant) -> Decision {
        let mut next = self.next_free.entry(key.clone()).or_insert(now);
        let slot = (*next).max(now);
        let wait = slot - now;
        if wait > self.max_wait {
            return Decision::Reject { retry_after: wait - self.max_wait };
        }
        *next = slot + self.interval;
        if wait.is_zero() { Decision::Admit } else { Decision::AdmitAfter(wait) }
    }

    fn forget_idle(&self, now: Instant) {
        self.next_free.retain(|_, next| *next > now);
    }

    fn tracked_keys(&self) -> usize {
        self.next_free.len()
    }
}

/// Bursts of up to `burst`, refilled at `per_second` tokens a second.
pub struct TokenBucket<K> {
    burst: f64,
    per_second: f64,
    /// Per key: (tokens, when they were counted).
    buckets: DashMap<K, (f64, Instant)>,
}

impl<K: Hash + Eq> TokenBucket<K> {
    pub fn new(burst: u32, per_second: f64) -> Self {
        assert!(per_second > 0.0, "a bucket refills");
        Self { burst: f64::from(burst), per_second, buckets: DashMap::new() }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Limiter<K> for TokenBucket<K> {
    fn decide(&self, key: &K, now: Instant) -> Decision {
        let mut bucket = self.buckets.entry(key.clone()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(bucket.1).as_secs_f64() * self.per_second;
        let tokens = (bucket.0 + refill).min(self.burst);
        *bucket = (tokens, now);
        if tokens >= 1.0 {
            bucket.0 = tokens - 1.0;
            return Decision::Admit;
        }
        Decision::Reject { retry_after: Duration::from_secs_f64((1.0 - tokens) / self.per_second) }
    }

    /// A full bucket is the same as no bucket: forget it.
    fn forget_idle(&self, now: Instant) {
        self.buckets.retain(|_, (tokens, at)| {
            *tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_second < self.burst
        });
    }

    fn tracked_keys(&self) -> usize {
        self.buckets.len()
    }
}
