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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_domain::StoreError;
use surge_domain::flashsale::{Delivery, OrderQueue, OrderRequested};

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
fn client_config(config: &KafkaQueueConfig) -> ClientConfig {
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
    consumer: Arc<StreamConsumer>,
    /// The brokers and how to reach them, for the offsets probe.
    client: ClientConfig,
    group: String,
    topic: String,
    publish_timeout: Duration,
    next: AtomicU64,
    /// Delivered and not yet acknowledged: sequence → (partition, offset).
    unacked: Mutex<BTreeMap<u64, (i32, i64)>>,
}

impl KafkaQueue {
    /// Connects, creates the topic if missing and joins the group.
    pub async fn open(config: &KafkaQueueConfig) -> Result<Self, StoreError> {
        let timeout_ms = config.publish_timeout.as_millis().to_string();
        let client = client_config(config);
        let admin: AdminClient<DefaultClientContext> = client.create().map_err(unavailable)?;
        let topic =
            NewTopic::new(&config.topic, config.partitions, TopicReplication::Fixed(i32::from(config.replicas)));
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
        let producer: FutureProducer = client
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", &timeout_ms)
            .set("linger.ms", "1")
            .create()
            .map_err(unavailable)?;
        let consumer: StreamConsumer = client
            .clone()
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", (config.session_timeout.as_millis() / 3).to_string())
            .create()
            .map_err(unavailable)?;
        consumer.subscribe(&[&config.topic]).map_err(unavailable)?;
        Ok(Self {
            producer,
            consumer: Arc::new(consumer),
            client,
            group: config.group.clone(),
            topic: config.topic.clone(),
            publish_timeout: config.publish_timeout,
            next: AtomicU64::new(1),
            unacked: Mutex::default(),
        })
    }

    /// Seeks every partition with unacknowledged deliveries back to the
    /// first of them, so they are fetched again.
    fn rewind(&self) -> Result<(), StoreError> {
        let failed = std::mem::take(&mut *self.unacked.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut first: HashMap<i32, i64> = HashMap::new();
        for (partition, offset) in failed.into_values() {
            let entry = first.entry(partition).or_insert(offset);
            *entry = (*entry).min(offset);
        }
        for (partition, offset) in first {
            self.consumer
                .seek(&self.topic, partition, Offset::Offset(offset), Duration::from_secs(1))
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn next_message(&self, wait: Duration) -> Result<Option<(i32, i64, Vec<u8>)>, StoreError> {
        match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => Ok(None),
            Ok(Err(error)) => Err(unavailable(error)),
            Ok(Ok(message)) => {
                Ok(Some((message.partition(), message.offset(), message.payload().unwrap_or_default().to_vec())))
            }
        }
    }
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
        self.rewind()?;
        let mut deliveries = Vec::new();
        let mut budget = wait.max(Duration::from_millis(1));
        while deliveries.len() < max.max(1) {
            let Some((partition, offset, payload)) = self.next_message(budget).await? else {
                break;
            };
            // After the first, take only what is there already.
            budget = Duration::from_millis(1);
            let sequence = self.next.fetch_add(1, Ordering::Relaxed);
            self.unacked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(sequence, (partition, offset));
            match super::wire::decode(&payload) {
                Ok(request) => deliveries.push(Delivery { offset: sequence, request }),
                // A poison event must not block the queue: it is acknowledged
                // with the batch and dropped for good.
                Err(error) => tracing::error!(partition, offset, %error, "unreadable order request; skipped"),
            }
        }
        Ok(deliveries)
    }

    async fn ack(&self, offset: u64) -> Result<(), StoreError> {
        let done = {
            let mut unacked = self.unacked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let rest = unacked.split_off(&(offset + 1));
            std::mem::replace(&mut *unacked, rest)
        };
        let mut past: HashMap<i32, i64> = HashMap::new();
        for (partition, offset) in done.into_values() {
            let entry = past.entry(partition).or_insert(offset + 1);
            *entry = (*entry).max(offset + 1);
        }
        if past.is_empty() {
            return Ok(());
        }
        let mut commits = TopicPartitionList::new();
        for (partition, next) in past {
            commits.add_partition_offset(&self.topic, partition, Offset::Offset(next)).map_err(unavailable)?;
        }
        // Synchronous (a blocking call, so off the runtime's threads): once
        // `ack` returns, a rebalance resumes past these events. A commit
        // lost to a crash is a redelivery, which the order store absorbs.
        let consumer = Arc::clone(&self.consumer);
        tokio::task::spawn_blocking(move || consumer.commit(&commits, CommitMode::Sync))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
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

fn unavailable(error: impl std::fmt::Display) -> StoreError {
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
