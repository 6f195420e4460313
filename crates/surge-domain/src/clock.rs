//! Time as a port: every use case reads "now" from a [`Clock`] it was given,
//! never from the operating system. Production wires [`SystemClock`]; tests
//! wire a clock they move by hand, so a payment window closes or a sale
//! ends the moment a test says so, with no sleeping and no flakes.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

pub trait Clock: Send + Sync + 'static {
    /// The current instant, in UTC.
    fn now(&self) -> OffsetDateTime;

    /// [`Self::now`] as Unix milliseconds, the unit stores and queues keep.
    fn now_ms(&self) -> i64 {
        unix_ms(self.now())
    }
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that stands still until it is moved: for tests, which move it
/// past a payment window or a sale's end instead of sleeping.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<OffsetDateTime>,
}

impl ManualClock {
    pub fn starting_at(at: OffsetDateTime) -> Self {
        Self { now: Mutex::new(at) }
    }

    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Unix milliseconds of `at` (an `i64` holds them for 292 million years).
fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}
