//! Marker error of the breaker.

use std::fmt;
use std::time::Duration;

/// The breaker is open (or its probes are taken): the call was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOpen {
    pub retry_after: Duration,
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit breaker open; retry after {:?}", self.retry_after)
    }
}

impl std::error::Error for BreakerOpen {}
