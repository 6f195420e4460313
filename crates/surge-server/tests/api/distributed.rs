//! Distributed mode on real servers: three `surge` processes share one
//! PostgreSQL database, the Redis Cluster of `scripts/redis-cluster` and one
//! NATS JetStream stream. A sale
//! driven through all three at once, with one node killed by `kill -9`
//! midway, keeps every guarantee: no oversell, every 202 an order, the
//! per-user limit across nodes, no duplicates, and stock left + orders =
//! stock once the reaper has returned what the killed node had deducted
//! but never appended.
//!
//! Needs PostgreSQL (127.0.0.1:5432, trust), NATS with JetStream
//! (127.0.0.1:4222) and the Redis Cluster (127.0.0.1:7000-7005);
//! `scripts/services` and `scripts/redis-cluster` start them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream;
use reqwest::StatusCode;
use serde_json::{Value, json};
use surge_server::auth::{Keys, Role};
use surge_server::config::{AuthSettings, Secret};
use tempfile::TempDir;

use crate::helpers::{ChildSurge, free_port, rfc3339, wait_ready};

const SECRET: &str = "distributed-test-secret-0123456789abcdef";

/// A fresh PostgreSQL database, dropped when the test ends.
struct Database {
    name: String,
}

impl Database {
    fn create() -> Self {
        let name = format!("surge_dist_{}", rand::random::<u32>());
        psql(&format!("CREATE DATABASE {name}"));
        Self { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

fn psql(sql: &str) {
    let status = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .status()
        .expect("psql runs");
    assert!(status.success(), "psql failed: {sql}");
}

/// Every order, through the admin listing, page by page.
async fn all_orders(client: &reqwest::Client, base: &str, admin: &str) -> Vec<Value> {
    let mut orders = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let after = cursor.as_deref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let page: Value = client
            .get(format!("{base}/v1/orders?limit=200{after}"))
            .bearer_auth(admin)
            .send()
            .await
            .expect("req")
            .json()
            .await
            .expect("json");
        orders.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return orders,
        }
    }
}

/// Deletes the test's NATS stream (best effort).
async fn drop_stream(name: &str) {
    if let Ok(client) = async_nats::connect("nats://127.0.0.1:4222").await {
        let _ = async_nats::jetstream::new(client).delete_stream(name).await;
    }
}

/// The settings every node shares, as `SURGE_*` variables.
fn shared_env(database: &Database, tag: &str) -> Vec<(String, String)> {
    vec![
        ("SURGE_STORE__URL".into(), database.url()),
        ("SURGE_REDIS__URLS".into(), r#"["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]"#.into()),
        ("SURGE_REDIS__CLUSTER".into(), "true".into()),
        ("SURGE_REDIS__NAMESPACE".into(), format!("surge-dist-{tag}")),
        ("SURGE_QUEUE__NATS_URL".into(), "nats://127.0.0.1:4222".into()),
        ("SURGE_QUEUE__STREAM".into(), format!("SURGE_DIST_{tag}")),
        ("SURGE_QUEUE__ACK_WAIT".into(), "2s".into()),
        ("SURGE_AUTH__JWT_SECRET".into(), SECRET.into()),
        ("SURGE_FLASH_SALE__PER_USER_RATE".into(), "1000".into()),
        // Short budgets so the reaper returns a killed node's deductions soon.
        ("SURGE_HTTP__REQUEST_BUDGET".into(), "3s".into()),
        ("SURGE_STORE__ACQUIRE_TIMEOUT".into(), "1s".into()),
        ("SURGE_NOTIFY__TIMEOUT".into(), "1s".into()),
        ("SURGE_FLASH_SALE__RESERVATION_TIMEOUT".into(), "4s".into()),
        ("SURGE_FLASH_SALE__PER_SALE_RATE".into(), "100000".into()),
    ]
}

fn start_node(dir: &TempDir, node_id: u16, shared: &[(String, String)]) -> ChildSurge {
    let node = node_id.to_string();
    let mut env: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("SURGE_NODE_ID", &node));
    ChildSurge::start(dir, free_port(), &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_every_guarantee_through_a_kill_9() {
    const STOCK: i64 = 600;
    const USERS: u64 = 1_500;
    const CONCURRENCY: usize = 48;
    let database = Database::create();
    let tag = rand::random::<u32>().to_string();
    let shared = shared_env(&database, &tag);
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().expect("tempdir")).collect();
    let client = reqwest::Client::new();
    let mut nodes: Vec<ChildSurge> = Vec::new();
    for (n, dir) in dirs.iter().enumerate() {
        let node = start_node(dir, n as u16 + 1, &shared);
        wait_ready(&client, &node.base).await;
        nodes.push(node);
    }
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let keys = Keys::new(&Secret::new(SECRET.into()), &AuthSettings::default());
    let token = |role, sub: &str| keys.mint(role, sub, Duration::from_secs(600)).expect("mint");

    let product: Value = client
        .post(format!("{}/v1/products", bases[0]))
        .bearer_auth(token(Role::Merchant, "1"))
        .json(&json!({"sku": "DIST", "name": "Distributed", "price_cents": 100, "stock": 1}))
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    let now = time::OffsetDateTime::now_utc();
    let sale: Value = client
        .post(format!("{}/v1/flash-sales", bases[1]))
        .bearer_auth(token(Role::Admin, "ops"))
        .json(&json!({"product_id": product["id"], "stock": STOCK, "price_cents": 50, "starts_at": rfc3339(now),
                      "ends_at": rfc3339(now + time::Duration::hours(1)), "per_user_limit": 1}))
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    let sale = sale["id"].as_str().expect("sale id").to_owned();

    // Every user tries twice, on two different nodes, with one key per try.
    let accepted: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let attempts: Vec<(u64, usize, String)> = (1..=USERS)
        .flat_map(|user| {
            let token = token(Role::Customer, &user.to_string());
            [(user, user as usize % 3, token.clone()), (user, (user as usize + 1) % 3, token)]
        })
        .collect();
    let load = {
        let (client, accepted, bases, sale) = (client.clone(), Arc::clone(&accepted), bases.clone(), sale.clone());
        tokio::spawn(async move {
            stream::iter(attempts)
                .for_each_concurrent(CONCURRENCY, |(user, node, token)| {
                    let (client, accepted) = (client.clone(), Arc::clone(&accepted));
                    let url = format!("{}/v1/flash-sales/{sale}/orders", bases[node]);
                    async move {
                        let Ok(response) = client.post(&url).bearer_auth(token).json(&json!({})).send().await else {
                            return; // the killed node
                        };
                        if response.status() == StatusCode::ACCEPTED
                            && let Ok(body) = response.json::<Value>().await
                        {
                            let id = body["order_id"].as_str().expect("id").to_owned();
                            accepted.lock().expect("lock").push((user, id));
                        }
                    }
                })
                .await;
        })
    };
    for _ in 0..1_000 {
        if accepted.lock().expect("lock").len() >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at_kill = accepted.lock().expect("lock").len();
    nodes[1].process.kill().expect("kill -9");
    let _ = nodes[1].process.wait();
    load.await.expect("load");
    let acknowledged = accepted.lock().expect("lock").clone();
    eprintln!("{} intakes acknowledged; node 2 was killed after {at_kill}", acknowledged.len());
    assert!(at_kill >= 100 && (at_kill as i64) < STOCK, "the kill came at {at_kill}, not mid-sale");

    // Node 2's fetched-but-unacknowledged requests come back to the others
    // after the ack wait; every 202 becomes a CREATED order.
    let admin = token(Role::Admin, "ops");
    for (_, id) in &acknowledged {
        let mut status = Value::Null;
        for _ in 0..300 {
            let response =
                client.get(format!("{}/v1/orders/{id}", bases[0])).bearer_auth(&admin).send().await.expect("req");
            if response.status() == StatusCode::OK {
                status = response.json::<Value>().await.expect("json")["status"].clone();
                if status == "CREATED" {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, "CREATED", "order {id} acknowledged with 202 never became an order");
    }

    // Node 2's fetched-but-unacknowledged requests come back to the others
    // after queue.ack_wait, and the reaper returns units it had deducted but
    // never appended after flash_sale.reservation_timeout: wait for both.
    let (mut orders, mut stock_left) = (Vec::new(), -1);
    for _ in 0..200 {
        orders = all_orders(&client, &bases[2], &admin).await;
        let view: Value = client
            .get(format!("{}/v1/flash-sales/{sale}", bases[0]))
            .send()
            .await
            .expect("req")
            .json()
            .await
            .expect("json");
        stock_left = view["stock_left"].as_i64().expect("stock_left");
        let created = orders.iter().filter(|o| o["status"] == "CREATED").count() as i64;
        if stock_left + created == STOCK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live: Vec<&Value> = orders.iter().filter(|o| o["status"] == "CREATED").collect();
    let ids: HashSet<&str> = orders.iter().map(|o| o["id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), orders.len(), "duplicate order ids");
    let mut per_user: HashMap<&str, usize> = HashMap::new();
    for order in &live {
        *per_user.entry(order["user_id"].as_str().expect("user")).or_default() += 1;
    }
    assert!(per_user.values().all(|n| *n == 1), "a user holds more than the per-user limit across nodes");
    assert!(live.len() as i64 <= STOCK, "oversold: {} orders for {STOCK}", live.len());
    let acknowledged_ids: HashSet<&str> = acknowledged.iter().map(|(_, id)| id.as_str()).collect();
    assert!(acknowledged_ids.iter().all(|id| ids.contains(id)));
    eprintln!("{} orders, {stock_left} left of {STOCK}", live.len());
    assert_eq!(stock_left + live.len() as i64, STOCK, "stock left + orders must equal stock once reaped");
    assert!(live.len() as i64 <= STOCK, "oversold");

    // The sale sold out; every surviving node refuses further intake.
    if stock_left == 0 {
        for base in [&bases[0], &bases[2]] {
            let late = client
                .post(format!("{base}/v1/flash-sales/{sale}/orders"))
                .bearer_auth(token(Role::Customer, "999999"))
                .json(&json!({}))
                .send()
                .await
                .expect("req");
            assert_eq!(late.status(), StatusCode::CONFLICT, "{base}");
        }
    }
    drop(nodes);
    drop_stream(&format!("SURGE_DIST_{tag}")).await;
}
