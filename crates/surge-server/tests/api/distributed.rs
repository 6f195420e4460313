//! Distributed mode on real servers: three `surge` processes share one
//! PostgreSQL database, the Redis Cluster of `scripts/redis-cluster` and a
//! NATS JetStream stream. A sale is driven through all three at once while
//! one fault strikes midway:
//!
//! - one node is killed with `kill -9` (with NATS, and with a Kafka-protocol
//!   broker as the queue);
//! - every node is killed with `kill -9` at once, and all start again;
//! - the broker stops and starts again a few seconds later (a NATS server
//!   of the test's own, so that nothing else loses its broker);
//! - the Redis Cluster master that owns the sale's keys is killed and its
//!   replica takes over (deductions wait for a replica: `shared.wait_replicas`);
//! - that master hangs instead (`SIGSTOP`: connections open, no answers)
//!   until its replica takes over;
//! - PostgreSQL restarts (with NATS, and with Kafka).
//!
//! Each keeps every guarantee: no oversell, every 202 an order, the per-user
//! limit across nodes, no duplicates, and stock left + orders = stock once
//! redeliveries and the reservation reaper have run.
//!
//! Needs PostgreSQL (127.0.0.1:5432, trust), NATS with JetStream
//! (127.0.0.1:4222) and the Redis Cluster (127.0.0.1:7000-7005);
//! `scripts/services` and `scripts/redis-cluster` start them. The tests run
//! one at a time: one of them restarts PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream;
use reqwest::StatusCode;
use serde_json::{Value, json};
use surge_server::auth::{Keys, Role};
use surge_server::config::{AuthSettings, Secret};
use tempfile::TempDir;

use crate::helpers::{ChildSurge, Database, free_port, rfc3339, wait_ready};
use sqlx::Connection as _;

const SECRET: &str = "distributed-test-secret-0123456789abcdef";
const STOCK: i64 = 600;
const USERS: u64 = 1_500;
const CONCURRENCY: usize = 48;
/// Acknowledged intakes before the fault strikes.
const FAULT_AFTER: usize = 100;

/// One distributed test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A NATS server with JetStream of the test's own, on a free port, that the
/// test may kill and start again on the same port and store.
struct OwnNats {
    port: u16,
    store: TempDir,
    process: Option<Child>,
}

