//! Settings: plain data with defaults, loaded in layers and validated in one
//! place.
//!
//! Layers, later wins: built-in defaults → `surge.toml` (or `--config FILE`)
//! → `SURGE_*` environment variables (`__` separates sections:
//! `SURGE_CACHE__TTL=30s`) → command-line flags. Unknown keys are errors, so
//! a typo stops start-up with its name instead of being silently ignored.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "surge.toml";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// When set, `/metrics`, `/healthz` and `/readyz` are served here and not
    /// on the API listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops_listen: Option<SocketAddr>,
    /// Where the embedded mode keeps its database and secret.
    pub data_dir: PathBuf,
    /// This node's id, 0–1023, unique among the nodes of a deployment: it is
    /// part of every id the node mints.
    pub node_id: u16,
    pub auth: AuthSettings,
    pub http: HttpSettings,
    pub cache: CacheSettings,
    pub store: StoreSettings,
    pub redis: RedisSettings,
    pub queue: QueueSettings,
    pub flash_sale: FlashSaleSettings,
    pub notify: NotifySettings,
    pub overload: OverloadSettings,
    pub rate: RateSettings,
    /// The breakers on the store, Redis and the queue's broker, fed by a
    /// probe every 250 ms; an open one turns intake (and, for the store and
    /// Redis, live product details) `auto` off.
    pub dependency_breaker: BreakerSettings,
    pub log: LogSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ops_listen: None,
            data_dir: PathBuf::from("./data"),
            node_id: 0,
            auth: AuthSettings::default(),
            http: HttpSettings::default(),
            cache: CacheSettings::default(),
            store: StoreSettings::default(),
            redis: RedisSettings::default(),
            queue: QueueSettings::default(),
            flash_sale: FlashSaleSettings::default(),
            notify: NotifySettings::default(),
            overload: OverloadSettings::default(),
            rate: RateSettings::default(),
            dependency_breaker: BreakerSettings::for_dependencies(),
            log: LogSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HS256 secret shared by every node. When absent, the embedded mode
    /// generates one into `<data_dir>/jwt-secret` at first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<Secret>,
    /// Lifetime of tokens minted by `surge token` when `--ttl` is not given.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Clock skew tolerated when checking `exp`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self { jwt_secret: None, token_ttl: Duration::from_secs(3600), leeway: Duration::from_secs(30) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Largest request body accepted; larger ones get 413.
    pub body_limit_bytes: usize,
    /// Longest any request may take; a client's `X-Request-Deadline-Ms` can
    /// only shorten it.
    #[serde(with = "humantime_serde")]
    pub request_budget: Duration,
    /// On SIGTERM, how long in-flight requests get to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long a connection may take to send a request's head; a kept-alive
    /// connection waiting for its next request is closed after it too.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Open connections per listener; further ones wait to be accepted.
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit_bytes: 64 * 1024,
            request_budget: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    pub capacity: u64,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub ttl_jitter: Duration,
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub second_delete_delay: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            ttl: Duration::from_secs(60),
            ttl_jitter: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(5),
            second_delete_delay: Duration::from_millis(500),
        }
    }
}

impl From<&CacheSettings> for surge_store::cache::ProductCacheConfig {
    fn from(cache: &CacheSettings) -> Self {
        Self {
            capacity: cache.capacity,
            ttl: cache.ttl,
            ttl_jitter: cache.ttl_jitter,
            negative_ttl: cache.negative_ttl,
            second_delete_delay: cache.second_delete_delay,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// A `postgres://` URL puts every store on PostgreSQL (distributed
    /// mode); without it the embedded SQLite file in `data_dir` is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    pub max_connections: u32,
    /// SQLite: how long a writer waits for the write lock.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// PostgreSQL: how long a query waits for a pooled connection.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

/// Redis for the state every node shares: the stock ledger, intake keys and
/// the pending view. Without `urls` they stay in process (embedded mode).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://` URLs: one standalone server, or seed nodes of a cluster.
    pub urls: Vec<String>,
    /// The URLs are nodes of a Redis Cluster.
    pub cluster: bool,
    /// Prefix of every key.
    pub namespace: String,
    /// Longest wait for one command.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// How long an intake key remembers its order.
    #[serde(with = "humantime_serde")]
    pub key_ttl: Duration,
    /// Replicas that must hold a deduction before intake answers 202
    /// (`WAIT` on the sale's master): 1 with a Redis Cluster, so a failover
    /// can't lose an acknowledged deduction; 0 without replicas.
    pub wait_replicas: u32,
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
    /// For `rediss://` URLs: the PEM file of the CA that signed the
    /// servers' certificates; without it the system's trust store is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            cluster: false,
            namespace: "surge".to_owned(),
            response_timeout: Duration::from_millis(500),
            key_ttl: Duration::from_secs(7 * 24 * 3600),
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(100),
            tls_ca_file: None,
        }
    }
}

