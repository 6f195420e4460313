//! The outbox's background work on a node: the relay that publishes what
//! the stores' transactions wrote into the outbox to the event bus, and
//! the consumers that apply the bus's events (today the notifications;
//! fulfilment and the read models join them). Every node runs both: the
//! relays claim disjoint rows, and the bus hands each event of a consumer
//! to one node at a time.

use std::sync::Arc;
use std::time::Duration;

use surge_domain::Clock;
use surge_domain::aftersale::{AfterSale, ReturnSaga};
use surge_domain::fulfilment::{Fulfilment, ShipmentOpener};
use surge_domain::notification::{Notifications, Notifier};
use surge_domain::outbox::{EventBus, EventConsumer, EventHandler, EventStream, Inbox, OutboxRelay, OutboxStore};
use tokio::sync::watch;

use crate::backend::Backend;
use crate::metrics::{Metrics, OUTBOX_BACKLOG, OUTBOX_LAG, OUTBOX_PUBLISHED};

/// Events per relay or consumer step.
const BATCH: u32 = 256;
/// How long the relay sleeps when the outbox is empty: the longest an event
/// waits for its publish.
const RELAY_IDLE: Duration = Duration::from_millis(50);
/// A claim keeps other relays away this long: far past a publish, short
/// enough that a dead node's claims are soon taken again.
const CLAIM_LEASE: Duration = Duration::from_secs(10);
/// Published events are kept this long, then pruned (with the inbox rows
/// of that age: no bus redelivers an event that old).
const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often the relay sets the backlog gauges.
const GAUGES: Duration = Duration::from_secs(1);
/// How often it prunes what passed `RETENTION`: a day's rows leave a minute
/// at a time.
const PRUNING: Duration = Duration::from_secs(60);
/// How long a consumer waits on the bus for new events before looking again.
const CONSUMER_WAIT: Duration = Duration::from_millis(200);
/// Pause after a failed step, so a dead store or broker isn't hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(500);

pub struct OutboxWorkers {
    pub outbox: Arc<dyn OutboxStore>,
    pub inbox: Arc<dyn Inbox>,
    pub bus: Arc<dyn EventBus>,
    pub handlers: Vec<Arc<dyn EventHandler>>,
    pub clock: Arc<dyn Clock>,
    /// `surge_outbox_published_total`.
    pub published: metrics::Counter,
    /// `surge_outbox_backlog` and `surge_outbox_lag_seconds`: unpublished
    /// events, and how long the oldest has waited.
    pub backlog: metrics::Gauge,
    pub lag: metrics::Gauge,
}

impl OutboxWorkers {
    /// The relay over the backend's outbox and bus, and the consumers.
    pub fn wire(
        backend: &Backend,
        fulfilment: &Arc<Fulfilment>,
        after_sale: &Arc<AfterSale>,
        metrics: &Metrics,
        clock: &Arc<dyn Clock>,
        notifier: Arc<dyn Notifier>,
    ) -> Self {
        let notifications =
            Notifications { orders: Arc::clone(&backend.orders), payments: Arc::clone(&backend.payments), notifier };
        let opener = ShipmentOpener { fulfilment: Arc::clone(fulfilment), orders: Arc::clone(&backend.orders) };
        Self {
            outbox: Arc::clone(&backend.outbox),
            inbox: Arc::clone(&backend.inbox),
            bus: Arc::clone(&backend.bus),
            handlers: vec![
                Arc::new(notifications),
                Arc::new(opener),
                Arc::new(ReturnSaga { after_sale: Arc::clone(after_sale) }),
            ],
            clock: Arc::clone(clock),
            published: metrics.counter(OUTBOX_PUBLISHED, &[]),
            backlog: metrics.gauge(OUTBOX_BACKLOG, &[]),
            lag: metrics.gauge(OUTBOX_LAG, &[]),
        }
    }

    pub fn spawn(self: &Arc<Self>, background: &mut tokio::task::JoinSet<()>, stopped: &watch::Receiver<bool>) {
        let (workers, until) = (Arc::clone(self), stopped.clone());
        background.spawn(async move { workers.relay_until(until).await });
        for handler in &self.handlers {
            let (workers, until, handler) = (Arc::clone(self), stopped.clone(), Arc::clone(handler));
            background.spawn(async move { workers.consume_until(handler, until).await });
        }
    }

    /// Publishes the outbox as fast as it fills, pausing when it is empty.
    async fn relay_until(&self, mut stopped: watch::Receiver<bool>) {
        let relay = OutboxRelay { outbox: &*self.outbox, bus: &*self.bus, batch: BATCH, lease: CLAIM_LEASE };
        let mut gauged: Option<tokio::time::Instant> = None;
        let mut pruned: Option<tokio::time::Instant> = None;
        while !*stopped.borrow_and_update() {
            if pruned.is_none_or(|at| at.elapsed() >= PRUNING) {
                self.prune().await;
                pruned = Some(tokio::time::Instant::now());
            }
            if gauged.is_none_or(|at| at.elapsed() >= GAUGES) {
                self.gauge().await;
                gauged = Some(tokio::time::Instant::now());
            }
            let pause = match relay.step(self.clock.now_ms()).await {
                Ok(published) => {
                    self.published.increment(published as u64);
                    if published == BATCH as usize { Duration::ZERO } else { RELAY_IDLE }
                }
                Err(error) => {
                    tracing::warn!(%error, "outbox relay step failed; the events wait in the outbox");
                    ERROR_PAUSE
                }
            };
            tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn prune(&self) {
        let retention = i64::try_from(RETENTION.as_millis()).unwrap_or(i64::MAX);
        if let Err(error) = self.outbox.prune(self.clock.now_ms() - retention).await {
            tracing::warn!(%error, "published outbox events not pruned");
        }
    }

    async fn gauge(&self) {
        let now_ms = self.clock.now_ms();
        match self.outbox.backlog().await {
            Ok(backlog) => {
                self.backlog.set(backlog.unpublished as f64);
                let waited = backlog.oldest_ms.map_or(0, |oldest| (now_ms - oldest).max(0));
                self.lag.set(waited as f64 / 1000.0);
            }
            Err(error) => tracing::warn!(%error, "outbox backlog unknown"),
        }
    }

    /// Applies the bus's events with `handler` until stopped.
    async fn consume_until(&self, handler: Arc<dyn EventHandler>, mut stopped: watch::Receiver<bool>) {
        let consumer = EventConsumer { handler: &*handler, inbox: &*self.inbox, batch: BATCH as usize };
        let mut stream: Option<Box<dyn EventStream>> = None;
        while !*stopped.borrow_and_update() {
            let step = match &mut stream {
                Some(stream) => consumer.step(&mut **stream, CONSUMER_WAIT, self.clock.now_ms()).await.map(drop),
                None => self.bus.subscribe(handler.consumer()).await.map(|subscribed| stream = Some(subscribed)),
            };
            if let Err(error) = step {
                tracing::warn!(consumer = handler.consumer(), %error, "event consumer step failed; retrying");
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => return,
                    _ = tokio::time::sleep(ERROR_PAUSE) => {}
                }
            }
        }
    }
}
