//! The degradation switches: their names, the board every node starts
//! with (what operators stored wins over the defaults), and the breaker
//! whose state turns the notification switch `auto` on and off.

use std::sync::Arc;

use anyhow::Context as _;
use surge_guard::breaker::{BreakerState, CircuitBreaker, Observer};
use surge_guard::switch::Switchboard;
use surge_store::notify::NOTIFICATION_SWITCH;
use surge_store::runtime_config::SwitchStore;

use crate::config::Settings;
use crate::metrics::Metrics;

/// Off: flash-sale intake answers 503 `degraded`.
pub const INTAKE_SWITCH: &str = "flash_sale_intake";
/// Off: product details are served from the cache only.
pub const PRODUCT_DETAIL_SWITCH: &str = "product_detail_live";
/// Off: the order consumer holds back (maintenance of the store); the
/// queue keeps every accepted request meanwhile.
pub const CONSUMER_SWITCH: &str = "order_consumer";
/// Every degradation switch.
pub const SWITCHES: &[&str] = &[NOTIFICATION_SWITCH, INTAKE_SWITCH, PRODUCT_DETAIL_SWITCH, CONSUMER_SWITCH];

/// Every switch on, then as operators stored them.
pub async fn load(store: &dyn SwitchStore) -> anyhow::Result<Arc<Switchboard>> {
    let switches = Arc::new(Switchboard::new(SWITCHES));
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
            let _ = board.set_auto(NOTIFICATION_SWITCH, enabled, &reason);
        }
    });
    metrics.breaker_state(NOTIFICATION_SWITCH, BreakerState::Closed);
    CircuitBreaker::new(NOTIFICATION_SWITCH, settings.notify.breaker.config()).with_observer(observer)
}