/// The queue between intake and the order consumer: the embedded log, NATS
/// JetStream when `nats_url` is set, or a Kafka-protocol broker when
/// `kafka_brokers` is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// `host:port` of Kafka brokers, comma-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_brokers: Option<String>,
    /// Kafka: speak TLS to the brokers, checking their certificates and
    /// names against `kafka_tls_ca_file`, or the system's roots without it.
    pub kafka_tls: bool,
    /// Kafka over TLS: the PEM file of the CA that signed the brokers'
    /// certificates (checked at start-up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_tls_ca_file: Option<PathBuf>,
    /// NATS: the stream.
    pub stream: String,
    /// Kafka: the topic and, when this node creates it, its partitions.
    pub topic: String,
    pub partitions: i32,
    /// Copies of each queued request across broker servers, when this node
    /// creates the stream (NATS) or topic (Kafka); 3 in production, so a
    /// broker server's loss loses nothing acknowledged.
    pub replicas: u8,
    /// The durable consumer (NATS) or consumer group (Kafka) every node
    /// shares.
    pub consumer: String,
    /// A request fetched by a node that does not acknowledge it within this
    /// goes to another node.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Longest wait for the broker to confirm one append.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// NATS: how long the stream keeps a request (its disk bound), when
    /// this node creates it.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            nats_url: None,
            kafka_brokers: None,
            kafka_tls: false,
            kafka_tls_ca_file: None,
            stream: "SURGE_ORDERS".to_owned(),
            topic: "surge.orders.requested".to_owned(),
            partitions: 6,
            replicas: 1,
            consumer: "orders".to_owned(),
            ack_wait: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(2),
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlashSaleSettings {
    /// An unpaid order is cancelled this long after it was created, and its
    /// stock goes back to the sale.
    #[serde(with = "humantime_serde")]
    pub payment_timeout: Duration,
    /// How often unpaid orders past their window are looked for.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Most queued requests the consumer turns into orders per transaction.
    /// A deduction whose order is not written within this is given back,
    /// unless the order exists (a node died between deduct and append).
    /// Shared ledger only; must exceed the time an intake can take
    /// (`http.request_budget`) and the consumer's worst lag.
    #[serde(with = "humantime_serde")]
    pub reservation_timeout: Duration,
    /// How often each node compares the shared ledger's stock of every open
    /// sale with the orders, and repairs a difference seen twice in a row
    /// (shared ledger only).
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    pub consumer_batch: usize,
    /// Most appends one queue commit carries (group commit).
    pub queue_batch: usize,
    /// Intake attempts admitted per customer per second (burst the same).
    pub per_user_rate: u32,
    /// Intake attempts admitted per sale per second, across customers.
    pub per_sale_rate: u32,
    /// Intake attempts per customer per second across every node (a token
    /// bucket in Redis; needs `redis.urls`); 0 turns it off. The node-local
    /// `per_user_rate` still applies first.
    pub cluster_per_user_rate: u32,
}

impl Default for FlashSaleSettings {
    fn default() -> Self {
        Self {
            payment_timeout: Duration::from_secs(15 * 60),
            sweep_interval: Duration::from_secs(1),
            reservation_timeout: Duration::from_secs(5 * 60),
            reconcile_interval: Duration::from_secs(30),
            consumer_batch: 512,
            queue_batch: 1024,
            per_user_rate: 10,
            per_sale_rate: 200_000,
            cluster_per_user_rate: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySettings {
    /// POST order notifications here; without it they go to the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// For an `https://` webhook: the PEM file of the CA that signed its
    /// certificate, trusted besides the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Notifications waiting for delivery; beyond it they are dropped.
    pub queue_capacity: usize,
    /// The breaker in front of the sink.
    pub breaker: BreakerSettings,
    /// Retries of a refused delivery.
    pub retry: RetryConfig,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            webhook_url: None,
            tls_ca_file: None,
            timeout: Duration::from_secs(2),
            queue_capacity: 10_000,
            breaker: BreakerSettings::default(),
            retry: RetryConfig::default(),
        }
    }
}

/// Retries of an idempotent outbound call: tries, backoff and the budget
/// that bounds retries to a fraction of recent successful calls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Tries in all, the first included; 1 turns retries off.
    pub attempts_max: u32,
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Retries allowed per successful call, over `budget_window`.
    pub budget_ratio: f32,
    /// Retries a second allowed whatever the ratio says.
    pub budget_floor_per_sec: u32,
    #[serde(with = "humantime_serde")]
    pub budget_window: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts_max: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            budget_ratio: 0.2,
            budget_floor_per_sec: 1,
            budget_window: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    fn validate(&self, name: &str) -> Result<(), String> {
        if !(1..=10).contains(&self.attempts_max) {
            return Err(format!("{name}.attempts_max must be between 1 and 10"));
        }
        if self.backoff_base.is_zero() || self.backoff_base > self.backoff_max {
            return Err(format!("{name}.backoff_base must be above zero and at most {name}.backoff_max"));
        }
        if !(0.0..=1000.0).contains(&self.budget_ratio) {
            return Err(format!("{name}.budget_ratio must be between 0 and 1000"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.budget_window) {
            return Err(format!("{name}.budget_window must be between 1s and 60s"));
        }
        Ok(())
    }
}

/// Route limits beyond the intake's own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateSettings {
    /// Hot-parameter limit: reads of any one product per second (a token
    /// bucket per product id); 0 turns it off.
    pub product_read_per_sec: u32,
    /// The burst one product's bucket holds.
    pub product_read_burst: u32,
}

impl Default for RateSettings {
    fn default() -> Self {
        Self { product_read_per_sec: 0, product_read_burst: 1000 }
    }
}

/// Bulkheads and the node's adaptive concurrency limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadSettings {
    /// The bulkheads and the adaptive limit; off only to measure their cost.
    pub enabled: bool,
    /// Concurrent core calls (intake, orders, payment, product reads and writes).
    pub core_concurrency: usize,
    /// Concurrent non-core calls (listings): shed first.
    pub non_core_concurrency: usize,
    /// Concurrent reads of a flash sale (`GET /v1/flash-sales/{id}`, open
    /// to anyone): a pool of their own, so a flood of them takes no slot
    /// from intake.
    pub sale_read_concurrency: usize,
    /// How long a call waits for a bulkhead slot before it is shed.
    #[serde(with = "humantime_serde")]
    pub bulkhead_max_wait: Duration,
    /// The node's AIMD limit on concurrent API calls: start, floor, ceiling.
    pub adaptive_initial: usize,
    pub adaptive_min: usize,
    pub adaptive_max: usize,
    /// Calls slower than this shrink the adaptive limit.
    #[serde(with = "humantime_serde")]
    pub adaptive_target_latency: Duration,
}

