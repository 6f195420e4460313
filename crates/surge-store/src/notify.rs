//! Notification adapters. Handing over never blocks: notifications go into
//! a bounded channel and one background worker delivers them; when the
//! channel is full the notification is dropped and counted (non-core work is
//! shed first).
//!
//! The worker calls the sink through a circuit breaker. While the breaker is
//! open, notifications wait in the channel ("queued for later") instead of
//! hammering a dead sink; an operator's switch (`notification` off) holds
//! them the same way. A delivery is idempotent (the webhook gets the order id
//! as its `Idempotency-Key`), so a refused one is retried under
//! `surge-guard`'s retry rules: bounded tries, exponential backoff with
//! jitter, and a retry budget shared by every delivery, so a failing sink
//! sees barely more calls than without retries. A notification whose retries
//! are spent is dropped and counted.

use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use surge_domain::notification::Notifier;
use surge_domain::order::Order;
use surge_guard::breaker::CircuitBreaker;
use surge_guard::retry::Retries;
use surge_guard::switch::{Mode, Switchboard};
use tokio::sync::mpsc;

/// The switch that turns notifications off.
pub const NOTIFICATION_SWITCH: &str = "notification";
/// How often a held worker looks at the switch again.
const HOLD_RECHECK: Duration = Duration::from_millis(100);
/// Longest single wait for an open breaker (it may close by hand).
const OPEN_RECHECK_MAX: Duration = Duration::from_secs(1);

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

/// What the delivery worker needs besides the sink.
pub struct SinkGuards {
    pub breaker: Arc<CircuitBreaker>,
    pub switches: Arc<Switchboard>,
    pub retries: Retries,
}

pub struct QueuedNotifier {
    sender: mpsc::Sender<Order>,
    dropped: Counter,
}

impl QueuedNotifier {
    /// Starts the worker on the current runtime.
    pub fn start(sink: NotifySink, capacity: usize, metrics: NotifyMetrics, guards: SinkGuards) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let dropped = metrics.dropped.clone();
        tokio::spawn(deliver_all(sink, receiver, metrics, guards));
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

async fn deliver_all(
    sink: NotifySink,
    mut receiver: mpsc::Receiver<Order>,
    metrics: NotifyMetrics,
    guards: SinkGuards,
) {
    let client = reqwest::Client::new();
    while let Some(order) = receiver.recv().await {
        let mut attempts = 0;
        loop {
            if held_by_operator(&guards.switches) {
                tokio::time::sleep(HOLD_RECHECK).await;
                continue;
            }
            let permit = match guards.breaker.try_acquire() {
                Ok(permit) => permit,
                Err(open) => {
                    tokio::time::sleep(open.retry_after.min(OPEN_RECHECK_MAX)).await;
                    continue;
                }
            };
            attempts += 1;
            let outcome = deliver(&client, &sink, &order).await;
            guards.breaker.record(permit, outcome.is_err());
            match outcome {
                Ok(()) => {
                    guards.retries.succeeded();
                    metrics.sent.increment(1);
                    break;
                }
                Err(error) => {
                    metrics.failed.increment(1);
                    tracing::warn!(order_id = %order.id, attempts, %error, "notification failed");
                    match guards.retries.after_failure(attempts, None) {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => break,
                    }
                }
            }
        }
    }
}

fn held_by_operator(switches: &Switchboard) -> bool {
    switches.list().iter().any(|s| s.name == NOTIFICATION_SWITCH && !s.enabled && s.mode == Mode::Manual)
}

async fn deliver(client: &reqwest::Client, sink: &NotifySink, order: &Order) -> Result<(), String> {
    match sink {
        NotifySink::Log => {
            tracing::info!(order_id = %order.id, user_id = %order.user_id, amount_cents = order.amount_cents,
                "notify: order created (sms)");
            Ok(())
        }
        NotifySink::Webhook { url, timeout } => {
            let body = serde_json::json!({ "event": "order_created", "order": order });
            let response = client
                .post(url)
                .timeout(*timeout)
                .header("Idempotency-Key", format!("order-{}", order.id))
                // The timeout funnel: the webhook knows how long it has.
                .header("X-Request-Deadline-Ms", timeout.as_millis().to_string())
                .json(&body)
                .send()
                .await
                // Without the URL: it may carry credentials.
                .map_err(|e| e.without_url().to_string())?;
            if response.status().is_success() { Ok(()) } else { Err(format!("webhook answered {}", response.status())) }
        }
    }
}
