//! The built-in payment provider, `sandbox`: intents are opened locally
//! (the provider reference is derived from the payment id), or at the
//! `surge payments-sandbox` process when one is configured
//! ([`SandboxProvider::at`]: the provider as its own service, over HTTP,
//! as a real acquirer's adapter would call it), and its
//! callbacks are signed the way large payment providers sign webhooks:
//! `Surge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw
//! body>")>`, refused more than five minutes away from now, compared in
//! constant time (`hmac`'s `verify_slice`). Several `v1` entries may be
//! sent (a secret being rotated): one matching is enough.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use surge_domain::payment::{
    CallbackError, EventKind, Intent, PaymentProvider, PaymentStatus, ProviderEvent, ProviderRecord,
};
use surge_domain::{PaymentId, RefundId, StoreError};
use time::OffsetDateTime;

/// How far a callback's timestamp may be from now, in seconds.
pub const TOLERANCE_SECS: i64 = 300;

pub struct SandboxProvider {
    /// `None`: no secret configured, every callback is refused.
    secret: Option<Vec<u8>>,
    /// Where the buyer would pay: `<pay_url_base>/<provider_ref>`.
    pay_url_base: String,
    /// The `surge payments-sandbox` process's base URL, and the client
    /// that calls it; `None`: intents are opened locally.
    service: Option<(reqwest::Client, String)>,
}

/// How long a call to the sandbox process may take.
const SERVICE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl SandboxProvider {
    pub fn new(secret: Option<&str>, pay_url_base: &str) -> Self {
        Self {
            secret: secret.map(|secret| secret.as_bytes().to_vec()),
            pay_url_base: pay_url_base.trim_end_matches('/').to_owned(),
            service: None,
        }
    }

    /// Opens intents and refunds at the sandbox process at `url`.
    pub fn at(mut self, url: &str) -> Result<Self, StoreError> {
        let client = reqwest::Client::builder()
            .timeout(SERVICE_TIMEOUT)
            .build()
            .map_err(|error| StoreError::Unavailable(format!("sandbox client: {error}")))?;
        self.service = Some((client, url.trim_end_matches('/').to_owned()));
        Ok(self)
    }

    /// POSTs `body` to the process's `path` (GETs it without a body); its
    /// JSON answer, or `None` when no process is configured.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Option<T>, StoreError> {
        let Some((client, base)) = &self.service else { return Ok(None) };
        let unavailable = |error: reqwest::Error| StoreError::Unavailable(format!("payment provider: {error}"));
        let url = format!("{base}{path}");
        let request = match body {
            Some(body) => client.post(url).json(&body),
            None => client.get(url),
        };
        let response = request.send().await.map_err(unavailable)?.error_for_status().map_err(unavailable)?;
        response.json().await.map(Some).map_err(unavailable)
    }
}

/// A string field of the sandbox process's answer.
fn field(answer: &serde_json::Value, name: &str) -> Result<String, StoreError> {
    let value = answer.get(name).and_then(serde_json::Value::as_str);
    value
        .map(str::to_owned)
        .ok_or_else(|| StoreError::Unavailable(format!("payment provider: no {name} in its answer")))
}

/// The `Surge-Signature` header for `body` sent at `t` (Unix seconds).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex::encode(mac(secret, t, body).finalize().into_bytes()))
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The event as the sandbox posts it. Unknown fields are ignored, as
/// providers add fields without notice.
#[derive(Deserialize)]
struct SandboxEvent {
    event_id: String,
    #[serde(rename = "type")]
    kind: String,
    provider_ref: String,
    amount_cents: i64,
}

#[async_trait]
impl PaymentProvider for SandboxProvider {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn open(&self, payment: PaymentId, amount_cents: i64) -> Result<Intent, StoreError> {
        let body = serde_json::json!({"payment_id": payment.to_string(), "amount_cents": amount_cents});
        if let Some(answer) = self.call::<serde_json::Value>("/intents", Some(body)).await? {
            return Ok(Intent { provider_ref: field(&answer, "provider_ref")?, pay_url: field(&answer, "pay_url")? });
        }
        let provider_ref = format!("sb_{payment}");
        Ok(Intent { pay_url: format!("{}/{provider_ref}", self.pay_url_base), provider_ref })
    }

    async fn refund(&self, refund: RefundId, payment_ref: &str, amount_cents: i64) -> Result<String, StoreError> {
        let body = serde_json::json!({"refund_id": refund.to_string(), "payment_ref": payment_ref,
                                      "amount_cents": amount_cents});
        if let Some(answer) = self.call::<serde_json::Value>("/refunds", Some(body)).await? {
            return field(&answer, "provider_ref");
        }
        Ok(format!("sbr_{refund}"))
    }

    fn verify(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<ProviderEvent, CallbackError> {
        let secret = self
            .secret
            .as_deref()
            .ok_or(CallbackError::BadSignature("payments.sandbox.secret is not set: sandbox callbacks are refused"))?;
        let header = signature.ok_or(CallbackError::BadSignature("no Surge-Signature header"))?;
        let mut t = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", value)) => t = value.parse::<i64>().ok(),
                Some(("v1", value)) => signatures.extend(hex::decode(value).ok()),
                _ => {}
            }
        }
        let t = t.ok_or(CallbackError::BadSignature("Surge-Signature has no timestamp t"))?;
        if (now.unix_timestamp() - t).abs() > TOLERANCE_SECS {
            return Err(CallbackError::BadSignature("Surge-Signature timestamp is more than 5 minutes away"));
        }
        let signed = signatures.iter().any(|signature| mac(secret, t, body).verify_slice(signature).is_ok());
        if !signed {
            return Err(CallbackError::BadSignature("Surge-Signature does not match the body"));
        }
        read_event(body)
    }

    /// The process's `GET /report`; the built-in sandbox keeps none.
    async fn report(&self) -> Result<Option<Vec<ProviderRecord>>, StoreError> {
        let Some(lines) = self.call::<Vec<ReportLine>>("/report", None).await? else { return Ok(None) };
        let records = lines.into_iter().map(|line| {
            let status = PaymentStatus::parse(&line.status)
                .ok_or_else(|| StoreError::Unavailable(format!("payment provider: status {:?}", line.status)))?;
            Ok(ProviderRecord {
                provider_ref: line.provider_ref,
                amount_cents: line.amount_cents,
                status,
                order_id: None,
            })
        });
        records.collect::<Result<Vec<_>, StoreError>>().map(Some)
    }
}

