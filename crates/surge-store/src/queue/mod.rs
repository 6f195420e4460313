//! Queue adapters behind `OrderQueue`: `log` is the embedded durable log.

pub mod log;
