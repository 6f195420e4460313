//! Domain events and the transactional outbox: how a context tells the
//! others that something happened without calling them.
//!
//! A change another context must hear of (an order placed, paid or
//! cancelled; a payment captured or failed; a refund through) writes its
//! [`DomainEvent`] into the outbox in the same transaction as the change,
//! so the event exists exactly when the change does. The [`OutboxRelay`]
//! publishes the outbox to the [`EventBus`] (the embedded log, NATS or
//! Kafka) at least once; a consumer applies each event once by recording
//! its id in its [`Inbox`]. Fulfilment, search and cells consume this.
//!
//! An event's id is determined by the change (`order-paid:<order>`), not
//! drawn at random: a change written twice (a redelivered request, a
//! repeated callback) cannot put two events in the outbox.

use std::time::Duration;

use async_trait::async_trait;

use crate::fulfilment::ScanKind;
use crate::order::{Order, OrderKind, OrderStatus};
use crate::{MerchantId, OrderId, PaymentId, RefundId, ReturnId, StoreError, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEvent {
    /// An order was written `CREATED` (a checkout's, or a flash sale's
    /// from its queued request).
    OrderPlaced { order_id: OrderId, user_id: UserId, merchant_id: MerchantId, amount_cents: i64, kind: OrderKind },
    /// A captured payment paid the order.
    OrderPaid { order_id: OrderId, user_id: UserId, merchant_id: MerchantId, amount_cents: i64 },
    /// A `CREATED` order was cancelled, by its buyer or by the payment
    /// timeout; its units went back.
    OrderCancelled { order_id: OrderId, user_id: UserId, merchant_id: MerchantId },
    /// The provider captured a payment.
    PaymentSucceeded { payment_id: PaymentId, order_id: OrderId, amount_cents: i64 },
    /// The provider refused a pending payment.
    PaymentFailed { payment_id: PaymentId, order_id: OrderId, amount_cents: i64 },
    /// A refund went through; the money is back with the buyer.
    RefundSucceeded { refund_id: RefundId, payment_id: PaymentId, order_id: OrderId, amount_cents: i64 },
    /// The provider failed a refund; its amount may be refunded again.
    RefundFailed { refund_id: RefundId, payment_id: PaymentId, order_id: OrderId, amount_cents: i64 },
    /// A returned parcel passed inspection: `refund_cents` are owed back.
    ReturnAccepted { return_id: ReturnId, order_id: OrderId, refund_cents: i64 },
    /// A courier scanned the order's parcel; `seq` is the scan's place in
    /// the waybill's timeline.
    ParcelScanned { order_id: OrderId, user_id: UserId, waybill: String, seq: i64, scan: ScanKind },
}

impl DomainEvent {
    /// The event's name on the wire and in the outbox's `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::OrderPlaced { .. } => "order_placed",
            Self::OrderPaid { .. } => "order_paid",
            Self::OrderCancelled { .. } => "order_cancelled",
            Self::PaymentSucceeded { .. } => "payment_succeeded",
            Self::PaymentFailed { .. } => "payment_failed",
            Self::RefundSucceeded { .. } => "refund_succeeded",
            Self::RefundFailed { .. } => "refund_failed",
            Self::ReturnAccepted { .. } => "return_accepted",
            Self::ParcelScanned { .. } => "parcel_scanned",
        }
    }

    /// The order the event is about: what orders its delivery (a broker
    /// partitions by it, so one order's events arrive in the order they
    /// were written).
    pub fn order_id(&self) -> OrderId {
        match self {
            Self::OrderPlaced { order_id, .. }
            | Self::OrderPaid { order_id, .. }
            | Self::OrderCancelled { order_id, .. }
            | Self::PaymentSucceeded { order_id, .. }
            | Self::PaymentFailed { order_id, .. }
            | Self::RefundSucceeded { order_id, .. }
            | Self::RefundFailed { order_id, .. }
            | Self::ReturnAccepted { order_id, .. }
            | Self::ParcelScanned { order_id, .. } => *order_id,
        }
    }

    /// The id the change determines: each of these happens at most once to
    /// the thing it names.
    pub fn event_id(&self) -> String {
        let subject = match self {
            Self::OrderPlaced { order_id, .. }
            | Self::OrderPaid { order_id, .. }
            | Self::OrderCancelled { order_id, .. } => order_id.get(),
            Self::PaymentSucceeded { payment_id, .. } | Self::PaymentFailed { payment_id, .. } => payment_id.get(),
            Self::RefundSucceeded { refund_id, .. } | Self::RefundFailed { refund_id, .. } => refund_id.get(),
            Self::ReturnAccepted { return_id, .. } => return_id.get(),
            Self::ParcelScanned { waybill, seq, .. } => return format!("{}:{waybill}:{seq}", self.kind()),
        };
        format!("{}:{subject}", self.kind())
    }
}

