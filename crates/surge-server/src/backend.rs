//! The backends a node runs on, chosen by configuration: the embedded mode
//! (SQLite, in-process ledger and keys, the durable log) or the distributed
//! mode (PostgreSQL, Redis or Redis Cluster, NATS JetStream or a Kafka-protocol
//! broker), each port on its own. The rest of the app sees only the ports.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use surge_domain::StoreError;
use surge_domain::aftersale::AfterSaleStore;
use surge_domain::catalog::CatalogStore;
use surge_domain::flashsale::{IntakeKeys, OrderQueue, SaleStore, StockLedger};
use surge_domain::fulfilment::FulfilmentStore;
use surge_domain::inventory::InventoryStore;
use surge_domain::order::{CheckoutStore, OrderStore, PendingOrders};
use surge_domain::outbox::{EventBus, Inbox, OutboxStore};
use surge_domain::payment::PaymentStore;
use surge_domain::runtime_config::{ConfigStore, SwitchStore};
use surge_domain::settlement::{LedgerStore, ReconciliationStore, StatementStore};
use surge_guard::rate::SharedLimiter;
use surge_store::RelationalStore;
use surge_store::behind::ScanJournal;
use surge_store::cache::{CachedSales, SaleCacheConfig};
use surge_store::memory::{MemoryIntakeKeys, MemoryLedger, MemoryPending};
use surge_store::postgres::PgStore;
use surge_store::queue::kafka::{KafkaQueue, KafkaQueueConfig};
use surge_store::queue::kafka_bus::KafkaBus;
use surge_store::queue::log::{LogQueue, LogQueueConfig};
use surge_store::queue::nats::{NatsQueue, NatsQueueConfig};
use surge_store::queue::nats_bus::NatsBus;
use surge_store::redis::{
    Algorithm, Durability, RedisConfig, RedisConn, RedisEvents, RedisIntakeKeys, RedisLedger, RedisPending,
    RedisRateLimiter,
};
use surge_store::sqlite::SqliteStore;

use crate::config::{QueueSettings, Settings, SqliteSettings, StoreSettings};

/// Every port the contexts need, with what it takes to close them.
pub struct Backend {
    pub catalog: Arc<dyn CatalogStore>,
    pub sales: Arc<dyn SaleStore>,
    pub orders: Arc<dyn OrderStore>,
    pub checkouts: Arc<dyn CheckoutStore>,
    pub inventory: Arc<dyn InventoryStore>,
    pub payments: Arc<dyn PaymentStore>,
    /// The double-entry ledger (`ledger` is the flash sales' stock ledger).
    pub ledger_store: Arc<dyn LedgerStore>,
    pub reconciliation: Arc<dyn ReconciliationStore>,
    pub statements: Arc<dyn StatementStore>,
    pub fulfilment: Arc<dyn FulfilmentStore>,
    pub aftersale: Arc<dyn AfterSaleStore>,
    pub switches: Arc<dyn SwitchStore>,
    pub config: Arc<dyn ConfigStore>,
    pub ledger: Arc<dyn StockLedger>,
    pub keys: Arc<dyn IntakeKeys>,
    pub pending: Arc<dyn PendingOrders>,
    pub queue: Arc<dyn OrderQueue>,
    /// The transactional outbox, the consumers' inbox, and the bus the
    /// outbox is published to (beside the queue, on the same broker).
    pub outbox: Arc<dyn OutboxStore>,
    pub inbox: Arc<dyn Inbox>,
    pub bus: Arc<dyn EventBus>,
    /// Cluster-wide per-customer intake limit, when configured.
    pub cluster_user_limit: Option<Arc<dyn SharedLimiter>>,
    /// The shared Redis, when there is one: the product cache's shared tier
    /// and the events every node listens to go through it.
    pub redis: Option<RedisConn>,
    relational: Arc<dyn RelationalStore>,
    log: Option<Arc<LogQueue>>,
}

