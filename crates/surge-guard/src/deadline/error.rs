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

/// The caller's `X-Request-Deadline-Ms` left no time at all: nothing is done.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineSpent;

impl fmt::Display for DeadlineSpent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("x-request-deadline-ms leaves no time for the request")
    }
}

impl std::error::Error for DeadlineSpent {}