impl OwnNats {
    fn start() -> Self {
        let mut nats = Self { port: free_port(), store: TempDir::new().expect("tempdir"), process: None };
        nats.resume();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn resume(&mut self) {
        // The server's log, kept beside the nodes' for a failing test.
        let logs = std::env::temp_dir().join("surge-test-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let process = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .arg("-l")
            .arg(logs.join(format!("nats-{}.log", self.port)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.process = Some(process);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not come up");
    }

    /// Stops the server as an operator would (SIGTERM: it flushes its
    /// store and exits). A `kill -9` of a lone server can lose messages it
    /// had acknowledged but not yet written (its store writes behind), which
    /// is the broker's durability, not Surge's: production runs a
    /// replicated stream (`queue.replicas`).
    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = Command::new("kill").args(["-TERM", &process.id().to_string()]).status();
            for _ in 0..100 {
                if matches!(process.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

/// A standalone Redis of the test's own (nothing kept on disk), that the
/// test may stop and start again on the same port.
struct OwnRedis {
    port: u16,
    process: Option<Child>,
}

impl OwnRedis {
    fn start() -> Self {
        let mut redis = Self { port: free_port(), process: None };
        redis.resume();
        redis
    }

    fn resume(&mut self) {
        let process = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.process = Some(process);
        for _ in 0..100 {
            if redis_cli(self.port, &["ping"]).trim() == "PONG" {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not come up");
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The queue the nodes share.
#[derive(Debug, Clone)]
enum Broker {
    Nats(String),
    /// A Kafka-protocol broker (`scripts/kafka`: Tansu on 127.0.0.1:19092).
    Kafka,
}

/// What strikes mid-sale.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillNode,
    /// `kill -9` of every node at once, then all three start again.
    KillAllNodes,
    StopBroker,
    RestartPostgres,
    /// `kill -9` of the Redis Cluster master that owns the sale's slot.
    KillRedisMaster,
    /// The same master hangs (`SIGSTOP`): its connections stay open and
    /// answer nothing, until its replica takes over; then it resumes.
    FreezeRedisMaster,
    /// Every key of the deployment in Redis vanishes at once (as after a
    /// `FLUSHALL`, scoped to the test's namespace).
    LoseRedisKeys,
}

/// `redis-cli -p port args...`, given up after 2 s (a frozen node never
/// answers).
fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("timeout")
        .args(["2", "redis-cli", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every key of the test cluster goes, as a `FLUSHALL` of each master does
/// (a replica refuses it, and follows its master). A sale's keys share a
/// slot, so they go together: Redis loses a slot's keys at once, never its
/// buyers without its stock.
fn lose_every_key() {
    for port in 7000..=7005 {
        redis_cli(port, &["FLUSHALL"]);
    }
}

/// Is the cluster whole: six nodes, none failing, three masters with a
/// replica each? A master struck without a replica has nobody to take over.
fn cluster_whole() -> bool {
    let nodes = redis_cli(7000, &["cluster", "nodes"]);
    let count =
        |role: &str| nodes.lines().filter(|l| l.split_whitespace().nth(2).is_some_and(|f| f.ends_with(role))).count();
    nodes.lines().count() == 6 && !nodes.contains("fail") && count("master") == 3 && count("slave") == 3
}

/// Mends the cluster when the test ends, passed or not: a frozen node goes
/// on, a killed one starts again and rejoins as a replica.
struct MendCluster;

impl Drop for MendCluster {
    fn drop(&mut self) {
        let _ = Command::new("scripts/redis-cluster").current_dir(repo_root()).arg("revive").status();
    }
}

/// The port of the master serving `slot`, asked of any node but `not`.
fn master_of(slot: u16, not: Option<u16>) -> Option<u16> {
    let ask = (7000..=7005).find(|port| Some(*port) != not && redis_cli(*port, &["ping"]).trim() == "PONG")?;
    redis_cli(ask, &["cluster", "nodes"]).lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let serves = fields.get(2)?.contains("master") && !fields.get(2)?.contains("fail");
        let owns = fields.iter().skip(8).any(|range| {
            let mut bounds = range.split('-').map(str::parse::<u16>);
            match (bounds.next(), bounds.next()) {
                (Some(Ok(low)), Some(Ok(high))) => (low..=high).contains(&slot),
                (Some(Ok(only)), None) => only == slot,
                _ => false,
            }
        });
        let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
        (serves && owns).then_some(port)
    })
}

/// Kills (`-9`) or freezes (`-STOP`) the master that owns the sale's keys
/// and waits for its replica to take over. A killed master is started again
/// later as a replica; a frozen one is let go (`-CONT`) once its replica
/// serves, and rejoins as a replica by itself.
async fn strike_sale_master(sale: &str, signal: &str) -> u16 {
    for _ in 0..300 {
        if cluster_whole() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cluster_whole(), "the Redis Cluster is not whole before the fault (scripts/redis-cluster mends it)");
    let slot: u16 = redis_cli(7000, &["cluster", "keyslot", &format!("{{s:{sale}}}")]).trim().parse().expect("slot");
    let port = master_of(slot, None).expect("a master owns the sale's slot");
    let pid = redis_cli(port, &["info", "server"])
        .lines()
        .find_map(|line| line.strip_prefix("process_id:").map(|pid| pid.trim().to_owned()))
        .expect("pid");
    assert!(Command::new("kill").args([signal, &pid]).status().expect("kill").success());
    for _ in 0..200 {
        if master_of(slot, Some(port)).is_some_and(|master| master != port) {
            eprintln!("redis master {port} struck with {signal}; its replica took slot {slot}");
            if signal == "-STOP" {
                assert!(Command::new("kill").args(["-CONT", &pid]).status().expect("kill").success());
            }
            return port;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no replica took over slot {slot}");
}

/// Three nodes and what they share.
struct Deployment {
    _database: Database,
    broker: Broker,
    stream: String,
    nodes: Vec<ChildSurge>,
    dirs: Vec<TempDir>,
    /// The settings every node gets, for a restart.
    shared: Vec<(String, String)>,
    bases: Vec<String>,
    client: reqwest::Client,
    keys: Keys,
}

impl Deployment {
    async fn start(broker: Broker, extra: &[(&str, &str)]) -> Self {
        crate::helpers::keep_a_stream_in_nats();
        let database = Database::create();
        let tag = rand::random::<u32>().to_string();
        let stream = format!("SURGE_DIST_{tag}");
        let queue: Vec<(String, String)> = match &broker {
            Broker::Nats(url) => vec![
                ("SURGE_QUEUE__KIND".into(), "nats".into()),
                ("SURGE_QUEUE__URL".into(), url.clone()),
                ("SURGE_QUEUE__STREAM".into(), stream.clone()),
                ("SURGE_QUEUE__ACK_WAIT".into(), "2s".into()),
            ],
            Broker::Kafka => vec![
                ("SURGE_QUEUE__KIND".into(), "kafka".into()),
                ("SURGE_QUEUE__BROKERS".into(), kafka_brokers()),
                ("SURGE_QUEUE__TOPIC".into(), format!("surge-dist-{tag}")),
                ("SURGE_QUEUE__PARTITIONS".into(), "6".into()),
                ("SURGE_QUEUE__CONSUMER".into(), format!("surge-dist-{tag}")),
            ],
        };
        let mut shared: Vec<(String, String)> = vec![
            ("SURGE_STORE__KIND".into(), "postgres".into()),
            ("SURGE_STORE__URL".into(), database.url()),
            ("SURGE_SHARED__KIND".into(), "redis".into()),
            ("SURGE_SHARED__URLS".into(), r#"["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]"#.into()),
            ("SURGE_SHARED__CLUSTER".into(), "true".into()),
            // A deduction counts once a replica holds it: a failover can't
            // lose an acknowledged one.
            ("SURGE_SHARED__WAIT_REPLICAS".into(), "1".into()),
            ("SURGE_SHARED__NAMESPACE".into(), format!("surge-dist-{tag}")),
            ("SURGE_QUEUE__PUBLISH_TIMEOUT".into(), "1s".into()),
            ("SURGE_AUTH__JWT_SECRET".into(), SECRET.into()),
            ("SURGE_FLASH_SALE__PER_USER_RATE".into(), "1000".into()),
            ("SURGE_FLASH_SALE__PER_SALE_RATE".into(), "100000".into()),
            // Short budgets so the reaper returns lost deductions soon; the
            // reservation timeout still outlasts the faults' consumer lag.
            ("SURGE_HTTP__REQUEST_BUDGET".into(), "3s".into()),
            ("SURGE_STORE__ACQUIRE_TIMEOUT".into(), "1s".into()),
            ("SURGE_NOTIFY__TIMEOUT".into(), "1s".into()),
            ("SURGE_FLASH_SALE__RESERVATION_TIMEOUT".into(), "10s".into()),
            // Reconciled every second through every fault: a pass must never
            // take a consistent ledger for a drifted one.
            ("SURGE_FLASH_SALE__RECONCILE_INTERVAL".into(), "1s".into()),
        ];
        shared.extend(queue);
        shared.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().expect("tempdir")).collect();
        let client = reqwest::Client::new();
        let mut nodes = Vec::new();
        for (n, dir) in dirs.iter().enumerate() {
            let node = start_node(&shared, n, dir, free_port());
            wait_ready(&client, &node.base).await;
            nodes.push(node);
        }
        let bases = nodes.iter().map(|n| n.base.clone()).collect();
        let keys = Keys::new(&Secret::new(SECRET.into()), &AuthSettings::default());
        Self { _database: database, broker, stream, nodes, dirs, shared, bases, client, keys }
    }

    /// Starts node `n` again on its port and data dir, after a kill.
    async fn restart(&mut self, n: usize) {
        let port = self.bases[n].rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        let node = start_node(&self.shared, n, &self.dirs[n], port);
        wait_ready(&self.client, &node.base).await;
        self.nodes[n] = node;
    }

    /// The deployment's Redis namespace.
    fn namespace(&self) -> String {
        self.shared.iter().find(|(k, _)| k == "SURGE_SHARED__NAMESPACE").map(|(_, v)| v.clone()).expect("namespace")
    }

    fn token(&self, role: Role, sub: &str) -> String {
        self.keys.mint(role, sub, Duration::from_secs(600)).expect("mint")
    }

    async fn post(&self, node: usize, path: &str, token: &str, body: Value) -> Value {
        self.send(node, path, token, &body).await.json().await.expect("json")
    }

    async fn send(&self, node: usize, path: &str, token: &str, body: &Value) -> reqwest::Response {
        let url = format!("{}{path}", self.bases[node]);
        self.client.post(url).bearer_auth(token).json(body).send().await.expect("req")
    }

    /// `post`, sent again while the node sheds it (503 `overloaded` or
    /// 429, which run nothing), as a client under load does: the answer.
    async fn post_retrying(&self, node: usize, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        for _ in 0..100 {
            let response = self.send(node, path, token, &body).await;
            let status = response.status();
            let answer: Value = response.json().await.expect("json");
            let shed = status == StatusCode::TOO_MANY_REQUESTS
                || (status == StatusCode::SERVICE_UNAVAILABLE && answer["error"]["code"] == "overloaded");
            if !shed {
                return (status, answer);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{path} shed a hundred times");
    }

    async fn get(&self, node: usize, path: &str) -> reqwest::Response {
        let admin = self.token(Role::Admin, "ops");
        self.client.get(format!("{}{path}", self.bases[node])).bearer_auth(admin).send().await.expect("req")
    }

    async fn create_sale(&self) -> String {
        let merchant = self.token(Role::Merchant, "1");
        let product = json!({"sku": "DIST", "name": "Distributed", "price_cents": 100, "stock": STOCK});
        let product = self.post(0, "/v1/products", &merchant, product).await;
        let now = time::OffsetDateTime::now_utc();
        let sale = json!({"product_id": product["id"], "stock": STOCK, "price_cents": 50,
                          "starts_at": rfc3339(now), "ends_at": rfc3339(now + time::Duration::hours(1)),
                          "per_user_limit": 1});
        let sale = self.post(1, "/v1/flash-sales", &self.token(Role::Admin, "ops"), sale).await;
        sale["id"].as_str().expect("sale id").to_owned()
    }

    /// Every user tries twice, on two different nodes, with one key per try;
    /// `strike` runs once `FAULT_AFTER` intakes are acknowledged. Returns the
    /// acknowledged order ids, the statuses seen and how long each 503 took.
    async fn drive(&mut self, sale: &str, strike: impl AsyncFnOnce(&mut Self)) -> Driven {
        let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
        let statuses: Arc<Mutex<HashMap<u16, usize>>> = Arc::default();
        let unavailable: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let attempts: Vec<(usize, String, String)> = (1..=USERS)
            .flat_map(|user| {
                let token = self.token(Role::Customer, &user.to_string());
                let node = user as usize % 3;
                [(node, token.clone(), format!("{user}-a")), ((node + 1) % 3, token, format!("{user}-b"))]
            })
            .collect();
        let load = {
            let (client, accepted, statuses, unavailable) =
                (self.client.clone(), Arc::clone(&accepted), Arc::clone(&statuses), Arc::clone(&unavailable));
            let urls: Vec<String> = self.bases.iter().map(|b| format!("{b}/v1/flash-sales/{sale}/orders")).collect();
            tokio::spawn(async move {
                stream::iter(attempts)
                    .for_each_concurrent(CONCURRENCY, |(node, token, key)| {
                        let (client, accepted, statuses, unavailable) =
                            (client.clone(), Arc::clone(&accepted), Arc::clone(&statuses), Arc::clone(&unavailable));
                        let urls = urls.clone();
                        async move {
                            // Like a load balancer, a refused connection is
                            // tried on the next node, for a while.
                            let mut sent = None;
                            let mut started = std::time::Instant::now();
                            for attempt in 0..100 {
                                started = std::time::Instant::now();
                                let url = &urls[(node + attempt) % urls.len()];
                                // A retry on another node carries the same key.
                                let request = client.post(url).bearer_auth(&token).header("Idempotency-Key", &key);
                                match request.json(&json!({})).send().await {
                                    Ok(response) => {
                                        sent = Some(response);
                                        break;
                                    }
                                    Err(error) if error.is_connect() => {
                                        tokio::time::sleep(Duration::from_millis(20)).await;
                                    }
                                    Err(_) => break, // a node killed mid-request
                                }
                            }
                            let Some(response) = sent else {
                                *statuses.lock().expect("lock").entry(0).or_default() += 1;
                                return;
                            };
                            let status = response.status();
                            *statuses.lock().expect("lock").entry(status.as_u16()).or_default() += 1;
                            if status == StatusCode::SERVICE_UNAVAILABLE {
                                unavailable.lock().expect("lock").push(started.elapsed());
                            }
                            // 504: the request's budget ran out during a failover.
                            assert!(
                                [202, 409, 429, 503, 504].contains(&status.as_u16()),
                                "intake answered {status}: {:?}",
                                response.text().await
                            );
                            if status == StatusCode::ACCEPTED
                                && let Ok(body) = response.json::<Value>().await
                            {
                                accepted.lock().expect("lock").push(body["order_id"].as_str().expect("id").into());
                            }
                        }
                    })
                    .await;
            })
        };
        for _ in 0..1_000 {
            if accepted.lock().expect("lock").len() >= FAULT_AFTER {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let at_fault = accepted.lock().expect("lock").len();
        strike(self).await;
        load.await.expect("load");
        assert!(at_fault >= FAULT_AFTER && (at_fault as i64) < STOCK, "the fault came at {at_fault}, not mid-sale");
        let acknowledged = accepted.lock().expect("lock").clone();
        let statuses = statuses.lock().expect("lock").clone();
        eprintln!("{} intakes acknowledged, fault after {at_fault}; statuses {statuses:?}", acknowledged.len());
        let unavailable = unavailable.lock().expect("lock").clone();
        Driven { acknowledged, statuses, unavailable }
    }

    /// One attempt by each of `users`, 16 at a time round the nodes, with a
    /// key each; the ids of the acknowledged ones.
    async fn buy(&self, sale: &str, users: std::ops::RangeInclusive<u64>) -> Vec<String> {
        let attempts = users.map(|user| {
            let request = self
                .client
                .post(format!("{}/v1/flash-sales/{sale}/orders", self.bases[user as usize % 3]))
                .bearer_auth(self.token(Role::Customer, &user.to_string()))
                .header("Idempotency-Key", format!("buy-{user}"))
                .json(&json!({}));
            async move {
                let response = request.send().await.expect("req");
                let status = response.status();
                assert!([202, 409, 429].contains(&status.as_u16()), "intake answered {status}");
                if status != StatusCode::ACCEPTED {
                    return None;
                }
                let body: Value = response.json().await.expect("json");
                Some(body["order_id"].as_str().expect("id").to_owned())
            }
        });
        stream::iter(attempts).buffer_unordered(16).filter_map(|id| async move { id }).collect().await
    }

    /// Sets a switch through `node` and waits (bounded) until every node
    /// has it.
    async fn switch_everywhere(&self, node: usize, name: &str, body: Value) {
        let set = self
            .client
            .put(format!("{}/v1/admin/switches/{name}", self.bases[node]))
            .bearer_auth(self.token(Role::Admin, "ops"))
            .json(&body)
            .send()
            .await
            .expect("req");
        assert_eq!(set.status(), StatusCode::OK);
        let want = body["enabled"].clone();
        for _ in 0..100 {
            let mut agree = true;
            for n in 0..3 {
                let list: Value = self.get(n, "/v1/admin/switches").await.json().await.expect("json");
                let items = list["items"].as_array().expect("items");
                agree &= items.iter().any(|s| s["name"] == name && s["enabled"] == want);
            }
            if agree {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("switch {name} did not reach every node");
    }

    /// Buys what is left of the sale, one fresh buyer at a time, so that the
    /// sold-out checks always run. Returns the orders.
    async fn sell_the_rest(&self, sale: &str) -> Vec<String> {
        let mut bought = Vec::new();
        for attempt in 0..(STOCK as u64 * 20) {
            // Nodes 1 and 3: node 2 may be the one a fault killed.
            let node = [0, 2][attempt as usize % 2];
            let view: Value = self.get(node, &format!("/v1/flash-sales/{sale}")).await.json().await.expect("json");
            if view["stock_left"] == 0 {
                return bought;
            }
            let buyer = self.token(Role::Customer, &(900_000 + attempt).to_string());
            let response = self
                .client
                .post(format!("{}/v1/flash-sales/{sale}/orders", self.bases[node]))
                .bearer_auth(buyer)
                .header("Idempotency-Key", format!("rest-{attempt}"))
                .json(&json!({}))
                .send()
                .await
                .expect("req");
            match response.status() {
                StatusCode::ACCEPTED => {
                    bought.push(response.json::<Value>().await.expect("json")["order_id"].as_str().expect("id").into())
                }
                // Sold out, or still recovering: look at the view again.
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        panic!("the sale never sold out; {} bought after the fault", bought.len());
    }

    /// Every order, through the admin listing of a surviving node.
    async fn all_orders(&self) -> Vec<Value> {
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let after = cursor.as_deref().map(|c| format!("&cursor={c}")).unwrap_or_default();
            let page: Value = self.get(0, &format!("/v1/orders?limit=200{after}")).await.json().await.expect("json");
            orders.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return orders,
            }
        }
    }

    /// The guarantees, once redeliveries and the reaper have run.
    async fn verify(&self, sale: &str, acknowledged: &[String]) {
        // A request whose consumer died waits for the broker to hand its
        // partition or its unacknowledged messages to another node (a Kafka
        // group's session timeout and rebalance, NATS's ack wait): a minute
        // at most, however loaded the machine. Only the first such order
        // waits; the rest are written by then.
        let started = std::time::Instant::now();
        for id in acknowledged {
            let mut status = Value::Null;
            for _ in 0..1_200 {
                let response = self.get(0, &format!("/v1/orders/{id}")).await;
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
        eprintln!("every acknowledged order was written {:?} after the load", started.elapsed());
        let (mut orders, mut stock_left) = (Vec::new(), -1);
        for _ in 0..300 {
            orders = self.all_orders().await;
            // Right after a fault a read may fail once (a 503 while a client
            // finds the new Redis master): look again.
            let view: Value = self.get(0, &format!("/v1/flash-sales/{sale}")).await.json().await.expect("json");
            let Some(left) = view["stock_left"].as_i64() else {
                eprintln!("sale view not available yet: {view}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            stock_left = left;
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
        assert!(acknowledged.iter().all(|id| ids.contains(id.as_str())));
        let mut by_status: HashMap<&str, usize> = HashMap::new();
        for order in &orders {
            *by_status.entry(order["status"].as_str().unwrap_or("?")).or_default() += 1;
        }
        eprintln!("{} orders {by_status:?}, {stock_left} left of {STOCK}", live.len());
        assert_eq!(stock_left + live.len() as i64, STOCK, "stock left + orders must equal stock");
    }

    /// One sample of a node's `/metrics`; 0 when absent.
    async fn metric(&self, node: usize, sample: &str) -> f64 {
        let text = self.get(node, "/metrics").await.text().await.expect("metrics");
        text.lines().find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
    }

    async fn drop_stream(&self) {
        let Broker::Nats(url) = &self.broker else {
            return; // Tansu keeps its topics in memory
        };
        if let Ok(client) = async_nats::connect(url.as_str()).await {
            let _ = async_nats::jetstream::new(client).delete_stream(&self.stream).await;
        }
    }
}

/// What one drive of the sale saw.
struct Driven {
    acknowledged: Vec<String>,
    statuses: HashMap<u16, usize>,
    /// How long each 503 took to come.
    unavailable: Vec<Duration>,
}

/// Node `n` (node id `n + 1`) with the deployment's settings.
fn start_node(shared: &[(String, String)], n: usize, dir: &TempDir, port: u16) -> ChildSurge {
    let node_id = (n + 1).to_string();
    let mut env: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("SURGE_NODE_ID", &node_id));
    ChildSurge::start(dir, port, &env)
}

fn kafka_brokers() -> String {
    std::env::var("SURGE_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".to_owned())
}

async fn sale_through(fault: Fault, kafka: bool) {
    let _one_at_a_time = SERIAL.lock().await;
    let mut mend = matches!(fault, Fault::KillRedisMaster | Fault::FreezeRedisMaster).then_some(MendCluster);
    let mut nats = matches!(fault, Fault::StopBroker).then(OwnNats::start);
    let broker = match (&nats, kafka) {
        (_, true) => Broker::Kafka,
        (Some(own), false) => Broker::Nats(own.url()),
        (None, false) => Broker::Nats("nats://127.0.0.1:4222".to_owned()),
    };
    let mut deployment = Deployment::start(broker, &[]).await;
    let sale = deployment.create_sale().await;
    let Driven { mut acknowledged, statuses, unavailable } = deployment
        .drive(&sale, async |deployment: &mut Deployment| match fault {
            Fault::KillNode => {
                deployment.nodes[1].process.kill().expect("kill -9");
                let _ = deployment.nodes[1].process.wait();
            }
            Fault::KillAllNodes => {
                for node in &mut deployment.nodes {
                    node.process.kill().expect("kill -9");
                    let _ = node.process.wait();
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                for n in 0..3 {
                    deployment.restart(n).await;
                }
                eprintln!("all three nodes killed and started again");
            }
            Fault::StopBroker => {
                let nats = nats.as_mut().expect("own broker");
                nats.stop();
                tokio::time::sleep(Duration::from_millis(500)).await;
                // Readiness names the dead dependency, without its driver's text.
                let ready = deployment.client.get(format!("{}/readyz", deployment.bases[0])).send().await.expect("req");
                assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
                let body: Value = ready.json().await.expect("json");
                assert_eq!(body["error"]["code"], "not_ready");
                assert_eq!(body["error"]["message"], "queue: unavailable", "{body}");
                tokio::time::sleep(Duration::from_millis(2_500)).await;
                nats.resume();
            }
            Fault::KillRedisMaster => {
                strike_sale_master(&sale, "-9").await;
            }
            Fault::FreezeRedisMaster => {
                strike_sale_master(&sale, "-STOP").await;
            }
            Fault::LoseRedisKeys => {
                let namespace = deployment.namespace();
                lose_every_key();
                let left: usize = (7000..=7005)
                    .map(|port| {
                        let count = format!("redis-cli -p {port} --scan --pattern '{namespace}*' | wc -l");
                        let out = Command::new("sh").args(["-c", &count]).output().expect("sh runs");
                        String::from_utf8_lossy(&out.stdout).trim().parse::<usize>().unwrap_or(0)
                    })
                    .sum();
                eprintln!("every key of {namespace} lost mid-sale; {left} keys there now");
            }
            Fault::RestartPostgres => {
                let status = Command::new("pg_ctlcluster")
                    .args(["--skip-systemctl-redirect", &postgres_version(), "main", "restart", "-m", "fast"])
                    .status()
                    .expect("pg_ctlcluster runs");
                assert!(status.success(), "PostgreSQL restarted");
            }
        })
        .await;
    if matches!(fault, Fault::StopBroker) {
        // The README's promise: while the broker is down, intake refuses at
        // once (the client sees it disconnected), not after the publish
        // timeout (2 s) or the request budget (3 s).
        let mut took = unavailable.clone();
        took.sort();
        eprintln!("intake while the broker was down: {} x 503, median {:?}", took.len(), took.get(took.len() / 2));
        assert!(took.len() >= 10, "intake refused while the broker was down: {statuses:?}");
        let median = took[took.len() / 2];
        assert!(median < Duration::from_secs(1), "the 503s were not fast: median {median:?}");
    }
    if matches!(fault, Fault::KillRedisMaster) {
        // The killed master comes back as a replica, for the next tests.
        drop(mend.take());
    }
    deployment.verify(&sale, &acknowledged).await;
    for node in [0, 2] {
        let repaired = deployment.metric(node, "surge_ledger_repaired_units_total").await;
        assert_eq!(repaired, 0.0, "node {} repaired a ledger that had not drifted", node + 1);
    }

    // Sold out, whatever the fault left: every surviving node refuses; when
    // a buyer cancels through one node, the unit sells again through
    // another (its sold-out flag is refreshed from the shared ledger).
    let rest = deployment.sell_the_rest(&sale).await;
    if !rest.is_empty() {
        eprintln!("{} more bought after the fault to sell the sale out", rest.len());
        acknowledged.extend(rest);
        deployment.verify(&sale, &acknowledged).await;
    }
    let view: Value = deployment.get(2, &format!("/v1/flash-sales/{sale}")).await.json().await.expect("json");
    assert_eq!(view["stock_left"], 0, "{view}");
    {
        let late = deployment.token(Role::Customer, "999999");
        let place = |node: usize| {
            deployment
                .client
                .post(format!("{}/v1/flash-sales/{sale}/orders", deployment.bases[node]))
                .bearer_auth(&late)
                .json(&json!({}))
                .send()
        };
        for node in [0, 2] {
            assert_eq!(place(node).await.expect("req").status(), StatusCode::CONFLICT, "node {node}");
        }
        // The sell-out was announced: both nodes heard it over pub/sub,
        // not only by their own refused deduction.
        for node in [0, 2] {
            assert!(deployment.metric(node, r#"surge_events_received_total{event="sold_out"}"#).await >= 1.0);
        }
        let order: Value =
            deployment.get(0, &format!("/v1/orders/{}", acknowledged[0])).await.json().await.expect("json");
        let buyer = deployment.token(Role::Customer, order["user_id"].as_str().expect("user"));
        let cancelled = deployment.post(0, &format!("/v1/orders/{}/cancel", acknowledged[0]), &buyer, json!({})).await;
        assert_eq!(cancelled["status"], "CANCELLED", "{cancelled}");
        // After a Redis failover the sale's new master may still be getting
        // its replica (intake answers 503 meanwhile): allow for that.
        let mut seen = Vec::new();
        for _ in 0..150 {
            let status = place(2).await.expect("req").status();
            seen.push(status.as_u16());
            if status == StatusCode::ACCEPTED {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen.last(), Some(&202), "the cancelled unit sells again through another node: {seen:?}");
        // Node 3 cleared its flag on the restock event (its sweeper would
        // have too, a moment later).
        let restocked = r#"surge_events_received_total{event="restocked"}"#;
        assert!(deployment.metric(2, restocked).await >= 1.0, "node 3 heard the restock");
    }
    deployment.drop_stream().await;
}

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn postgres_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .next()
        .expect("a PostgreSQL cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_every_guarantee_when_one_is_killed() {
    sale_through(Fault::KillNode, false).await;
}

/// The whole tier dies at once: what was acknowledged is in the stream and
/// the reservations in Redis; the restarted nodes consume the one and the
/// reaper settles the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_every_guarantee_when_all_are_killed_and_restarted() {
    sale_through(Fault::KillAllNodes, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_kafka_keep_every_guarantee_when_one_is_killed() {
    sale_through(Fault::KillNode, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_every_guarantee_when_the_broker_stops() {
    sale_through(Fault::StopBroker, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_every_guarantee_when_a_redis_master_dies() {
    sale_through(Fault::KillRedisMaster, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_every_guarantee_when_a_redis_master_hangs() {
    sale_through(Fault::FreezeRedisMaster, false).await;
}

/// Redis loses the sale's counters, reservations, intake keys and pending
/// views mid-sale: intake answers 503 until the queue holds nothing from
/// before the loss, then the counters are rebuilt from the orders and the
/// sale goes on with exact counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_every_guarantee_when_redis_loses_every_key() {
    sale_through(Fault::LoseRedisKeys, false).await;
}

/// Redis loses the counters twice: the second loss comes soon after one
/// node rebuilt them from the first, while the orders accepted in between
/// still wait in the queue. The other two nodes noticed the first loss and
/// never rebuilt; they must time the second loss from a new notice, so none
/// rebuilds before those orders are written, and their buyers can't buy
/// their one unit a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_loss_of_the_counters_is_timed_from_its_own_notice() {
    let _one_at_a_time = SERIAL.lock().await;
    let deployment = Deployment::start(Broker::Nats("nats://127.0.0.1:4222".to_owned()), &[]).await;
    let sale = deployment.create_sale().await;
    let mut acknowledged = deployment.buy(&sale, 1..=30).await;
    assert_eq!(acknowledged.len(), 30);
    let intake = |node: usize, user: u64, key: String| {
        deployment
            .client
            .post(format!("{}/v1/flash-sales/{sale}/orders", deployment.bases[node]))
            .bearer_auth(deployment.token(Role::Customer, &user.to_string()))
            .header("Idempotency-Key", key)
            .json(&json!({}))
            .send()
    };

    // The first loss: nodes 2 and 3 notice it first, node 1 last (and then
    // rebuilds, on a read of the sale, once that is safe).
    lose_every_key();
    for node in [1, 2, 0] {
        let status = intake(node, 1_000 + node as u64, format!("notice-{node}")).await.expect("req").status();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "node {} noticed the loss", node + 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut rebuilt = false;
    for _ in 0..300 {
        let view: Value = deployment.get(0, &format!("/v1/flash-sales/{sale}")).await.json().await.expect("json");
        if view["stock_left"].as_i64() == Some(STOCK - 30) {
            rebuilt = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rebuilt, "node 1 rebuilt the counters from the 30 orders");

    // Orders accepted after the rebuild, held in the queue...
    deployment.switch_everywhere(0, "order_consumer", json!({"enabled": false, "reason": "held back"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut held = Vec::new();
    for user in 31..=60u64 {
        let response = intake(0, user, format!("buy-{user}")).await.expect("req");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        held.push(response.json::<Value>().await.expect("json")["order_id"].as_str().expect("id").to_owned());
    }
    // ...and the counters lost again.
    lose_every_key();
    // For longer than a loss must wait (the request budget and the clock
    // skew: 4 s), those buyers try again through the nodes that noticed the
    // first loss. A node that timed this loss from that old notice would
    // rebuild at once without their queued orders, and sell them a second
    // unit each.
    let until = std::time::Instant::now() + Duration::from_secs(7);
    let mut seen: HashMap<u16, usize> = HashMap::new();
    let mut round = 0;
    while std::time::Instant::now() < until {
        for user in 31..=60u64 {
            let node = 1 + (user as usize % 2);
            let status = intake(node, user, format!("again-{round}-{user}")).await.expect("req").status();
            *seen.entry(status.as_u16()).or_default() += 1;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("while the queue held the orders taken between the losses: {seen:?}");
    assert_eq!(seen.get(&202), None, "a buyer got a second unit while their first was queued: {seen:?}");
    assert!(seen.get(&503).is_some_and(|n| *n > 0), "intake refused while the counters could not be rebuilt");

    deployment.switch_everywhere(1, "order_consumer", json!({"enabled": true, "reason": "", "mode": "auto"})).await;
    acknowledged.extend(held);
    deployment.verify(&sale, &acknowledged).await;
    // Rebuilt with the queued orders: their buyers are at their limit.
    let mut answer = Value::Null;
    for attempt in 0..300 {
        let response = intake(2, 31, format!("after-{attempt}")).await.expect("req");
        if response.status() != StatusCode::SERVICE_UNAVAILABLE {
            answer =
                json!({"status": response.status().as_u16(), "body": response.json::<Value>().await.expect("json")});
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer["status"], 409, "buyer 31 is at the limit once the counters are back: {answer}");
    assert_eq!(answer["body"]["error"]["code"], "limit_exceeded", "{answer}");
    for node in 0..3 {
        assert_eq!(deployment.metric(node, "surge_orders_failed_total").await, 0.0, "node {}", node + 1);
    }
    deployment.drop_stream().await;
}

/// The ledger's stock drifts from the orders (units lost, as a give-back
/// lost before the outbox; units counted twice, as a hand edit): the
/// reconciliation measures the difference, exports it, and puts the stock
/// back to what the orders say; the sale then sells out with exact counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciliation_puts_drifted_stock_back_to_what_the_orders_say() {
    let _one_at_a_time = SERIAL.lock().await;
    // Every second (the deployment's setting).
    let deployment = Deployment::start(Broker::Nats("nats://127.0.0.1:4222".to_owned()), &[]).await;
    let sale = deployment.create_sale().await;
    let mut acknowledged = deployment.buy(&sale, 1..=20).await;
    assert_eq!(acknowledged.len(), 20);
    deployment.verify(&sale, &acknowledged).await;
    let stock = format!("{}:{{s:{sale}}}:stock", deployment.namespace());
    let stock_left = || async {
        let view: Value = deployment.get(0, &format!("/v1/flash-sales/{sale}")).await.json().await.expect("json");
        view["stock_left"].as_i64()
    };
    let repaired = || async {
        let mut units = 0.0;
        for node in 0..3 {
            units += deployment.metric(node, "surge_ledger_repaired_units_total").await;
        }
        units
    };

    for (drift, what) in [(-7i32, "units lost"), (5, "units counted twice")] {
        let before = repaired().await;
        let moved = redis_cli(7000, &["-c", "INCRBY", &stock, &drift.to_string()]);
        assert_eq!(moved.trim().parse::<i64>().ok(), Some(STOCK - 20 + i64::from(drift)), "{what}: {moved}");
        let mut seen = Vec::new();
        for _ in 0..100 {
            let left = stock_left().await;
            if seen.last() != Some(&left) {
                seen.push(left);
            }
            if left == Some(STOCK - 20) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("{what} ({drift}): stock left seen {seen:?}");
        assert_eq!(seen.last(), Some(&Some(STOCK - 20)), "{what}: the stock came back to what the orders say");
        // Exactly once: the nodes that measured it too found the stock
        // moved and left it.
        assert_eq!(repaired().await - before, f64::from(drift.abs()), "{what}: repaired once");
    }
    // Every node's next pass finds nothing left to repair.
    let mut differences = Vec::new();
    for _ in 0..50 {
        differences.clear();
        for node in 0..3 {
            differences.push(deployment.metric(node, "surge_ledger_difference_units").await);
        }
        if differences.iter().all(|units| *units == 0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(differences, [0.0; 3], "the difference each node measured last");
    acknowledged.extend(deployment.sell_the_rest(&sale).await);
    deployment.verify(&sale, &acknowledged).await;
    for node in 0..3 {
        assert_eq!(deployment.metric(node, "surge_orders_failed_total").await, 0.0, "node {}", node + 1);
    }
    deployment.drop_stream().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_every_guarantee_when_postgres_restarts() {
    sale_through(Fault::RestartPostgres, false).await;
}

/// A customer who spreads attempts over the nodes still meets one budget:
/// `flash_sale.cluster_per_user_rate` is a token bucket in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_wide_per_user_rate_holds_across_nodes() {
    let _one_at_a_time = SERIAL.lock().await;
    let broker = Broker::Nats("nats://127.0.0.1:4222".to_owned());
    let deployment = Deployment::start(broker, &[("SURGE_FLASH_SALE__CLUSTER_PER_USER_RATE", "2")]).await;
    let sale = deployment.create_sale().await;
    // 30 attempts, 10 per node: each node's own limit (10 a second) would
    // let every one through. A round that took so long that the bucket's
    // refill could explain them is run again with another customer, so a
    // slow machine can't make the check vacuous.
    const ATTEMPTS: usize = 30;
    let mut judged = false;
    for round in 0..5 {
        let token = deployment.token(Role::Customer, &(77 + round).to_string());
        let attempts = (0..ATTEMPTS).map(|n| {
            let request = deployment
                .client
                .post(format!("{}/v1/flash-sales/{sale}/orders", deployment.bases[n % 3]))
                .bearer_auth(&token)
                .header("Idempotency-Key", format!("spread-{round}-{n}"))
                .json(&json!({}));
            async move { request.send().await.expect("req").status() }
        });
        let started = std::time::Instant::now();
        let statuses = futures::future::join_all(attempts).await;
        let elapsed = started.elapsed().as_secs_f64();
        let passed = statuses.iter().filter(|s| **s != StatusCode::TOO_MANY_REQUESTS).count();
        println!("{ATTEMPTS} attempts over 3 nodes in {elapsed:.2}s: {passed} passed");
        assert!(passed >= 1, "the first attempt is admitted");
        // The burst of 2, plus what refilled at 2 a second while the calls ran.
        let allowed = 2 + (2.0 * elapsed).ceil() as usize;
        if allowed >= ATTEMPTS / 2 {
            continue; // too slow a round to tell the limit from no limit
        }
        assert!(passed <= allowed, "{passed} of {ATTEMPTS} passed the limit, more than {allowed}: {statuses:?}");
        judged = true;
        break;
    }
    assert!(judged, "no round was fast enough to judge the limit");
    deployment.drop_stream().await;
}

/// Every node caches a product in memory over the shared Redis tier; a
/// change through one node is read at once through the others (the write
/// evicts the Redis entry and every node's copy), not after the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_change_through_one_node_is_read_through_every_node() {
    let _one_at_a_time = SERIAL.lock().await;
    let broker = Broker::Nats("nats://127.0.0.1:4222".to_owned());
    // A long TTL and a late second delete: only the write's own eviction
    // and event can make the change visible in time.
    let settings = [("SURGE_CACHE__TTL", "10m"), ("SURGE_CACHE__SECOND_DELETE_DELAY", "10m")];
    let deployment = Deployment::start(broker, &settings).await;
    let merchant = deployment.token(Role::Merchant, "1");
    let product = json!({"sku": "CACHED", "name": "Before", "price_cents": 100, "stock": 1});
    let product = deployment.post(0, "/v1/products", &merchant, product).await;
    let path = format!("/v1/products/{}", product["id"].as_str().expect("id"));
    let name_on = async |node: usize| -> Value {
        deployment.get(node, &path).await.json::<Value>().await.expect("json")["name"].clone()
    };
    for node in 0..3 {
        assert_eq!(name_on(node).await, "Before");
        assert_eq!(name_on(node).await, "Before"); // now from the node's memory
    }
    let changed = r#"surge_events_received_total{event="product_changed"}"#;
    let heard_before = [deployment.metric(0, changed).await, deployment.metric(2, changed).await];
    let response = deployment
        .client
        .patch(format!("{}{path}", deployment.bases[1]))
        .bearer_auth(&merchant)
        .json(&json!({"name": "After"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), StatusCode::OK);
    for (node, heard_before) in [0, 2].into_iter().zip(heard_before) {
        // The event is delivered asynchronously: a few polls at most when
        // the machine is quiet; up to 5 s under the rest of the suite's
        // load (2 s was once too short in CI).
        let mut seen = name_on(node).await;
        for _ in 0..250 {
            if seen == "After" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen = name_on(node).await;
        }
        assert_eq!(seen, "After", "node {node} still serves its old copy");
        let heard = deployment.metric(node, changed).await;
        assert!(heard > heard_before, "node {node} heard the change");
    }
    let hits = deployment.metric(2, r#"surge_cache_requests_total{cache="product",result="hit"}"#).await;
    assert!(hits >= 1.0, "reads were served from the node's memory");
    deployment.drop_stream().await;
}

/// The Kafka consumer's path through a database outage: a failed batch is
/// read again by seeking back, and commits only follow written orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_kafka_keep_every_guarantee_when_postgres_restarts() {
    sale_through(Fault::RestartPostgres, true).await;
}

/// The config centre across nodes: a switch or a run-time setting changed
/// through one node is what every node serves within a second, and every
/// node's `GET /v1/admin/switches` agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_or_a_setting_changed_through_one_node_reaches_every_node_within_a_second() {
    let _one_at_a_time = SERIAL.lock().await;
    let broker = Broker::Nats("nats://127.0.0.1:4222".to_owned());
    let deployment = Deployment::start(broker, &[]).await;
    let sale = deployment.create_sale().await;
    let admin = deployment.token(Role::Admin, "ops");
    let put = |node: usize, path: &str, body: Value| {
        deployment.client.put(format!("{}{path}", deployment.bases[node])).bearer_auth(&admin).json(&body).send()
    };
    // What a node says of the switch: (enabled, mode, reason).
    let deployment = &deployment;
    let switch_on = |node: usize| async move {
        let list: Value = deployment.get(node, "/v1/admin/switches").await.json().await.expect("json");
        let switch = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|s| s["name"] == "flash_sale_intake")
            .expect("the intake switch")
            .clone();
        (switch["enabled"].clone(), switch["mode"].clone(), switch["reason"].clone())
    };
    // Waits, up to a second, until every node shows `want`.
    let everywhere = async |what: &str, want: (Value, Value, Value)| {
        let started = std::time::Instant::now();
        loop {
            let seen = [switch_on(0).await, switch_on(1).await, switch_on(2).await];
            if seen.iter().all(|s| *s == want) {
                println!("{what}: every node within {:?}", started.elapsed());
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(1), "{what}: not on every node within 1 s: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    let off = put(0, "/v1/admin/switches/flash_sale_intake", json!({"enabled": false, "reason": "cross-node"})).await;
    assert_eq!(off.expect("req").status(), StatusCode::OK);
    everywhere("intake switched off through node 1", (json!(false), json!("manual"), json!("cross-node"))).await;
    // Node 3 acts on it: intake is degraded there too.
    let buyer = deployment.token(Role::Customer, "5");
    let intake = deployment
        .client
        .post(format!("{}/v1/flash-sales/{sale}/orders", deployment.bases[2]))
        .bearer_auth(&buyer)
        .json(&json!({}))
        .send()
        .await
        .expect("req");
    assert_eq!(intake.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(intake.json::<Value>().await.expect("json")["error"]["code"], "degraded");

    let back =
        put(2, "/v1/admin/switches/flash_sale_intake", json!({"enabled": true, "reason": "", "mode": "auto"})).await;
    assert_eq!(back.expect("req").status(), StatusCode::OK);
    let auto = switch_on(2).await;
    assert_eq!((&auto.0, &auto.1), (&json!(true), &json!("auto")));
    everywhere("intake handed back through node 3", auto).await;

    // A run-time setting changed through node 2 is every node's.
    let changed = put(1, "/v1/admin/config", json!({"flash_sale": {"per_user_rate": 3}})).await;
    assert_eq!(changed.expect("req").status(), StatusCode::OK);
    let started = std::time::Instant::now();
    loop {
        let mut rates = Vec::new();
        for node in 0..3 {
            let config: Value = deployment.get(node, "/v1/admin/config").await.json().await.expect("json");
            rates.push(config["flash_sale"]["per_user_rate"].clone());
        }
        if rates.iter().all(|rate| *rate == 3) {
            println!("per_user_rate changed through node 2: every node within {:?}", started.elapsed());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "not on every node within 1 s: {rates:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    deployment.drop_stream().await;
}

/// The consumer held back (`order_consumer` off on every node) for longer
/// than the reservation timeout while the sale goes on. Reservations whose
/// requests wait in the queue are not reaped (the queue's oldest
/// unacknowledged request proves they may be there), so no unit sells
/// twice: every 202 becomes a CREATED order, none ends FAILED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_202_becomes_an_order_when_the_consumer_is_held_back_past_the_reservation_timeout() {
    let _one_at_a_time = SERIAL.lock().await;
    let deployment = Deployment::start(Broker::Nats("nats://127.0.0.1:4222".to_owned()), &[]).await;
    let sale = deployment.create_sale().await;
    deployment.switch_everywhere(0, "order_consumer", json!({"enabled": false, "reason": "held back"})).await;
    // A consumer step already waiting for requests (up to 100 ms) ends first.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut acknowledged = deployment.buy(&sale, 1..=200).await;
    assert_eq!(acknowledged.len(), 200, "the first 200 buyers are accepted");
    // Past the reservation timeout (10 s), with reaper passes every 2.5 s.
    tokio::time::sleep(Duration::from_secs(14)).await;
    let order = &acknowledged[0];
    let still: Value = deployment.get(1, &format!("/v1/orders/{order}")).await.json().await.expect("json");
    assert_eq!(still["status"], "PENDING", "the consumer was held back");
    // The sale goes on: reaped units would sell a second time here.
    acknowledged.extend(deployment.buy(&sale, 201..=1_000).await);
    eprintln!("{} acknowledged with the consumer held back", acknowledged.len());
    assert!(acknowledged.len() as i64 <= STOCK, "{} accepted for {STOCK} units", acknowledged.len());

    deployment.switch_everywhere(1, "order_consumer", json!({"enabled": true, "reason": "", "mode": "auto"})).await;
    deployment.verify(&sale, &acknowledged).await;
    for node in 0..3 {
        assert_eq!(deployment.metric(node, "surge_orders_failed_total").await, 0.0, "node {}", node + 1);
    }
    deployment.drop_stream().await;
}

/// Redis dies: every node's Redis breaker opens within a second or so and
/// turns intake and live product details `auto` off (a fast 503 `degraded`
/// instead of requests waiting for timeouts); when Redis is back the
/// breaker closes and both come back on by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_opens_its_breaker_and_intake_degrades_until_it_is_back() {
    let _one_at_a_time = SERIAL.lock().await;
    let mut redis = OwnRedis::start();
    let urls = format!(r#"["redis://127.0.0.1:{}"]"#, redis.port);
    let standalone = [
        ("SURGE_SHARED__URLS", urls.as_str()),
        ("SURGE_SHARED__CLUSTER", "false"),
        ("SURGE_SHARED__WAIT_REPLICAS", "0"),
    ];
    let deployment = Deployment::start(Broker::Nats("nats://127.0.0.1:4222".to_owned()), &standalone).await;
    let sale = deployment.create_sale().await;
    let place = |node: usize, user: u64| {
        deployment
            .client
            .post(format!("{}/v1/flash-sales/{sale}/orders", deployment.bases[node]))
            .bearer_auth(deployment.token(Role::Customer, &user.to_string()))
            .json(&json!({}))
            .send()
    };
    assert_eq!(place(0, 1).await.expect("req").status(), StatusCode::ACCEPTED);
    let switch_of = async |node: usize, name: &str| {
        let list: Value = deployment.get(node, "/v1/admin/switches").await.json().await.expect("json");
        list["items"].as_array().expect("items").iter().find(|s| s["name"] == name).expect("switch").clone()
    };

    redis.kill();
    let started = std::time::Instant::now();
    loop {
        let intake = switch_of(1, "flash_sale_intake").await;
        let details = switch_of(1, "product_detail_live").await;
        if intake["enabled"] == false && details["enabled"] == false {
            assert_eq!(intake["mode"], "auto");
            assert!(intake["reason"].as_str().expect("reason").contains("redis"), "{intake}");
            println!("Redis dead: intake and live details off after {:?}", started.elapsed());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the breaker never opened: {intake}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = place(1, 2).await.expect("req");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.json::<Value>().await.expect("json")["error"]["code"], "degraded");
    // Open, or half-open while a probe is out.
    assert!(deployment.metric(1, r#"surge_breaker_state{breaker="redis"}"#).await >= 1.0, "the breaker is not closed");

    redis.resume();
    let started = std::time::Instant::now();
    loop {
        let mut on = true;
        for node in 0..3 {
            on &= switch_of(node, "flash_sale_intake").await["enabled"] == true;
        }
        if on {
            println!("Redis back: intake on again after {:?}", started.elapsed());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "intake never came back on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The restarted Redis is empty: the sale's counters are rebuilt from
    // the orders first (a few 503s), then it sells again.
    let mut seen = Vec::new();
    for _ in 0..100 {
        let status = place(2, 3).await.expect("req").status();
        seen.push(status.as_u16());
        if status == StatusCode::ACCEPTED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen.last(), Some(&202), "{seen:?}");
    deployment.drop_stream().await;
}

/// The timeout funnel: Redis hangs (`CLIENT PAUSE`), and a product read
/// that must go through its shared cache tier is answered at the client's
/// deadline: the Redis command gets what is left of it, not its own 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_a_read_its_deadline_not_more() {
    let _one_at_a_time = SERIAL.lock().await;
    let redis = OwnRedis::start();
    let urls = format!(r#"["redis://127.0.0.1:{}"]"#, redis.port);
    let standalone = [
        ("SURGE_SHARED__URLS", urls.as_str()),
        ("SURGE_SHARED__CLUSTER", "false"),
        ("SURGE_SHARED__WAIT_REPLICAS", "0"),
        ("SURGE_SHARED__RESPONSE_TIMEOUT", "2s"),
    ];
    let deployment = Deployment::start(Broker::Nats("nats://127.0.0.1:4222".to_owned()), &standalone).await;
    let merchant = deployment.token(Role::Merchant, "1");
    let product = deployment
        .post(0, "/v1/products", &merchant, json!({"sku": "SLOW", "name": "Slow", "price_cents": 1, "stock": 1}))
        .await;
    let id = product["id"].as_str().expect("id").to_owned();
    // Node 2 has not read it: its read goes to the Redis tier.
    redis_cli(redis.port, &["client", "pause", "3000", "all"]);
    let started = std::time::Instant::now();
    let response = deployment
        .client
        .get(format!("{}/v1/products/{id}", deployment.bases[1]))
        .header("X-Request-Deadline-Ms", "300")
        .send()
        .await
        .expect("req");
    let took = started.elapsed();
    println!("a read through a hung Redis with a 300 ms deadline: {} in {took:?}", response.status());
    // The Redis call is cut at the deadline; then either the deadline layer
    // answers 504 or the read's fallback to PostgreSQL (a few ms) wins.
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    match status {
        StatusCode::GATEWAY_TIMEOUT => assert_eq!(body["error"]["code"], "deadline_exceeded"),
        StatusCode::OK => assert_eq!(body["id"], id.as_str(), "the fallback read the product"),
        other => panic!("a read through a hung Redis answered {other}: {body}"),
    }
    // The deadline, give or take the machine: not the 2 s Redis timeout.
    assert!(took < Duration::from_millis(300 + 250), "{took:?}");
    deployment.drop_stream().await;
}

/// A cancel whose give-back Redis refuses (its scripts forbidden for a
/// while by an ACL, so the command fails without running) still cancels;
/// the give-back stays owed in the order's row and the sweeper gives the
/// units back once Redis takes scripts again, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_give_back_redis_did_not_take_is_retried_and_counted_once() {
    let _one_at_a_time = SERIAL.lock().await;
    let redis = OwnRedis::start();
    let urls = format!(r#"["redis://127.0.0.1:{}"]"#, redis.port);
    let standalone = [
        ("SURGE_SHARED__URLS", urls.as_str()),
        ("SURGE_SHARED__CLUSTER", "false"),
        ("SURGE_SHARED__WAIT_REPLICAS", "0"),
        ("SURGE_SHARED__RESPONSE_TIMEOUT", "500ms"),
    ];
    let deployment = Deployment::start(Broker::Nats("nats://127.0.0.1:4222".to_owned()), &standalone).await;
    let sale = deployment.create_sale().await;
    let buyer = deployment.token(Role::Customer, "7");
    let accepted = deployment.post(0, &format!("/v1/flash-sales/{sale}/orders"), &buyer, json!({})).await;
    let order = accepted["order_id"].as_str().expect("order id").to_owned();
    let mut status = Value::Null;
    for _ in 0..200 {
        status = deployment.get(0, &format!("/v1/orders/{order}")).await.json::<Value>().await.expect("json")["status"]
            .clone();
        if status == "CREATED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "CREATED");
    let stock_left = async || {
        let view: Value = deployment.get(1, &format!("/v1/flash-sales/{sale}")).await.json().await.expect("json");
        view["stock_left"].as_i64().unwrap_or_else(|| panic!("{view}"))
    };
    assert_eq!(stock_left().await, STOCK - 1);

    assert_eq!(redis_cli(redis.port, &["acl", "setuser", "default", "-evalsha", "-eval"]).trim(), "OK");
    let cancelled = deployment.post(0, &format!("/v1/orders/{order}/cancel"), &buyer, json!({})).await;
    assert_eq!(cancelled["status"], "CANCELLED", "the cancel stands without the give-back: {cancelled}");
    // Past the sweeper's grace, the give-back is still refused: still owed.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(stock_left().await, STOCK - 1, "nothing came back while Redis refused");
    assert_eq!(redis_cli(redis.port, &["acl", "setuser", "default", "+evalsha", "+eval"]).trim(), "OK");

    // Back once Redis answers and the sweeper has retried (5 s grace).
    let mut left = 0;
    for _ in 0..300 {
        left = stock_left().await;
        if left == STOCK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, STOCK, "the cancelled unit came back");
    // A few more sweeps: nothing comes back twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stock_left().await, STOCK, "the unit came back once");
    deployment.drop_stream().await;
}

const SANDBOX_SECRET: &str = "distributed-sandbox-secret";

/// Posts one sandbox callback to `node`, signed now, as a provider does:
/// a 503 (the node shed it; nothing was applied) is sent again, up to 20
/// times. Its last status and how many sends were refused.
async fn callback(deployment: &Deployment, node: usize, body: &[u8]) -> (StatusCode, u32) {
    let mut refused = 0;
    loop {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = surge_store::sandbox::sign(SANDBOX_SECRET.as_bytes(), now, body);
        let status = deployment
            .client
            .post(format!("{}/v1/payments/callbacks/sandbox", deployment.bases[node]))
            .header("surge-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .expect("callback")
            .status();
        if status != StatusCode::SERVICE_UNAVAILABLE || refused == 20 {
            return (status, refused);
        }
        refused += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 12's money test: 4,500 payments opened through three nodes, then
/// 10,000 sandbox callbacks posted through all three at once: for each
/// payment a failure and a success (shuffled, so about half arrive in the
/// wrong order) and 1,000 repeats of random ones. Every payment ends
/// captured once, every order paid once, the ledger balanced with exactly
/// the captures and commissions, each merchant owed what it captured less
/// commission, and a reconciliation finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_apply_ten_thousand_repeated_and_reordered_callbacks_once_each() {
    const MERCHANTS: u64 = 50;
    const CARTS: u64 = 90;
    let _one_at_a_time = SERIAL.lock().await;
    let broker = Broker::Nats("nats://127.0.0.1:4222".to_owned());
    let deployment = Deployment::start(broker, &[("SURGE_PAYMENTS__SANDBOX__SECRET", SANDBOX_SECRET)]).await;
    let mut products = Vec::new();
    for merchant in 1..=MERCHANTS {
        let token = deployment.token(Role::Merchant, &merchant.to_string());
        let body = json!({"sku": "PAY", "name": "Paid", "price_cents": 100 + merchant, "stock": 1_000});
        let product = deployment.post((merchant % 3) as usize, "/v1/products", &token, body).await;
        products.push(product["id"].as_str().expect("product id").to_owned());
    }
    let address = json!({"region": "north", "city": "Harbin", "line1": "1 Main St", "postcode": "150000",
                         "phone": "+86 451 0000"});
    // One cart per customer, one line per merchant: 50 orders each. Three
    // at a time: every cart locks the same 50 product rows, so more would
    // only queue on them (past the nodes' 1 s pool wait).
    let carts: Vec<(u64, Vec<String>)> = stream::iter(1..=CARTS)
        .map(|customer| {
            let items: Vec<Value> = products.iter().map(|id| json!({"product_id": id, "quantity": 1})).collect();
            let body = json!({"items": items, "address": address});
            let deployment = &deployment;
            async move {
                let token = deployment.token(Role::Customer, &customer.to_string());
                let placed = deployment.post((customer % 3) as usize, "/v1/checkout", &token, body).await;
                let orders = placed["orders"].as_array().unwrap_or_else(|| panic!("no orders in {placed}"));
                (customer, orders.iter().map(|o| o["id"].as_str().expect("order id").to_owned()).collect())
            }
        })
        .buffer_unordered(3)
        .collect()
        .await;
    let opened: Vec<Value> =
        stream::iter(carts.iter().flat_map(|(customer, orders)| orders.iter().map(move |o| (*customer, o))))
            .enumerate()
            .map(|(i, (customer, order))| {
                let deployment = &deployment;
                async move {
                    let token = deployment.token(Role::Customer, &customer.to_string());
                    let path = format!("/v1/orders/{order}/payments");
                    let payment = deployment.post(i % 3, &path, &token, json!({})).await;
                    assert_eq!(payment["status"], "pending", "{payment}");
                    payment
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    assert_eq!(opened.len(), (MERCHANTS * CARTS) as usize);

    let mut events: Vec<Vec<u8>> = Vec::new();
    for payment in &opened {
        for (kind, suffix) in [("payment.failed", "f"), ("payment.succeeded", "s")] {
            let body = json!({"event_id": format!("{}-{suffix}", payment["id"].as_str().expect("id")), "type": kind,
                              "provider_ref": payment["provider_ref"], "amount_cents": payment["amount_cents"]});
            events.push(serde_json::to_vec(&body).expect("json"));
        }
    }
    let repeats: Vec<Vec<u8>> = (0..1_000).map(|_| events[rand::random_range(0..events.len())].clone()).collect();
    events.extend(repeats);
    rand::seq::SliceRandom::shuffle(events.as_mut_slice(), &mut rand::rng());
    assert_eq!(events.len(), 10_000);
    let statuses: Vec<(StatusCode, u32)> = stream::iter(events.iter().enumerate())
        .map(|(i, body)| callback(&deployment, i % 3, body))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let refused: Vec<&StatusCode> = statuses.iter().map(|(s, _)| s).filter(|s| **s != StatusCode::OK).collect();
    assert!(refused.is_empty(), "{} callbacks never applied: {:?}", refused.len(), &refused[..refused.len().min(10)]);
    let shed: u32 = statuses.iter().map(|(_, shed)| shed).sum();
    println!("10,000 callbacks through three nodes: {shed} sends shed with 503 and sent again");

    let ledger: Value = deployment.get(0, "/v1/admin/ledger/trial-balance").await.json().await.expect("json");
    assert_eq!(ledger["balanced"], true);
    let account = |name: &str| {
        let accounts = ledger["accounts"].as_array().expect("accounts");
        let account = accounts.iter().find(|a| a["name"] == name).unwrap_or_else(|| panic!("no {name}"));
        (account["debit_cents"].as_i64().expect("debit"), account["credit_cents"].as_i64().expect("credit"))
    };
    let captured: i64 = opened.iter().map(|p| p["amount_cents"].as_i64().expect("amount")).sum();
    let commission: i64 = opened.iter().map(|p| p["commission_cents"].as_i64().expect("commission")).sum();
    assert_eq!(account("provider_clearing"), (captured, 0), "each payment captured once");
    assert_eq!(account("platform_commission"), (0, commission));
    for merchant in [1_u64, 25, 50] {
        let owed = CARTS as i64 * (100 + merchant as i64);
        let taken = CARTS as i64 * ((100 + merchant as i64) * 500 / 10_000);
        let balance: Value = deployment
            .get((merchant % 3) as usize, &format!("/v1/merchants/{merchant}/balance"))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(
            balance,
            json!({"pending_cents": 0, "available_cents": owed - taken, "paid_out_cents": 0}),
            "merchant {merchant}"
        );
    }
    let admin = deployment.token(Role::Admin, "ops");
    let pass = deployment.post(2, "/v1/admin/reconciliation/run", &admin, json!({})).await;
    assert_eq!(pass["mismatches"], json!([]), "{pass}");
    assert_eq!(pass["checked"], 2 * opened.len(), "every order paid, every payment looked at: {pass}");
    deployment.drop_stream().await;
}

/// The scale of the three-node dispatch test: a test run's by default;
/// issue 13's own (10,000 parcels, 500 couriers, 20 zones) with
/// `SURGE_TEST_DISPATCH_SCALE=full`. Every zone has as many parcels as its
/// couriers have slots or more, so in the end every slot is full.
struct DispatchScale {
    merchants: u64,
    carts: u64,
    couriers: u64,
    capacity: u64,
    zones: u64,
    leaving: u64,
}

impl DispatchScale {
    fn from_env() -> Self {
        match std::env::var("SURGE_TEST_DISPATCH_SCALE").as_deref() {
            Ok("full") => Self { merchants: 20, carts: 500, couriers: 500, capacity: 20, zones: 20, leaving: 25 },
            _ => Self { merchants: 20, carts: 15, couriers: 20, capacity: 10, zones: 4, leaving: 5 },
        }
    }
}

/// Issue 13's dispatch across nodes, at a scale a test run affords: 300
/// paid orders in 4 zones packed at once through three nodes, 20 couriers
/// of capacity 10, and 5 of them going off shift while the packing runs
/// (or issue 13's scale, see [`DispatchScale`]). In the end every slot of
/// the couriers on shift is filled, each parcel by one courier, nobody
/// over capacity, and the couriers who left hold nothing (what they had
/// went to others).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_packing_at_once_assign_each_parcel_once_and_no_courier_over_capacity() {
    let DispatchScale { merchants, carts, couriers, capacity, zones, leaving } = DispatchScale::from_env();
    let _one_at_a_time = SERIAL.lock().await;
    let broker = Broker::Nats("nats://127.0.0.1:4222".to_owned());
    let deployment = Deployment::start(broker, &[("SURGE_FULFILMENT__DISPATCH_INTERVAL", "100ms")]).await;
    let admin = deployment.token(Role::Admin, "ops");
    let mut products = Vec::new();
    for merchant in 1..=merchants {
        let token = deployment.token(Role::Merchant, &merchant.to_string());
        let body = json!({"sku": "SHIP", "name": "Shipped", "price_cents": 100, "stock": 1_000});
        let product = deployment.post((merchant % 3) as usize, "/v1/products", &token, body).await;
        products.push(product["id"].as_str().expect("product id").to_owned());
    }
    // Zones: no zone map, so each address's region ("r0".."r3").
    let orders: Vec<(u64, String, Value)> = stream::iter(1..=carts)
        .map(|customer| {
            let items: Vec<Value> = products.iter().map(|id| json!({"product_id": id, "quantity": 1})).collect();
            let address = json!({"region": format!("r{}", customer % zones), "city": "Harbin", "line1": "1 Main St",
                                 "postcode": "150000", "phone": "+86 451 0000"});
            let deployment = &deployment;
            async move {
                let token = deployment.token(Role::Customer, &customer.to_string());
                let body = json!({"items": items, "address": address});
                let (_, placed) = deployment.post_retrying((customer % 3) as usize, "/v1/checkout", &token, body).await;
                let orders = placed["orders"].as_array().unwrap_or_else(|| panic!("no orders in {placed}")).clone();
                orders
                    .into_iter()
                    .map(move |o| (customer, o["id"].as_str().expect("id").to_owned(), o["merchant_id"].clone()))
                    .collect::<Vec<_>>()
            }
        })
        .buffer_unordered(3)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(orders.len() as u64, merchants * carts);
    let paid: Vec<Value> = stream::iter(orders.iter().enumerate())
        .map(|(i, (customer, order, _))| {
            let deployment = &deployment;
            async move {
                let token = deployment.token(Role::Customer, &customer.to_string());
                deployment.post_retrying(i % 3, &format!("/v1/orders/{order}/pay"), &token, json!({})).await.1
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    assert!(paid.iter().all(|order| order["status"] == "PAID"), "every order paid");

    for courier in 0..couriers {
        let body =
            json!({"name": "C", "region": "north", "zone": format!("r{}", courier % zones), "capacity": capacity});
        let client = &deployment.client;
        let url = format!("{}/v1/couriers/{}", deployment.bases[(courier % 3) as usize], 100 + courier);
        assert_eq!(client.put(url).bearer_auth(&admin).json(&body).send().await.expect("put").status(), StatusCode::OK);
    }
    let shift = |courier: u64, on: bool| {
        let deployment = &deployment;
        async move {
            let token = deployment.token(Role::Courier, &(100 + courier).to_string());
            let url = format!("{}/v1/couriers/me/shift", deployment.bases[(courier % 3) as usize]);
            let body = json!({"on_shift": on, "zone": format!("r{}", courier % zones)});
            let response = deployment.client.put(url).bearer_auth(token).json(&body).send().await.expect("shift");
            assert_eq!(response.status(), StatusCode::OK);
        }
    };
    for courier in 0..couriers {
        shift(courier, true).await;
    }
    // The shipments are opened by the outbox's consumer on some node.
    let waybills: Vec<(String, String)> = stream::iter(orders.iter().enumerate())
        .map(|(i, (_, order, merchant))| {
            let deployment = &deployment;
            async move {
                let token = deployment.token(Role::Merchant, merchant.as_str().expect("merchant"));
                let url = format!("{}/v1/orders/{order}/shipment", deployment.bases[i % 3]);
                for _ in 0..400 {
                    let response = deployment.client.get(&url).bearer_auth(&token).send().await.expect("get");
                    if response.status() == StatusCode::OK {
                        let shipment: Value = response.json().await.expect("json");
                        return (shipment["waybill"].as_str().expect("waybill").to_owned(), token);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("no shipment for {order}");
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    // Every parcel packed through the three nodes at once; five couriers
    // (one or two per zone) leave while it runs.
    let started = std::time::Instant::now();
    let packing = stream::iter(waybills.iter().enumerate())
        .map(|(i, (waybill, token))| {
            let deployment = &deployment;
            async move {
                let path = format!("/v1/shipments/{waybill}/pack");
                let (status, answer) = deployment.post_retrying(i % 3, &path, token, json!({})).await;
                assert_eq!(status, StatusCode::OK, "{answer}");
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>();
    let going_off = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for courier in 0..leaving {
            shift(courier, false).await;
        }
    };
    tokio::join!(packing, going_off);
    let packed_in = started.elapsed();

    // Zone r0 keeps 3 couriers (30 slots), r1-r3 keep 4 (40 each); every
    // zone has more parcels than that, so in the end every slot is full.
    let on_shift_slots = (couriers - leaving) * capacity;
    let mut seen = (0, HashMap::new());
    for _ in 0..100 {
        let mut held: HashMap<u64, Vec<String>> = HashMap::new();
        for courier in 0..couriers {
            let token = deployment.token(Role::Courier, &(100 + courier).to_string());
            let url = format!("{}/v1/couriers/me/tasks", deployment.bases[(courier % 3) as usize]);
            let tasks: Value =
                deployment.client.get(url).bearer_auth(token).send().await.expect("tasks").json().await.expect("json");
            let items = tasks["items"].as_array().expect("items");
            held.insert(courier, items.iter().map(|t| t["waybill"].as_str().expect("waybill").to_owned()).collect());
        }
        let total: usize = held.values().map(Vec::len).sum();
        seen = (total, held);
        if total as u64 == on_shift_slots {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (total, held) = seen;
    eprintln!(
        "{} parcels packed through 3 nodes in {packed_in:?}; every slot full {:?} after the start",
        merchants * carts,
        started.elapsed()
    );
    assert_eq!(total as u64, on_shift_slots, "every slot of the couriers on shift filled: {held:?}");
    let all: HashSet<&String> = held.values().flatten().collect();
    assert_eq!(all.len(), total, "a parcel held by two couriers");
    for (courier, parcels) in &held {
        let expected = if *courier < leaving { 0 } else { capacity as usize };
        assert_eq!(parcels.len(), expected, "courier {courier}");
    }
}

/// Tracking written behind Redis on three nodes: couriers scan through node
/// 0 until it is killed with `kill -9`. Node 0 started first, so it holds
/// every partition's flush lease; the other two flush what it left once
/// those lapse. Then the couriers scan through node 1 until nodes 1 and 2
/// are killed too, and node 0 starts again writing scans through: it may
/// not serve before what they left is flushed (their leases lapse first).
/// Every scan answered 202 is in PostgreSQL once, in order per waybill.
#[tokio::test]
async fn scans_written_behind_redis_survive_kill_9_of_a_node_once_and_in_order() {
    const COURIERS: u64 = 8;
    let _one_at_a_time = SERIAL.lock().await;
    let behind = [("SURGE_FULFILMENT__TRACKING__MODE", "write_behind"), ("SURGE_FULFILMENT__TRACKING__DELAY", "200ms")];
    let mut deployment = Deployment::start(Broker::Nats("nats://127.0.0.1:4222".to_owned()), &behind).await;
    let keys = || Keys::new(&Secret::new(SECRET.into()), &AuthSettings::default());
    let (client, bases) = (deployment.client.clone(), deployment.bases.clone());
    let node = |n: usize| crate::tracking::Node { client: &client, base: bases[n].clone(), keys: keys() };
    let parcels = node(2).picked_up(COURIERS).await;
    let mut store = sqlx::PgConnection::connect(&deployment._database.url()).await.expect("connect");

    // Couriers scan through node 0 until it is killed; each keeps what got
    // a 202.
    let (kill, killed) = tokio::sync::watch::channel(false);
    let victim = node(0);
    let scanning = victim.scan_until(&parcels, killed);
    let doomed = &mut deployment.nodes[0].process;
    let killer = async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        doomed.kill().expect("kill -9");
        doomed.wait().expect("wait");
        kill.send(true).expect("tell");
    };
    let (accepted, ()) = tokio::join!(scanning, killer);
    let total: usize = accepted.iter().map(|(_, notes)| notes.len()).sum();
    assert!(total >= COURIERS as usize, "scans were taken before the kill: {total}");

    // Nodes 1 and 2 flush what node 0 left once its leases lapse (10 s).
    let started = std::time::Instant::now();
    for _ in 0..300 {
        if missing(&mut store, &accepted).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{total} scans acknowledged; all in the store {:?} after the kill", started.elapsed());
    let stored = assert_stored(&mut store, &accepted).await;

    // Through node 1 now, until nodes 1 and 2 are killed as well.
    let (kill, killed) = tokio::sync::watch::channel(false);
    let second = node(1);
    let scanning = second.scan_until(&parcels, killed);
    let [_, one, two] = &mut deployment.nodes[..] else { panic!("three nodes") };
    let killer = async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        for doomed in [&mut one.process, &mut two.process] {
            doomed.kill().expect("kill -9");
            doomed.wait().expect("wait");
        }
        kill.send(true).expect("tell");
    };
    let (mut accepted, ()) = tokio::join!(scanning, killer);
    assert!(accepted.iter().map(|(_, notes)| notes.len()).sum::<usize>() >= COURIERS as usize);

    // Node 0 starts again, writing scans through: ready only once every
    // scan left behind is in the store.
    for (var, value) in &mut deployment.shared {
        if var == "SURGE_FULFILMENT__TRACKING__MODE" {
            *value = "write_through".to_owned();
        }
    }
    // Part of the dead nodes' leases still runs when node 0 is up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    deployment.restart(0).await;
    for (waybill, notes) in &mut accepted {
        let before = &stored[waybill];
        notes.splice(0..0, before.iter().cloned());
    }
    assert_stored(&mut store, &accepted).await;
    for (waybill, _) in &accepted {
        let events = node(0).tracking(waybill).await;
        let notes_stored = notes_of(&mut store, waybill).await;
        assert_eq!(events.len(), notes_stored.len(), "{waybill}");
    }
    deployment.drop_stream().await;
}

/// The notes of the waybill's scans in the store, in `seq` order.
async fn notes_of(store: &mut sqlx::PgConnection, waybill: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT note FROM scans WHERE waybill = $1 ORDER BY seq")
        .bind(waybill)
        .fetch_all(store)
        .await
        .expect("scans")
}

/// Acknowledged scans not yet in the store (past the pickup).
async fn missing(store: &mut sqlx::PgConnection, accepted: &[(String, Vec<String>)]) -> usize {
    let mut missing = 0;
    for (waybill, notes) in accepted {
        missing += (notes.len() + 1).saturating_sub(notes_of(store, waybill).await.len());
    }
    missing
}

/// Every acknowledged scan is in the store once, in order, after the
/// pickup; a scan whose answer a kill cut off may be there too (two kills,
/// two at most). The notes stored after the pickup, by waybill.
async fn assert_stored(
    store: &mut sqlx::PgConnection,
    accepted: &[(String, Vec<String>)],
) -> HashMap<String, Vec<String>> {
    let mut stored = HashMap::new();
    for (waybill, notes) in accepted {
        let after_pickup = notes_of(store, waybill).await.split_off(1);
        let mut expected = notes.iter();
        let mut next = expected.next();
        let mut extra = 0;
        for note in &after_pickup {
            if Some(note) == next {
                next = expected.next();
            } else {
                extra += 1;
            }
        }
        let tail = &after_pickup[after_pickup.len().saturating_sub(3)..];
        let seen = format!("{} stored, ending {tail:?}; {} acknowledged", after_pickup.len(), notes.len());
        assert_eq!(next, None, "{waybill}: every acknowledged scan is stored, in order: {seen}");
        assert!(extra <= 2, "{waybill}: at most one unacknowledged scan per kill: {seen}");
        assert_eq!(after_pickup.len(), notes.len() + extra, "{waybill}");
        stored.insert(waybill.clone(), after_pickup);
    }
    stored
}
