//! The business contexts wired to the backend's adapters: the catalog's
//! cache tiers, then each context's service on its ports.

use std::sync::Arc;

use surge_domain::aftersale::{AfterSale, AfterSalePorts};
use surge_domain::catalog::CatalogStore;
use surge_domain::flashsale::{FlashSalePorts, FlashSales};
use surge_domain::fulfilment::{Fulfilment, TrackingDocs};
use surge_domain::inventory::Inventory;
use surge_domain::order::{Checkouts, Orders, StockKeeper};
use surge_domain::payment::Payments;
use surge_domain::settlement::{Settlement, SettlementPorts};
use surge_domain::{Clock, IdGenerator};
use surge_store::behind::{BehindConfig, TrackingFlusher, WriteBehind};
use surge_store::cache::{CacheMetrics, CachedCatalog, ProductCacheConfig};
use surge_store::redis::RedisCatalog;
use surge_store::redis::{Durability, RedisTracking};
use surge_store::sandbox::SandboxProvider;

use crate::backend::Backend;
use crate::config::{Settings, TrackingMode};
use crate::limits::IntakeLimits;
use crate::metrics::{CACHE_LOADS, CACHE_REQUESTS, Metrics};
use crate::startup::CLOCK_SKEW_MAX;

/// The product catalog as handlers read it: each node's memory, over Redis
/// in the distributed mode, over the store.
pub(crate) struct CatalogTiers {
    /// The node's own tier, which other nodes' events evict from.
    pub(crate) local: Arc<CachedCatalog<dyn CatalogStore>>,
    /// What handlers and the sale context read through (`local`).
    pub(crate) read: Arc<dyn CatalogStore>,
}

/// The business contexts, wired to their adapters.
pub(crate) struct Contexts {
    pub(crate) flash_sales: Arc<FlashSales>,
    pub(crate) orders: Arc<Orders>,
    pub(crate) checkouts: Arc<Checkouts>,
    pub(crate) payments: Arc<Payments>,
    pub(crate) settlement: Arc<Settlement>,
    pub(crate) inventory: Arc<Inventory>,
    pub(crate) fulfilment: Arc<Fulfilment>,
    /// The scan journal's flusher (embedded mode): scans are written
    /// behind the cache when `fulfilment.tracking.mode` says; the journal
    /// is flushed at start and at shutdown whatever the mode.
    pub(crate) tracking: Option<Arc<dyn TrackingFlusher>>,
    pub(crate) after_sale: Arc<AfterSale>,
    pub(crate) intake_limits: Arc<IntakeLimits>,
}

/// Each node's memory over the shared Redis (distributed mode) over the
/// store.
pub(crate) fn catalog_tiers(settings: &Settings, backend: &Backend, metrics: &Metrics) -> CatalogTiers {
    let config = ProductCacheConfig::from(&settings.cache);
    let cache_metrics = |cache: &'static str| CacheMetrics {
        hits: metrics.counter(CACHE_REQUESTS, &[("cache", cache), ("result", "hit")]),
        misses: metrics.counter(CACHE_REQUESTS, &[("cache", cache), ("result", "miss")]),
        loads: metrics.counter(CACHE_LOADS, &[("cache", cache)]),
    };
    let shared: Arc<dyn CatalogStore> = match backend.redis.as_ref().zip(settings.shared.redis()) {
        Some((conn, redis)) => Arc::new(RedisCatalog::new(
            Arc::clone(&backend.catalog),
            conn.clone(),
            &redis.namespace,
            &config,
            cache_metrics("product_redis"),
        )),
        None => Arc::clone(&backend.catalog),
    };
    let local = Arc::new(CachedCatalog::new(shared, &config, cache_metrics("product")));
    CatalogTiers { read: local.clone(), local }
}