/// The ports one relational store implements.
struct StorePorts {
    catalog: Arc<dyn CatalogStore>,
    sales: Arc<dyn SaleStore>,
    orders: Arc<dyn OrderStore>,
    checkouts: Arc<dyn CheckoutStore>,
    inventory: Arc<dyn InventoryStore>,
    payments: Arc<dyn PaymentStore>,
    ledger_store: Arc<dyn LedgerStore>,
    reconciliation: Arc<dyn ReconciliationStore>,
    statements: Arc<dyn StatementStore>,
    fulfilment: Arc<dyn FulfilmentStore>,
    aftersale: Arc<dyn AfterSaleStore>,
    switches: Arc<dyn SwitchStore>,
    config: Arc<dyn ConfigStore>,
    outbox: Arc<dyn OutboxStore>,
    inbox: Arc<dyn Inbox>,
}

impl StorePorts {
    fn of(store: &Arc<dyn RelationalStore>) -> Self {
        Self {
            catalog: store.clone(),
            sales: store.clone(),
            orders: store.clone(),
            checkouts: store.clone(),
            inventory: store.clone(),
            payments: store.clone(),
            ledger_store: store.clone(),
            reconciliation: store.clone(),
            statements: store.clone(),
            fulfilment: store.clone(),
            aftersale: store.clone(),
            switches: store.clone(),
            config: store.clone(),
            outbox: store.clone(),
            inbox: store.clone(),
        }
    }
}

impl Backend {
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let relational = open_relational(settings).await?;
        let StorePorts {
            catalog,
            sales,
            orders,
            checkouts,
            inventory,
            payments,
            ledger_store,
            reconciliation,
            statements,
            fulfilment,
            aftersale,
            switches,
            config,
            outbox,
            inbox,
        } = StorePorts::of(&relational);
        // Anyone may read a sale: lookups are served from memory, unknown
        // ids included.
        let sales: Arc<dyn SaleStore> = Arc::new(CachedSales::new(sales, &SaleCacheConfig::default()));

        let SharedState { ledger, keys, pending, cluster_user_limit, redis } = open_shared_state(settings).await?;
        let (queue, bus, log) = open_queue(settings).await?;
        Ok(Self {
            catalog,
            sales,
            orders,
            checkouts,
            inventory,
            payments,
            ledger_store,
            reconciliation,
            statements,
            fulfilment,
            aftersale,
            switches,
            config,
            outbox,
            inbox,
            bus,
            ledger,
            keys,
            pending,
            queue,
            cluster_user_limit,
            redis,
            relational,
            log,
        })
    }

    /// Is the queue shared with other nodes? Then it is not drained at start
    /// or stop: the other nodes' consumers are at it too.
    /// The embedded log's scan journal (write-behind tracking), in the
    /// embedded mode.
    pub fn scan_journal(&self) -> Option<Arc<dyn ScanJournal>> {
        self.log.as_ref().map(|log| Arc::new(log.journal()) as Arc<dyn ScanJournal>)
    }

    pub fn shared_queue(&self) -> bool {
        self.log.is_none()
    }

    /// The largest id in any table that holds minted ids.
    pub async fn max_id(&self) -> Result<i64, StoreError> {
        self.relational.max_id().await
    }

    pub async fn close(&self) {
        if let Some(log) = &self.log {
            log.close().await;
        }
        self.relational.close().await;
    }
}

/// What the nodes share besides the store: the stock ledger, the intake
/// keys and the pending views, in Redis or in this process (`shared.kind`).
struct SharedState {
    ledger: Arc<dyn StockLedger>,
    keys: Arc<dyn IntakeKeys>,
    pending: Arc<dyn PendingOrders>,
    /// Cluster-wide per-customer intake limit, when configured.
    cluster_user_limit: Option<Arc<dyn SharedLimiter>>,
    redis: Option<RedisConn>,
}

