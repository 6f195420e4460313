//! The queue on a Kafka-protocol broker (Apache Kafka, Redpanda, Tansu)
//! through rdkafka: one topic partitioned by order id, an idempotent
//! producer (`enable.idempotence`, `acks=all`), and a consumer group that
//! every node's order consumer joins, committing offsets only after the
//! orders are written (at-least-once; the order store absorbs redelivery).
//!
//! The port's offsets are this node's own delivery sequence: each maps to a
//! (partition, offset), and `ack(n)` commits, per partition, past the
//! highest offset delivered up to `n`, and returns once the broker holds
//! the commit: a rebalance after it (a node joining or leaving the group)
//! resumes past it, so an acknowledged event is not delivered again. A
//! batch the consumer failed to process is fetched again: the next poll
//! seeks its partitions back to the first unacknowledged offset.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_domain::StoreError;
use surge_domain::flashsale::{Delivery, OrderQueue, OrderRequested};

use super::kafka_bus::GroupReader;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaQueueConfig {
    /// `host:port` of one or more brokers, comma-separated.
    pub brokers: String,
    pub topic: String,
    /// Partitions of the topic when this node creates it.
    pub partitions: i32,
    /// Replication factor of the topic when this node creates it.
    pub replicas: u8,
    /// The consumer group every node joins.
    pub group: String,
    /// How long a produce waits for the broker's ack.
    pub publish_timeout: Duration,
    /// A node that stops heartbeating loses its partitions after this.
    pub session_timeout: Duration,
    /// Speak TLS to the brokers; `None`: plaintext.
    pub tls: Option<KafkaTls>,
}

/// TLS to the brokers (librdkafka's `security.protocol = ssl`, on
/// OpenSSL): their certificates and host names are checked against
/// `ca_file`, or against the system's roots without it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaTls {
    /// PEM file of the CA that signed the brokers' certificates.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for KafkaQueueConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            topic: "surge.orders.requested".to_owned(),
            partitions: 6,
            replicas: 1,
            group: "surge-orders".to_owned(),
            publish_timeout: Duration::from_secs(2),
            session_timeout: Duration::from_secs(6),
            tls: None,
        }
    }
}

/// What every client of the queue shares: the brokers, and TLS when asked.
pub(super) fn client_config(config: &KafkaQueueConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    if let Some(tls) = &config.tls {
        client.set("security.protocol", "ssl").set("ssl.endpoint.identification.algorithm", "https");
        if let Some(ca) = &tls.ca_file {
            client.set("ssl.ca.location", ca.to_string_lossy());
        }
    }
    client
}

pub struct KafkaQueue {
    producer: FutureProducer,
    reader: GroupReader,
    /// The brokers and how to reach them, for the offsets probe.
    client: ClientConfig,
    group: String,
    topic: String,
    publish_timeout: Duration,
}

impl KafkaQueue {
    /// Connects, creates the topic if missing and joins the group.
    pub async fn open(config: &KafkaQueueConfig) -> Result<Self, StoreError> {
        let client = client_config(config);
        create_topic(config, &config.topic).await?;
        let producer = producer(config)?;
        Ok(Self {
            producer,
            reader: GroupReader::join(config, &config.group, &config.topic)?,
            client,
            group: config.group.clone(),
            topic: config.topic.clone(),
            publish_timeout: config.publish_timeout,
        })
    }
}

/// Creates `topic` if missing, with the configured partitions and copies.
pub(super) async fn create_topic(config: &KafkaQueueConfig, topic: &str) -> Result<(), StoreError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config).create().map_err(unavailable)?;
    let topic = NewTopic::new(topic, config.partitions, TopicReplication::Fixed(i32::from(config.replicas)));
    // Both bounds: a broker that never answers (down, or a TLS handshake
    // that fails) is an error within the publish timeout.
    let options = AdminOptions::new()
        .operation_timeout(Some(config.publish_timeout))
        .request_timeout(Some(config.publish_timeout));
    for result in admin.create_topics([&topic], &options).await.map_err(unavailable)? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(StoreError::Unavailable(format!("kafka: creating {topic}: {code}"))),
        }
    }
    Ok(())
}

/// The idempotent producer (`acks=all`) every publisher uses.
pub(super) fn producer(config: &KafkaQueueConfig) -> Result<FutureProducer, StoreError> {
    client_config(config)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", config.publish_timeout.as_millis().to_string())
        .set("linger.ms", "1")
        .create()
        .map_err(unavailable)
}

