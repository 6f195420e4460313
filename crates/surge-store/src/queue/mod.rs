//! Queue adapters behind `OrderQueue`: `log` is the embedded durable log,
//! `nats` a NATS JetStream stream shared by every node.

pub mod log;
pub mod nats;
