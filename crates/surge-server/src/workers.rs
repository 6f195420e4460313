//! Background work of a node: the order consumer, the payment-timeout
//! sweeper, the reservation reaper, the ledger's reconciliation, the
//! parcel dispatcher, the return-refund saga and the outbox's
//! (`crate::outbox`). Each
//! stops at the shutdown signal; the consumer then drains what is left in
//! the queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use surge_domain::aftersale::AfterSale;
use surge_domain::flashsale::{FlashSales, OrderQueue};
use surge_domain::fulfilment::Fulfilment;
use surge_domain::inventory::Inventory;
use surge_domain::order::Orders;
use surge_domain::settlement::Settlement;
use surge_domain::store::StoreError;
use surge_guard::switch::SwitchHandle;
use surge_store::behind::TrackingFlusher;
use tokio::sync::watch;

use crate::limits::IntakeLimits;
use crate::outbox::OutboxWorkers;

/// How long the consumer waits for new events before looking again.
/// How long a node that writes scans through waits at start for the scans
/// written behind to be flushed (longer than a flush lease).
const TRACKING_SETTLE: Duration = Duration::from_secs(30);
const POLL_WAIT: Duration = Duration::from_millis(100);
/// Pause after a failed step, so a dead store isn't hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(200);
/// Most orders one sweep cancels before yielding.
const SWEEP_BATCH: u32 = 500;
/// Returns one refund pass asks for at most.
const REFUND_BATCH: u32 = 100;

pub struct Workers {
    pub orders: Arc<Orders>,
    pub flash_sales: Arc<FlashSales>,
    /// Closes the allocations of sales that ended (see `reap_until`).
    pub inventory: Arc<Inventory>,
    /// Closes merchants' daily statements (see `reconcile_until`).
    pub settlement: Arc<Settlement>,
    /// Assigns waiting parcels and takes back those not picked up in
    /// `pickup_timeout`, every `dispatch_interval` (see `dispatch_until`).
    pub fulfilment: Arc<Fulfilment>,
    pub after_sale: Arc<AfterSale>,
    /// Scans written behind the cache, and the flusher's gauges
    /// (`surge_tracking_pending_scans`, `surge_tracking_flushed_scans_total`).
    pub tracking: Option<Arc<dyn TrackingFlusher>>,
    /// Scans are written behind: the flusher runs all along.
    pub write_behind: bool,
    pub tracking_pending: metrics::Gauge,
    pub tracking_flushed: metrics::Counter,
    pub dispatch_interval: Duration,
    pub pickup_timeout: Duration,
    /// Open reservations older than this are reaped (shared ledger only),
    /// once the queue proves their request is not in it. A sale that ended
    /// this long ago is forgotten (its counters and keys leave memory).
    pub reservation_timeout: Duration,
    /// `order_consumer`: off → the consumer holds back once its current
    /// step ends (within `POLL_WAIT`); the queue keeps every request and the
    /// orders are written when it is on again.
    pub consumer_switch: SwitchHandle,
    /// Accepted requests that ended `FAILED` (`surge_orders_failed_total`).
    pub failed_orders: metrics::Counter,
    /// Sales held in memory (`surge_flash_sales_served`).
    pub sales_served: metrics::Gauge,
    /// The last reconciliation's difference, and the units its repairs
    /// moved (`surge_ledger_difference_units`,
    /// `surge_ledger_repaired_units_total`).
    pub ledger_difference: metrics::Gauge,
    pub ledger_repaired: metrics::Counter,
    pub reconcile_interval: Duration,
    /// `payments.payout_interval`: the scheduled payouts, if any.
    pub payout_interval: Option<Duration>,
    pub queue: Arc<dyn OrderQueue>,
    /// The outbox relay and the event consumers.
    pub outbox: Arc<OutboxWorkers>,
    pub intake_limits: Arc<IntakeLimits>,
    pub consumer_batch: usize,
    pub sweep_interval: Duration,
}

