//! The notification pipeline from its settings: a bounded queue in front
//! of the sink (a webhook, or the log), behind a breaker, the
//! `notification` switch and retries within a budget.

use std::sync::Arc;

use anyhow::Context as _;
use surge_domain::notification::Notifier;
use surge_guard::breaker::CircuitBreaker;
use surge_guard::retry::Retries;
use surge_guard::switch::Switchboard;
use surge_store::notify::{NotifyMetrics, NotifySink, QueuedNotifier, SinkGuards, webhook_client};

use crate::config::Settings;
use crate::metrics::{Metrics, NOTIFICATIONS};

pub fn notifier(
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
            NotifySink::Webhook { url: url.expose().to_owned(), timeout: settings.notify.timeout, tls_ca_pem }
        }
        None => NotifySink::Log,
    };
    let notify_metrics = NotifyMetrics {
        sent: metrics.counter(NOTIFICATIONS, &[("result", "sent")]),
        failed: metrics.counter(NOTIFICATIONS, &[("result", "failed")]),
        dropped: metrics.counter(NOTIFICATIONS, &[("result", "dropped")]),
    };
    let retries = Retries::from(&settings.notify.retry);
    let guards = SinkGuards { breaker, switches: Arc::clone(switches), retries };
    Ok(Arc::new(QueuedNotifier::start(sink, settings.notify.queue_capacity, notify_metrics, guards)))
}
