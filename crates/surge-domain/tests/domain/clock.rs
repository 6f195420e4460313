//! The paused clock the tests run on: the domain's `ManualClock`, started
//! at a fixed instant far from the real one, so that a service still
//! reading the operating system's clock fails the tests.

use time::OffsetDateTime;
use time::macros::datetime;

pub use surge_domain::clock::ManualClock;

/// A whole second, so that stores keeping milliseconds keep it exactly.
pub const START: OffsetDateTime = datetime!(2030-01-01 12:00 UTC);

pub fn paused() -> ManualClock {
    ManualClock::starting_at(START)
}
