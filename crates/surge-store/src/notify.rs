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
use surge_domain::degradation::Feature;
use surge_domain::fulfilment::ScanKind;
use surge_domain::notification::{Notifier, ParcelMoved};
use surge_domain::order::Order;
use surge_domain::payment::Refund;
use surge_guard::breaker::CircuitBreaker;
use surge_guard::retry::Retries;
use surge_guard::switch::{Mode, Switchboard};
use tokio::sync::mpsc;

/// How often a held worker looks at the switch again.
const HOLD_RECHECK: Duration = Duration::from_millis(100);
/// Longest single wait for an open breaker (it may close by hand).
const OPEN_RECHECK_MAX: Duration = Duration::from_secs(1);

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifySink {
    /// Writes one structured log line per notification (the default).
    Log,
    /// POSTs the order as JSON to this URL; an `https://` one trusts the
    /// system's roots, and this CA (PEM) when given.
    Webhook { url: String, timeout: Duration, tls_ca_pem: Option<Vec<u8>> },
}

/// The client a sink delivers through. Refuses a CA that is not PEM, so a
/// node stops at start-up instead of failing every delivery.
pub fn webhook_client(tls_ca_pem: Option<&[u8]>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder();
    if let Some(pem) = tls_ca_pem {
        let bundle = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("the webhook's CA: {e}"))?;
        if bundle.is_empty() {
            return Err("the webhook's CA holds no PEM certificate".to_owned());
        }
        for ca in bundle {
            builder = builder.add_root_certificate(ca);
        }
    }
    builder.build().map_err(|e| format!("the webhook client: {e}"))
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

/// One notification: to a buyer, shaped as the SMS it stands for.
enum Notice {
    OrderCreated(Order),
    RefundSucceeded(Refund),
    ParcelMoved(ParcelMoved),
}

impl Notice {
    /// The delivery's idempotency key: a retried one is the same message.
    fn key(&self) -> String {
        match self {
            Notice::OrderCreated(order) => format!("order-{}", order.id),
            Notice::RefundSucceeded(refund) => format!("refund-{}", refund.id),
            Notice::ParcelMoved(parcel) => format!("parcel-{}-{}", parcel.waybill, parcel.seq),
        }
    }

    /// The text an SMS gateway would send.
    fn sms(&self) -> String {
        match self {
            Notice::OrderCreated(order) => format!(
                "Surge: order {} confirmed, {} item(s), {} to pay.",
                order.id,
                order.quantity,
                money(order.amount_cents)
            ),
            Notice::RefundSucceeded(refund) => {
                format!("Surge: {} refunded for order {}.", money(refund.amount_cents), refund.order_id)
            }
            Notice::ParcelMoved(parcel) => {
                let news = match parcel.scan {
                    ScanKind::PickedUp => "was picked up",
                    ScanKind::OutForDelivery => "is out for delivery",
                    ScanKind::Delivered => "was delivered",
                    ScanKind::ArrivedHub => "reached a hub",
                    ScanKind::DeliveryFailed => "could not be delivered; we will try again",
                };
                format!("Surge: the parcel of order {} ({}) {news}.", parcel.order_id, parcel.waybill)
            }
        }
    }

    fn body(&self) -> serde_json::Value {
        match self {
            Notice::OrderCreated(order) => {
                serde_json::json!({ "event": "order_created", "order": order, "sms": self.sms() })
            }
            Notice::RefundSucceeded(refund) => {
                serde_json::json!({ "event": "refund_succeeded", "refund": refund, "sms": self.sms() })
            }
            Notice::ParcelMoved(parcel) => {
                serde_json::json!({ "event": "parcel_moved", "parcel": parcel, "sms": self.sms() })
            }
        }
    }
}

/// Minor units as `12.34`.
fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, (cents % 100).abs())
}

pub struct QueuedNotifier {
    sender: mpsc::Sender<Notice>,
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

impl QueuedNotifier {
    fn hand_over(&self, notice: Notice) {
        let key = notice.key();
        if self.sender.try_send(notice).is_err() {
            self.dropped.increment(1);
            tracing::warn!(notification = key, "notification queue full; notification dropped");
        }
    }
}

impl Notifier for QueuedNotifier {
    fn order_created(&self, order: &Order) {
        self.hand_over(Notice::OrderCreated(order.clone()));
    }

    fn refund_succeeded(&self, refund: &Refund) {
        self.hand_over(Notice::RefundSucceeded(refund.clone()));
    }