async fn open_shared_state(settings: &Settings) -> anyhow::Result<SharedState> {
    let Some(redis) = settings.shared.redis() else {
        return Ok(SharedState {
            ledger: Arc::new(MemoryLedger::default()),
            keys: Arc::new(MemoryIntakeKeys::default()),
            pending: Arc::new(MemoryPending::default()),
            cluster_user_limit: None,
            redis: None,
        });
    };
    let tls_ca_pem = match &redis.tls_ca_file {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    let config = RedisConfig {
        urls: redis.exposed_urls(),
        cluster: redis.cluster,
        namespace: redis.namespace.clone(),
        response_timeout: redis.response_timeout,
        tls_ca_pem,
        ..RedisConfig::default()
    };
    let conn = RedisConn::connect(&config).await.context("connecting to redis")?;
    let rate = settings.flash_sale.cluster_per_user_rate;
    let cluster_user_limit = (rate > 0).then(|| {
        let bucket = Algorithm::TokenBucket { capacity: rate, per_sec: f64::from(rate) };
        Arc::new(RedisRateLimiter::new(conn.clone(), &redis.namespace, "intake-user", bucket)) as Arc<dyn SharedLimiter>
    });
    let durability = Durability { replicas: redis.wait_replicas, timeout: redis.wait_timeout };
    let ledger = RedisLedger::with_durability(conn.clone(), &redis.namespace, durability)
        .with_events(RedisEvents::new(conn.clone(), &redis.namespace))
        // A claim lives as long as its reservation: a node that dies
        // mid-request frees both at once.
        .with_claims(settings.flash_sale.reservation_timeout);
    let claim_ttl = settings.http.request_budget;
    Ok(SharedState {
        ledger: Arc::new(ledger),
        keys: Arc::new(RedisIntakeKeys::new(conn.clone(), &redis.namespace, claim_ttl, redis.key_ttl)),
        pending: Arc::new(RedisPending::new(conn.clone(), &redis.namespace, settings.flash_sale.payment_timeout)),
        cluster_user_limit,
        redis: Some(conn),
    })
}

/// The queue between intake and the consumer and the event bus beside it:
/// on a Kafka-protocol broker, NATS JetStream, or the embedded log (which
/// is also returned, to be drained and closed).
async fn open_queue(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn OrderQueue>, Arc<dyn EventBus>, Option<Arc<LogQueue>>)> {
    Ok(match &settings.queue {
        QueueSettings::Log(_) => {
            let page_cache_kib = match &settings.store {
                StoreSettings::Sqlite(sqlite) => sqlite.page_cache_kib,
                StoreSettings::Postgres(_) => LogQueueConfig::default().page_cache_kib,
            };
            let config = LogQueueConfig {
                batch_max: settings.flash_sale.queue_batch,
                page_cache_kib,
                ..LogQueueConfig::default()
            };
            let log = Arc::new(LogQueue::open(&settings.data_dir, config).await.context("opening the queue")?);
            (log.clone(), Arc::new(log.bus()), Some(log))
        }
        QueueSettings::Nats(nats) => {
            let config: NatsQueueConfig = nats.into();
            let queue = NatsQueue::open(&config).await.context("connecting to NATS JetStream")?;
            let bus = NatsBus::open(&config).await.context("opening the event stream on NATS JetStream")?;
            (Arc::new(queue), Arc::new(bus), None)
        }
        QueueSettings::Kafka(kafka) => {
            if let Some(ca) = &kafka.tls_ca_file {
                // librdkafka would only say it can't verify the brokers.
                std::fs::read(ca).with_context(|| format!("reading queue.tls_ca_file {}", ca.display()))?;
            }
            let config: KafkaQueueConfig = kafka.into();
            let queue = KafkaQueue::open(&config).await.context("connecting to the Kafka brokers")?;
            let bus = KafkaBus::open(&config).await.context("opening the event topic on the Kafka brokers")?;
            (Arc::new(queue), Arc::new(bus), None)
        }
    })
}

async fn open_relational(settings: &Settings) -> anyhow::Result<Arc<dyn RelationalStore>> {
    Ok(match &settings.store {
        StoreSettings::Sqlite(sqlite) => Arc::new(open_sqlite(sqlite, &settings.data_dir).await?),
        StoreSettings::Postgres(postgres) => {
            Arc::new(PgStore::open(&postgres.into()).await.context("opening PostgreSQL")?)
        }
    })
}

pub async fn open_sqlite(sqlite: &SqliteSettings, data_dir: &Path) -> anyhow::Result<SqliteStore> {
    let config = sqlite.config(data_dir);
    SqliteStore::open(&config).await.with_context(|| format!("opening {}", config.path.display()))
}

/// Runs the migrations of whichever store the settings name (`surge migrate`).
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    open_relational(settings).await?.close().await;
    Ok(())
}