impl DomainEvent {
    /// The order was written `CREATED`.
    pub fn placed(order: &Order) -> Self {
        Self::OrderPlaced {
            order_id: order.id,
            user_id: order.user_id,
            merchant_id: order.merchant_id,
            amount_cents: order.amount_cents,
            kind: order.kind,
        }
    }

    /// What a `CREATED` order moving to `to` tells the other contexts.
    pub fn left_created(order: &Order, to: OrderStatus) -> Option<Self> {
        let (order_id, user_id, merchant_id) = (order.id, order.user_id, order.merchant_id);
        match to {
            OrderStatus::Paid => {
                Some(Self::OrderPaid { order_id, user_id, merchant_id, amount_cents: order.amount_cents })
            }
            OrderStatus::Cancelled => Some(Self::OrderCancelled { order_id, user_id, merchant_id }),
            _ => None,
        }
    }
}

/// An event as it travels: its id, when it happened and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub event_id: String,
    /// Unix milliseconds.
    pub occurred_at_ms: i64,
    pub event: DomainEvent,
}

impl EventRecord {
    pub fn new(event: DomainEvent, occurred_at_ms: i64) -> Self {
        Self { event_id: event.event_id(), occurred_at_ms, event }
    }
}

/// An outbox row as the relay moves it: the encoded event, untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub seq: i64,
    pub event_id: String,
    pub payload: String,
}

/// What the outbox holds that is not yet published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    pub unpublished: u64,
    /// When the oldest unpublished event was written (Unix ms).
    pub oldest_ms: Option<i64>,
}

/// The outbox as the relay sees it (the writes happen inside each store's
/// own transactions).
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Claims up to `limit` unpublished events, oldest first, for `lease`:
    /// another relay (another node) skips them until the lease ends, so
    /// each is normally published by one relay; a relay that dies leaves
    /// them to be claimed again when it ends.
    async fn claim(&self, limit: u32, lease: Duration, now_ms: i64) -> Result<Vec<OutboxEntry>, StoreError>;

    /// The claimed events are on the bus.
    async fn mark_published(&self, seqs: &[i64], now_ms: i64) -> Result<(), StoreError>;

    /// Forgets events published before `before_ms`; how many went.
    async fn prune(&self, before_ms: i64) -> Result<u64, StoreError>;

    async fn backlog(&self) -> Result<OutboxBacklog, StoreError>;
}

/// A consumer's record of the events it applied.
#[async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// Whether `consumer` applied `event_id` already.
    async fn seen(&self, consumer: &str, event_id: &str) -> Result<bool, StoreError>;

    /// Which of `event_ids` `consumer` applied already (one read for a
    /// whole batch).
    async fn seen_among(
        &self,
        consumer: &str,
        event_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError>;

    /// `consumer` applied these events (one write for a whole batch).
    async fn record(&self, consumer: &str, event_ids: &[String], now_ms: i64) -> Result<(), StoreError>;
}

/// One event handed to a consumer; `token` acknowledges it (and every
/// event delivered before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusDelivery {
    pub token: u64,
    /// `Err` when the payload could not be read (another version wrote it):
    /// the consumer skips it, loudly, rather than stopping on it.
    pub event: Result<EventRecord, String>,
}

/// Where the relay publishes and consumers read: at-least-once delivery,
/// each consumer (by name) reading every event, shared by all nodes.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes the entries; `Ok` once the bus holds them durably.
    async fn publish(&self, entries: &[OutboxEntry]) -> Result<(), StoreError>;

    /// Reads events for the named consumer.
    async fn subscribe(&self, consumer: &str) -> Result<Box<dyn EventStream>, StoreError>;
}

#[async_trait]
pub trait EventStream: Send + 'static {
    /// Up to `max` events, waiting up to `wait` for the first.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<BusDelivery>, StoreError>;

    /// The events up to and including `token` are applied.
    async fn ack(&mut self, token: u64) -> Result<(), StoreError>;
}

