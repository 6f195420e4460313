//! Adapters for `surge-domain`'s ports, one folder per backend.
//!
//! - `sqlite`: the embedded relational store (WAL, migrations run at start).
//! - `cache`: cache-aside decorators that wrap any store adapter.
//! - `memory`: in-process ledger, pending orders and intake keys.
//! - `queue`: queue adapters (`log`: the embedded durable log).
//! - `notify`: notification sinks behind a bounded background queue.
//! - `ops`: operational settings kept in the store (manual switches).

pub mod cache;
pub mod memory;
pub mod notify;
pub mod ops;
pub mod queue;
pub mod sqlite;

#[cfg(test)]
mod testing;
