//! Building and running the app: `main` stays thin, tests build the same app
//! on port 0 and ask it for its port.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use surge_domain::catalog::Catalog;
use surge_domain::degradation::Feature;
use surge_domain::runtime_config::{ConfigStore, SettingsVersion};
use surge_domain::{Clock, IdGenerator, SystemClock};
use surge_guard::breaker::CircuitBreaker;
use surge_guard::switch::Switchboard;
use surge_store::redis::RedisSettingsVersion;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{Keys, load_or_create_secret};
use crate::backend::Backend;
use crate::config::Settings;
use crate::config_centre::ConfigCentre;
use crate::config_centre::{LiveConfig, TUNABLES, Tunables};
use crate::contexts::{Contexts, catalog_tiers, wire_contexts};
use crate::dependency_guard::DependencyGuard;
use crate::events::{EventListener, Subscription};
use crate::metrics::{
    LEDGER_DIFFERENCE, LEDGER_REPAIRED, Metrics, ORDERS_FAILED, SALES_SERVED, TRACKING_FLUSHED, TRACKING_PENDING,
};
use crate::notifications;
use crate::outbox::OutboxWorkers;
use crate::readiness::Readiness;
use crate::routes::{self, EdgeLimits, OverloadGuards};
use crate::serve::{ConnectionLimits, serve};
use crate::state::{AppServices, AppState};
use crate::switches;
use crate::workers::Workers;

/// How long readiness waits for a dependency before calling it down.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The clock skew allowed between nodes when one node's timestamps are
/// compared with another's (the reservation reaper, a lost ledger's
/// rebuild).
pub(crate) const CLOCK_SKEW_MAX: Duration = Duration::from_secs(1);

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

impl Application {
    /// Opens the stores, wires the contexts and binds the listeners.
    /// `configured` is what the layers of configuration say; run-time
    /// changes stored by the config centre are applied on top.
    pub async fn build(configured: &Settings) -> anyhow::Result<Self> {
        Self::build_on(configured, Arc::new(SystemClock)).await
    }