impl Default for OverloadSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            core_concurrency: 1024,
            non_core_concurrency: 64,
            sale_read_concurrency: 64,
            bulkhead_max_wait: Duration::from_millis(50),
            adaptive_initial: 1024,
            adaptive_min: 32,
            adaptive_max: 4096,
            adaptive_target_latency: Duration::from_millis(500),
        }
    }
}

/// A circuit breaker's settings; every rule below is active.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Open when this share of the window's calls failed...
    pub error_ratio: f64,
    /// ... or this share was slower than `slow_call` ...
    pub slow_call_ratio: f64,
    #[serde(with = "humantime_serde")]
    pub slow_call: Duration,
    /// ... over this sliding window, once it holds `min_calls` calls.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub min_calls: u32,
    /// How long it stays open before probing.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// Probe calls that must all succeed to close it.
    pub probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            error_ratio: 0.5,
            slow_call_ratio: 0.8,
            slow_call: Duration::from_secs(1),
            window: Duration::from_secs(10),
            min_calls: 10,
            open_for: Duration::from_secs(5),
            probes: 1,
        }
    }
}

impl BreakerSettings {
    /// Probes come four a second: three failures in a row (under a second)
    /// open the breaker; it probes again after two seconds.
    pub fn for_dependencies() -> Self {
        Self {
            consecutive_failures: 3,
            min_calls: 20,
            open_for: Duration::from_secs(2),
            slow_call: Duration::from_millis(400),
            ..Self::default()
        }
    }

    pub fn config(&self) -> surge_guard::breaker::BreakerConfig {
        use surge_guard::breaker::TripRule;
        surge_guard::breaker::BreakerConfig {
            rules: vec![
                TripRule::ConsecutiveFailures(self.consecutive_failures),
                TripRule::ErrorRatio(self.error_ratio),
                TripRule::SlowCallRatio { ratio: self.slow_call_ratio, slow_call: self.slow_call },
            ],
            window: self.window,
            min_calls: self.min_calls,
            open_for: self.open_for,
            probes: self.probes,
        }
    }

