//! `spawn_app()` and friends: the real app, a client, tokens.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use surge_domain::{Clock, SystemClock};
use surge_server::auth::{Claims, Keys, Role, load_or_create_secret};
use surge_server::config::{
    NatsSettings, PostgresSettings, QueueSettings, RedisSettings, Secret, SharedSettings, StoreSettings,
};
use surge_server::{Application, Settings};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestApp {
    pub address: String,
    /// Base URL of the operations listener, when `ops_listen` is set.
    pub ops_address: Option<String>,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub data_dir: TempDir,
    /// What a test run on the distributed backends made for itself.
    backends: Option<OwnBackends>,
    keys: Keys,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_in(TempDir::new().expect("tempdir"), |_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_in(TempDir::new().expect("tempdir"), configure).await
}

/// Starts the app on `clock` (a `ManualClock` the test moves).
pub async fn spawn_app_on(clock: Arc<dyn Clock>, configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on_clock_in(TempDir::new().expect("tempdir"), clock, configure).await
}

/// Starts the app on port 0 over `data_dir` (which may hold an earlier run).
pub async fn spawn_app_in(data_dir: TempDir, configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on_clock_in(data_dir, Arc::new(SystemClock), configure).await
}

async fn spawn_app_on_clock_in(
    data_dir: TempDir,
    clock: Arc<dyn Clock>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data_dir.path().to_owned(),
        ..Settings::default()
    };
    let backends = distributed().then(|| use_distributed_backends(&mut settings, data_dir.path()));
    configure(&mut settings);
    let app = Application::build_on(&settings, clock).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let ops_address = app.ops_port().map(|port| format!("http://127.0.0.1:{port}"));
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let secret = load_or_create_secret(&settings.auth, data_dir.path()).expect("secret");
    let keys = Keys::new(&secret, &settings.auth);
    TestApp { address, ops_address, client: reqwest::Client::new(), settings, data_dir, backends, keys, stop, task }
}

/// `SURGE_TEST_BACKENDS=distributed` runs the in-process tests on the
/// distributed backends: PostgreSQL, the Redis Cluster of
/// `scripts/redis-cluster` and NATS JetStream (`scripts/test` runs the
/// flash-sale tests this way too).
pub fn distributed() -> bool {
    std::env::var("SURGE_TEST_BACKENDS").is_ok_and(|v| v == "distributed")
}

/// A test's own database, Redis namespace and stream on the shared
/// servers; the database and the stream are removed when the test ends.
pub struct OwnBackends {
    database: Database,
    tag: u32,
    _stream: OwnStream,
}

const TEST_NATS_URL: &str = "nats://127.0.0.1:4222";

impl OwnBackends {
    fn create() -> Self {
        keep_a_stream_in_nats();
        let tag = rand::random::<u32>();
        Self { database: Database::create(), tag, _stream: OwnStream(format!("SURGE_TEST_{tag}")) }
    }
}

/// NATS removes the account's stream directory when its last stream is
/// deleted, and a stream created at that moment fails ("could not create
/// storage directory", error 10049; seen in CI as tests create and delete
/// their streams concurrently). A stream that is never deleted keeps the
/// directory; it is made at the first test of a run, if missing.
pub fn keep_a_stream_in_nats() {
    static KEPT: std::sync::Once = std::sync::Once::new();
    KEPT.call_once(|| {
        let _ = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                if let Ok(client) = async_nats::connect(TEST_NATS_URL).await {
                    let config = async_nats::jetstream::stream::Config {
                        name: "SURGE_TEST_KEEP".to_owned(),
                        subjects: vec!["surge.test.keep".to_owned()],
                        ..Default::default()
                    };
                    let _ = async_nats::jetstream::new(client).get_or_create_stream(config).await;
                }
            });
        })
        .join();
    });
}

struct OwnStream(String);

impl Drop for OwnStream {
    fn drop(&mut self) {
        let stream = self.0.clone();
        // Drop can't await, and may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                if let Ok(client) = async_nats::connect(TEST_NATS_URL).await {
                    let _ = async_nats::jetstream::new(client).delete_stream(&stream).await;
                }
            });
        })
        .join();
    }
}

/// The backends of stopped apps, by data dir, for their restart.
fn stopped_backends() -> std::sync::MutexGuard<'static, std::collections::HashMap<std::path::PathBuf, OwnBackends>> {
    static STOPPED: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, OwnBackends>>> =
        std::sync::OnceLock::new();
    STOPPED.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Points the settings at a fresh database, a fresh Redis namespace and a
