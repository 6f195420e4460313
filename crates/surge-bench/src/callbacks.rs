//! The callback-ingestion scenario: `--payments` orders checked out and
//! their sandbox payments opened (setup, not measured), then every
//! payment's signed `payment.succeeded` callback posted as a provider
//! posts them: a share sent twice (`--duplicates`), a share followed by a
//! stale `payment.failed` of the same payment (`--stale`), all in a
//! shuffled order, over `--connections` connections, each sent again
//! after a pause when shed (503), as providers retry. Against Surge, the
//! check after: every callback answered 200, every payment captured once
//! (the provider's clearing account grew by exactly their sum) and the
//! ledger balanced. The same signed requests go to the minimal handler
//! (it checks the signature and parses the body) for the ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::flashsale::{Http, Outcome, call, client};
use crate::tokens::Tokens;

#[derive(Debug, Clone, clap::Args)]
pub struct Scenario {
    /// Payments opened, each answered by one success callback.
    #[arg(long, default_value_t = 10_000)]
    pub payments: usize,
    /// Share of callbacks delivered twice.
    #[arg(long, default_value_t = 0.1)]
    pub duplicates: f64,
    /// Share of payments that also get a stale `payment.failed`.
    #[arg(long, default_value_t = 0.1)]
    pub stale: f64,
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
}

/// Sends of one callback at most (a 503 or a dropped connection is sent
/// again).
const RETRIES: u64 = 50;

/// An opened payment: its provider reference and amount.
#[derive(Clone)]
pub struct Opened {
    provider_ref: String,
    amount_cents: i64,
}

/// Checks out one order per payment and opens its payment (`connections`
/// at a time); the payments opened.
pub async fn open_payments(base: &str, tokens: &Tokens, scenario: &Scenario) -> anyhow::Result<Vec<Opened>> {
    let http = client(scenario.connections);
    let merchant = tokens.mint("merchant", "1")?;
    let sku = format!("CB-{}", time::OffsetDateTime::now_utc().unix_timestamp_nanos());
    let product = json!({"sku": sku, "name": "Callback benchmark", "price_cents": 1999,
                         "stock": scenario.payments as i64});
    let (status, product) = call(&http, "POST", &format!("{base}/v1/products"), &merchant, Some(&product)).await?;
    if status != 201 {
        bail!("creating the product answered {status}: {product}");
    }
    let product = product["id"].as_str().context("product without id")?.to_owned();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..scenario.connections.max(1) {
        let (http, next, base, product, tokens) =
            (http.clone(), Arc::clone(&next), base.to_owned(), product.clone(), tokens.clone());
        let total = scenario.payments;
        tasks.spawn(async move {
            let mut opened = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                opened.push(open_one(&http, &base, &tokens, &product, opened.len()).await?);
            }
            anyhow::Ok(opened)
        });
    }
    let mut opened = Vec::with_capacity(scenario.payments);
    while let Some(done) = tasks.join_next().await {
        opened.extend(done??);
    }
    Ok(opened)
}

async fn open_one(http: &Http, base: &str, tokens: &Tokens, product: &str, n: usize) -> anyhow::Result<Opened> {
    let customer = tokens.mint("customer", &(n % 5_000 + 1).to_string())?;
    let cart = json!({"items": [{"product_id": product, "quantity": 1}],
                      "address": {"region": "north", "city": "Harbin", "line1": "1 Main St",
                                  "postcode": "150000", "phone": "+86 1234"}});
    let (status, placed) = call(http, "POST", &format!("{base}/v1/checkout"), &customer, Some(&cart)).await?;
    if status != 201 {
        bail!("a checkout answered {status}: {placed}");
    }
    let order = placed["orders"][0]["id"].as_str().context("order without id")?;
    let url = format!("{base}/v1/orders/{order}/payments");
    let (status, payment) = call(http, "POST", &url, &customer, Some(&json!({}))).await?;
    if status != 201 {
        bail!("opening a payment answered {status}: {payment}");
    }
    Ok(Opened {
        provider_ref: payment["provider_ref"].as_str().context("no provider_ref")?.to_owned(),
        amount_cents: payment["amount_cents"].as_i64().context("no amount")?,
    })
}

