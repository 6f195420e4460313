//! The event bus's contract, on each adapter against its real backend (the
//! embedded log, NATS JetStream, a Kafka-protocol broker): every consumer
//! reads every event; an event its consumer did not acknowledge comes
//! again; an acknowledged one never does, to that consumer.

use std::collections::BTreeSet;
use std::time::Duration;

use surge_domain::outbox::{BusDelivery, DomainEvent, EventBus, EventRecord, EventStream, OutboxEntry};
use surge_domain::{MerchantId, OrderId, UserId};

use crate::flow_contract::{kafka_config, nats_config};
use crate::queue::kafka_bus::KafkaBus;
use crate::queue::log::{LogQueue, LogQueueConfig};
use crate::queue::nats_bus::NatsBus;

fn entry(order: i64) -> OutboxEntry {
    let event = DomainEvent::OrderCancelled {
        order_id: OrderId::new(order),
        user_id: UserId::new(1),
        merchant_id: MerchantId::new(2),
    };
    let record = EventRecord::new(event, 1_000);
    let payload = crate::events_wire::encode(&record).expect("json");
    OutboxEntry { seq: order, event_id: record.event_id, payload }
}

/// Polls until `count` distinct events came or `patience` passed (a Kafka
/// consumer first joins its group); what came, in delivery order.
async fn poll_for(stream: &mut dyn EventStream, count: usize, patience: Duration) -> Vec<BusDelivery> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut got: Vec<BusDelivery> = Vec::new();
    while distinct(&got).len() < count && tokio::time::Instant::now() < deadline {
        got.extend(stream.poll(count, Duration::from_millis(300)).await.expect("poll"));
    }
    got
}

fn distinct(deliveries: &[BusDelivery]) -> BTreeSet<String> {
    deliveries.iter().map(|delivery| delivery.event.clone().expect("readable").event_id).collect()
}

async fn a_bus_delivers_every_event_to_every_consumer_until_acknowledged(name: &str, bus: &dyn EventBus) {
    let mut first = bus.subscribe("first").await.expect("subscribe");
    bus.publish(&[entry(1), entry(2), entry(3)]).await.expect("publish");
    let patience = Duration::from_secs(30);
    let read = poll_for(&mut *first, 3, patience).await;
    let all: BTreeSet<String> = (1..=3).map(|order| format!("order_cancelled:{order}")).collect();
    assert_eq!(distinct(&read), all, "{name}: all three");

    // Not acknowledged: delivered again. Each poll's deliveries are
    // acknowledged before the next, as a consumer does: a poll hands back
    // what the one before it left unacknowledged, and a redelivery may
    // come over several polls (NATS redelivers each refused message on
    // its own).
    let deadline = tokio::time::Instant::now() + patience;
    let mut again = Vec::new();
    while distinct(&again).len() < all.len() && tokio::time::Instant::now() < deadline {
        let polled = first.poll(3, Duration::from_millis(300)).await.expect("poll");
        if let Some(last) = polled.iter().map(|delivery| delivery.token).max() {
            first.ack(last).await.expect("ack");
        }
        again.extend(polled);
    }
    assert_eq!(distinct(&again), all, "{name}: unacknowledged events come again");
    let after = first.poll(10, Duration::from_millis(500)).await.expect("poll");
    assert!(after.is_empty(), "{name}: acknowledged events never come again: {after:?}");

    // Another consumer reads them all, on its own.
    let mut second = bus.subscribe("second").await.expect("subscribe");
    assert_eq!(distinct(&poll_for(&mut *second, 3, patience).await), all, "{name}: a second consumer");
}

#[tokio::test]
async fn every_bus_delivers_every_event_to_every_consumer_until_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = LogQueue::open(dir.path(), LogQueueConfig::default()).await.expect("open log");
    a_bus_delivers_every_event_to_every_consumer_until_acknowledged("log", &log.bus()).await;

    // Redelivery here is by refusal, not by `ack_wait` running out, which
    // a loaded machine could reach between a poll and its ack.
    let nats = crate::queue::nats::NatsQueueConfig { ack_wait: Duration::from_secs(30), ..nats_config() };
    let bus = NatsBus::open(&nats).await.expect("nats is running");
    a_bus_delivers_every_event_to_every_consumer_until_acknowledged("nats", &bus).await;
    if let Ok(client) = async_nats::connect(nats.url.as_str()).await {
        let _ = async_nats::jetstream::new(client).delete_stream(format!("{}_EVENTS", nats.stream)).await;
    }

    // One partition, as the queue's contract: what the polls gathered is
    // what the last of them delivered, all of which an ack covers.
    let config = crate::queue::kafka::KafkaQueueConfig { partitions: 1, ..kafka_config() };
    let bus = KafkaBus::open(&config).await.expect("a kafka broker is running (scripts/kafka)");
    a_bus_delivers_every_event_to_every_consumer_until_acknowledged("kafka", &bus).await;
}
