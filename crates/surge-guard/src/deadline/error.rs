//! Marker errors of the deadline policy.

use std::fmt;

/// The deadline passed: before the work started, or while it ran.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineExpired;

impl fmt::Display for DeadlineExpired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request deadline expired")
    }
}

impl std::error::Error for DeadlineExpired {}

/// `X-Request-Deadline-Ms` was present but not a whole number of milliseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InvalidDeadlineHeader;

impl fmt::Display for InvalidDeadlineHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("x-request-deadline-ms must be a whole number of milliseconds")
    }
}

impl std::error::Error for InvalidDeadlineHeader {}
