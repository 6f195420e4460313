//! The degradation switches (`surge_domain::degradation::Feature`): the board every node starts
//! with (what operators stored wins over the defaults), and the breaker
//! whose state turns the notification switch `auto` on and off.

use std::sync::Arc;

use anyhow::Context as _;
use surge_domain::degradation::Feature;
use surge_domain::runtime_config::SwitchStore;
use surge_guard::breaker::{BreakerState, CircuitBreaker, Observer};
use surge_guard::switch::Switchboard;

use crate::config::Settings;
use crate::metrics::Metrics;

/// Every switch on, then as operators stored them.
pub async fn load(store: &dyn SwitchStore) -> anyhow::Result<Arc<Switchboard>> {
    let switches = Arc::new(Switchboard::new(&Feature::ALL));
    for stored in store.load_switches().await.context("loading switches")? {
        if let Err(unknown) = switches.set_manual(&stored.name, stored.enabled, &stored.reason) {
            tracing::warn!(%unknown, "ignoring a stored switch this version does not have");
        }
    }
    Ok(switches)
}

/// The breaker in front of the notification sink; its state drives the
/// `notification` switch and the breaker-state gauge.
pub fn notify_breaker(settings: &Settings, metrics: &Arc<Metrics>, switches: &Arc<Switchboard>) -> CircuitBreaker {
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
            let _ = board.set_auto(Feature::Notification, enabled, &reason);
        }
    });
    metrics.breaker_state(Feature::Notification.name(), BreakerState::Closed);
    CircuitBreaker::new(Feature::Notification.name(), (&settings.notify.breaker).into()).with_observer(observer)
}