#[async_trait]
impl OrderQueue for KafkaQueue {
    async fn append(&self, request: &OrderRequested) -> Result<(), StoreError> {
        let payload = super::wire::encode(request)?;
        let key = request.order_id.get().to_string();
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        // Waited for no longer than the request has left.
        let wait = surge_guard::deadline::budget_for_call(self.publish_timeout);
        let Ok(sent) = tokio::time::timeout(wait, self.producer.send(record, wait)).await else {
            return Err(StoreError::Indeterminate("kafka: no ack within the request's deadline".to_owned()));
        };
        sent.map(drop).map_err(|(error, _)| match error {
            // Refused before it left this node.
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull | RDKafkaErrorCode::MessageSizeTooLarge) => {
                unavailable(error)
            }
            // Sent, or maybe sent: a timed-out produce may have landed.
            _ => StoreError::Indeterminate(format!("kafka: {error}")),
        })
    }

    /// Per partition, the message at the group's committed offset (the
    /// first not acknowledged); the oldest of them. Blocking client calls,
    /// so off the runtime's threads, on a probe consumer of the same group
    /// that joins nothing.
    async fn oldest_unacked_ms(&self) -> Result<Option<i64>, StoreError> {
        let (client, group, topic, timeout) =
            (self.client.clone(), self.group.clone(), self.topic.clone(), self.publish_timeout);
        tokio::task::spawn_blocking(move || oldest_unacked_ms(client, &group, &topic, timeout))
            .await
            .map_err(unavailable)?
    }

    async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StoreError> {
        let mut deliveries = Vec::new();
        for (sequence, payload) in self.reader.poll(max, wait).await? {
            match super::wire::decode(&payload) {
                Ok(request) => deliveries.push(Delivery { offset: sequence, request }),
                // A poison event must not block the queue: it is acknowledged
                // with the batch and dropped for good.
                Err(error) => tracing::error!(sequence, %error, "unreadable order request; skipped"),
            }
        }
        Ok(deliveries)
    }

    async fn ack(&self, offset: u64) -> Result<(), StoreError> {
        self.reader.ack(offset).await
    }

    /// The topic's metadata from a broker (a blocking call, so off the
    /// runtime's threads).
    async fn ping(&self) -> Result<(), StoreError> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let timeout = self.publish_timeout;
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(Some(&topic), timeout).map(drop))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }
}

fn oldest_unacked_ms(
    mut client: ClientConfig,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i64>, StoreError> {
    let probe: BaseConsumer =
        client.set("group.id", group).set("enable.auto.commit", "false").create().map_err(unavailable)?;
    let metadata = probe.fetch_metadata(Some(topic), timeout).map_err(unavailable)?;
    let mut partitions = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        partitions.add_partition(topic, partition.id());
    }
    let committed = probe.committed_offsets(partitions, timeout).map_err(unavailable)?;
    let mut oldest: Option<i64> = None;
    for element in committed.elements() {
        let (low, high) = probe.fetch_watermarks(topic, element.partition(), timeout).map_err(unavailable)?;
        let first = match element.offset() {
            Offset::Offset(offset) => offset.max(low),
            _ => low, // never committed: everything still there is unacknowledged
        };
        if first >= high {
            continue;
        }
        let mut at = TopicPartitionList::new();
        at.add_partition_offset(topic, element.partition(), Offset::Offset(first)).map_err(unavailable)?;
        probe.assign(&at).map_err(unavailable)?;
        let message = match probe.poll(timeout) {
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(unavailable(error)),
            None => return Err(StoreError::Unavailable("kafka: no answer reading the first unacknowledged".into())),
        };
        // An unreadable event is dropped by the consumer: its own time serves.
        let at_ms = message
            .payload()
            .and_then(|payload| super::wire::decode(payload).ok())
            .map(|request| request.requested_at_ms)
            .or_else(|| message.timestamp().to_millis())
            .unwrap_or(0);
        oldest = Some(oldest.map_or(at_ms, |oldest| oldest.min(at_ms)));
    }
    Ok(oldest)
}

pub(super) fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("kafka: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_contract::kafka_config;
    use crate::testing::{order_requested, tls_acceptor, tls_certificates, tls_front};

    /// scripts/kafka's broker for this test, and where it tells clients to
    /// reach it: the test's TLS front.
    fn behind_and_front() -> (String, String) {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        (var("SURGE_TEST_KAFKA_TLS_BEHIND", "127.0.0.1:19093"), var("SURGE_TEST_KAFKA_TLS_BROKERS", "127.0.0.1:19094"))
    }

    #[tokio::test]
    async fn over_tls_requests_go_through_and_a_broker_not_trusted_or_plaintext_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, cert, key) = tls_certificates(dir.path());
        let (behind, front) = behind_and_front();
        let server = tls_front(tls_acceptor(&cert, &key), &front, &behind).await;
        let config =
            KafkaQueueConfig { brokers: front.clone(), tls: Some(KafkaTls { ca_file: Some(ca) }), ..kafka_config() };
        let queue = KafkaQueue::open(&config).await.expect("open over TLS");
        let request = order_requested(1, 1, 1);
        queue.append(&request).await.expect("append over TLS");
        let mut delivered = Vec::new();
        for _ in 0..50 {
            delivered.extend(queue.poll(10, Duration::from_millis(200)).await.expect("poll over TLS"));
            if !delivered.is_empty() {
                break;
            }
        }
        let ids: Vec<_> = delivered.iter().map(|delivery| delivery.request.order_id).collect();
        assert_eq!(ids, vec![request.order_id], "delivered over TLS");
        queue.ack(delivered[0].offset).await.expect("ack over TLS");

        // Trusting only the system's roots, the test's CA is unknown: an
        // error, never a fallback to plaintext.
        let quick = Duration::from_secs(1);
        let system_roots = KafkaQueueConfig {
            brokers: front.clone(),
            tls: Some(KafkaTls::default()),
            publish_timeout: quick,
            ..kafka_config()
        };
        assert!(KafkaQueue::open(&system_roots).await.is_err(), "a broker whose certificate is not trusted");
        let plaintext = KafkaQueueConfig { brokers: front, publish_timeout: quick, ..kafka_config() };
        assert!(KafkaQueue::open(&plaintext).await.is_err(), "plaintext to a TLS port");
        server.abort();
    }
}
