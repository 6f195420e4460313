//! Queue adapters behind `OrderQueue`: `log` is the embedded durable log,
//! `nats` a NATS JetStream stream and `kafka` a Kafka-protocol topic, each
//! shared by every node.

pub mod kafka;
pub mod log;
pub mod nats;
pub(crate) mod wire;
