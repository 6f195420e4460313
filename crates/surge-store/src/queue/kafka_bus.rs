//! The event bus on a Kafka-protocol broker: the outbox relay's events on
//! their own topic beside the order requests' (`<topic>.events`), keyed by
//! the order they are about (so one order's events share a partition and
//! arrive in the order the relay published them, which is the outbox's),
//! through the queue's idempotent producer; each consuming
//! context is its own consumer group (`<group>.<consumer>`), shared by every
//! node and committing only after its events are applied.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use surge_domain::StoreError;
use surge_domain::outbox::{BusDelivery, EventBus, EventStream, OutboxEntry};

use super::kafka::{KafkaQueueConfig, client_config, create_topic, producer, unavailable};

/// The order an event is about; an event that does not decode (none
/// should) goes under its own id.
fn partition_key(entry: &OutboxEntry) -> String {
    crate::events_wire::decode(entry.payload.as_bytes())
        .map_or_else(|_| entry.event_id.clone(), |record| record.event.order_id().to_string())
}

pub struct KafkaBus {
    config: KafkaQueueConfig,
    producer: FutureProducer,
    topic: String,
}

impl KafkaBus {
    /// Creates the events topic if missing.
    pub async fn open(config: &KafkaQueueConfig) -> Result<Self, StoreError> {
        let topic = format!("{}.events", config.topic);
        create_topic(config, &topic).await?;
        Ok(Self { config: config.clone(), producer: producer(config)?, topic })
    }
}

#[async_trait]
impl EventBus for KafkaBus {
    /// Sends them all, then waits for every ack.
    async fn publish(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        let timeout = self.config.publish_timeout;
        let keys: Vec<String> = entries.iter().map(partition_key).collect();
        let sends = entries.iter().zip(&keys).map(|(entry, key)| {
            let record = FutureRecord::to(&self.topic).key(key).payload(&entry.payload);
            self.producer.send(record, timeout)
        });
        let all = futures::future::join_all(sends);
        let Ok(sent) = tokio::time::timeout(timeout + Duration::from_millis(500), all).await else {
            return Err(StoreError::Unavailable("kafka: no ack for the events in time".to_owned()));
        };
        for result in sent {
            result.map_err(|(error, _)| StoreError::Unavailable(format!("kafka: {error}")))?;
        }
        Ok(())
    }

    async fn subscribe(&self, consumer: &str) -> Result<Box<dyn EventStream>, StoreError> {
        let group = format!("{}.{consumer}", self.config.group);
        Ok(Box::new(KafkaBusStream(GroupReader::join(&self.config, &group, &self.topic)?)))
    }
}

struct KafkaBusStream(GroupReader);

#[async_trait]
impl EventStream for KafkaBusStream {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<BusDelivery>, StoreError> {
        let delivered = self.0.poll(max, wait).await?;
        Ok(delivered
            .into_iter()
            .map(|(token, payload)| BusDelivery { token, event: crate::events_wire::decode(&payload) })
            .collect())
    }

    async fn ack(&mut self, token: u64) -> Result<(), StoreError> {
        self.0.ack(token).await
    }
}

/// A consumer group's member reading one topic, with this node's own
/// delivery sequence over (partition, offset) as the port's offsets.
pub(super) struct GroupReader {
    consumer: Arc<StreamConsumer>,
    topic: String,
    next: AtomicU64,
    /// Delivered and not yet acknowledged: sequence → (partition, offset).
    unacked: Mutex<BTreeMap<u64, (i32, i64)>>,
}

impl GroupReader {
    /// Joins `group` on `topic`, committing by hand from the earliest offset.
    pub(super) fn join(config: &KafkaQueueConfig, group: &str, topic: &str) -> Result<Self, StoreError> {
        let consumer: StreamConsumer = client_config(config)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", (config.session_timeout.as_millis() / 3).to_string())
            .create()
            .map_err(unavailable)?;
        consumer.subscribe(&[topic]).map_err(unavailable)?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
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

    /// Up to `max` messages as (sequence, payload), waiting up to `wait`
    /// for the first; what an earlier poll delivered and nobody
    /// acknowledged is fetched again first.
    pub(super) async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.rewind()?;
        let mut delivered = Vec::new();
        let mut budget = wait.max(Duration::from_millis(1));
        while delivered.len() < max.max(1) {
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
            delivered.push((sequence, payload));
        }
        Ok(delivered)
    }

    pub(super) async fn ack(&self, offset: u64) -> Result<(), StoreError> {
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
        // lost to a crash is a redelivery, which the consumer absorbs.
        let consumer = Arc::clone(&self.consumer);
        tokio::task::spawn_blocking(move || consumer.commit(&commits, CommitMode::Sync))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use surge_domain::outbox::{DomainEvent, EventRecord, OutboxEntry};
    use surge_domain::{MerchantId, OrderId, PaymentId, UserId};

    use super::partition_key;

    fn entry(event: DomainEvent) -> OutboxEntry {
        let record = EventRecord::new(event, 1_000);
        OutboxEntry {
            seq: 1,
            event_id: record.event_id.clone(),
            payload: crate::events_wire::encode(&record).expect("encodes"),
        }
    }

    #[test]
    fn an_orders_events_share_its_key_and_another_orders_do_not() {
        let (user_id, merchant_id) = (UserId::new(7), MerchantId::new(1));
        let order_id = OrderId::new(42);
        let paid = entry(DomainEvent::OrderPaid { order_id, user_id, merchant_id, amount_cents: 100 });
        let payment_id = PaymentId::new(9);
        let captured = entry(DomainEvent::PaymentSucceeded { payment_id, order_id, amount_cents: 100 });
        let other = entry(DomainEvent::OrderCancelled { order_id: OrderId::new(43), user_id, merchant_id });
        assert_eq!(partition_key(&paid), "42");
        assert_eq!(partition_key(&captured), "42");
        assert_eq!(partition_key(&other), "43");
        let unreadable = OutboxEntry { seq: 2, event_id: "x:1".into(), payload: "{".into() };
        assert_eq!(partition_key(&unreadable), "x:1");
    }
}