/// fresh stream, so that concurrent tests share nothing but the servers;
/// or, for a restart over `data_dir`, at the ones it had.
fn use_distributed_backends(settings: &mut Settings, data_dir: &Path) -> OwnBackends {
    let backends = stopped_backends().remove(data_dir).unwrap_or_else(OwnBackends::create);
    let tag = backends.tag;
    settings.store = StoreSettings::Postgres(PostgresSettings {
        url: backends.database.url().parse().expect("a PostgreSQL URL"),
        max_connections: 8,
        acquire_timeout: Duration::from_secs(3),
    });
    // A distributed node never mints its own secret.
    settings.auth.jwt_secret = Some(Secret::new(format!("surge-test-secret-{tag:010}-0123456789abcdef")));
    settings.shared = SharedSettings::Redis(RedisSettings {
        urls: ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"].map(|url| url.parse().expect("a Redis URL")).into(),
        cluster: true,
        wait_replicas: 1,
        namespace: format!("surge-test-{tag}"),
        ..RedisSettings::default()
    });
    settings.queue = QueueSettings::Nats(NatsSettings {
        url: TEST_NATS_URL.parse().expect("a NATS URL"),
        stream: format!("SURGE_TEST_{tag}"),
        consumer: format!("surge-test-{tag}"),
        ..NatsSettings::default()
    });
    backends
}

/// A fresh PostgreSQL database, dropped when the test ends.
pub struct Database {
    name: String,
}

impl Database {
    pub fn create() -> Self {
        let name = format!("surge_test_{}", rand::random::<u32>());
        psql(&format!("CREATE DATABASE {name}"));
        Self { name }
    }

    pub fn url(&self) -> String {
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

impl TestApp {
    /// Stops the app, waits until it has closed its stores, and hands back
    /// the data dir so that a test can start again over it.
    pub async fn stop(self) -> TempDir {
        let _ = self.stop.send(());
        self.task.await.expect("app task").expect("app stops cleanly");
        if let Some(backends) = self.backends {
            // The next start over this data dir finds the same database,
            // namespace and stream, as a restarted node would.
            stopped_backends().insert(self.data_dir.path().to_owned(), backends);
        }
        self.data_dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn token(&self, role: Role, sub: &str) -> String {
        self.keys.mint(role, sub, Duration::from_secs(600)).expect("mint")
    }

    pub fn merchant(&self, id: u64) -> String {
        self.token(Role::Merchant, &id.to_string())
    }

    pub fn admin(&self) -> String {
        self.token(Role::Admin, "ops")
    }

    pub fn customer(&self, id: u64) -> String {
        self.token(Role::Customer, &id.to_string())
    }

    pub fn courier(&self, id: u64) -> String {
        self.token(Role::Courier, &id.to_string())
    }

    /// A token signed with this app's secret that expired an hour ago.
    pub fn expired_token(&self) -> String {
        let secret = load_or_create_secret(&self.settings.auth, self.data_dir.path()).expect("secret");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        let claims = Claims { sub: "42".into(), role: Role::Merchant, exp: now - 3600, iat: now - 7200 };
        let key = jsonwebtoken::EncodingKey::from_secret(secret.expose().as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("encode")
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request")
    }

    pub async fn send_json(&self, method: reqwest::Method, path: &str, token: &str, body: &Value) -> Response {
        self.client.request(method, self.url(path)).bearer_auth(token).json(body).send().await.expect("request")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("request")
    }

    /// Creates a product as `merchant` and returns its JSON.
    pub async fn create_product(&self, merchant: u64, sku: &str) -> Value {
        self.create_product_with_stock(merchant, sku, 10).await
    }

    /// Creates a product of `stock` units as `merchant` and returns its JSON.
    pub async fn create_product_with_stock(&self, merchant: u64, sku: &str, stock: i64) -> Value {
        let body = json!({"sku": sku, "name": format!("Product {sku}"), "price_cents": 1999, "stock": stock});
        let response = self.post_json("/v1/products", Some(&self.merchant(merchant)), &body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("json")
    }

    pub async fn product(&self, id: &str) -> Value {
        let response = self.get(&format!("/v1/products/{id}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    /// Every product, all pages.
    pub async fn all_products(&self) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/products?limit=500&cursor={c}"),
                None => "/v1/products?limit=500".to_owned(),
            };
            let page: Value = self.get(&path).await.json().await.expect("json");
            items.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return items,
            }
        }
    }

    /// The value of one sample of `/metrics`, e.g.
    /// `surge_cache_loads_total{cache="product"}`; 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics text");
        text.lines().find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
    }
}

/// Asserts the API error shape and code, and returns the message.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> String {
    assert_eq!(response.status(), status, "status");
    let body: Value = response.json().await.expect("error body is json");
    assert_eq!(body["error"]["code"], code, "code in {body}");
    let message = body["error"]["message"].as_str().expect("message").to_owned();
    assert!(!message.is_empty());
    message
}

pub fn surge_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_surge"))
}

/// A port nothing listens on right now, for a child process to bind later.
///
/// It is taken below Linux's ephemeral range (32768 and up): a port the
/// kernel handed out for `bind(0)` was free again the moment it was
/// returned, and while the child started, any other test's listener or
/// outgoing connection could take it ("Address already in use", as CI
/// once saw). Below that range only this function hands ports out, each
/// once per run.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 5_000;
    // Two test binaries running at once start at different places.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id();
    for _ in 0..COUNT {
        let step = offset.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % u32::from(COUNT);
        let port = FIRST + u16::try_from(step).expect("below COUNT");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

/// The real `surge` binary as a child process, for tests that kill it or
/// read its memory.
pub struct ChildSurge {
    pub process: std::process::Child,
    pub base: String,
}

impl ChildSurge {
    /// Starts `surge` on `port` with its data in `dir` and these settings
    /// as `SURGE_*` variables.
    pub fn start(dir: &tempfile::TempDir, port: u16, env: &[(&str, &str)]) -> Self {
        let listen = format!("127.0.0.1:{port}");
        // The node's log, kept for a failing test to be read.
        let logs = std::env::temp_dir().join("surge-test-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        // Appended to: a node started again on its port keeps one log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{port}.log")))
            .expect("log file");
        let mut command = std::process::Command::new(surge_bin());
        // The test suite's own switches are not settings of the node.
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("SURGE_TEST_")) {
            command.env_remove(name);
        }
        let process = command
            .args(["--data-dir", dir.path().to_str().expect("utf-8"), "--listen", &listen])
            .env_remove("SURGE_CONFIG")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("surge starts");
        Self { process, base: format!("http://{listen}") }
    }

    /// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.id())).expect("proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("memory field")
    }
}