    fn validate(&self, name: &str) -> Result<(), String> {
        let ratio_ok = |r: f64| r > 0.0 && r <= 1.0;
        if self.consecutive_failures == 0 || self.min_calls == 0 || self.probes == 0 {
            return Err(format!("{name}: consecutive_failures, min_calls and probes must be at least 1"));
        }
        if !ratio_ok(self.error_ratio) || !ratio_ok(self.slow_call_ratio) {
            return Err(format!("{name}: error_ratio and slow_call_ratio must be in (0, 1]"));
        }
        if self.window.is_zero() || self.open_for.is_zero() || self.slow_call.is_zero() {
            return Err(format!("{name}: window, open_for and slow_call must be greater than zero"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `surge_server=debug,info`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".to_owned() }
    }
}

/// A secret string: never printed, never logged.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Values given on the command line; they override every other layer.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads every layer. `file` is `--config`; without it `surge.toml` in
    /// the working directory is read if present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.to_owned())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
            }
            None => {}
        }
        // SURGE_CONFIG names the file itself (read by clap), not a setting.
        let env = Env::prefixed("SURGE_").ignore(&["config"]).split("__");
        let settings: Settings = figment
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        settings.validate().map_err(ConfigError::Invalid)?;
        Ok(settings)
    }

    /// Rules that types alone can't state. Each message names the setting.
    /// The shared backends of the distributed mode: well-formed URLs, and
    /// no shared ledger or queue in front of a per-node SQLite file (the
    /// nodes would each write orders the others can't see).
    fn validate_distributed(&self) -> Result<(), String> {
        let postgres = match &self.store.url {
            Some(url) if url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://") => true,
            Some(_) => return Err("store.url must be a postgres:// URL".to_owned()),
            None => false,
        };
        if let Some(url) =
            self.redis.urls.iter().find(|url| !url.starts_with("redis://") && !url.starts_with("rediss://"))
        {
            return Err(format!(
                "redis.urls must be redis:// or rediss:// (TLS) URLs, not {}",
                surge_store::without_credentials(url)
            ));
        }
        if self.queue.nats_url.as_deref().is_some_and(|url| !url.starts_with("nats://")) {
            return Err("queue.nats_url must be a nats:// URL".to_owned());
        }
        if self.queue.nats_url.is_some() && self.queue.kafka_brokers.is_some() {
            return Err("set queue.nats_url or queue.kafka_brokers, not both".to_owned());
        }
        if self.queue.kafka_tls && self.queue.kafka_brokers.is_none() {
            return Err("queue.kafka_tls needs queue.kafka_brokers".to_owned());
        }
        if self.queue.kafka_tls_ca_file.is_some() && !self.queue.kafka_tls {
            return Err("queue.kafka_tls_ca_file needs queue.kafka_tls = true".to_owned());
        }
        if !(1..=1024).contains(&self.queue.partitions) {
            return Err("queue.partitions must be between 1 and 1024".to_owned());
        }
        if !(1..=5).contains(&self.queue.replicas) {
            return Err("queue.replicas must be between 1 and 5".to_owned());
        }
        let shared = !self.redis.urls.is_empty() || self.queue.nats_url.is_some() || self.queue.kafka_brokers.is_some();
        if (shared || postgres) && self.auth.jwt_secret.is_none() {
            return Err("auth.jwt_secret must be set in the distributed mode: every node verifies tokens with one \
                        shared secret, and none may mint its own"
                .to_owned());
        }
        if shared && !postgres {
            return Err("redis.urls, queue.nats_url and queue.kafka_brokers need store.url (PostgreSQL): a shared \
                        ledger or queue in front of a per-node SQLite file would split the orders"
                .to_owned());
        }
        if self.flash_sale.cluster_per_user_rate > 0 && self.redis.urls.is_empty() {
            return Err("flash_sale.cluster_per_user_rate needs redis.urls".to_owned());
        }
        if self.redis.cluster && self.redis.urls.is_empty() {
            return Err("redis.cluster needs redis.urls".to_owned());
        }
        // A cluster fails over to a replica: a deduction the master had not
        // passed on would be lost with it, and its 202 would be stock sold
        // twice.
        if self.redis.cluster && self.redis.wait_replicas == 0 {
            return Err("redis.wait_replicas must be at least 1 with redis.cluster".to_owned());
        }
        // Timeouts shrink going downstream.
        if self.redis.wait_replicas > 0
            && (self.redis.wait_timeout.is_zero() || self.redis.wait_timeout >= self.http.request_budget)
        {
            return Err("redis.wait_timeout must be above zero and shorter than http.request_budget".to_owned());
        }
        if self.redis.response_timeout.is_zero() || self.redis.response_timeout >= self.http.request_budget {
            return Err("redis.response_timeout must be above zero and shorter than http.request_budget".to_owned());
        }
        if self.queue.publish_timeout.is_zero() || self.queue.publish_timeout >= self.http.request_budget {
            return Err("queue.publish_timeout must be above zero and shorter than http.request_budget".to_owned());
        }
        if self.store.acquire_timeout.is_zero() || self.store.acquire_timeout >= self.http.request_budget {
            return Err("store.acquire_timeout must be above zero and shorter than http.request_budget".to_owned());
        }
        // A request must outlive the time it may wait for its order.
        if self.queue.max_age < self.flash_sale.reservation_timeout.max(Duration::from_secs(3600)) {
            return Err(
                "queue.max_age must be at least an hour and longer than flash_sale.reservation_timeout".to_owned()
            );
        }
        if self.flash_sale.reservation_timeout <= self.http.request_budget {
            return Err("flash_sale.reservation_timeout must be longer than http.request_budget".to_owned());
        }
        if self.queue.ack_wait < Duration::from_secs(1) || self.redis.key_ttl < Duration::from_secs(60) {
            return Err("queue.ack_wait must be at least 1s and redis.key_ttl at least 60s".to_owned());
        }
        if self.queue.stream.is_empty() || self.queue.consumer.is_empty() || self.redis.namespace.is_empty() {
            return Err("queue.stream, queue.consumer and redis.namespace must not be empty".to_owned());
        }
        Ok(())
    }

    /// Upper bounds on every size, rate and duration: a value past them is a
    /// typo or an attack (`PUT /v1/admin/config`), never a deployment, and
    /// would otherwise reach a pool, a timer or an allocation as it is.
    fn validate_bounds(&self) -> Result<(), String> {
        const MINUTE: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let durations = [
            ("auth.token_ttl", self.auth.token_ttl, 365 * DAY),
            ("auth.leeway", self.auth.leeway, 5 * MINUTE),
            ("http.request_budget", self.http.request_budget, 10 * MINUTE),
            ("http.shutdown_grace", self.http.shutdown_grace, 10 * MINUTE),
            ("http.header_read_timeout", self.http.header_read_timeout, 5 * MINUTE),
            ("cache.ttl", self.cache.ttl, DAY),
            ("cache.negative_ttl", self.cache.negative_ttl, HOUR),
            ("cache.second_delete_delay", self.cache.second_delete_delay, HOUR),
            ("redis.key_ttl", self.redis.key_ttl, 90 * DAY),
            ("queue.ack_wait", self.queue.ack_wait, HOUR),
            ("queue.max_age", self.queue.max_age, 365 * DAY),
            ("flash_sale.payment_timeout", self.flash_sale.payment_timeout, 7 * DAY),
            ("flash_sale.sweep_interval", self.flash_sale.sweep_interval, HOUR),
            ("flash_sale.reservation_timeout", self.flash_sale.reservation_timeout, 7 * DAY),
            ("flash_sale.reconcile_interval", self.flash_sale.reconcile_interval, DAY),
            ("notify.retry.backoff_max", self.notify.retry.backoff_max, 5 * MINUTE),
            ("notify.breaker.slow_call", self.notify.breaker.slow_call, 10 * MINUTE),
            ("notify.breaker.window", self.notify.breaker.window, HOUR),
            ("notify.breaker.open_for", self.notify.breaker.open_for, HOUR),
            ("dependency_breaker.slow_call", self.dependency_breaker.slow_call, 10 * MINUTE),
            ("dependency_breaker.window", self.dependency_breaker.window, HOUR),
            ("dependency_breaker.open_for", self.dependency_breaker.open_for, HOUR),
            ("overload.adaptive_target_latency", self.overload.adaptive_target_latency, MINUTE),
        ];
        for (setting, value, max) in durations {
            if value > max {
                return Err(format!("{setting} must be at most {}", humantime::format_duration(max)));
            }
        }
        let sizes: [(&str, u64, u64); 24] = [
            (
                "dependency_breaker.consecutive_failures",
                u64::from(self.dependency_breaker.consecutive_failures),
                100_000,
            ),
            ("dependency_breaker.min_calls", u64::from(self.dependency_breaker.min_calls), 1_000_000),
            ("dependency_breaker.probes", u64::from(self.dependency_breaker.probes), 1_000),
            ("http.max_connections", self.http.max_connections as u64, 1_000_000),
            ("cache.capacity", self.cache.capacity, 100_000_000),
            ("store.max_connections", u64::from(self.store.max_connections), 1_000),
            ("redis.wait_replicas", u64::from(self.redis.wait_replicas), 16),
            ("redis.namespace", self.redis.namespace.len() as u64, 64),
            ("queue.stream", self.queue.stream.len() as u64, 64),
            ("queue.consumer", self.queue.consumer.len() as u64, 64),
            ("queue.topic", self.queue.topic.len() as u64, 200),
            ("flash_sale.per_user_rate", u64::from(self.flash_sale.per_user_rate), 1_000_000),
            ("flash_sale.per_sale_rate", u64::from(self.flash_sale.per_sale_rate), 100_000_000),
            ("flash_sale.cluster_per_user_rate", u64::from(self.flash_sale.cluster_per_user_rate), 1_000_000),
            ("notify.queue_capacity", self.notify.queue_capacity as u64, 1_000_000),
            ("notify.retry.budget_floor_per_sec", u64::from(self.notify.retry.budget_floor_per_sec), 100_000),
            ("notify.breaker.consecutive_failures", u64::from(self.notify.breaker.consecutive_failures), 100_000),
            ("notify.breaker.min_calls", u64::from(self.notify.breaker.min_calls), 1_000_000),
            ("notify.breaker.probes", u64::from(self.notify.breaker.probes), 1_000),
            ("rate.product_read_per_sec", u64::from(self.rate.product_read_per_sec), 100_000_000),
            ("rate.product_read_burst", u64::from(self.rate.product_read_burst), 100_000_000),
            ("overload.core_concurrency", self.overload.core_concurrency as u64, 1_000_000),
            ("overload.non_core_concurrency", self.overload.non_core_concurrency as u64, 1_000_000),
            ("overload.sale_read_concurrency", self.overload.sale_read_concurrency as u64, 1_000_000),
        ];
        for (setting, value, max) in sizes {
            if value > max {
                return Err(format!("{setting} must be at most {max}"));
            }
        }
        let overload = &self.overload;
        if overload.adaptive_max > 1_000_000 {
            return Err("overload.adaptive_max must be at most 1000000".to_owned());
        }
        if !(overload.adaptive_min..=overload.adaptive_max).contains(&overload.adaptive_initial) {
            return Err("overload.adaptive_initial must be between overload.adaptive_min and adaptive_max".to_owned());
        }
        if overload.adaptive_target_latency.is_zero() {
            return Err("overload.adaptive_target_latency must be greater than zero".to_owned());
        }
        if self.log.level.len() > 1_000 {
            return Err("log.level must be at most 1000 bytes".to_owned());
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), String> {
        self.validate_bounds()?;
        if self.node_id > surge_domain::ids::NODE_ID_MAX {
            return Err(format!("node_id must be at most {}", surge_domain::ids::NODE_ID_MAX));
        }
        if self.auth.jwt_secret.as_ref().is_some_and(|secret| secret.expose().len() < crate::auth::SECRET_LEN_MIN) {
            return Err(format!("auth.jwt_secret must be at least {} bytes", crate::auth::SECRET_LEN_MIN));
        }
        if !(1..=16 * 1024 * 1024).contains(&self.http.body_limit_bytes) {
            return Err("http.body_limit_bytes must be between 1 and 16777216".to_owned());
        }
        if self.http.request_budget.is_zero() || self.http.header_read_timeout.is_zero() {
            return Err("http.request_budget and http.header_read_timeout must be greater than zero".to_owned());
        }
        if self.http.max_connections == 0 {
            return Err("http.max_connections must be at least 1".to_owned());
        }
        if self.cache.capacity == 0 {
            return Err("cache.capacity must be at least 1".to_owned());
        }
        if self.cache.ttl.is_zero() || self.cache.negative_ttl.is_zero() {
            return Err("cache.ttl and cache.negative_ttl must be greater than zero".to_owned());
        }
        if self.cache.ttl_jitter >= self.cache.ttl {
            return Err("cache.ttl_jitter must be shorter than cache.ttl".to_owned());
        }
        if self.store.max_connections == 0 {
            return Err("store.max_connections must be at least 1".to_owned());
        }
        // Downstream waits must fit inside the request's own budget.
        if self.store.url.is_none() && self.store.busy_timeout >= self.http.request_budget {
            return Err("store.busy_timeout must be shorter than http.request_budget".to_owned());
        }
        let sale = &self.flash_sale;
        if sale.payment_timeout.is_zero() || sale.sweep_interval.is_zero() || sale.reconcile_interval.is_zero() {
            return Err("flash_sale.payment_timeout, flash_sale.sweep_interval and flash_sale.reconcile_interval \
                        must be greater than zero"
                .to_owned());
        }
        if !(1..=10_000).contains(&sale.consumer_batch) || !(1..=10_000).contains(&sale.queue_batch) {
            return Err("flash_sale.consumer_batch and flash_sale.queue_batch must be between 1 and 10000".to_owned());
        }
        if sale.per_user_rate == 0 || sale.per_sale_rate == 0 {
            return Err("flash_sale.per_user_rate and flash_sale.per_sale_rate must be at least 1".to_owned());
        }
        if self
            .notify
            .webhook_url
            .as_deref()
            .is_some_and(|url| !url.starts_with("http://") && !url.starts_with("https://"))
        {
            return Err("notify.webhook_url must be an http:// or https:// URL".to_owned());
        }
        if self.notify.queue_capacity == 0 {
            return Err("notify.queue_capacity must be at least 1".to_owned());
        }
        self.notify.breaker.validate("notify.breaker")?;
        self.dependency_breaker.validate("dependency_breaker")?;
        self.notify.retry.validate("notify.retry")?;
        if self.rate.product_read_per_sec > 0 && self.rate.product_read_burst == 0 {
            return Err("rate.product_read_burst must be at least 1 when rate.product_read_per_sec is set".to_owned());
        }
        let overload = &self.overload;
        if overload.core_concurrency == 0 || overload.non_core_concurrency == 0 || overload.sale_read_concurrency == 0 {
            return Err("overload.core_concurrency, overload.non_core_concurrency and overload.sale_read_concurrency \
                        must be at least 1"
                .to_owned());
        }
        if overload.adaptive_min == 0 || overload.adaptive_min > overload.adaptive_max {
            return Err("overload.adaptive_min must be between 1 and overload.adaptive_max".to_owned());
        }
        if overload.bulkhead_max_wait >= self.http.request_budget {
            return Err("overload.bulkhead_max_wait must be shorter than http.request_budget".to_owned());
        }
        // Timeouts shrink going downstream: no outbound call may outlive the
        // request budget of the node that makes it.
        if self.notify.timeout >= self.http.request_budget {
            return Err("notify.timeout must be shorter than http.request_budget".to_owned());
        }
        self.validate_distributed()?;
        if self.ops_listen.is_some_and(|ops| ops == self.listen && ops.port() != 0) {
            return Err("ops_listen must differ from listen".to_owned());
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| format!("log.level is not a valid filter: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail fixes the closures' error type
mod tests {
    use super::*;
    use figment::Jail;

    fn load(jail_file: Option<&str>) -> Result<Settings, ConfigError> {
        Settings::load(jail_file.map(Path::new), &Overrides::default())
    }

    #[test]
    fn the_example_distributed_deployment_config_is_valid() {
        Jail::expect_with(|jail| {
            let example = include_str!("../../../deploy/surge.toml");
            jail.create_file("surge.toml", example)?;
            jail.set_env("SURGE_NODE_ID", "3");
            // The deployment passes the secret from a secret store.
            jail.set_env("SURGE_AUTH__JWT_SECRET", "s".repeat(32));
            let settings = load(Some("surge.toml")).map_err(|e| e.to_string())?;
            assert_eq!(settings.node_id, 3);
            assert!(settings.redis.cluster);
            assert_eq!(settings.redis.urls.len(), 3);
            assert!(settings.queue.nats_url.is_some());
            assert!(settings.store.url.is_some());
            Ok(())
        });
    }

    #[test]
    fn defaults_apply_without_any_file_or_variable() {
        Jail::expect_with(|_jail| {
            let settings = load(None).map_err(|e| e.to_string())?;
            assert_eq!(settings, Settings::default());
            assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
            assert_eq!(settings.data_dir, PathBuf::from("./data"));
            Ok(())
        });
    }

    #[test]
    fn layers_apply_in_order_file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "surge.toml",
                "listen = \"127.0.0.1:9000\"\nnode_id = 3\n[cache]\nttl = \"30s\"\nttl_jitter = \"1s\"\n",
            )?;
            jail.set_env("SURGE_NODE_ID", "4");
            jail.set_env("SURGE_CACHE__TTL", "20s");
            jail.set_env("SURGE_LISTEN", "127.0.0.1:9001");
            let flags = Overrides { listen: Some("127.0.0.1:9002".parse().expect("addr")), data_dir: None };
            let settings = Settings::load(None, &flags).map_err(|e| e.to_string())?;
            assert_eq!(settings.node_id, 4);
            assert_eq!(settings.cache.ttl, Duration::from_secs(20));
            assert_eq!(settings.cache.ttl_jitter, Duration::from_secs(1));
            assert_eq!(settings.listen.to_string(), "127.0.0.1:9002");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_setting_is_named_in_the_error() {
        Jail::expect_with(|jail| {
            jail.create_file("surge.toml", "[cache]\nttll = \"30s\"\n")?;
            let error = load(None).expect_err("typo must fail").to_string();
            assert!(error.contains("ttll"), "{error}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("SURGE_LISTN", "127.0.0.1:1");
            let error = load(None).expect_err("typo must fail").to_string();
            assert!(error.contains("listn"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_wrong_value_is_named_in_the_error() {
        Jail::expect_with(|jail| {
            jail.set_env("SURGE_NODE_ID", "5000");
            let error = load(None).expect_err("out of range").to_string();
            assert!(error.contains("node_id"), "{error}");
            jail.set_env("SURGE_NODE_ID", "1");
            jail.set_env("SURGE_HTTP__REQUEST_BUDGET", "soon");
            let error = load(None).expect_err("not a duration").to_string().to_lowercase();
            assert!(error.contains("request_budget"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_named_config_file_must_exist() {
        Jail::expect_with(|_jail| {
            assert!(matches!(load(Some("nope.toml")), Err(ConfigError::MissingFile(_))));
            Ok(())
        });
    }

    #[test]
    fn a_distributed_node_needs_a_shared_secret_of_32_bytes() {
        Jail::expect_with(|jail| {
            jail.set_env("SURGE_STORE__URL", "postgres://127.0.0.1/surge");
            let error = load(None).expect_err("no secret").to_string();
            assert!(error.contains("auth.jwt_secret"), "{error}");
            jail.set_env("SURGE_AUTH__JWT_SECRET", "s".repeat(31));
            let error = load(None).expect_err("short secret").to_string();
            assert!(error.contains("at least 32 bytes"), "{error}");
            jail.set_env("SURGE_AUTH__JWT_SECRET", "s".repeat(32));
            load(None).map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn kafka_tls_settings_need_the_setting_they_refine() {
        Jail::expect_with(|jail| {
            jail.set_env("SURGE_STORE__URL", "postgres://127.0.0.1/surge");
            jail.set_env("SURGE_AUTH__JWT_SECRET", "s".repeat(32));
            jail.set_env("SURGE_QUEUE__KAFKA_TLS", "true");
            let error = load(None).expect_err("TLS to no brokers").to_string();
            assert!(error.contains("queue.kafka_tls needs queue.kafka_brokers"), "{error}");
            jail.set_env("SURGE_QUEUE__KAFKA_BROKERS", "127.0.0.1:9093");
            let settings = load(None).map_err(|e| e.to_string())?;
            assert!(settings.queue.kafka_tls);
            jail.set_env("SURGE_QUEUE__KAFKA_TLS", "false");
            jail.set_env("SURGE_QUEUE__KAFKA_TLS_CA_FILE", "/etc/surge/kafka-ca.pem");
            let error = load(None).expect_err("a CA without TLS").to_string();
            assert!(error.contains("queue.kafka_tls_ca_file needs queue.kafka_tls = true"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_redis_cluster_needs_deductions_held_by_a_replica() {
        Jail::expect_with(|jail| {
            jail.set_env("SURGE_STORE__URL", "postgres://127.0.0.1/surge");
            jail.set_env("SURGE_AUTH__JWT_SECRET", "s".repeat(32));
            jail.set_env("SURGE_REDIS__URLS", "[redis://127.0.0.1:7000]");
            jail.set_env("SURGE_REDIS__CLUSTER", "true");
            let error = load(None).expect_err("no replica asked for").to_string();
            assert!(error.contains("redis.wait_replicas"), "{error}");
            jail.set_env("SURGE_REDIS__WAIT_REPLICAS", "1");
            load(None).map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn every_size_and_duration_has_an_upper_bound_named_in_its_error() {
        let cases = [
            ("SURGE_HTTP__REQUEST_BUDGET", "11m", "http.request_budget"),
            ("SURGE_HTTP__SHUTDOWN_GRACE", "1h", "http.shutdown_grace"),
            ("SURGE_AUTH__TOKEN_TTL", "400days", "auth.token_ttl"),
            ("SURGE_CACHE__CAPACITY", "100000001", "cache.capacity"),
            ("SURGE_CACHE__TTL", "2days", "cache.ttl"),
            ("SURGE_STORE__MAX_CONNECTIONS", "1001", "store.max_connections"),
            ("SURGE_REDIS__KEY_TTL", "100days", "redis.key_ttl"),
            ("SURGE_QUEUE__ACK_WAIT", "2h", "queue.ack_wait"),
            ("SURGE_FLASH_SALE__PAYMENT_TIMEOUT", "8days", "flash_sale.payment_timeout"),
            ("SURGE_FLASH_SALE__PER_USER_RATE", "1000001", "flash_sale.per_user_rate"),
            ("SURGE_NOTIFY__QUEUE_CAPACITY", "1000001", "notify.queue_capacity"),
            ("SURGE_NOTIFY__BREAKER__OPEN_FOR", "2h", "notify.breaker.open_for"),
            ("SURGE_RATE__PRODUCT_READ_BURST", "100000001", "rate.product_read_burst"),
            ("SURGE_OVERLOAD__CORE_CONCURRENCY", "1000001", "overload.core_concurrency"),
            ("SURGE_OVERLOAD__ADAPTIVE_INITIAL", "5000", "overload.adaptive_initial"),
            ("SURGE_OVERLOAD__ADAPTIVE_TARGET_LATENCY", "2m", "overload.adaptive_target_latency"),
        ];
        for (variable, value, setting) in cases {
            Jail::expect_with(|jail| {
                jail.set_env(variable, value);
                let error = load(None).expect_err(variable).to_string();
                assert!(error.contains(setting), "{variable}={value}: {error}");
                Ok(())
            });
        }
    }

    /// The timeout funnel's start-up check: every downstream wait is
    /// shorter than the request budget that contains it.
    #[test]
    fn a_downstream_timeout_as_long_as_the_request_budget_is_refused() {
        let distributed = |jail: &mut Jail| {
            jail.set_env("SURGE_STORE__URL", "postgres://127.0.0.1/surge");
            jail.set_env("SURGE_AUTH__JWT_SECRET", "s".repeat(32));
            jail.set_env("SURGE_REDIS__URLS", "[redis://127.0.0.1:6379]");
            jail.set_env("SURGE_HTTP__REQUEST_BUDGET", "4s");
        };
        for (variable, setting) in [
            ("SURGE_REDIS__RESPONSE_TIMEOUT", "redis.response_timeout"),
            ("SURGE_QUEUE__PUBLISH_TIMEOUT", "queue.publish_timeout"),
            ("SURGE_STORE__ACQUIRE_TIMEOUT", "store.acquire_timeout"),
            ("SURGE_NOTIFY__TIMEOUT", "notify.timeout"),
            ("SURGE_OVERLOAD__BULKHEAD_MAX_WAIT", "overload.bulkhead_max_wait"),
        ] {
            Jail::expect_with(|jail| {
                distributed(jail);
                load(None).map_err(|e| e.to_string())?;
                jail.set_env(variable, "4s");
                let error = load(None).expect_err(variable).to_string();
                assert!(error.contains(setting) && error.contains("http.request_budget"), "{variable}: {error}");
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            jail.set_env("SURGE_HTTP__REQUEST_BUDGET", "4s");
            jail.set_env("SURGE_STORE__BUSY_TIMEOUT", "4s");
            let error = load(None).expect_err("sqlite busy timeout").to_string();
            assert!(error.contains("store.busy_timeout"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn the_secret_is_never_printed() {
        let secret = Secret::new("x".repeat(40));
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }
}
