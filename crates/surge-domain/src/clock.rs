//! Time as a port: every use case reads "now" from a [`Clock`] it was given,
//! never from the operating system. Production wires [`SystemClock`]; tests
//! wire a clock they move by hand, so a payment window closes or a sale
//! ends the moment a test says so, with no sleeping and no flakes.

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

/// Unix milliseconds of `at` (an `i64` holds them for 292 million years).
fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}
