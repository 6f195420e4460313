//! The flash-sale scenario: mint tokens for many customers, create a sale,
//! fire the intake (closed loop, or open loop at a fixed arrival rate),
//! wait for the queue to drain, then check the invariants through the API:
//! orders ≤ stock, every 202 is an order, no customer over the limit, the
//! same idempotency key gives the same order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::tokens::Tokens;

#[derive(Debug, Clone, clap::Args)]
pub struct Scenario {
    /// Distinct customers.
    #[arg(long, default_value_t = 20_000)]
    pub users: u64,
    /// Intake attempts per customer, each with its own idempotency key.
    #[arg(long, default_value_t = 2)]
    pub attempts: u32,
    /// Units on sale.
    #[arg(long, default_value_t = 10_000)]
    pub stock: i64,
    #[arg(long, default_value_t = 1)]
    pub per_user_limit: i64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Open loop: attempts per second at fixed arrival times (latency counts
    /// from the intended send time). Without it: closed loop, as fast as the
    /// connections go.
    #[arg(long)]
    pub rate: Option<u64>,
    /// How long each sale is open from its creation (it must outlast the
    /// run; a short one lets the node forget sold-out sales meanwhile).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub sale_window: std::time::Duration,
}

/// What one run measured and found.
pub struct Outcome {
    pub label: String,
    pub elapsed: Duration,
    pub statuses: HashMap<u16, u64>,
    pub latency_us: Histogram<u64>,
    pub violations: Vec<String>,
    pub checked: bool,
}

impl Outcome {
    pub fn throughput(&self) -> f64 {
        self.statuses.values().sum::<u64>() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn print(&self) {
        let h = &self.latency_us;
        let mut statuses: Vec<_> = self.statuses.iter().collect();
        statuses.sort();
        println!(
            "{}: {:.0} req/s over {:.2}s, statuses {:?}, tp50 {} us, tp99 {} us, tp999 {} us, max {} us",
            self.label,
            self.throughput(),
            self.elapsed.as_secs_f64(),
            statuses,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
        if self.checked {
            if self.violations.is_empty() {
                println!("{}: invariants PASS", self.label);
            } else {
                for violation in &self.violations {
                    println!("{}: FAIL {violation}", self.label);
                }
            }
        }
    }
}

struct Attempt {
    user: u64,
    key: String,
    token: Arc<str>,
}

struct Sent {
    index: usize,
    status: u16,
    order_id: Option<String>,
}

pub type Http = Client<HttpConnector, Full<Bytes>>;

pub fn client(connections: usize) -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(connections).build(connector)
}

/// Runs the scenario against `targets` (comma-separated base URLs of the
/// nodes of one deployment; attempt i goes to node i mod n). With `setup`,
/// creates a product and a sale first (through the first node) and checks
/// the invariants after; without (the minimal handler), only measures.
pub async fn run(
    targets: &str,
    tokens: &Tokens,
    scenario: &Scenario,
    label: &str,
    setup: bool,
) -> anyhow::Result<Outcome> {
    let bases: Vec<&str> = targets.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
    let base = *bases.first().context("no target")?;
    let http = client(scenario.connections);
    let sale = if setup { create_sale(&http, base, tokens, scenario).await? } else { "1".to_owned() };
    let attempts = Arc::new(plan_attempts(tokens, scenario)?);
    let urls: Arc<[String]> = bases.iter().map(|b| format!("{b}/v1/flash-sales/{sale}/orders")).collect();

    let progress = ProgressBar::new(attempts.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{prefix} {bar:40} {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_prefix(label.to_owned());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..scenario.connections.max(1) {
        let (http, attempts, urls, next, progress) =
            (http.clone(), Arc::clone(&attempts), Arc::clone(&urls), Arc::clone(&next), progress.clone());
        let rate = scenario.rate;
        tasks.spawn(async move { drive(&http, &attempts, &urls, &next, rate, started, &progress).await });
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut sent = Vec::with_capacity(attempts.len());
    while let Some(done) = tasks.join_next().await {
        let (histogram, results) = done??;
        latency_us.add(&histogram)?;
        sent.extend(results);
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();

    let mut statuses = HashMap::new();
    for s in &sent {
        *statuses.entry(s.status).or_insert(0) += 1;
    }
    let violations =
        if setup { check(&http, base, tokens, scenario, &sale, &attempts, &sent).await? } else { Vec::new() };
    Ok(Outcome { label: label.to_owned(), elapsed, statuses, latency_us, violations, checked: setup })
}

fn plan_attempts(tokens: &Tokens, scenario: &Scenario) -> anyhow::Result<Vec<Attempt>> {
    let user_tokens: Vec<Arc<str>> = (1..=scenario.users)
        .map(|user| tokens.mint("customer", &user.to_string()).map(Arc::from))
        .collect::<Result<_, _>>()?;
    // Round-robin: each customer's attempts are spread over the run.
    let mut attempts = Vec::with_capacity(user_tokens.len() * scenario.attempts as usize);
    for round in 0..scenario.attempts {
        for (i, token) in user_tokens.iter().enumerate() {
            let user = i as u64 + 1;
            attempts.push(Attempt { user, key: format!("bench-{user}-{round}"), token: Arc::clone(token) });
        }
    }
    Ok(attempts)
}

async fn drive(
    http: &Http,
    attempts: &[Attempt],
    urls: &[String],
    next: &AtomicUsize,
    rate: Option<u64>,
    started: Instant,
    progress: &ProgressBar,
) -> anyhow::Result<(Histogram<u64>, Vec<Sent>)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut sent = Vec::new();
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(attempt) = attempts.get(index) else {
            return Ok((histogram, sent));
        };
        // Open loop: the attempt is due at a fixed time; waiting for a free
        // connection counts as latency (no coordinated omission).
        let due = match rate {
            Some(rate) => {
                let due = started + Duration::from_secs_f64(index as f64 / rate.max(1) as f64);
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        let request = Request::post(urls[index % urls.len()].as_str())
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", attempt.token))
            .header("idempotency-key", attempt.key.as_str())
            .body(Full::new(Bytes::from_static(b"{\"quantity\":1}")))?;
        let (status, body) = match http.request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default())
            }
            Err(_) => (0, Bytes::new()),
        };
        histogram.saturating_record(due.elapsed().as_micros() as u64);
        let order_id = (status == 202)
            .then(|| serde_json::from_slice::<Value>(&body).ok())
            .flatten()
            .and_then(|v| v["order_id"].as_str().map(str::to_owned));
        sent.push(Sent { index, status, order_id });
        progress.inc(1);
    }
}

pub async fn call(
    http: &Http,
    method: &str,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let payload = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(payload))?;
    let response = http.request(request).await.with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

async fn create_sale(http: &Http, base: &str, tokens: &Tokens, scenario: &Scenario) -> anyhow::Result<String> {
    let merchant = tokens.mint("merchant", "1")?;
    let sku = format!("BENCH-{}", time::OffsetDateTime::now_utc().unix_timestamp_nanos());
    let product = json!({"sku": sku, "name": "Flash-sale benchmark", "price_cents": 1999, "stock": scenario.stock});
    let (status, product) = call(http, "POST", &format!("{base}/v1/products"), &merchant, Some(&product)).await?;
    if status != 201 {
        bail!("creating the product answered {status}: {product}");
    }
    let now = time::OffsetDateTime::now_utc();
    let format = time::format_description::well_known::Rfc3339;
    let sale = json!({
        "product_id": product["id"], "stock": scenario.stock, "price_cents": 990,
        "starts_at": now.format(&format)?, "ends_at": (now + scenario.sale_window).format(&format)?,
        "per_user_limit": scenario.per_user_limit,
    });
    let admin = tokens.mint("admin", "bench")?;
    let (status, sale) = call(http, "POST", &format!("{base}/v1/flash-sales"), &admin, Some(&sale)).await?;
    if status != 201 {
        bail!("creating the sale answered {status}: {sale}");
    }
    sale["id"].as_str().map(str::to_owned).context("sale without id")
}

/// The invariants, checked through the API after the queue drained.
async fn check(
    http: &Http,
    base: &str,
    tokens: &Tokens,
    scenario: &Scenario,
    sale: &str,
    attempts: &[Attempt],
    sent: &[Sent],
) -> anyhow::Result<Vec<String>> {
    let admin = tokens.mint("admin", "bench")?;
    let mut violations = Vec::new();
    let accepted: Vec<&Sent> = sent.iter().filter(|s| s.order_id.is_some()).collect();
    let ids: HashSet<&str> = accepted.iter().filter_map(|s| s.order_id.as_deref()).collect();
    if ids.len() != accepted.len() {
        violations.push(format!("{} 202s share {} order ids", accepted.len(), ids.len()));
    }
    if ids.len() as i64 > scenario.stock {
        violations.push(format!("oversold: {} orders accepted for {} units", ids.len(), scenario.stock));
    }
    let mut per_user: HashMap<u64, i64> = HashMap::new();
    for s in &accepted {
        *per_user.entry(attempts[s.index].user).or_default() += 1;
    }
    if let Some((user, n)) = per_user.iter().find(|(_, n)| **n > scenario.per_user_limit) {
        violations.push(format!("customer {user} holds {n} orders, limit {}", scenario.per_user_limit));
    }

    violations.extend(orders_written(http, base, &admin, &ids).await?);
    violations.extend(keys_replayed(http, base, sale, attempts, &accepted).await?);
    // Stock left + orders = stock, where the server shows the sale.
    let (status, view) = call(http, "GET", &format!("{base}/v1/flash-sales/{sale}"), &admin, None).await?;
    if status == 200 {
        let left = view["stock_left"].as_i64().unwrap_or(-1);
        if left < 0 || left + ids.len() as i64 != scenario.stock {
            violations.push(format!("stock_left {left} + {} orders != stock {}", ids.len(), scenario.stock));
        }
    }
    Ok(violations)
}

/// Every 202 becomes an order: waits (bounded) for the consumer, and says
/// which orders never appeared or ended other than `CREATED`.
async fn orders_written(http: &Http, base: &str, admin: &str, ids: &HashSet<&str>) -> anyhow::Result<Vec<String>> {
    let mut violations = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut waiting: Vec<&str> = ids.iter().copied().collect();
    while !waiting.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in waiting {
            let (status, order) = call(http, "GET", &format!("{base}/v1/orders/{id}"), admin, None).await?;
            if status != 200 || order["status"] == "PENDING" {
                still.push(id);
            } else if order["status"] != "CREATED" {
                violations.push(format!("order {id} is {}", order["status"]));
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if !waiting.is_empty() {
        violations.push(format!("{} accepted orders never appeared", waiting.len()));
    }

    Ok(violations)
}

/// The same key again gives the same order (a sample of 200).
async fn keys_replayed(
    http: &Http,
    base: &str,
    sale: &str,
    attempts: &[Attempt],
    accepted: &[&Sent],
) -> anyhow::Result<Vec<String>> {
    let mut violations = Vec::new();
    for s in accepted.iter().take(200) {
        let attempt = &attempts[s.index];
        let request = Request::post(format!("{base}/v1/flash-sales/{sale}/orders"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", attempt.token))
            .header("idempotency-key", attempt.key.as_str())
            .body(Full::new(Bytes::from_static(b"{\"quantity\":1}")))?;
        let response = http.request(request).await?;
        let status = response.status().as_u16();
        let body: Value =
            serde_json::from_slice(&response.into_body().collect().await?.to_bytes()).unwrap_or(Value::Null);
        if status != 202 || body["order_id"].as_str() != s.order_id.as_deref() {
            violations.push(format!("key {} replayed gave {status} {body}", attempt.key));
            break;
        }
    }

    Ok(violations)
}
