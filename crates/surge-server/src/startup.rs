//! Building and running the app: `main` stays thin, tests build the same app
//! on port 0 and ask it for its port.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use surge_domain::IdGenerator;
use surge_domain::catalog::{Catalog, CatalogStore};
use surge_domain::flashsale::{FlashSalePorts, FlashSales};
use surge_domain::notification::Notifier;
use surge_domain::order::Orders;
use surge_guard::breaker::{BreakerState, CircuitBreaker, Observer};
use surge_guard::bulkhead::{AdaptiveLimit, Bulkhead};
use surge_guard::rate::{Limiter, TokenBucket};
use surge_guard::retry::{Retries, RetrySettings};
use surge_guard::switch::Switchboard;
use surge_store::cache::{CacheMetrics, CachedCatalog, ProductCacheConfig};
use surge_store::notify::{NOTIFICATION_SWITCH, NotifyMetrics, NotifySink, QueuedNotifier, SinkGuards, webhook_client};
use surge_store::ops::{ConfigStore, SettingsVersion};
use surge_store::redis::{Event, RedisCatalog, RedisSettingsVersion, Signal, subscribe};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::retry::budget::TpsBudget;

use crate::auth::{Keys, load_or_create_secret};
use crate::backend::Backend;
use crate::config::Settings;
use crate::config_centre::ConfigCentre;
use crate::dependency_guard::DependencyGuard;
use crate::limits::IntakeLimits;
use crate::metrics::{
    CACHE_LOADS, CACHE_REQUESTS, EVENTS, LEDGER_DIFFERENCE, LEDGER_REPAIRED, Metrics, NOTIFICATIONS, ORDERS_FAILED,
    SALES_SERVED,
};
use crate::readiness::Readiness;
use crate::routes::{self, EdgeLimits, OverloadGuards};
use crate::serve::{ConnectionLimits, serve};
use crate::state::{AppState, Parts};
use crate::tunables::{LiveConfig, TUNABLES, Tunables, aimd};
use crate::workers::Workers;

/// How long readiness waits for a dependency before calling it down.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Application {
    listener: TcpListener,
    router: Router,
    ops: Option<(TcpListener, Router)>,
    shutdown_grace: Duration,
    connection_limits: ConnectionLimits,
    backend: Arc<Backend>,
    workers: Arc<Workers>,
    config_centre: Arc<ConfigCentre>,
    dependency_guard: Arc<DependencyGuard>,
    /// The subscription to the other nodes' events (distributed mode).
    events: Option<Subscription>,
}

/// A background task that ends with its owner.
struct Subscription(tokio::task::JoinHandle<()>);