    fn parcel_moved(&self, parcel: &ParcelMoved) {
        self.hand_over(Notice::ParcelMoved(parcel.clone()));
    }
}

async fn deliver_all(
    sink: NotifySink,
    mut receiver: mpsc::Receiver<Notice>,
    metrics: NotifyMetrics,
    guards: SinkGuards,
) {
    let ca = match &sink {
        NotifySink::Webhook { tls_ca_pem, .. } => tls_ca_pem.as_deref(),
        NotifySink::Log => None,
    };
    // Checked at start-up (`webhook_client`); a failure here is a bug.
    let client = webhook_client(ca).unwrap_or_else(|error| {
        tracing::error!(%error, "webhook client without its CA");
        reqwest::Client::new()
    });
    while let Some(notice) = receiver.recv().await {
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
            let outcome = deliver(&client, &sink, &notice).await;
            guards.breaker.record(permit, outcome.is_err());
            match outcome {
                Ok(()) => {
                    guards.retries.succeeded();
                    metrics.sent.increment(1);
                    break;
                }
                Err(error) => {
                    metrics.failed.increment(1);
                    tracing::warn!(notification = notice.key(), attempts, %error, "notification failed");
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
    switches.list().iter().any(|s| s.name == Feature::Notification.name() && !s.enabled && s.mode == Mode::Manual)
}

async fn deliver(client: &reqwest::Client, sink: &NotifySink, notice: &Notice) -> Result<(), String> {
    match sink {
        NotifySink::Log => {
            tracing::info!(notification = notice.key(), sms = notice.sms(), "notify (sms)");
            Ok(())
        }
        NotifySink::Webhook { url, timeout, .. } => {
            let response = client
                .post(url)
                .timeout(*timeout)
                .header("Idempotency-Key", notice.key())
                // The timeout funnel: the webhook knows how long it has.
                .header("X-Request-Deadline-Ms", timeout.as_millis().to_string())
                .json(&notice.body())
                .send()
                .await
                // Without the URL: it may carry credentials.
                .map_err(|e| e.without_url().to_string())?;
            if response.status().is_success() { Ok(()) } else { Err(format!("webhook answered {}", response.status())) }
        }
    }
}

#[cfg(test)]
mod tests {

    use surge_domain::order::{OrderKind, OrderStatus};
    use surge_domain::{MerchantId, OrderId, ProductId, UserId};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An https receiver of one request on 127.0.0.1, with the test's own
    /// certificate: hands back what it was sent.
    async fn https_receiver(cert: &std::path::Path, key: &std::path::Path) -> (u16, tokio::task::JoinHandle<String>) {
        let acceptor = crate::testing::tls_acceptor(cert, key);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("a TLS handshake");
            let mut request = Vec::new();
            let mut buffer = [0_u8; 4096];
            // Headers, then as much body as they announce.
            loop {
                let read = tls.read(&mut buffer).await.expect("read");
                request.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&request);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|line| {
                            line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length || read == 0 {
                        break;
                    }
                }
                if read == 0 {
                    break;
                }
            }
            tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await.expect("answer");
            let _ = tls.shutdown().await;
            String::from_utf8_lossy(&request).into_owned()
        });
        (port, served)
    }

    fn order() -> Order {
        let now = time::OffsetDateTime::now_utc();
        Order {
            id: OrderId::new(4242),
            user_id: UserId::new(7),
            merchant_id: MerchantId::new(1),
            product_id: ProductId::new(3),
            flash_sale_id: None,
            quantity: 1,
            amount_cents: 50,
            status: OrderStatus::Created,
            kind: OrderKind::FlashSale,
            items: Vec::new(),
            address: None,
            created_at: now,
            updated_at: now,
            pay_by: None,
        }
    }

    /// TLS is compiled in: an `https://` webhook is reached over TLS,
    /// trusting the configured CA; without it the same delivery fails
    /// (an unknown issuer), never silently.
    #[tokio::test]
    async fn an_https_webhook_is_reached_with_its_ca_and_refused_without() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, cert, key) = crate::testing::tls_certificates(dir.path());
        let pem = std::fs::read(&ca).expect("ca");

        let (port, served) = https_receiver(&cert, &key).await;
        let sink = NotifySink::Webhook {
            url: format!("https://127.0.0.1:{port}/hook"),
            timeout: Duration::from_secs(5),
            tls_ca_pem: Some(pem.clone()),
        };
        let client = webhook_client(Some(&pem)).expect("client");
        deliver(&client, &sink, &Notice::OrderCreated(order())).await.expect("delivered over TLS");
        let request = served.await.expect("served");
        assert!(request.starts_with("POST /hook HTTP/1.1"), "{request}");
        assert!(request.contains("\"id\":\"4242\""), "{request}");

        let (port, _served) = https_receiver(&cert, &key).await;
        let sink = NotifySink::Webhook {
            url: format!("https://127.0.0.1:{port}/hook"),
            timeout: Duration::from_secs(5),
            tls_ca_pem: None,
        };
        let refused = deliver(&webhook_client(None).expect("client"), &sink, &Notice::OrderCreated(order())).await;
        assert!(refused.is_err(), "a certificate from an unknown CA was accepted");
        assert!(webhook_client(Some(b"not a certificate")).is_err(), "a CA that is not PEM is refused");
    }
}
