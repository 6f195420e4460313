//! `surge payments-sandbox`: the sandbox payment provider as its own
//! process, behaving as real providers do. Surge opens intents and refunds
//! here (`payments.sandbox.url`); each is decided on a command (`POST
//! /intents/{ref}/succeed`, `/fail`, the same under `/refunds`) or, with
//! `--auto-after`, by itself after that delay with `--fail-ratio` of
//! failures. The decision goes to `--callback` as a signed event
//! (`Surge-Signature`, the secret Surge holds), retried until answered
//! 2xx, sometimes sent twice (`--duplicate-ratio`) and sometimes followed
//! by a stale event of the other outcome (`--reorder-ratio`), which must
//! not move what was decided. `GET /report` is the provider's own record
//! of every intent and refund, for reconciliation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use surge_store::sandbox::sign;

/// How the process behaves (the command's flags).
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub listen: SocketAddr,
    /// Surge's callback route, e.g.
    /// `http://127.0.0.1:8080/v1/payments/callbacks/sandbox`.
    pub callback: String,
    pub secret: String,
    /// Where a buyer pays: `<pay_url>/<provider_ref>`.
    pub pay_url: String,
    /// Decide every intent and refund by itself this long after it opened.
    pub auto_after: Option<Duration>,
    /// Of those decided by themselves, the share that fail.
    pub fail_ratio: f64,
    /// The share of callbacks sent twice.
    pub duplicate_ratio: f64,
    /// The share of decisions followed by a stale event of the other outcome.
    pub reorder_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Payment,
    Refund,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Pending,
    Succeeded,
    Failed,
}

/// One line of the provider's report.
#[derive(Debug, Clone, Serialize)]
struct Entry {
    provider_ref: String,
    kind: Kind,
    amount_cents: i64,
    status: Status,
}

struct Sandbox {
    config: SandboxConfig,
    client: reqwest::Client,
    entries: Mutex<BTreeMap<String, Entry>>,
}

#[derive(Deserialize)]
struct OpenIntent {
    payment_id: String,
    amount_cents: i64,
}

#[derive(Deserialize)]
struct OpenRefund {
    refund_id: String,
    amount_cents: i64,
}

/// Serves until the process is stopped.
pub async fn run(config: SandboxConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(address = %listener.local_addr()?, callback = %config.callback, "payments sandbox serving");
    let sandbox = Arc::new(Sandbox { config, client: reqwest::Client::new(), entries: Mutex::default() });
    axum::serve(listener, router(sandbox)).with_graceful_shutdown(crate::startup::shutdown_signal()).await?;
    Ok(())
}

fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/intents", post(open_intent))
        .route("/refunds", post(open_refund))
        .route("/intents/{provider_ref}/{outcome}", post(decide))
        .route("/refunds/{provider_ref}/{outcome}", post(decide))
        .route("/report", get(report))
        .with_state(sandbox)
}

async fn open_intent(State(sandbox): State<Arc<Sandbox>>, Json(open): Json<OpenIntent>) -> Json<serde_json::Value> {
    // The payment's id names its intent: an open retried opens nothing new.
    let provider_ref = format!("sbp_{}", open.payment_id);
    sandbox.open(&provider_ref, Kind::Payment, open.amount_cents);
    let pay_url = format!("{}/{provider_ref}", sandbox.config.pay_url.trim_end_matches('/'));
    Json(serde_json::json!({ "provider_ref": provider_ref, "pay_url": pay_url }))
}

async fn open_refund(State(sandbox): State<Arc<Sandbox>>, Json(open): Json<OpenRefund>) -> Json<serde_json::Value> {
    let provider_ref = format!("sbr_{}", open.refund_id);
    sandbox.open(&provider_ref, Kind::Refund, open.amount_cents);
    Json(serde_json::json!({ "provider_ref": provider_ref }))
}

