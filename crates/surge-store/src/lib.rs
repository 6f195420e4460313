//! Adapters for `surge-domain`'s ports, one folder per backend.
//!
//! - `sqlite`: the embedded relational store (WAL, migrations run at start).
//! - `cache`: cache-aside decorators that wrap any store adapter.

pub mod cache;
pub mod sqlite;
