//! The checkout scenario: carts of `--items` lines (one unit each) drawn
//! from `--products` hot products of four merchants, one checkout per cart
//! under its own idempotency key, from many customers over `--connections`
//! connections; then, against Surge, the invariant: the units the products
//! lost are exactly the units of the checkouts answered 201.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::{Value, json};

use crate::flashsale::{Http, Outcome, call, client};
use crate::tokens::Tokens;

#[derive(Debug, Clone, clap::Args)]
pub struct Scenario {
    /// Checkouts sent.
    #[arg(long, default_value_t = 20_000)]
    pub carts: usize,
    /// Hot products every cart draws from.
    #[arg(long, default_value_t = 20)]
    pub products: usize,
    /// Lines per cart (distinct products, one unit each).
    #[arg(long, default_value_t = 3)]
    pub items: usize,
    /// Distinct customers.
    #[arg(long, default_value_t = 5_000)]
    pub users: u64,
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
}

struct Cart {
    token: Arc<str>,
    key: String,
    body: Bytes,
    units: i64,
}

/// Runs the scenario against `base`; with `check`, the invariant after.
pub async fn run(
    base: &str,
    tokens: &Tokens,
    scenario: &Scenario,
    label: &str,
    check: bool,
) -> anyhow::Result<Outcome> {
    let http = client(scenario.connections);
    let stock = (scenario.carts * scenario.items) as i64;
    let products = create_products(&http, base, tokens, scenario.products.max(scenario.items), stock).await?;
    let carts = Arc::new(plan_carts(tokens, scenario, &products)?);
    let url: Arc<str> = Arc::from(format!("{base}/v1/checkout"));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..scenario.connections.max(1) {
        let (http, carts, url, next) = (http.clone(), Arc::clone(&carts), Arc::clone(&url), Arc::clone(&next));
        tasks.spawn(async move { drive(&http, &carts, &url, &next).await });
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut statuses: HashMap<u16, u64> = HashMap::new();
    let mut placed_units = 0;
    while let Some(done) = tasks.join_next().await {
        let (histogram, sent) = done??;
        latency_us.add(&histogram)?;
        for (index, status) in sent {
            *statuses.entry(status).or_default() += 1;
            if status == 201 {
                placed_units += carts[index].units;
            }
        }
    }
    let elapsed = started.elapsed();
    let mut violations = Vec::new();
    if check {
        let admin = tokens.mint("admin", "bench")?;
        let mut taken = 0;
        for id in &products {
            let (status, product) = call(&http, "GET", &format!("{base}/v1/products/{id}"), &admin, None).await?;
            if status != 200 {
                bail!("reading product {id} answered {status}");
            }
            taken += stock - product["stock"].as_i64().unwrap_or(stock);
        }
        if taken != placed_units {
            violations.push(format!("the products lost {taken} units; the 201s hold {placed_units}"));
        }
    }
    Ok(Outcome { label: label.to_owned(), elapsed, statuses, latency_us, violations, checked: check })
}

/// `count` products of merchants 1 to 4, each with `stock` units; their ids.
async fn create_products(
    http: &Http,
    base: &str,
    tokens: &Tokens,
    count: usize,
    stock: i64,
) -> anyhow::Result<Vec<String>> {
    let run = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let merchant = tokens.mint("merchant", &(n % 4 + 1).to_string())?;
        let product = json!({"sku": format!("CART-{run}-{n}"), "name": "Checkout benchmark", "price_cents": 1999,
                             "stock": stock});
        let (status, product) = call(http, "POST", &format!("{base}/v1/products"), &merchant, Some(&product)).await?;
        if status != 201 {
            bail!("creating a product answered {status}: {product}");
        }
        ids.push(product["id"].as_str().context("product without id")?.to_owned());
    }
    Ok(ids)
}

/// Cart i: `items` consecutive products from a start that walks the hot
/// set, so every product is in as many carts and lines overlap across carts.
fn plan_carts(tokens: &Tokens, scenario: &Scenario, products: &[String]) -> anyhow::Result<Vec<Cart>> {
    let users: Vec<Arc<str>> = (1..=scenario.users.max(1))
        .map(|user| tokens.mint("customer", &user.to_string()).map(Arc::from))
        .collect::<Result<_, _>>()?;
    let address = json!({"region": "north", "city": "Harbin", "line1": "1 Main St", "postcode": "150000",
                         "phone": "+86 1234"});
    let carts = (0..scenario.carts)
        .map(|i| {
            let lines: Vec<Value> = (0..scenario.items)
                .map(|k| json!({"product_id": products[(i * 7 + k) % products.len()], "quantity": 1}))
                .collect();
            let body = json!({"items": lines, "address": address});
            Cart {
                token: Arc::clone(&users[i % users.len()]),
                key: format!("cart-{i}"),
                body: Bytes::from(body.to_string()),
                units: scenario.items as i64,
            }
        })
        .collect();
    Ok(carts)
}

async fn drive(
    http: &Http,
    carts: &[Cart],
    url: &str,
    next: &AtomicUsize,
) -> anyhow::Result<(Histogram<u64>, Vec<(usize, u16)>)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut sent = Vec::new();
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(cart) = carts.get(index) else {
            return Ok((histogram, sent));
        };
        let request = Request::post(url)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", cart.token))
            .header("idempotency-key", cart.key.as_str())
            .body(Full::new(cart.body.clone()))?;
        let started = Instant::now();
        let status = match http.request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.into_body().collect().await;
                status
            }
            Err(_) => 0,
        };
        histogram.saturating_record(started.elapsed().as_micros() as u64);
        sent.push((index, status));
    }
}

/// Checkouts answered 201 per second: what counts when some are shed (503)
/// or refused.
pub fn placed_per_second(outcome: &Outcome) -> f64 {
    outcome.statuses.get(&201).copied().unwrap_or(0) as f64 / outcome.elapsed.as_secs_f64()
}