    /// [`Self::build`] on `clock`: every "now" of the contexts comes from it
    /// (tests move a `ManualClock` past a payment window instead of sleeping).
    pub async fn build_on(configured: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        configured.validate()?;
        std::fs::create_dir_all(&configured.data_dir)
            .with_context(|| format!("creating data_dir {}", configured.data_dir.display()))?;
        // No secret, no start: checked before any store is touched.
        let secret = load_or_create_secret(&configured.auth, &configured.data_dir)?;
        let backend = Backend::open(configured).await?;
        let settings = &with_stored_tunables(configured, backend.config.as_ref()).await?;
        let metrics = Arc::new(Metrics::new());
        let ids = Arc::new(IdGenerator::new(settings.node_id).map_err(anyhow::Error::msg)?);

        let catalog = catalog_tiers(settings, &backend, &metrics);
        let switches = switches::load(backend.switches.as_ref()).await?;
        let notify_breaker = Arc::new(switches::notify_breaker(settings, &metrics, &switches));
        let notifier = notifications::notifier(settings, &metrics, &switches, Arc::clone(&notify_breaker))?;
        let contexts = wire_contexts(settings, &backend, &catalog, &ids, &clock)?;
        let outbox =
            OutboxWorkers::wire(&backend, &contexts.fulfilment, &contexts.after_sale, &metrics, &clock, notifier);
        let workers = Arc::new(workers(settings, &backend, &contexts, &switches, &metrics, outbox)?);
        recover(&backend, &workers, &contexts, &ids).await?;

        let guards = OverloadGuards::new(settings);
        guards.keep_product_buckets_small();
        let live = Arc::new(live_config(settings, &backend, &contexts, &guards, notify_breaker));
        let config_centre = Arc::new(config_centre(settings, &backend, &live, &switches));
        let events = settings.shared.redis().map(|redis| {
            let listener = EventListener::new(&catalog.local, &contexts.flash_sales, &config_centre, &metrics);
            listener.listen(redis)
        });
        let readiness = Arc::new(Readiness::of(&backend, READY_PROBE_TIMEOUT));
        let dependency_guard =
            Arc::new(DependencyGuard::new(Arc::clone(&readiness), &settings.dependency_breaker, &switches, &metrics));
        let state = AppState::new(AppServices {
            live,
            config_centre: Arc::clone(&config_centre),
            catalog: Catalog::new(Arc::clone(&catalog.read), ids, Arc::clone(&clock)),
            clock,
            flash_sales: contexts.flash_sales,
            orders: contexts.orders,
            checkouts: contexts.checkouts,
            payments: contexts.payments,
            settlement: contexts.settlement,
            fulfilment: contexts.fulfilment,
            after_sale: contexts.after_sale,
            intake_limits: contexts.intake_limits,
            cluster_user_limit: backend.cluster_user_limit.clone(),
            intake_switch: switches.handle(Feature::FlashSaleIntake)?,
            product_detail_switch: switches.handle(Feature::ProductDetailLive)?,
            switches,
            switch_store: Arc::clone(&backend.switches),
            keys: Keys::new(&secret, &settings.auth),
            metrics,
            store: catalog.read,
            readiness,
        });

        let (listener, router, ops) = bind_routes(settings, state, &guards).await?;
        Ok(Self {
            listener,
            router,
            ops,
            shutdown_grace: settings.http.shutdown_grace,
            connection_limits: ConnectionLimits {
                header_read_timeout: settings.http.header_read_timeout,
                max_connections: settings.http.max_connections,
            },
            backend: Arc::new(backend),
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
        self.workers.spawn(&mut background, &stopped);
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
        if let Err(error) = self.workers.flush_tracking().await {
            tracing::warn!(%error, "scan journal not flushed; the next start (or another node) will");
        }
        self.workers.release_tracking().await;
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

/// The API's listener and routes, and the operations endpoints' when they
/// have a port of their own (`ops_listen`).
async fn bind_routes(
    settings: &Settings,
    state: AppState,
    guards: &OverloadGuards,
) -> anyhow::Result<(TcpListener, Router, Option<(TcpListener, Router)>)> {
    let limits =
        EdgeLimits { body_limit_bytes: settings.http.body_limit_bytes, request_budget: settings.http.request_budget };
    let listener = bind(settings.listen).await?;
    let ops = match settings.ops_listen {
        Some(address) => Some((bind(address).await?, routes::ops_router(state.clone(), limits))),
        None => None,
    };
    let router = routes::app(state, limits, guards, ops.is_none());
    Ok((listener, router, ops))
}

async fn bind(address: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| format!("binding {address}"))
}

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

/// The consumer, the sweeper, the reaper and the reconciliation.
fn workers(
    settings: &Settings,
    backend: &Backend,
    contexts: &Contexts,
    switches: &Arc<Switchboard>,
    metrics: &Arc<Metrics>,
    outbox: OutboxWorkers,
) -> anyhow::Result<Workers> {
    let sale_settings = &settings.flash_sale;
    Ok(Workers {
        orders: Arc::clone(&contexts.orders),
        flash_sales: Arc::clone(&contexts.flash_sales),
        inventory: Arc::clone(&contexts.inventory),
        settlement: Arc::clone(&contexts.settlement),
        fulfilment: Arc::clone(&contexts.fulfilment),
        after_sale: Arc::clone(&contexts.after_sale),
        tracking: contexts.tracking.clone(),
        write_behind: settings.fulfilment.tracking.mode == crate::config::TrackingMode::WriteBehind,
        tracking_pending: metrics.gauge(TRACKING_PENDING, &[]),
        tracking_flushed: metrics.counter(TRACKING_FLUSHED, &[]),
        dispatch_interval: settings.fulfilment.dispatch_interval,
        pickup_timeout: settings.fulfilment.pickup_timeout,
        reservation_timeout: sale_settings.reservation_timeout,
        consumer_switch: switches.handle(Feature::OrderConsumer)?,
        failed_orders: metrics.counter(ORDERS_FAILED, &[]),
        sales_served: metrics.gauge(SALES_SERVED, &[]),
        ledger_difference: metrics.gauge(LEDGER_DIFFERENCE, &[]),
        ledger_repaired: metrics.counter(LEDGER_REPAIRED, &[]),
        reconcile_interval: sale_settings.reconcile_interval,
        payout_interval: settings.payments.payout_interval,
        queue: Arc::clone(&backend.queue),
        outbox: Arc::new(outbox),
        intake_limits: Arc::clone(&contexts.intake_limits),
        consumer_batch: sale_settings.consumer_batch,
        sweep_interval: sale_settings.sweep_interval,
    })
}

/// Every accepted request becomes an order before the ledger is rebuilt
/// from the orders (no oversell, no stranded stock), and new ids follow
/// the largest one written.
async fn recover(backend: &Backend, workers: &Workers, contexts: &Contexts, ids: &IdGenerator) -> anyhow::Result<()> {
    let drained = if backend.shared_queue() { 0 } else { workers.drain().await.context("draining the queue")? };
    let sales = contexts.flash_sales.recover().await.context("rebuilding the stock ledger")?;
    // Scans a crash left in the journal reach the store before any is read.
    let scans = workers.flush_tracking_at_start().await.context("flushing the scan journal")?;
    if scans > 0 {
        tracing::info!(scans, "flushed the scan journal");
    }
    ids.resume_after(backend.max_id().await.context("reading the largest id")?);
    tracing::info!(drained, sales, "recovered flash sales");
    Ok(())
}

/// What run-time changes of the settings reach: the intake limits, the
/// overload guards, the notification breaker; saved in the store.
fn live_config(
    settings: &Settings,
    backend: &Backend,
    contexts: &Contexts,
    guards: &OverloadGuards,
    notify_breaker: Arc<CircuitBreaker>,
) -> LiveConfig {
    LiveConfig {
        settings: std::sync::Mutex::new(settings.clone()),
        intake_limits: Arc::clone(&contexts.intake_limits),
        guards: guards.clone(),
        notify_breaker,
        store: Arc::clone(&backend.config),
        updating: tokio::sync::Mutex::new(()),
    }
}

/// Switches and run-time settings, shared with the other nodes through the
/// store and a version in Redis (distributed mode).
fn config_centre(
    settings: &Settings,
    backend: &Backend,
    live: &Arc<LiveConfig>,
    switches: &Arc<Switchboard>,
) -> ConfigCentre {
    let version = backend.redis.as_ref().zip(settings.shared.redis()).map(|(conn, redis)| {
        Arc::new(RedisSettingsVersion::new(conn.clone(), &redis.namespace)) as Arc<dyn SettingsVersion>
    });
    ConfigCentre::new(
        Arc::clone(live),
        Arc::clone(switches),
        Arc::clone(&backend.switches),
        Arc::clone(&backend.config),
        version,
    )
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
