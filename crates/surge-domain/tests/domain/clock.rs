//! A paused clock: it shows the same instant until a test moves it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use surge_domain::Clock;
use time::OffsetDateTime;
use time::macros::datetime;

#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<OffsetDateTime>,
}

impl ManualClock {
    /// A whole second, so that stores keeping milliseconds keep it exactly.
    pub const START: OffsetDateTime = datetime!(2030-01-01 12:00 UTC);

    pub fn new() -> Self {
        Self { now: Mutex::new(Self::START) }
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