/// One line of the sandbox process's report.
#[derive(Deserialize)]
struct ReportLine {
    provider_ref: String,
    amount_cents: i64,
    status: String,
}

fn read_event(body: &[u8]) -> Result<ProviderEvent, CallbackError> {
    let event: SandboxEvent = serde_json::from_slice(body)
        .map_err(|error| CallbackError::Malformed(format!("not a sandbox event: {error}")))?;
    let visible = |text: &str| (1..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
    if !visible(&event.event_id) || !visible(&event.provider_ref) {
        return Err(CallbackError::Malformed(
            "event_id and provider_ref must be 1-128 visible ASCII characters".into(),
        ));
    }
    if event.amount_cents < 0 {
        return Err(CallbackError::Malformed("amount_cents must not be negative".into()));
    }
    let kind = match event.kind.as_str() {
        "payment.succeeded" => EventKind::PaymentSucceeded,
        "payment.failed" => EventKind::PaymentFailed,
        "refund.succeeded" => EventKind::RefundSucceeded,
        "refund.failed" => EventKind::RefundFailed,
        other => return Err(CallbackError::Malformed(format!("unknown event type {other:?}"))),
    };
    Ok(ProviderEvent {
        event_id: event.event_id,
        kind,
        provider_ref: event.provider_ref,
        amount_cents: event.amount_cents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-sandbox-secret";

    fn provider() -> SandboxProvider {
        SandboxProvider::new(Some(SECRET), "http://sandbox.invalid/pay/")
    }

    fn body() -> Vec<u8> {
        br#"{"event_id":"evt_1","type":"payment.succeeded","provider_ref":"sb_7","amount_cents":500,"extra":1}"#
            .to_vec()
    }

    #[test]
    fn a_signed_fresh_event_is_read() {
        let now = OffsetDateTime::now_utc();
        let header = sign(SECRET.as_bytes(), now.unix_timestamp(), &body());
        let event = provider().verify(Some(&header), &body(), now).expect("verified");
        assert_eq!(event.kind, EventKind::PaymentSucceeded);
        assert_eq!((event.event_id.as_str(), event.provider_ref.as_str(), event.amount_cents), ("evt_1", "sb_7", 500));
        // A rotated secret: one of several v1 entries matching is enough.
        let rotated = format!("{header},v1={}", "00".repeat(32));
        assert!(provider().verify(Some(&rotated), &body(), now).is_ok());
    }

    #[test]
    fn a_wrong_missing_stale_or_future_signature_is_refused() {
        let now = OffsetDateTime::now_utc();
        let t = now.unix_timestamp();
        let bad = |header: Option<String>, body: &[u8]| {
            matches!(provider().verify(header.as_deref(), body, now), Err(CallbackError::BadSignature(_)))
        };
        assert!(bad(None, &body()));
        assert!(bad(Some(sign(b"another secret", t, &body())), &body()));
        assert!(bad(Some(sign(SECRET.as_bytes(), t, &body())), b"{\"tampered\":true}"));
        assert!(bad(Some(sign(SECRET.as_bytes(), t - TOLERANCE_SECS - 1, &body())), &body()));
        assert!(bad(Some(sign(SECRET.as_bytes(), t + TOLERANCE_SECS + 1, &body())), &body()));
        assert!(bad(Some("v1=00".to_owned()), &body()));
        assert!(bad(Some("garbage".to_owned()), &body()));
        let unset = SandboxProvider::new(None, "http://x");
        let signed = sign(SECRET.as_bytes(), t, &body());
        assert!(matches!(unset.verify(Some(&signed), &body(), now), Err(CallbackError::BadSignature(_))));
    }

    #[test]
    fn a_signed_body_that_is_no_event_is_malformed() {
        let now = OffsetDateTime::now_utc();
        for body in [
            &b"not json"[..],
            br#"{"event_id":"e","type":"payment.captured","provider_ref":"r","amount_cents":1}"#,
            br#"{"event_id":"","type":"payment.failed","provider_ref":"r","amount_cents":1}"#,
            br#"{"event_id":"e","type":"payment.failed","provider_ref":"r","amount_cents":-1}"#,
            br#"{"event_id":"e","type":"payment.failed","provider_ref":"r"}"#,
        ] {
            let header = sign(SECRET.as_bytes(), now.unix_timestamp(), body);
            let outcome = provider().verify(Some(&header), body, now);
            assert!(matches!(outcome, Err(CallbackError::Malformed(_))), "{}", String::from_utf8_lossy(body));
        }
    }

    #[tokio::test]
    async fn an_intent_is_named_after_its_payment() {
        let intent = provider().open(PaymentId::new(42), 100).await.expect("open");
        assert_eq!(intent, Intent { provider_ref: "sb_42".into(), pay_url: "http://sandbox.invalid/pay/sb_42".into() });
    }
}