impl Drop for Subscription {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Applies the other nodes' events to this node's local state.
struct EventListener {
    catalog: Arc<CachedCatalog<dyn CatalogStore>>,
    flash_sales: Arc<FlashSales>,
    config_centre: Arc<ConfigCentre>,
    metrics: Arc<Metrics>,
}

impl EventListener {
    fn on(&self, signal: Signal) {
        let kind = match signal {
            Signal::Subscribed => {
                // Whatever changed while unsubscribed went unheard.
                self.catalog.forget_all();
                let centre = Arc::clone(&self.config_centre);
                tokio::spawn(async move { centre.catch_up().await });
                "subscribed"
            }
            Signal::Event(Event::SettingsChanged(version)) => {
                self.config_centre.heard(version);
                "settings_changed"
            }
            Signal::Event(Event::ProductChanged(id)) => {
                let catalog = Arc::clone(&self.catalog);
                tokio::spawn(async move { catalog.forget(id).await });
                "product_changed"
            }
            Signal::Event(Event::SoldOut(sale)) => {
                let flash_sales = Arc::clone(&self.flash_sales);
                tokio::spawn(async move {
                    if let Err(error) = flash_sales.sold_out_elsewhere(sale).await {
                        tracing::debug!(%error, sale_id = %sale, "sold-out event not applied");
                    }
                });
                "sold_out"
            }
            Signal::Event(Event::Restocked(sale)) => {
                self.flash_sales.restocked_elsewhere(sale);
                "restocked"
            }
        };
        self.metrics.counter(EVENTS, &[("event", kind)]).increment(1);
    }
}

impl Application {
    /// Opens the stores, wires the contexts and binds the listeners.
    /// `configured` is what the layers of configuration say; run-time
    /// changes stored by the config centre are applied on top.
    pub async fn build(configured: &Settings) -> anyhow::Result<Self> {
        configured.validate().map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(&configured.data_dir)
            .with_context(|| format!("creating data_dir {}", configured.data_dir.display()))?;
        // No secret, no start: checked before any store is touched.
        let secret = load_or_create_secret(&configured.auth, &configured.data_dir)?;
        let backend = Backend::open(configured).await?;
        let settings = &with_stored_tunables(configured, backend.config.as_ref()).await?;
        let metrics = Arc::new(Metrics::new());

        let cache_metrics = CacheMetrics {
            hits: metrics.counter(CACHE_REQUESTS, &[("cache", "product"), ("result", "hit")]),
            misses: metrics.counter(CACHE_REQUESTS, &[("cache", "product"), ("result", "miss")]),
            loads: metrics.counter(CACHE_LOADS, &[("cache", "product")]),
        };
        // Two tiers in the distributed mode: each node's memory over the
        // shared Redis over PostgreSQL.
        let shared_tier: Arc<dyn CatalogStore> = match &backend.redis {
            Some(conn) => Arc::new(RedisCatalog::new(
                Arc::clone(&backend.catalog),
                conn.clone(),
                &settings.redis.namespace,
                &product_cache(settings),
                CacheMetrics {
                    hits: metrics.counter(CACHE_REQUESTS, &[("cache", "product_redis"), ("result", "hit")]),
                    misses: metrics.counter(CACHE_REQUESTS, &[("cache", "product_redis"), ("result", "miss")]),
                    loads: metrics.counter(CACHE_LOADS, &[("cache", "product_redis")]),
                },
            )),
            None => Arc::clone(&backend.catalog),
        };
        let cached = Arc::new(CachedCatalog::new(shared_tier, &product_cache(settings), cache_metrics));
        let store: Arc<dyn CatalogStore> = cached.clone();
        let ids = Arc::new(IdGenerator::new(settings.node_id).map_err(anyhow::Error::msg)?);

        let sale_settings = &settings.flash_sale;
        let flash_sales = Arc::new(
            FlashSales::new(
                FlashSalePorts {
                    sales: Arc::clone(&backend.sales),
                    catalog: Arc::clone(&store),
                    ledger: Arc::clone(&backend.ledger),
                    queue: Arc::clone(&backend.queue),
                    orders: Arc::clone(&backend.orders),
                    pending: Arc::clone(&backend.pending),
                    keys: Arc::clone(&backend.keys),
                },
                Arc::clone(&ids),
            )
            .with_intake_max(settings.http.request_budget + CLOCK_SKEW_MAX),
        );
        let orders = Arc::new(Orders::new(
            Arc::clone(&backend.orders),
            Arc::clone(&backend.pending),
            Arc::clone(&flash_sales),
            sale_settings.payment_timeout,
        ));
        let intake_limits = Arc::new(IntakeLimits::new(sale_settings.per_user_rate, sale_settings.per_sale_rate));
        let switches = Arc::new(Switchboard::new(SWITCHES));
        for stored in backend.switches.load_switches().await.context("loading switches")? {
            if let Err(unknown) = switches.set_manual(&stored.name, stored.enabled, &stored.reason) {
                tracing::warn!(%unknown, "ignoring a stored switch this version does not have");
            }
        }
        let notify_breaker = Arc::new(notify_breaker(settings, &metrics, &switches));
        let workers = Arc::new(Workers {
            orders: Arc::clone(&orders),
            flash_sales: Arc::clone(&flash_sales),
            reservation_timeout: sale_settings.reservation_timeout,
            consumer_switch: switches.handle(CONSUMER_SWITCH)?,
            failed_orders: metrics.counter(ORDERS_FAILED, &[]),
            sales_served: metrics.gauge(SALES_SERVED, &[]),
            ledger_difference: metrics.gauge(LEDGER_DIFFERENCE, &[]),
            ledger_repaired: metrics.counter(LEDGER_REPAIRED, &[]),
            reconcile_interval: sale_settings.reconcile_interval,
            queue: Arc::clone(&backend.queue),
            notifier: notifier(settings, &metrics, &switches, Arc::clone(&notify_breaker))?,
            intake_limits: Arc::clone(&intake_limits),
            consumer_batch: sale_settings.consumer_batch,
            sweep_interval: sale_settings.sweep_interval,
        });
        // Every accepted request becomes an order before the ledger is
        // rebuilt from the orders: no oversell, no stranded stock.
        let drained = if backend.shared_queue() { 0 } else { workers.drain().await.context("draining the queue")? };
        let sales = flash_sales.recover().await.context("rebuilding the stock ledger")?;
        ids.resume_after(backend.max_id().await.context("reading the largest id")?);
        tracing::info!(drained, sales, "recovered flash sales");

        let overload = &settings.overload;
        let guards = OverloadGuards {
            core: Arc::new(Bulkhead::new("core", overload.core_concurrency, overload.bulkhead_max_wait)),
            non_core: Arc::new(Bulkhead::new("non_core", overload.non_core_concurrency, overload.bulkhead_max_wait)),
            sale_reads: Arc::new(Bulkhead::new(
                "sale_reads",
                overload.sale_read_concurrency,
                overload.bulkhead_max_wait,
            )),
            node: Arc::new(AdaptiveLimit::new(aimd(settings))),
            enabled: overload.enabled,
            product_reads: (settings.rate.product_read_per_sec > 0).then(|| {
                Arc::new(TokenBucket::new(
                    settings.rate.product_read_burst,
                    f64::from(settings.rate.product_read_per_sec),
                ))
            }),
        };
        let live = Arc::new(LiveConfig {
            settings: std::sync::Mutex::new(settings.clone()),
            intake_limits: Arc::clone(&intake_limits),
            guards: guards.clone(),
            notify_breaker,
            store: Arc::clone(&backend.config),
            updating: tokio::sync::Mutex::new(()),
        });
        let settings_version = backend.redis.as_ref().map(|conn| {
            Arc::new(RedisSettingsVersion::new(conn.clone(), &settings.redis.namespace)) as Arc<dyn SettingsVersion>
        });
        let config_centre = Arc::new(ConfigCentre::new(
            Arc::clone(&live),
            Arc::clone(&switches),
            Arc::clone(&backend.switches),
            Arc::clone(&backend.config),
            settings_version,
        ));
        let events = backend.redis.as_ref().map(|_| {
            let listener = EventListener {
                catalog: cached,
                flash_sales: Arc::clone(&flash_sales),
                config_centre: Arc::clone(&config_centre),
                metrics: metrics.clone(),
            };
            Subscription(subscribe(settings.redis.urls.clone(), &settings.redis.namespace, move |signal| {
                listener.on(signal);
            }))
        });
        let readiness = Arc::new(Readiness::of(&backend, READY_PROBE_TIMEOUT));
        let dependency_guard =
            Arc::new(DependencyGuard::new(Arc::clone(&readiness), &settings.dependency_breaker, &switches, &metrics));
        let state = AppState::new(Parts {
            live,
            config_centre: Arc::clone(&config_centre),
            catalog: Catalog::new(Arc::clone(&store), ids),
            flash_sales,
            orders,
            intake_limits,
            cluster_user_limit: backend.cluster_user_limit.clone(),
            intake_switch: switches.handle(INTAKE_SWITCH)?,
            product_detail_switch: switches.handle(PRODUCT_DETAIL_SWITCH)?,
            switches,
            switch_store: Arc::clone(&backend.switches),
            keys: Keys::new(&secret, &settings.auth),
            metrics,
            store,
            readiness: Arc::clone(&readiness),
        });

        let limits = EdgeLimits {
            body_limit_bytes: settings.http.body_limit_bytes,
            request_budget: settings.http.request_budget,
        };
        let listener = bind(settings.listen).await?;
        let ops = match settings.ops_listen {
            Some(address) => Some((bind(address).await?, routes::ops_router(state.clone(), limits))),
            None => None,
        };
        if let Some(bucket) = &guards.product_reads {
            // Full buckets are forgotten, so memory follows the hot set.
            let bucket = Arc::downgrade(bucket);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                while let Some(bucket) = bucket.upgrade() {
                    bucket.forget_idle(tokio::time::Instant::now());
                    drop(bucket);
                    tick.tick().await;
                }
            });
        }
        let router = routes::app(state, limits, &guards, ops.is_none());
        let backend = Arc::new(backend);
        let connection_limits = ConnectionLimits {
            header_read_timeout: settings.http.header_read_timeout,
            max_connections: settings.http.max_connections,
        };
        Ok(Self {
            listener,
            router,
            ops,
            shutdown_grace: settings.http.shutdown_grace,
            connection_limits,
            backend,
            workers,
            config_centre,
            dependency_guard,
            events,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    pub fn ops_port(&self) -> Option<u16> {
        self.ops.as_ref().and_then(|(listener, _)| listener.local_addr().ok()).map(|a| a.port())
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// for up to `http.shutdown_grace` and closes the stores.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let mut background = tokio::task::JoinSet::new();
        let workers = Arc::clone(&self.workers);
        let consumer_stopped = stopped.clone();
        background.spawn(async move { workers.consume_until(consumer_stopped).await });
        let workers = Arc::clone(&self.workers);
        let sweeper_stopped = stopped.clone();
        background.spawn(async move { workers.sweep_until(sweeper_stopped).await });
        background.spawn(Arc::clone(&self.config_centre).follow(stopped.clone()));
        background.spawn(Arc::clone(&self.dependency_guard).run(stopped.clone()));

        let mut servers = tokio::task::JoinSet::new();
        tracing::info!(address = %self.listener.local_addr()?, "serving the api");
        servers.spawn(serve(self.listener, self.router, self.connection_limits, stopped.clone()));
        if let Some((listener, router)) = self.ops {
            tracing::info!(address = %listener.local_addr()?, "serving operations endpoints");
            servers.spawn(serve(listener, router, self.connection_limits, stopped));
        }

        tokio::select! {
            () = shutdown => tracing::info!("shutdown requested; draining in-flight requests"),
            finished = servers.join_next() => {
                tracing::error!(?finished, "a listener stopped on its own");
            }
        }
        let _ = stop.send(true);
        let drained = tokio::time::timeout(self.shutdown_grace, async { while servers.join_next().await.is_some() {} });
        if drained.await.is_err() {
            tracing::warn!(grace = ?self.shutdown_grace, "grace period over; dropping unfinished requests");
            servers.abort_all();
        }
        while background.join_next().await.is_some() {}
        // Nothing applies other nodes' events once the node has stopped.
        drop(self.events);
        let drained = if self.backend.shared_queue() { Ok(0) } else { self.workers.drain().await };
        match drained {
            Ok(drained) => tracing::info!(drained, "queue drained"),
            Err(error) => tracing::warn!(%error, "queue not drained; the next start will"),
        }
        self.backend.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn bind(address: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| format!("binding {address}"))
}

/// Every degradation switch, and the feature each one turns off.
pub const INTAKE_SWITCH: &str = "flash_sale_intake";
pub const PRODUCT_DETAIL_SWITCH: &str = "product_detail_live";
/// Off: the order consumer holds back (maintenance of the store); the
/// queue keeps every accepted request meanwhile.
pub const CONSUMER_SWITCH: &str = "order_consumer";
const SWITCHES: &[&str] = &[NOTIFICATION_SWITCH, INTAKE_SWITCH, PRODUCT_DETAIL_SWITCH, CONSUMER_SWITCH];

/// The clock skew allowed between nodes when one node's timestamps are
/// compared with another's (the reservation reaper).
const CLOCK_SKEW_MAX: Duration = Duration::from_secs(1);

/// The start-up settings with the run-time changes stored by the config
/// centre applied; a stored document that no longer validates is ignored.
async fn with_stored_tunables(settings: &Settings, store: &dyn ConfigStore) -> anyhow::Result<Settings> {
    let Some(stored) = store.load_config(TUNABLES).await.context("loading run-time settings")? else {
        return Ok(settings.clone());
    };
    match Tunables::restore(settings, &stored) {
        Ok(restored) => Ok(restored),
        Err(why) => {
            tracing::warn!(%why, "ignoring stored run-time settings");
            Ok(settings.clone())
        }
    }
}

/// The breaker in front of the notification sink; its state drives the
/// `notification` switch and the breaker-state gauge.
fn notify_breaker(settings: &Settings, metrics: &Arc<Metrics>, switches: &Arc<Switchboard>) -> CircuitBreaker {
    let board = Arc::clone(switches);
    let gauges = Arc::clone(metrics);
    let observer: Observer = Arc::new(move |name, _from, to| {
        gauges.breaker_state(name, to);
        let reason = format!("breaker {name} is {}", to.as_str());
        let verdict = match to {
            BreakerState::Open => Some(false),
            BreakerState::Closed => Some(true),
            BreakerState::HalfOpen => None,
        };
        if let Some(enabled) = verdict {
            let _ = board.set_auto(NOTIFICATION_SWITCH, enabled, &reason);
        }
    });
    metrics.breaker_state(NOTIFICATION_SWITCH, BreakerState::Closed);
    CircuitBreaker::new(NOTIFICATION_SWITCH, settings.notify.breaker.config()).with_observer(observer)
}

fn notifier(
    settings: &Settings,
    metrics: &Arc<Metrics>,
    switches: &Arc<Switchboard>,
    breaker: Arc<CircuitBreaker>,
) -> anyhow::Result<Arc<dyn Notifier>> {
    let sink = match &settings.notify.webhook_url {
        Some(url) => {
            let tls_ca_pem = match &settings.notify.tls_ca_file {
                Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
                None => None,
            };
            webhook_client(tls_ca_pem.as_deref()).map_err(|why| anyhow::anyhow!("notify.tls_ca_file: {why}"))?;
            NotifySink::Webhook { url: url.clone(), timeout: settings.notify.timeout, tls_ca_pem }
        }
        None => NotifySink::Log,
    };
    let notify_metrics = NotifyMetrics {
        sent: metrics.counter(NOTIFICATIONS, &[("result", "sent")]),
        failed: metrics.counter(NOTIFICATIONS, &[("result", "failed")]),
        dropped: metrics.counter(NOTIFICATIONS, &[("result", "dropped")]),
    };
    let retry = &settings.notify.retry;
    let retries = Retries::new(
        RetrySettings {
            attempts_max: retry.attempts_max,
            backoff_base: retry.backoff_base,
            backoff_max: retry.backoff_max,
        },
        Arc::new(TpsBudget::new(retry.budget_window, retry.budget_floor_per_sec, retry.budget_ratio)),
    );
    let guards = SinkGuards { breaker, switches: Arc::clone(switches), retries };
    Ok(Arc::new(QueuedNotifier::start(sink, settings.notify.queue_capacity, notify_metrics, guards)))
}

fn product_cache(settings: &Settings) -> ProductCacheConfig {
    let cache = &settings.cache;
    ProductCacheConfig {
        capacity: cache.capacity,
        ttl: cache.ttl,
        ttl_jitter: cache.ttl_jitter,
        negative_ttl: cache.negative_ttl,
        second_delete_delay: cache.second_delete_delay,
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
