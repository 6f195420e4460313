//! Notification adapters. Handing over never blocks: notifications go into
//! a bounded channel and one background worker delivers them; when the
//! channel is full the notification is dropped and counted (non-core work is
//! shed first). Delivery failures are logged and counted, never retried into
//! the order path.

use std::time::Duration;

use metrics::Counter;
use surge_domain::notification::Notifier;
use surge_domain::order::Order;
use tokio::sync::mpsc;

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifySink {
    /// Writes one structured log line per notification (the default).
    Log,
    /// POSTs the order as JSON to this URL.
    Webhook { url: String, timeout: Duration },
}

#[derive(Clone)]
pub struct NotifyMetrics {
    pub sent: Counter,
    pub failed: Counter,
    pub dropped: Counter,
}

impl NotifyMetrics {
    pub fn noop() -> Self {
        Self { sent: Counter::noop(), failed: Counter::noop(), dropped: Counter::noop() }
    }
}

pub struct QueuedNotifier {
    sender: mpsc::Sender<Order>,
    dropped: Counter,
}

impl QueuedNotifier {
    /// Starts the worker on the current runtime.
    pub fn start(sink: NotifySink, capacity: usize, metrics: NotifyMetrics) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let dropped = metrics.dropped.clone();
        tokio::spawn(deliver(sink, receiver, metrics));
        Self { sender, dropped }
    }
}

impl Notifier for QueuedNotifier {
    fn order_created(&self, order: &Order) {
        if self.sender.try_send(order.clone()).is_err() {
            self.dropped.increment(1);
            tracing::warn!(order_id = %order.id, "notification queue full; notification dropped");
        }
    }
}

async fn deliver(sink: NotifySink, mut receiver: mpsc::Receiver<Order>, metrics: NotifyMetrics) {
    let client = reqwest::Client::new();
    while let Some(order) = receiver.recv().await {
        let outcome = match &sink {
            NotifySink::Log => {
                tracing::info!(order_id = %order.id, user_id = %order.user_id, amount_cents = order.amount_cents,
                    "notify: order created (sms)");
                Ok(())
            }
            NotifySink::Webhook { url, timeout } => post(&client, url, *timeout, &order).await,
        };
        match outcome {
            Ok(()) => metrics.sent.increment(1),
            Err(error) => {
                metrics.failed.increment(1);
                tracing::warn!(order_id = %order.id, %error, "notification failed");
            }
        }
    }
}

async fn post(client: &reqwest::Client, url: &str, timeout: Duration, order: &Order) -> Result<(), String> {
    let body = serde_json::json!({ "event": "order_created", "order": order });
    let response = client.post(url).timeout(timeout).json(&body).send().await.map_err(|e| e.to_string())?;
    if response.status().is_success() { Ok(()) } else { Err(format!("webhook answered {}", response.status())) }
}