/// Publishes the outbox: claim, publish, mark published.
pub struct OutboxRelay<'a> {
    pub outbox: &'a dyn OutboxStore,
    pub bus: &'a dyn EventBus,
    /// Events per step.
    pub batch: u32,
    /// How long a claim keeps other relays away; longer than a publish.
    pub lease: Duration,
}

impl OutboxRelay<'_> {
    /// One step; how many events it published. An event published but not
    /// marked (the node died between the two) is published again: the bus
    /// or the consumers' inboxes drop the copy.
    pub async fn step(&self, now_ms: i64) -> Result<usize, StoreError> {
        let entries = self.outbox.claim(self.batch, self.lease, now_ms).await?;
        if entries.is_empty() {
            return Ok(0);
        }
        self.bus.publish(&entries).await?;
        let seqs: Vec<i64> = entries.iter().map(|entry| entry.seq).collect();
        self.outbox.mark_published(&seqs, now_ms).await?;
        Ok(entries.len())
    }
}

/// A context's reaction to the events it consumes.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// The consumer's name: its inbox and its place on the bus.
    fn consumer(&self) -> &'static str;

    /// Does this consumer act on `event`? The others pass it by: neither
    /// looked up in its inbox nor recorded there (a flash sale's every
    /// `OrderPlaced` would otherwise write an inbox row per consumer).
    fn wants(&self, event: &DomainEvent) -> bool {
        let _ = event;
        true
    }

    /// Applies one event it [`wants`](EventHandler::wants) (those it does
    /// not care about are no-ops). An error fails the batch, which is
    /// delivered again.
    async fn apply(&self, record: &EventRecord) -> Result<(), StoreError>;
}

/// Runs a handler over the bus: each event applied once per consumer, by
/// its id in the inbox.
pub struct EventConsumer<'a> {
    pub handler: &'a dyn EventHandler,
    pub inbox: &'a dyn Inbox,
    /// Events per step.
    pub batch: usize,
}

