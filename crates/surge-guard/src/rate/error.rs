//! Marker error of the rate-limit layer.

use std::fmt;
use std::time::Duration;

/// The request was refused; the caller may retry after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after: Duration,
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited; retry after {:?}", self.retry_after)
    }
}

impl std::error::Error for RateLimited {}
