//! The queue between intake and the order consumer: the embedded log, NATS
//! JetStream, or a Kafka-protocol broker.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use surge_store::queue::kafka::{KafkaQueueConfig, KafkaTls};
use surge_store::queue::nats::NatsQueueConfig;

use super::values::{ServerUrl, list};
use super::{ConfigError, HOUR, at_most, at_most_for, ensure};

/// `[queue] kind = "log"` (the default, in `data_dir`), `kind = "nats"`
/// with its `url`, or `kind = "kafka"` with its `brokers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum QueueSettings {
    Log(LogQueueSettings),
    Nats(NatsSettings),
    Kafka(KafkaSettings),
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self::Log(LogQueueSettings {})
    }
}

/// The embedded log's batch size is `flash_sale.queue_batch`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogQueueSettings {}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSettings {
    /// `nats://host:port`.
    pub url: ServerUrl,
    pub stream: String,
    /// Copies of each queued request across broker servers, when this node
    /// creates the stream; 3 in production, so a broker server's loss loses
    /// nothing acknowledged.
    pub replicas: u8,
    /// The durable consumer every node shares.
    pub consumer: String,
    /// Longest wait for the broker to confirm one append.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// A request fetched by a node that does not acknowledge it within this
    /// goes to another node.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// How long the stream keeps a request (its disk bound), when this node
    /// creates it.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `host:port` of the brokers: a list, or one string with commas.
    #[serde(deserialize_with = "list")]
    pub brokers: Vec<String>,
    pub topic: String,
    /// Partitions of the topic, when this node creates it.
    pub partitions: i32,
    /// Copies of each queued request across broker servers, when this node
    /// creates the topic; 3 in production, so a broker server's loss loses
    /// nothing acknowledged.
    pub replicas: u8,
    /// The consumer group every node shares.
    pub consumer: String,
    /// Longest wait for the broker to confirm one append.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Speak TLS to the brokers, checking their certificates and names
    /// against `tls_ca_file`, or the system's roots without it.
    pub tls: bool,
    /// The PEM file of the CA that signed the brokers' certificates
    /// (checked at start-up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: ServerUrl::try_from("nats://127.0.0.1:4222".to_owned()).expect("a valid URL"),
            stream: "SURGE_ORDERS".to_owned(),
            ack_wait: Duration::from_secs(30),
            max_age: Duration::from_secs(7 * 24 * 3600),
            replicas: 1,
            consumer: "orders".to_owned(),
            publish_timeout: Duration::from_secs(2),
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            topic: "surge.orders.requested".to_owned(),
            partitions: 6,
            tls: false,
            tls_ca_file: None,
            replicas: 1,
            consumer: "orders".to_owned(),
            publish_timeout: Duration::from_secs(2),
        }
    }
}

impl QueueSettings {
    /// A broker every node shares, as opposed to this node's own log.
    pub fn is_shared(&self) -> bool {
        !matches!(self, Self::Log(_))
    }

    pub(super) fn validate(&self, settings: &super::Settings) -> Result<(), ConfigError> {
        match self {
            Self::Log(_) => Ok(()),
            Self::Nats(nats) => nats.validate(settings),
            Self::Kafka(kafka) => kafka.validate(&settings.http),
        }
    }
}

fn validate_delivery(
    replicas: u8,
    consumer: &str,
    publish_timeout: Duration,
    http: &super::HttpSettings,
) -> Result<(), ConfigError> {
    ensure((1..=5).contains(&replicas), "queue.replicas", "must be between 1 and 5")?;
    at_most("queue.consumer", consumer.len() as u64, 64)?;
    ensure(!consumer.is_empty(), "queue.consumer", "must not be empty")?;
    http.contains("queue.publish_timeout", publish_timeout)
}

impl NatsSettings {
    fn validate(&self, settings: &super::Settings) -> Result<(), ConfigError> {
        ensure(self.url.is(&["nats", "tls"]), "queue.url", "must be a nats:// URL")?;
        at_most_for("queue.ack_wait", self.ack_wait, HOUR)?;
        at_most_for("queue.max_age", self.max_age, 365 * super::DAY)?;
        at_most("queue.stream", self.stream.len() as u64, 64)?;
        ensure(!self.stream.is_empty(), "queue.stream", "must not be empty")?;
        ensure(self.ack_wait >= Duration::from_secs(1), "queue.ack_wait", "must be at least 1s")?;
        // A request must outlive the time it may wait for its order.
        ensure(
            self.max_age >= settings.flash_sale.reservation_timeout.max(HOUR),
            "queue.max_age",
            "must be at least an hour and longer than flash_sale.reservation_timeout",
        )?;
        validate_delivery(self.replicas, &self.consumer, self.publish_timeout, &settings.http)
    }
}

impl KafkaSettings {
    fn validate(&self, http: &super::HttpSettings) -> Result<(), ConfigError> {
        ensure(!self.brokers.is_empty(), "queue.brokers", "must name at least one broker")?;
        ensure(
            self.brokers.iter().all(|broker| {
                broker.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            }),
            "queue.brokers",
            "must be host:port pairs",
        )?;
        at_most("queue.topic", self.topic.len() as u64, 200)?;
        ensure(!self.topic.is_empty(), "queue.topic", "must not be empty")?;
        ensure((1..=1024).contains(&self.partitions), "queue.partitions", "must be between 1 and 1024")?;
        ensure(self.tls || self.tls_ca_file.is_none(), "queue.tls_ca_file", "needs queue.tls = true")?;
        validate_delivery(self.replicas, &self.consumer, self.publish_timeout, http)
    }
}

impl From<&NatsSettings> for NatsQueueConfig {
    fn from(nats: &NatsSettings) -> Self {
        Self {
            url: nats.url.expose().to_owned(),
            stream: nats.stream.clone(),
            consumer: nats.consumer.clone(),
            ack_wait: nats.ack_wait,
            publish_timeout: nats.publish_timeout,
            replicas: nats.replicas,
            max_age: nats.max_age,
        }
    }
}

impl From<&KafkaSettings> for KafkaQueueConfig {
    fn from(kafka: &KafkaSettings) -> Self {
        Self {
            brokers: kafka.brokers.join(","),
            topic: kafka.topic.clone(),
            partitions: kafka.partitions,
            replicas: kafka.replicas,
            group: kafka.consumer.clone(),
            publish_timeout: kafka.publish_timeout,
            tls: kafka.tls.then(|| KafkaTls { ca_file: kafka.tls_ca_file.clone() }),
            ..KafkaQueueConfig::default()
        }
    }
}