async fn decide(
    State(sandbox): State<Arc<Sandbox>>,
    Path((provider_ref, outcome)): Path<(String, String)>,
) -> Result<Json<Entry>, (StatusCode, String)> {
    let succeeded = match outcome.as_str() {
        "succeed" => true,
        "fail" => false,
        _ => return Err((StatusCode::NOT_FOUND, "the outcome is succeed or fail".to_owned())),
    };
    let decided = Arc::clone(&sandbox).decide(&provider_ref, succeeded);
    decided.map(Json).ok_or((StatusCode::NOT_FOUND, format!("no pending intent or refund {provider_ref}")))
}

async fn report(State(sandbox): State<Arc<Sandbox>>) -> Json<Vec<Entry>> {
    Json(sandbox.lock().values().cloned().collect())
}

impl Sandbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(self: &Arc<Self>, provider_ref: &str, kind: Kind, amount_cents: i64) {
        let entry = Entry { provider_ref: provider_ref.to_owned(), kind, amount_cents, status: Status::Pending };
        let new = self.lock().insert(provider_ref.to_owned(), entry).is_none();
        if let (true, Some(delay)) = (new, self.config.auto_after) {
            let (sandbox, provider_ref) = (Arc::clone(self), provider_ref.to_owned());
            let succeeded = rand::random::<f64>() >= self.config.fail_ratio;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                sandbox.decide(&provider_ref, succeeded);
            });
        }
    }

    /// Decides a pending entry and sends its callbacks; the entry, or
    /// `None` when there is no such pending one.
    fn decide(self: Arc<Self>, provider_ref: &str, succeeded: bool) -> Option<Entry> {
        let decided = {
            let mut entries = self.lock();
            let entry = entries.get_mut(provider_ref).filter(|entry| entry.status == Status::Pending)?;
            entry.status = if succeeded { Status::Succeeded } else { Status::Failed };
            entry.clone()
        };
        let mut events = vec![event(&decided, succeeded)];
        if rand::random::<f64>() < self.config.duplicate_ratio {
            events.push(events[0].clone());
        }
        // A stale event of the other outcome, after the real one: one that
        // must not move it (a payment's failure after its success, either
        // outcome after a refund's, both final).
        let stale_allowed = succeeded || decided.kind == Kind::Refund;
        if stale_allowed && rand::random::<f64>() < self.config.reorder_ratio {
            events.push(event(&decided, !succeeded));
        }
        let sandbox = Arc::clone(&self);
        tokio::spawn(async move {
            for body in events {
                sandbox.deliver(body).await;
            }
        });
        Some(decided)
    }

    /// Posts one signed event until Surge answers 2xx (at most a minute).
    async fn deliver(&self, body: Vec<u8>) {
        let mut pause = Duration::from_millis(50);
        for _ in 0..12 {
            let t = time::OffsetDateTime::now_utc().unix_timestamp();
            let signature = sign(self.config.secret.as_bytes(), t, &body);
            let sent = self.client.post(&self.config.callback).header("surge-signature", signature).body(body.clone());
            match sent.send().await {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => tracing::warn!(status = %response.status(), "callback refused; retrying"),
                Err(error) => tracing::warn!(%error, "callback not delivered; retrying"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(10));
        }
        tracing::error!("callback given up after 12 attempts");
    }
}

/// The event of `entry` ending `succeeded` (or not), as Surge reads it;
/// its id names the entry and the outcome, so a repeat is the same event.
fn event(entry: &Entry, succeeded: bool) -> Vec<u8> {
    let kind = match (entry.kind, succeeded) {
        (Kind::Payment, true) => "payment.succeeded",
        (Kind::Payment, false) => "payment.failed",
        (Kind::Refund, true) => "refund.succeeded",
        (Kind::Refund, false) => "refund.failed",
    };
    let body = serde_json::json!({"event_id": format!("evt_{}_{kind}", entry.provider_ref), "type": kind,
                                  "provider_ref": entry.provider_ref, "amount_cents": entry.amount_cents});
    body.to_string().into_bytes()
}