impl Drop for ChildSurge {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("surge at {base} never became ready");
}

impl TestApp {
    /// A product of merchant 1 and an active sale of it, returning the sale
    /// id. The sale takes its stock from the product: the product has just
    /// that many units.
    pub async fn active_sale(&self, stock: i64, per_user_limit: i64) -> String {
        let sku = format!("SALE-{}", uuid_like());
        let product = self.create_product_with_stock(1, &sku, stock).await;
        let now = time::OffsetDateTime::now_utc();
        let body = json!({
            "product_id": product["id"],
            "stock": stock,
            "price_cents": 990,
            "starts_at": rfc3339(now),
            "ends_at": rfc3339(now + time::Duration::hours(1)),
            "per_user_limit": per_user_limit,
        });
        let response = self.post_json("/v1/flash-sales", Some(&self.admin()), &body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let sale: Value = response.json().await.expect("json");
        sale["id"].as_str().expect("sale id").to_owned()
    }

    /// One intake attempt by customer `user`.
    pub async fn place(&self, user: u64, sale: &str, key: Option<&str>, body: &Value) -> Response {
        let mut request = self
            .client
            .post(self.url(&format!("/v1/flash-sales/{sale}/orders")))
            .bearer_auth(self.customer(user))
            .json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("request")
    }

    pub async fn sale(&self, sale: &str) -> Value {
        self.get(&format!("/v1/flash-sales/{sale}")).await.json().await.expect("json")
    }

    /// The order as `token` sees it: (status code, body).
    pub async fn order(&self, token: &str, id: &str) -> (StatusCode, Value) {
        let response =
            self.client.get(self.url(&format!("/v1/orders/{id}"))).bearer_auth(token).send().await.expect("req");
        let status = response.status();
        (status, response.json().await.expect("json"))
    }

    /// Waits (bounded) until the order has left `PENDING`; returns it.
    pub async fn settled_order(&self, id: &str) -> Value {
        for _ in 0..400 {
            let (status, order) = self.order(&self.admin(), id).await;
            if status == StatusCode::OK && order["status"] != "PENDING" {
                return order;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("order {id} never left PENDING");
    }

    /// Every order an admin can see, all pages.
    pub async fn all_orders(&self) -> Vec<Value> {
        let mut items = Vec::new();
        let mut path = "/v1/orders?limit=500".to_owned();
        loop {
            let response = self.client.get(self.url(&path)).bearer_auth(self.admin()).send().await.expect("req");
            assert_eq!(response.status(), StatusCode::OK);
            let page: Value = response.json().await.expect("json");
            items.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/v1/orders?limit=500&cursor={cursor}"),
                None => return items,
            }
        }
    }
}

pub fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).expect("format")
}

/// A short unique suffix for skus.
pub fn uuid_like() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}
