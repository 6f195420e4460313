//! Cluster-wide events over Redis pub/sub, so that every node can drop what
//! it holds locally the moment another node changes it:
//!
//! - a product was written: every node evicts it from its in-process cache;
//! - a sale sold out: every node sets its sold-out flag and stops sending
//!   deductions for it;
//! - a sold-out sale got stock back: every node clears the flag;
//! - a switch or a run-time setting changed: every node reloads them from
//!   the store (the config centre); the settings' version in Redis lets a
//!   node that missed the event find out by polling.
//!
//! Pub/sub delivers at most once: a node that was disconnected misses what
//! was published meanwhile. So a (re)subscription is reported to the
//! handler ([`Signal::Subscribed`]), which drops whatever it cached, and
//! nothing depends on an event for correctness: the ledger's own answer and
//! the sweeper still set and clear the flags, and cache entries still
//! expire. On a Redis Cluster a `PUBLISH` reaches the subscribers of every
//! node, so one subscription to any reachable node is enough.

use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use surge_domain::{ProductId, SaleId, StoreError};
use tokio::task::JoinHandle;

use super::{RedisConn, unavailable};

/// What changed, as carried on the channel (`p:<id>`, `s:<id>`, `r:<id>`,
/// `c:<version>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    ProductChanged(ProductId),
    SoldOut(SaleId),
    Restocked(SaleId),
    /// Switches or run-time settings changed; this is their new version.
    SettingsChanged(u64),
}

impl Event {
    fn encode(self) -> String {
        match self {
            Self::ProductChanged(id) => format!("p:{}", id.get()),
            Self::SoldOut(id) => format!("s:{}", id.get()),
            Self::Restocked(id) => format!("r:{}", id.get()),
            Self::SettingsChanged(version) => format!("c:{version}"),
        }
    }
}

impl FromStr for Event {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let (kind, id) = raw.split_once(':').ok_or_else(|| format!("no kind in event {raw:?}"))?;
        if kind == "c" {
            let version = id.parse().map_err(|_| format!("bad version in event {raw:?}"))?;
            return Ok(Self::SettingsChanged(version));
        }
        let id: i64 = id.parse().map_err(|_| format!("bad id in event {raw:?}"))?;
        match kind {
            "p" => Ok(Self::ProductChanged(ProductId::new(id))),
            "s" => Ok(Self::SoldOut(SaleId::new(id))),
            "r" => Ok(Self::Restocked(SaleId::new(id))),
            _ => Err(format!("unknown event {raw:?}")),
        }
    }
}

/// What the subscriber hands its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Event(Event),
    /// The subscription is (again) in place; events published while it was
    /// not were lost.
    Subscribed,
}

/// Publishes events on the deployment's channel.
#[derive(Clone)]
pub struct RedisEvents {
    conn: RedisConn,
    channel: String,
}

impl RedisEvents {
    pub fn new(conn: RedisConn, namespace: &str) -> Self {
        Self { conn, channel: channel(namespace) }
    }

    pub async fn publish(&self, event: Event) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(event.encode())
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    /// Publishes without waiting: events are hints, and the write that
    /// caused one must not wait for, or fail with, its broadcast.
    pub fn announce(&self, event: Event) {
        let events = self.clone();
        tokio::spawn(async move {
            if let Err(error) = events.publish(event).await {
                tracing::debug!(?event, %error, "event not published");
            }
        });
    }
}

fn channel(namespace: &str) -> String {
    format!("{namespace}:events")
}

/// The version of the deployment's switches and run-time settings: a
/// counter in Redis that every change through any node bumps (and
/// announces), and every node polls, so a missed event is caught up.
#[derive(Clone)]
pub struct RedisSettingsVersion {
    conn: RedisConn,
    key: String,
    events: RedisEvents,
}

impl RedisSettingsVersion {
    pub fn new(conn: RedisConn, namespace: &str) -> Self {
        Self { key: format!("{namespace}:settings-version"), events: RedisEvents::new(conn.clone(), namespace), conn }
    }
}

#[async_trait::async_trait]
impl surge_domain::runtime_config::SettingsVersion for RedisSettingsVersion {
    async fn bump(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let version: u64 = redis::cmd("INCR").arg(&self.key).query_async(&mut conn).await.map_err(unavailable)?;
        self.events.announce(Event::SettingsChanged(version));
        Ok(version)
    }

    async fn current(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let version: Option<u64> =
            redis::cmd("GET").arg(&self.key).query_async(&mut conn).await.map_err(unavailable)?;
        Ok(version.unwrap_or(0))
    }
}

