//! The event bus on NATS JetStream: a file-backed stream of domain events
//! beside the order requests' (`<stream>_EVENTS`), and one durable pull
//! consumer per consuming context, shared by every node (an event is worked
//! on by one node at a time and redelivered when not acknowledged within
//! `ack_wait`). Publishes carry the event id as `Nats-Msg-Id`, so an event
//! the relay publishes twice within the duplicate window is stored once.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream;
use async_nats::jetstream::{self, AckKind, Message};
use async_trait::async_trait;
use surge_domain::StoreError;
use surge_domain::outbox::{BusDelivery, EventBus, EventStream, OutboxEntry};

use super::nats::{NatsQueueConfig, fetch, stream_config, unavailable};

pub struct NatsBus {
    context: jetstream::Context,
    stream: stream::Stream,
    subject: String,
    publish_timeout: Duration,
    ack_wait: Duration,
}

impl NatsBus {
    /// Connects and creates the events stream if missing.
    pub async fn open(config: &NatsQueueConfig) -> Result<Self, StoreError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(config.publish_timeout)
            .connect(config.url.as_str())
            .await
            .map_err(unavailable)?;
        let context = jetstream::ContextBuilder::new().timeout(config.publish_timeout).build(client);
        let name = format!("{}_EVENTS", config.stream);
        let subject = format!("{name}.events");
        let stream = context.get_or_create_stream(stream_config(config, &name, &subject)).await.map_err(unavailable)?;
        Ok(Self { context, stream, subject, publish_timeout: config.publish_timeout, ack_wait: config.ack_wait })
    }
}

#[async_trait]
impl EventBus for NatsBus {
    /// Sends them all, then waits for every PubAck.
    async fn publish(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        let mut acks = Vec::with_capacity(entries.len());
        for entry in entries {
            let message = PublishMessage::build().payload(entry.payload.clone().into()).message_id(&entry.event_id);
            acks.push(self.context.send_publish(self.subject.clone(), message).await.map_err(unavailable)?);
        }
        let all = futures::future::try_join_all(acks.into_iter().map(std::future::IntoFuture::into_future));
        match tokio::time::timeout(self.publish_timeout, all).await {
            Ok(acked) => acked.map(drop).map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable("nats: no PubAck for the events in time".to_owned())),
        }
    }

    async fn subscribe(&self, consumer: &str) -> Result<Box<dyn EventStream>, StoreError> {
        let consumer = self
            .stream
            .get_or_create_consumer(
                consumer,
                pull::Config {
                    durable_name: Some(consumer.to_owned()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(unavailable)?;
        Ok(Box::new(NatsBusStream { consumer, slack: self.publish_timeout, unacked: BTreeMap::new() }))
    }
}

struct NatsBusStream {
    consumer: PullConsumer,
    slack: Duration,
    /// Delivered and not yet acknowledged, by stream sequence.
    unacked: BTreeMap<u64, Message>,
}

#[async_trait]
impl EventStream for NatsBusStream {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<BusDelivery>, StoreError> {
        // What an earlier poll delivered and nobody acknowledged failed:
        // handed back now, so a later ack cannot cover it unprocessed.
        for (_, message) in std::mem::take(&mut self.unacked) {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
        let max = max.max(1);
        let mut messages = fetch(&self.consumer, max, None, self.slack).await?;
        if messages.is_empty() && !wait.is_zero() {
            messages = fetch(&self.consumer, max, Some(wait.max(Duration::from_millis(10))), self.slack).await?;
        }
        let mut deliveries = Vec::with_capacity(messages.len());
        for message in messages {
            let Ok(token) = message.info().map(|info| info.stream_sequence) else {
                continue;
            };
            deliveries.push(BusDelivery { token, event: crate::events_wire::decode(&message.payload) });
            self.unacked.insert(token, message);
        }
        deliveries.sort_by_key(|delivery| delivery.token);
        Ok(deliveries)
    }

    async fn ack(&mut self, token: u64) -> Result<(), StoreError> {
        let rest = self.unacked.split_off(&(token + 1));
        for (_, message) in std::mem::replace(&mut self.unacked, rest) {
            // A lost ack is a redelivery, which the consumer's inbox absorbs.
            message.ack().await.map_err(|error| StoreError::Unavailable(format!("nats ack: {error}")))?;
        }
        Ok(())
    }
}