impl EventConsumer<'_> {
    /// One step over what the bus delivers within `wait`; how many events
    /// were applied now (repeats and unreadable ones are not).
    ///
    /// The batch's events are applied, then recorded in one write: an
    /// event whose application failed is delivered again and applied then.
    /// A node that dies between the two applies the batch's events again
    /// after the redelivery, so a handler whose effect must happen once
    /// writes its effect and its inbox row in one transaction.
    pub async fn step(&self, stream: &mut dyn EventStream, wait: Duration, now_ms: i64) -> Result<usize, StoreError> {
        let deliveries = stream.poll(self.batch, wait).await?;
        let Some(last) = deliveries.last().map(|delivery| delivery.token) else {
            return Ok(0);
        };
        let consumer = self.handler.consumer();
        let mut records = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match delivery.event {
                Ok(record) if self.handler.wants(&record.event) => records.push(record),
                Ok(_) => {}
                // Not for this version to read: skipped, loudly, rather
                // than stopping every event behind it.
                Err(error) => tracing::error!(consumer, token = delivery.token, %error, "unreadable event skipped"),
            }
        }
        let ids: Vec<String> = records.iter().map(|record| record.event_id.clone()).collect();
        let seen = if ids.is_empty() { Default::default() } else { self.inbox.seen_among(consumer, &ids).await? };
        let mut applied: Vec<String> = Vec::new();
        for record in records {
            if seen.contains(&record.event_id) || applied.contains(&record.event_id) {
                continue;
            }
            self.handler.apply(&record).await?;
            applied.push(record.event_id);
        }
        if !applied.is_empty() {
            self.inbox.record(consumer, &applied, now_ms).await?;
        }
        stream.ack(last).await?;
        Ok(applied.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// Delivers its script, a step at a time (a redelivery is the same
    /// event again in a later step).
    struct Script(Vec<Vec<EventRecord>>);

    #[async_trait]
    impl EventStream for Script {
        async fn poll(&mut self, _max: usize, _wait: Duration) -> Result<Vec<BusDelivery>, StoreError> {
            let step = if self.0.is_empty() { Vec::new() } else { self.0.remove(0) };
            Ok(step.into_iter().zip(1..).map(|(record, token)| BusDelivery { token, event: Ok(record) }).collect())
        }

        async fn ack(&mut self, _token: u64) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[derive(Default)]
    struct Fakes {
        inbox: Mutex<HashSet<String>>,
        applied: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Inbox for Fakes {
        async fn seen(&self, _consumer: &str, event_id: &str) -> Result<bool, StoreError> {
            Ok(self.inbox.lock().expect("inbox").contains(event_id))
        }

        async fn seen_among(&self, _consumer: &str, event_ids: &[String]) -> Result<HashSet<String>, StoreError> {
            let inbox = self.inbox.lock().expect("inbox");
            Ok(event_ids.iter().filter(|id| inbox.contains(*id)).cloned().collect())
        }

        async fn record(&self, _consumer: &str, event_ids: &[String], _now_ms: i64) -> Result<(), StoreError> {
            self.inbox.lock().expect("inbox").extend(event_ids.iter().cloned());
            Ok(())
        }
    }

    #[async_trait]
    impl EventHandler for Fakes {
        fn consumer(&self) -> &'static str {
            "test"
        }

        /// Everything but `OrderPaid`.
        fn wants(&self, event: &DomainEvent) -> bool {
            !matches!(event, DomainEvent::OrderPaid { .. })
        }

        async fn apply(&self, record: &EventRecord) -> Result<(), StoreError> {
            self.applied.lock().expect("applied").push(record.event_id.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn events_a_consumer_does_not_want_are_passed_by_unrecorded() {
        let paid = EventRecord::new(
            DomainEvent::OrderPaid {
                order_id: OrderId::new(4),
                user_id: UserId::new(1),
                merchant_id: MerchantId::new(2),
                amount_cents: 100,
            },
            5,
        );
        let cancelled = EventRecord::new(
            DomainEvent::OrderCancelled {
                order_id: OrderId::new(5),
                user_id: UserId::new(1),
                merchant_id: MerchantId::new(2),
            },
            5,
        );
        let mut stream = Script(vec![vec![paid.clone(), cancelled], vec![paid]]);
        let fakes = Fakes::default();
        let consumer = EventConsumer { handler: &fakes, inbox: &fakes, batch: 10 };
        assert_eq!(consumer.step(&mut stream, Duration::ZERO, 1).await.expect("step"), 1);
        assert_eq!(consumer.step(&mut stream, Duration::ZERO, 2).await.expect("step"), 0);
        assert_eq!(*fakes.applied.lock().expect("applied"), ["order_cancelled:5"]);
        let inbox = fakes.inbox.lock().expect("inbox").clone();
        assert_eq!(inbox, HashSet::from(["order_cancelled:5".to_owned()]), "no inbox row for what it passed by");
    }

    #[tokio::test]
    async fn a_consumer_applies_each_event_once_across_redeliveries_and_repeats_in_a_batch() {
        let cancelled = |id| {
            let event = DomainEvent::OrderCancelled {
                order_id: OrderId::new(id),
                user_id: UserId::new(1),
                merchant_id: MerchantId::new(2),
            };
            EventRecord::new(event, 5)
        };
        let mut stream = Script(vec![vec![cancelled(1), cancelled(2), cancelled(1)], vec![cancelled(2), cancelled(3)]]);
        let fakes = Fakes::default();
        let consumer = EventConsumer { handler: &fakes, inbox: &fakes, batch: 10 };
        assert_eq!(consumer.step(&mut stream, Duration::ZERO, 1).await.expect("step"), 2);
        assert_eq!(consumer.step(&mut stream, Duration::ZERO, 2).await.expect("step"), 1, "2 was applied before");
        let applied = fakes.applied.lock().expect("applied").clone();
        assert_eq!(applied, ["order_cancelled:1", "order_cancelled:2", "order_cancelled:3"]);
    }

    #[test]
    fn an_event_id_names_the_change_and_its_subject() {
        let paid = DomainEvent::OrderPaid {
            order_id: OrderId::new(7),
            user_id: UserId::new(1),
            merchant_id: MerchantId::new(2),
            amount_cents: 100,
        };
        assert_eq!(paid.event_id(), "order_paid:7");
        let refunded = DomainEvent::RefundSucceeded {
            refund_id: RefundId::new(9),
            payment_id: PaymentId::new(8),
            order_id: OrderId::new(7),
            amount_cents: 50,
        };
        assert_eq!(EventRecord::new(refunded, 5).event_id, "refund_succeeded:9");
    }
}