/// How often a quiet subscription is checked with a PING; a server that
/// stopped answering is left for the next one.
const HEALTH_CHECK: Duration = Duration::from_secs(2);
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// Subscribes to the deployment's channel on the first reachable of
/// `urls` and calls `handler` for every event, resubscribing (to the next
/// URL) whenever the connection is lost. Runs until the task is aborted.
pub fn subscribe(
    urls: Vec<String>,
    namespace: &str,
    handler: impl Fn(Signal) + Send + Sync + 'static,
) -> JoinHandle<()> {
    let channel = channel(namespace);
    tokio::spawn(async move {
        for url in urls.iter().cycle() {
            match listen(url, &channel, &handler).await {
                Ok(()) => {
                    tracing::warn!(url = %crate::without_credentials(url), "event subscription closed; subscribing again")
                }
                Err(error) => {
                    tracing::debug!(url = %crate::without_credentials(url), %error, "event subscription failed")
                }
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    })
}

async fn listen(url: &str, channel: &str, handler: &(impl Fn(Signal) + Send + Sync)) -> Result<(), StoreError> {
    let client = redis::Client::open(url).map_err(unavailable)?;
    let connect = tokio::time::timeout(HEALTH_CHECK, client.get_async_pubsub());
    let mut pubsub =
        connect.await.map_err(|_| StoreError::Unavailable("redis: connect timed out".into()))?.map_err(unavailable)?;
    pubsub.subscribe(channel).await.map_err(unavailable)?;
    handler(Signal::Subscribed);
    let (mut sink, mut messages) = pubsub.split();
    let mut health = tokio::time::interval(HEALTH_CHECK);
    health.reset();
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return Ok(()) };
                let payload: String = message.get_payload().unwrap_or_default();
                match payload.parse() {
                    Ok(event) => handler(Signal::Event(event)),
                    Err(error) => tracing::warn!(%error, "ignoring an event"),
                }
            }
            _ = health.tick() => {
                let ping = tokio::time::timeout(HEALTH_CHECK, sink.ping::<redis::Value>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return Err(StoreError::Unavailable("redis: subscription stopped answering".into()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {

    use surge_domain::flashsale::{Deduction, FlashSale, Reservation, StockLedger};
    use surge_domain::order::SaleHoldings;
    use surge_domain::{Cents, MerchantId, OrderId, UserId};
    use tokio::sync::mpsc;

    use super::*;
    use crate::flow_contract::redis_conns;
    use crate::redis::RedisLedger;

    /// Every node hears what any node announces: the ledger's sell-out and
    /// restock, and a product change. On the cluster the subscriber listens
    /// on another node than the one that owns the sale's slot may be.
    #[tokio::test]
    async fn the_ledger_announces_a_sell_out_and_its_restock_to_every_subscriber() {
        for (name, conn, namespace) in redis_conns().await {
            // On the cluster: subscribed through the last seed node, which
            // need not be the master that owns the sale's slot.
            let urls = match name {
                "redis" => vec![std::env::var("SURGE_TEST_REDIS_URL").unwrap_or("redis://127.0.0.1:6379".into())],
                _ => std::env::var("SURGE_TEST_REDIS_CLUSTER_URLS")
                    .unwrap_or("redis://127.0.0.1:7005,redis://127.0.0.1:7004".into())
                    .rsplit(',')
                    .map(str::to_owned)
                    .collect(),
            };
            let (tx, mut heard) = mpsc::unbounded_channel();
            let subscription = subscribe(urls, &namespace, move |signal| {
                let _ = tx.send(signal);
            });
            let next = async |heard: &mut mpsc::UnboundedReceiver<Signal>| {
                tokio::time::timeout(Duration::from_secs(10), heard.recv()).await.expect("an event").expect("open")
            };
            assert_eq!(next(&mut heard).await, Signal::Subscribed, "{name}");

            let ledger = RedisLedger::new(conn.clone(), &namespace).with_events(RedisEvents::new(conn, &namespace));
            let sale = FlashSale {
                id: SaleId::new(77),
                product_id: ProductId::new(1),
                merchant_id: MerchantId::new(1),
                stock: 1,
                price_cents: Cents::from_trusted(1),
                starts_at: time::OffsetDateTime::UNIX_EPOCH,
                ends_at: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
                per_user_limit: 1,
            };
            ledger.load(&sale, &SaleHoldings::default()).await.expect("load");
            let last = Reservation { order: OrderId::new(1), user: UserId::new(5), quantity: 1 };
            assert_eq!(ledger.try_deduct(sale.id, last, 1).await, Ok(Deduction::Done { stock_left: 0 }));
            assert_eq!(next(&mut heard).await, Signal::Event(Event::SoldOut(sale.id)), "{name}");
            ledger.release(sale.id, last).await.expect("release");
            assert_eq!(next(&mut heard).await, Signal::Event(Event::Restocked(sale.id)), "{name}");
            subscription.abort();
        }
    }

    #[test]
    fn events_round_trip_through_their_wire_form() {
        for event in
            [Event::ProductChanged(ProductId::new(7)), Event::SoldOut(SaleId::new(8)), Event::Restocked(SaleId::new(9))]
        {
            assert_eq!(event.encode().parse::<Event>(), Ok(event));
        }
        assert!("x:1".parse::<Event>().is_err());
        assert!("p:abc".parse::<Event>().is_err());
        assert!("p".parse::<Event>().is_err());
    }
}
