//! The breaker's sliding window: ten buckets, constant memory.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: u32 = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: u64,
    pub failures: u64,
    pub slow: u64,
}

#[derive(Debug)]
struct Bucket {
    start: Instant,
    totals: Totals,
}

#[derive(Debug)]
pub struct Window {
    length: Duration,
    width: Duration,
    buckets: VecDeque<Bucket>,
}

impl Window {
    pub fn new(length: Duration) -> Self {
        let width = (length / BUCKETS).max(Duration::from_millis(1));
        Self { length, width, buckets: VecDeque::with_capacity(BUCKETS as usize + 1) }
    }

    pub fn record(&mut self, now: Instant, failed: bool, slow: bool) {
        self.expire(now);
        let fresh = self.buckets.back().is_none_or(|last| now >= last.start + self.width);
        if fresh {
            self.buckets.push_back(Bucket { start: now, totals: Totals::default() });
        }
        if let Some(last) = self.buckets.back_mut() {
            last.totals.calls += 1;
            last.totals.failures += u64::from(failed);
            last.totals.slow += u64::from(slow);
        }
    }

    pub fn totals(&mut self, now: Instant) -> Totals {
        self.expire(now);
        self.buckets.iter().fold(Totals::default(), |sum, b| Totals {
            calls: sum.calls + b.totals.calls,
            failures: sum.failures + b.totals.failures,
            slow: sum.slow + b.totals.slow,
        })
    }

    pub fn clear(&mut self) {
        self.buckets.clear();
    }

    fn expire(&mut self, now: Instant) {
        while self.buckets.front().is_some_and(|b| b.start + self.length <= now) {
            self.buckets.pop_front();
        }
        debug_assert!(self.buckets.len() <= BUCKETS as usize + 1);
    }
}