/// The flash-sale and order contexts on the backend's adapters.
pub(crate) fn wire_contexts(
    settings: &Settings,
    backend: &Backend,
    catalog: &CatalogTiers,
    ids: &Arc<IdGenerator>,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<Contexts> {
    let sale_settings = &settings.flash_sale;
    let ports = FlashSalePorts {
        sales: Arc::clone(&backend.sales),
        catalog: Arc::clone(&catalog.read),
        ledger: Arc::clone(&backend.ledger),
        queue: Arc::clone(&backend.queue),
        orders: Arc::clone(&backend.orders),
        pending: Arc::clone(&backend.pending),
        keys: Arc::clone(&backend.keys),
    };
    let flash_sales = Arc::new(
        FlashSales::new(ports, Arc::clone(ids), Arc::clone(clock))
            .with_intake_max(settings.http.request_budget + CLOCK_SKEW_MAX),
    );
    let orders = Arc::new(Orders::new(
        Arc::clone(&backend.orders),
        Arc::clone(&backend.pending),
        Arc::clone(&flash_sales) as Arc<dyn StockKeeper>,
        sale_settings.payment_timeout,
        Arc::clone(clock),
    ));
    let checkouts = Arc::new(Checkouts::new(
        Arc::clone(&catalog.read),
        Arc::clone(&backend.checkouts),
        Arc::clone(&flash_sales) as Arc<dyn StockKeeper>,
        Arc::clone(ids),
        Arc::clone(clock),
        sale_settings.payment_timeout,
    ));
    let sandbox = &settings.payments.sandbox;
    let provider =
        SandboxProvider::new(sandbox.secret.as_ref().map(|secret| secret.expose()), sandbox.pay_url.expose());
    let provider = match &sandbox.url {
        Some(url) => provider.at(url.expose()).map_err(|error| anyhow::anyhow!("payments.sandbox.url: {error}"))?,
        None => provider,
    };
    let payments = Arc::new(
        Payments::new(
            Arc::clone(&backend.payments),
            Arc::clone(&orders),
            Arc::new(provider),
            Arc::clone(&flash_sales) as Arc<dyn StockKeeper>,
            Arc::clone(ids),
            Arc::clone(clock),
        )
        .with_commission_bps(settings.payments.commission_bps),
    );
    let settlement_ports = SettlementPorts {
        ledger: Arc::clone(&backend.ledger_store),
        reconciliation: Arc::clone(&backend.reconciliation),
        statements: Arc::clone(&backend.statements),
    };
    let settlement = Arc::new(Settlement::new(settlement_ports, Arc::clone(ids), Arc::clone(clock)));
    let inventory =
        Arc::new(Inventory::new(Arc::clone(&backend.inventory), Arc::clone(&catalog.read), Arc::clone(clock)));
    let intake_limits = Arc::new(IntakeLimits::new(sale_settings.per_user_rate, sale_settings.per_sale_rate));
    let (fulfilment, tracking) = wire_fulfilment(settings, backend, clock)?;
    let after_sale = wire_after_sale(settings, backend, (&orders, &fulfilment, &payments, &flash_sales), ids, clock);
    Ok(Contexts {
        flash_sales,
        orders,
        checkouts,
        payments,
        settlement,
        inventory,
        fulfilment,
        tracking,
        after_sale,
        intake_limits,
    })
}

/// The flusher of the scans written behind the cache.
type Flusher = Arc<dyn TrackingFlusher>;

/// Fulfilment, its scans written through or behind the cache: the
/// documents in Redis when the nodes share one, else in this node's memory
/// over the embedded log's journal.
fn wire_fulfilment(
    settings: &Settings,
    backend: &Backend,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<(Arc<Fulfilment>, Option<Flusher>)> {
    let fulfilment = Fulfilment::new(Arc::clone(&backend.fulfilment), (&settings.fulfilment).into(), Arc::clone(clock))
        .with_mode(settings.fulfilment.dispatch.into());
    let tracking = &settings.fulfilment.tracking;
    let config = BehindConfig { delay: tracking.delay, batch: tracking.batch, max_pending: tracking.max_pending };
    let store = Arc::clone(&backend.fulfilment);
    let behind: (Arc<dyn TrackingDocs>, Flusher) = match (&backend.redis, settings.shared.redis()) {
        (Some(conn), Some(redis)) => {
            // In either mode: a node writing scans through flushes what
            // an earlier run left in Redis before it serves.
            let durability = Durability { replicas: redis.wait_replicas, timeout: redis.wait_timeout };
            let docs = Arc::new(RedisTracking::new(conn.clone(), &redis.namespace, store, config, durability));
            (Arc::clone(&docs) as Arc<dyn TrackingDocs>, docs as Flusher)
        }
        _ => {
            // In the embedded mode the journal is flushed at start whatever
            // the mode (an earlier run may have written behind).
            let Some(journal) = backend.scan_journal() else {
                anyhow::ensure!(
                    tracking.mode == TrackingMode::WriteThrough,
                    "fulfilment.tracking.mode = \"write_behind\" needs the embedded log or shared.kind = \"redis\""
                );
                return Ok((Arc::new(fulfilment), None));
            };
            let docs = Arc::new(WriteBehind::new(journal, store, config));
            (Arc::clone(&docs) as Arc<dyn TrackingDocs>, docs as Flusher)
        }
    };
    let fulfilment = match tracking.mode {
        TrackingMode::WriteBehind => fulfilment.with_write_behind(behind.0),
        TrackingMode::WriteThrough => fulfilment,
    };
    Ok((Arc::new(fulfilment), Some(behind.1)))
}

/// After-sale over the contexts it moves.
fn wire_after_sale(
    settings: &Settings,
    backend: &Backend,
    (orders, fulfilment, payments, flash_sales): (&Arc<Orders>, &Arc<Fulfilment>, &Arc<Payments>, &Arc<FlashSales>),
    ids: &Arc<IdGenerator>,
    clock: &Arc<dyn Clock>,
) -> Arc<AfterSale> {
    let ports = AfterSalePorts {
        store: Arc::clone(&backend.aftersale),
        orders: Arc::clone(orders),
        fulfilment: Arc::clone(fulfilment),
        payments: Arc::clone(payments),
        stock: Arc::clone(flash_sales) as Arc<dyn StockKeeper>,
    };
    Arc::new(AfterSale::new(ports, Arc::clone(ids), Arc::clone(clock)).with_policy((&settings.returns).into()))
}
