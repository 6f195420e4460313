//! Resilience policies as tower layers. Nothing here knows about orders or
//! products: every policy wraps any `tower::Service`.
//!
//! Each policy is a folder shaped like tower's own middleware: the service in
//! `mod.rs`, its `layer.rs`, `future.rs` and small marker errors in `error.rs`.

pub mod breaker;
pub mod bulkhead;
pub mod deadline;
pub mod rate;
pub mod retry;
pub mod switch;

/// The error type of every service in this crate (tower's convention).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
