//! Rate limiting: four algorithms behind one interface, and a tower layer
//! that keys them by anything a request carries (route, user, one hot SKU).
//!
//! | algorithm | admits | bound in any window of length `T` |
//! |---|---|---|
//! | [`FixedWindow`] | `limit` per aligned window | `limit` per aligned window (≤ `2·limit` across a boundary) |
//! | [`SlidingLog`] | `limit` in the last `window` | `limit` (exact: a log of admission times) |
//! | [`LeakyBucket`] | one per `interval`, queueing up to `max_wait` | `1 + T / interval` |
//! | [`TokenBucket`] | `burst` at once, `rate` per second after | `burst + rate·T` |
//!
//! The sliding window keeps a *log* (exact, `limit` timestamps per key)
//! rather than the weighted two-window counter, whose estimate can be passed
//! when traffic bunches at the end of a window. [`Gcra`] puts governor's
//! GCRA (a token bucket in one timestamp) behind the same interface.
//!
//! Time is `tokio::time::Instant`, so tests run on the paused clock.
//! [`SharedLimiter`] is the same decision made across nodes (in Redis, by
//! `surge-store`).

mod error;
mod gcra;
mod layer;
mod limiters;
mod shared;

#[cfg(test)]
mod tests;

pub use error::RateLimited;
pub use gcra::Gcra;
pub use layer::{RateLimit, RateLimitLayer};
pub use limiters::{FixedWindow, LeakyBucket, SlidingLog, TokenBucket};
pub use shared::{LimiterUnavailable, SharedLimiter};

use std::time::Duration;

use tokio::time::Instant;

/// What a limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Admit,
    /// Admitted, to start after this wait (the leaky bucket's smoothing).
    AdmitAfter(Duration),
    Reject {
        retry_after: Duration,
    },
}

impl Decision {
    pub fn is_admitted(self) -> bool {
        !matches!(self, Decision::Reject { .. })
    }
}

/// One rate-limiting algorithm, holding state per key.
pub trait Limiter<K>: Send + Sync + 'static {
    fn decide(&self, key: &K, now: Instant) -> Decision;

    /// Drops the state of keys idle long enough to be back at full
    /// allowance (bounds memory under many keys).
    fn forget_idle(&self, now: Instant);

    /// Keys with state (for the memory bound and metrics).
    fn tracked_keys(&self) -> usize;
}
