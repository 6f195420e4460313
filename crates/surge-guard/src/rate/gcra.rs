//! governor's GCRA behind the [`Limiter`] interface: the well-kept crate's
//! token bucket, for production use and as the yardstick for ours. It reads
//! its own monotonic clock (quanta), not tokio's, so it is tested through
//! governor's own suite rather than on the paused clock.

use std::hash::Hash;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use super::{Decision, Limiter};

pub struct Gcra<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> Gcra<K> {
    /// `burst` at once, then `per_second` a second.
    pub fn new(burst: NonZeroU32, per_second: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self { limiter: RateLimiter::keyed(quota), clock: DefaultClock::default() }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Limiter<K> for Gcra<K> {
    fn decide(&self, key: &K, _now: Instant) -> Decision {
        match self.limiter.check_key(key) {
            Ok(()) => Decision::Admit,
            Err(not_until) => Decision::Reject { retry_after: not_until.wait_time_from(self.clock.now()) },
        }
    }

    fn forget_idle(&self, _now: Instant) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn tracked_keys(&self) -> usize {
        self.limiter.len()
    }
}
