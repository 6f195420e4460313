//! Queue adapters behind `OrderQueue`: `log` is the embedded durable log,
//! `nats` a NATS JetStream stream and `kafka` a Kafka-protocol topic, each
//! shared by every node. Beside each, the event bus the outbox relay
//! publishes to (`log_bus`, `nats_bus`, `kafka_bus`), and in the log's file
//! the scan journal of write-behind tracking (`journal`).

pub mod journal;
pub mod kafka;
pub mod kafka_bus;
pub mod log;
pub mod log_bus;
pub mod nats;
pub mod nats_bus;
pub(crate) mod wire;
