//! Circuit breakers on the node's dependencies (the store, Redis, the
//! queue's broker) and the automatic degradation they drive.
//!
//! Each dependency is probed (one round trip, the readiness probe) every
//! `PROBE_EVERY` through its own breaker. When a breaker opens, the
//! features that need that dependency go `auto` off: `flash_sale_intake`
//! (fast 503 `degraded` instead of requests waiting for timeouts) for any
//! of the three, and `product_detail_live` (product details from the cache
//! only) for the store and Redis. A switch comes back on only when every
//! breaker that turned it off has closed. An operator's manual setting
//! wins over all of this (the switchboard's rule).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use surge_domain::degradation::Feature;
use surge_guard::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Observer};
use surge_guard::switch::Switchboard;
use tokio::sync::watch;

use crate::config::BreakerSettings;
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// How often each dependency is probed, and how long a probe may take
/// before it counts as a failure (a hung server fails as fast as a dead one).
const PROBE_EVERY: Duration = Duration::from_millis(250);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The switches a dependency's open breaker turns off.
fn switches_of(dependency: &str) -> &'static [Feature] {
    match dependency {
        "store" | "redis" => &[Feature::FlashSaleIntake, Feature::ProductDetailLive],
        _ => &[Feature::FlashSaleIntake],
    }
}

pub struct DependencyGuard {
    readiness: Arc<Readiness>,
    breakers: Vec<(&'static str, Arc<CircuitBreaker>)>,
}

impl DependencyGuard {
    /// A breaker per dependency `readiness` probes, wired to `switches`.
    pub fn new(
        readiness: Arc<Readiness>,
        settings: &BreakerSettings,
        switches: &Arc<Switchboard>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        // Which breakers hold each switch off right now.
        let holding: Arc<Mutex<BTreeSet<(&'static str, &'static str)>>> = Arc::default();
        let breakers = readiness
            .dependencies()
            .map(|dependency| {
                let (board, gauges, holding) = (Arc::clone(switches), Arc::clone(metrics), Arc::clone(&holding));
                let observer: Observer = Arc::new(move |name, _from, to| {
                    gauges.breaker_state(name, to);
                    let open = match to {
                        BreakerState::Open => true,
                        BreakerState::Closed => false,
                        BreakerState::HalfOpen => return,
                    };
                    let mut holding = holding.lock().unwrap_or_else(PoisonError::into_inner);
                    for switch in switches_of(dependency).iter().map(|feature| feature.name()) {
                        if open {
                            holding.insert((switch, dependency));
                            let reason = format!("breaker {name} is open");
                            let _ = board.set_auto(switch, false, &reason);
                        } else {
                            holding.remove(&(switch, dependency));
                            if !holding.iter().any(|(held, _)| *held == switch) {
                                let _ = board.set_auto(switch, true, &format!("breaker {name} closed"));
                            }
                        }
                    }
                    tracing::warn!(breaker = %name, state = to.as_str(), "dependency breaker changed");
                });
                metrics.breaker_state(dependency, BreakerState::Closed);
                (
                    dependency,
                    Arc::new(CircuitBreaker::new(dependency, BreakerConfig::from(settings)).with_observer(observer)),
                )
            })
            .collect();
        Self { readiness, breakers }
    }

    /// Probes every dependency through its breaker until `stopped`.
    pub async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            }
            let readiness = &self.readiness;
            let probes = self.breakers.iter().map(|(dependency, breaker)| async move {
                // Open: no call until the breaker lets a probe through.
                let Ok(permit) = breaker.try_acquire() else { return };
                let probe = tokio::time::timeout(PROBE_TIMEOUT, readiness.check_one(dependency));
                let failed = !matches!(probe.await, Ok(Ok(())));
                breaker.record(permit, failed);
            });
            futures::future::join_all(probes).await;
        }
    }
}