impl Workers {
    /// Writes every queued request as an order; used at start-up before the
    /// ledger is rebuilt, and at shutdown.
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let consumed = self.orders.consume(self.queue.as_ref(), self.consumer_batch, Duration::ZERO).await?;
            self.failed_orders.increment(consumed.failed as u64);
            if consumed.handled == 0 {
                return Ok(total);
            }
            total += consumed.handled;
        }
    }

    pub async fn consume_until(&self, mut stopped: watch::Receiver<bool>) {
        while !*stopped.borrow_and_update() {
            if !self.consumer_switch.is_enabled() {
                tokio::time::sleep(POLL_WAIT).await;
                continue;
            }
            let step = self.orders.consume(self.queue.as_ref(), self.consumer_batch, POLL_WAIT);
            match step.await {
                Ok(consumed) => self.failed_orders.increment(consumed.failed as u64),
                Err(error) => {
                    tracing::error!(%error, "order consumer step failed; retrying");
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
        }
    }

    /// Starts the consumer, the sweeper, the reaper, the reconciliation and
    /// the outbox's relay and consumers in `background`, each until
    /// `stopped`.
    pub fn spawn(self: &Arc<Self>, background: &mut tokio::task::JoinSet<()>, stopped: &watch::Receiver<bool>) {
        self.outbox.spawn(background, stopped);
        let (workers, until) = (Arc::clone(self), stopped.clone());
        background.spawn(async move { workers.consume_until(until).await });
        let (workers, until) = (Arc::clone(self), stopped.clone());
        background.spawn(async move { workers.sweep_until(until).await });
        let (workers, until) = (Arc::clone(self), stopped.clone());
        background.spawn(async move { workers.reap_until(until).await });
        let (workers, until) = (Arc::clone(self), stopped.clone());
        background.spawn(async move { workers.reconcile_until(until).await });
        if let Some(period) = self.payout_interval {
            let (workers, until) = (Arc::clone(self), stopped.clone());
            background.spawn(async move { workers.pay_out_until(period, until).await });
        }
        let (workers, until) = (Arc::clone(self), stopped.clone());
        background.spawn(async move { workers.dispatch_until(until).await });
        let (workers, until) = (Arc::clone(self), stopped.clone());
        background.spawn(async move { workers.refunds_until(until).await });
        if self.tracking.is_some() && self.write_behind {
            let (workers, until) = (Arc::clone(self), stopped.clone());
            background.spawn(async move { workers.flush_until(until).await });
        }
    }

    /// Writes every journaled scan to the store (at start, before serving,
    /// and at shutdown): how many.
    pub async fn flush_tracking(&self) -> Result<usize, StoreError> {
        let Some(tracking) = &self.tracking else { return Ok(0) };
        let flushed = tracking.flush_all(time::OffsetDateTime::now_utc()).await?;
        self.tracking_flushed.increment(flushed as u64);
        self.tracking_pending.set(tracking.pending().await? as f64);
        Ok(flushed)
    }

    /// At start, before serving: flushes what an earlier run left behind
    /// the cache. A node that writes scans through may not serve while any
    /// wait (its scans would be checked against the store alone and could
    /// take a `seq` a waiting scan holds): it flushes until none do, for at
    /// most `TRACKING_SETTLE` (a dead node's flush leases lapse meanwhile),
    /// then gives the leases back.
    pub async fn flush_tracking_at_start(&self) -> Result<usize, StoreError> {
        let mut flushed = self.flush_tracking().await?;
        let Some(tracking) = self.tracking.as_ref().filter(|_| !self.write_behind) else {
            return Ok(flushed);
        };
        let deadline = tokio::time::Instant::now() + TRACKING_SETTLE;
        loop {
            let waiting = tracking.pending().await?;
            if waiting == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "{waiting} scans written behind the cache still wait to be flushed: start this node with \
                     fulfilment.tracking.mode = \"write_behind\" until they are"
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            flushed += self.flush_tracking().await?;
        }
        tracking.release().await;
        Ok(flushed)
    }

    /// Hands this node's share of the flushing to the other nodes (at
    /// shutdown, after the last flush).
    pub async fn release_tracking(&self) {
        if let Some(tracking) = &self.tracking {
            tracking.release().await;
        }
    }

    /// The write-behind flusher: a batch at a time, at once while whole
    /// batches wait, else every `fulfilment.tracking.delay`. A failed
    /// flush (the store down or stalled) keeps the journal and retries.
    pub async fn flush_until(&self, mut stopped: watch::Receiver<bool>) {
        let Some(tracking) = &self.tracking else { return };
        while !*stopped.borrow_and_update() {
            let wait = match tracking.flush_once(time::OffsetDateTime::now_utc()).await {
                Ok(flushed) => {
                    self.tracking_flushed.increment(flushed as u64);
                    if flushed >= tracking.batch() { Duration::ZERO } else { tracking.delay() }
                }
                Err(error) => {
                    tracing::error!(%error, "tracking flush failed; retrying");
                    tracking.delay().max(ERROR_PAUSE)
                }
            };
            match tracking.pending().await {
                Ok(pending) => self.tracking_pending.set(pending as f64),
                Err(error) => tracing::warn!(%error, "could not count the scans waiting to be flushed"),
            }
            if !wait.is_zero() {
                let _ = tokio::time::timeout(wait, stopped.changed()).await;
            }
        }
    }

    /// The return-refund saga's pass, every `dispatch_interval` on every
    /// node: returns whose refund is due (never asked, or failed and past
    /// its backoff) ask for it; a claim keeps two nodes from both asking.
    pub async fn refunds_until(&self, stopped: watch::Receiver<bool>) {
        every(self.dispatch_interval, stopped, || async {
            match self.after_sale.retry_refunds(REFUND_BATCH).await {
                Ok(asked) if asked > 0 => tracing::info!(asked, "asked for returns' refunds"),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "return refund pass failed; the next one retries"),
            }
        })
        .await;
    }

    /// The dispatcher's pass, every `dispatch_interval` on every node: the
    /// conditional updates of `FulfilmentStore::assign` keep nodes that
    /// race for a parcel or a courier's last slot from both winning.
    pub async fn dispatch_until(&self, stopped: watch::Receiver<bool>) {
        every(self.dispatch_interval, stopped, || async {
            match self.fulfilment.dispatch_waiting(self.pickup_timeout).await {
                Ok(assigned) if assigned > 0 => tracing::info!(assigned, "assigned waiting parcels"),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "dispatch pass failed; the next one retries"),
            }
        })
        .await;
    }

    /// The payment-timeout sweeper, every `sweep_interval`: cancels unpaid
    /// orders past their window, retries owed give-backs, clears sold-out
    /// flags whose sale has stock again, and trims the intake limiters.
    pub async fn sweep_until(&self, stopped: watch::Receiver<bool>) {
        every(self.sweep_interval, stopped, || async {
            match self.orders.expire_unpaid(SWEEP_BATCH).await {
                Ok(cancelled) if cancelled > 0 => tracing::info!(cancelled, "cancelled unpaid orders"),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "payment-timeout sweep failed"),
            }
            match self.orders.retry_give_backs(SWEEP_BATCH).await {
                Ok(settled) if settled > 0 => tracing::info!(settled, "gave back the stock of earlier cancels"),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "give-back retry failed"),
            }
            if let Err(error) = self.flash_sales.refresh_sold_out().await {
                tracing::error!(%error, "sold-out flags not refreshed");
            }
            self.intake_limits.shrink();
        })
        .await;
    }

    /// The reservation reaper, every quarter of `reservation_timeout` (at
    /// least a second): releases reservations whose request is provably not
    /// in the queue, forgets sales that ended that long ago, and gives what
    /// they did not sell back to their products.
    pub async fn reap_until(&self, stopped: watch::Receiver<bool>) {
        let period = (self.reservation_timeout / 4).max(Duration::from_secs(1));
        every(period, stopped, || async {
            match self.flash_sales.reap_reservations(self.reservation_timeout).await {
                Ok(released) if released > 0 => tracing::warn!(released, "released stale reservations"),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "reservation reaper failed"),
            }
            match self.flash_sales.forget_ended(self.reservation_timeout).await {
                Ok(forgotten) if forgotten > 0 => tracing::info!(forgotten, "forgot ended flash sales"),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "ended flash sales not forgotten"),
            }
            if let Err(error) = self.inventory.close_ended_sales(self.reservation_timeout, SWEEP_BATCH).await {
                tracing::error!(%error, "ended flash sales not closed; their unsold units wait");
            }
            self.sales_served.set(self.flash_sales.served() as f64);
        })
        .await;
    }

    /// The stock ledger's reconciliation with the orders (see
    /// `FlashSales::reconcile`) and the scheduled settlement run, every
    /// `reconcile_interval`.
    pub async fn reconcile_until(&self, stopped: watch::Receiver<bool>) {
        every(self.reconcile_interval, stopped, || async {
            match self.flash_sales.reconcile().await {
                Ok(pass) => {
                    self.ledger_difference.set(pass.difference as f64);
                    self.ledger_repaired.increment(pass.repaired);
                }
                Err(error) => tracing::error!(%error, "ledger reconciliation failed"),
            }
            if let Err(error) = self.settlement.close_due(None).await {
                tracing::error!(%error, "settlement statements not closed; the next run closes them");
            }
        })
        .await;
    }

    /// The scheduled payouts, every `period`: what the settlement runs
    /// closed is paid out (see `Settlement::pay_out_due`).
    pub async fn pay_out_until(&self, period: Duration, stopped: watch::Receiver<bool>) {
        every(period, stopped, || async {
            if let Err(error) = self.settlement.pay_out_due().await {
                tracing::error!(%error, "payouts not made; the next run makes them");
            }
        })
        .await;
    }
}

/// Runs `step` every `period` (a late tick waits, it does not burst) until
/// `stopped`.
async fn every<F: Future<Output = ()>>(period: Duration, mut stopped: watch::Receiver<bool>, step: impl Fn() -> F) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => false,
            _ = tick.tick() => true,
        };
        if !due {
            return;
        }
        step().await;
    }
}