/// Every callback body, in the order they are posted.
pub fn plan(opened: &[Opened], scenario: &Scenario) -> Vec<Bytes> {
    let every = |share: f64| if share > 0.0 { (1.0 / share).round().max(1.0) as usize } else { usize::MAX };
    let mut bodies = Vec::new();
    for (n, payment) in opened.iter().enumerate() {
        let event = |id: String, kind: &str| {
            let body = json!({"event_id": id, "type": kind, "provider_ref": payment.provider_ref,
                              "amount_cents": payment.amount_cents});
            Bytes::from(body.to_string())
        };
        let success = event(format!("bench-ok-{}", payment.provider_ref), "payment.succeeded");
        if n % every(scenario.duplicates) == 0 {
            bodies.push(success.clone());
        }
        if n % every(scenario.stale) == 1 % every(scenario.stale) {
            bodies.push(event(format!("bench-stale-{}", payment.provider_ref), "payment.failed"));
        }
        bodies.push(success);
    }
    // Fisher–Yates over a fixed xorshift: shuffled, the same every run.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for i in (1..bodies.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bodies.swap(i, (state % (i as u64 + 1)) as usize);
    }
    bodies
}

/// `Surge-Signature` for `body` now.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let t = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts `bodies` to `base`'s sandbox callback route; with `books`, the
/// ledger check after (the admin token, the payments' total).
pub async fn run(
    base: &str,
    secret: &[u8],
    bodies: Arc<Vec<Bytes>>,
    connections: usize,
    label: &str,
    books: Option<(&str, i64)>,
) -> anyhow::Result<Outcome> {
    let http = client(connections);
    let cleared_before = match books {
        Some((admin, _)) => clearing(&http, base, admin).await?.0,
        None => 0,
    };
    let url: Arc<str> = Arc::from(format!("{base}/v1/payments/callbacks/sandbox"));
    let secret: Arc<[u8]> = Arc::from(secret);
    let (next, retried) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (http, bodies, url, secret) = (http.clone(), Arc::clone(&bodies), Arc::clone(&url), Arc::clone(&secret));
        let (next, retried) = (Arc::clone(&next), Arc::clone(&retried));
        tasks.spawn(async move { drive(&http, &bodies, &url, &secret, &next, &retried).await });
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut statuses = std::collections::HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (histogram, sent) = done??;
        latency_us.add(&histogram)?;
        for status in sent {
            *statuses.entry(status).or_default() += 1;
        }
    }
    let elapsed = started.elapsed();
    println!("{label}: {} callbacks sent again after a 503", retried.load(Ordering::Relaxed));
    let mut violations = Vec::new();
    if let Some((admin, total)) = books {
        if statuses.keys().any(|status| *status != 200) {
            violations.push(format!("callbacks answered other than 200: {statuses:?}"));
        }
        let (cleared, balanced) = clearing(&http, base, admin).await?;
        if cleared - cleared_before != total {
            violations.push(format!("captured {} cents; the payments hold {total}", cleared - cleared_before));
        }
        if !balanced {
            violations.push("the trial balance is not balanced".to_owned());
        }
    }
    let checked = books.is_some();
    Ok(Outcome { label: label.to_owned(), elapsed, statuses, latency_us, violations, checked })
}

/// The provider clearing account's posted debits, and whether the ledger
/// balances.
async fn clearing(http: &Http, base: &str, admin: &str) -> anyhow::Result<(i64, bool)> {
    let (status, ledger) = call(http, "GET", &format!("{base}/v1/admin/ledger/trial-balance"), admin, None).await?;
    if status != 200 {
        bail!("the trial balance answered {status}: {ledger}");
    }
    let accounts = ledger["accounts"].as_array().context("no accounts")?;
    let debit = accounts
        .iter()
        .find(|account| account["name"] == "provider_clearing")
        .and_then(|account| account["debit_cents"].as_i64())
        .unwrap_or(0);
    Ok((debit, ledger["balanced"] == Value::Bool(true)))
}

async fn drive(
    http: &Http,
    bodies: &[Bytes],
    url: &str,
    secret: &[u8],
    next: &AtomicUsize,
    retried: &AtomicUsize,
) -> anyhow::Result<(Histogram<u64>, Vec<u16>)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut sent = Vec::new();
    while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
        // As a provider does: a 503 (shed) or a dropped connection is sent
        // again after a pause, a few times; latency runs to the last answer.
        let started = Instant::now();
        let mut status = 0;
        for attempt in 0..RETRIES {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10 * attempt.min(20))).await;
            }
            let request = Request::post(url)
                .header("content-type", "application/json")
                .header("surge-signature", sign(secret, body))
                .body(Full::new(body.clone()))?;
            status = match http.request(request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await;
                    status
                }
                Err(_) => 0,
            };
            if status != 503 && status != 0 {
                break;
            }
            retried.fetch_add(1, Ordering::Relaxed);
        }
        histogram.saturating_record(started.elapsed().as_micros() as u64);
        sent.push(status);
    }
    Ok((histogram, sent))
}

/// The callbacks' total: what the provider clearing account must gain.
pub fn total(opened: &[Opened]) -> i64 {
    opened.iter().map(|payment| payment.amount_cents).sum()
}
