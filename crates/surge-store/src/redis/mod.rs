//! The Redis adapters of the distributed mode: the stock ledger (one Lua
//! script checks and deducts), intake idempotency keys with a TTL, and the
//! pending-order view, shared by every node; cluster-wide rate limiters;
//! the shared tier of cache-aside product reads; and events over pub/sub
//! (product changed, sold out, restocked) that keep every node's local
//! state current.
//!
//! One [`RedisConn`] reaches either a standalone Redis (a reconnecting
//! `ConnectionManager`) or a Redis Cluster (`cluster-async`, which follows
//! MOVED/ASK and fails over to promoted replicas). Every key of one sale
//! carries the hash tag `{s:<sale>}`, so a script that touches a sale's stock
//! and buyers runs in one slot.

mod catalog;
mod events;
mod keys;
mod ledger;
mod pending;
mod rate;
pub mod tracking;

pub use catalog::RedisCatalog;
pub use events::{Event, RedisEvents, RedisSettingsVersion, Signal, subscribe};
pub use keys::RedisIntakeKeys;
pub use ledger::{Durability, RedisLedger};
pub use pending::RedisPending;
pub use rate::{Admission, Algorithm, RedisRateLimiter};
pub use tracking::RedisTracking;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use surge_domain::{SaleId, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// One `redis://` URL for a standalone server; for a cluster, any of its
    /// nodes (the rest are discovered).
    pub urls: Vec<String>,
    pub cluster: bool,
    /// Prefix of every key, so several deployments (or tests) can share one
    /// server.
    pub namespace: String,
    /// Longest wait for one command; a Redis that hangs fails the call
    /// instead of holding intake.
    pub response_timeout: Duration,
    pub connect_timeout: Duration,
    /// PEM of the CA that signed the servers' certificates, for `rediss://`
    /// URLs; without it the system's trust store is used.
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".to_owned()],
            cluster: false,
            namespace: "surge".to_owned(),
            response_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            tls_ca_pem: None,
        }
    }
}

/// A shared, cheap-to-clone connection to a standalone Redis or a cluster.
#[derive(Clone)]
pub enum RedisConn {
    Standalone(ConnectionManager),
    Cluster(Arc<HealingCluster>),
}

/// A cluster connection that is replaced when it keeps failing.
///
/// The cluster client follows MOVED/ASK and refreshes its slot map after a
/// failover, but a failover test caught it, once, timing out every command
/// to the failed-over slot for minutes after the replica had taken over.
/// So when commands keep failing with timeouts or I/O errors
/// ([`Rebuilds`]), a fresh connection is made from the seed nodes, which
/// reads the cluster's current slot map; commands in flight on the old one
/// finish or fail on their own.
pub struct HealingCluster {
    client: ClusterClient,
    current: RwLock<ClusterConnection>,
    rebuilds: Mutex<Rebuilds>,
    rebuilding: AtomicBool,
}

impl HealingCluster {
    fn connection(&self) -> ClusterConnection {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Counts a failed command, and starts a rebuild when [`Rebuilds`] says so.
    fn failed(self: &Arc<Self>, error: &redis::RedisError) {
        if !(error.is_timeout() || error.is_io_error() || error.is_connection_dropped()) {
            return;
        }
        let due = self.rebuilds.lock().unwrap_or_else(PoisonError::into_inner).failed(Instant::now());
        if !due || self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            tracing::warn!("the redis cluster connection keeps failing; connecting afresh");
            match cluster.client.get_async_connection().await {
                Ok(fresh) => *cluster.current.write().unwrap_or_else(PoisonError::into_inner) = fresh,
                Err(error) => tracing::warn!(%error, "could not connect to the redis cluster afresh"),
            }
            cluster.rebuilding.store(false, Ordering::Release);
        });
    }
}

/// When to replace a failing cluster connection: after [`Rebuilds::FAILURES`]
/// failed commands within [`Rebuilds::WINDOW`], at most once per window.
#[derive(Debug)]
pub struct Rebuilds {
    window_start: Instant,
    failures: u32,
    last_rebuild: Option<Instant>,
}

impl Rebuilds {
    /// Low enough that a quiet node (a read every second or so) still
    /// rebuilds; a working cluster's odd timeout stays below it.
    pub const FAILURES: u32 = 5;
    pub const WINDOW: Duration = Duration::from_secs(3);

    pub fn new(now: Instant) -> Self {
        Self { window_start: now, failures: 0, last_rebuild: None }
    }

    /// A command failed at `now`: is a rebuild due?
    pub fn failed(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) > Self::WINDOW {
            self.window_start = now;
            self.failures = 0;
        }
        self.failures += 1;
        let rested = self.last_rebuild.is_none_or(|at| now.duration_since(at) >= Self::WINDOW);
        if self.failures >= Self::FAILURES && rested {
            self.last_rebuild = Some(now);
            self.failures = 0;
            return true;
        }
        false
    }
}

impl RedisConn {
    pub async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        if config.urls.is_empty() {
            return Err(StoreError::Unavailable("no redis url configured".to_owned()));
        }
        let certificates = || redis::TlsCertificates { client_tls: None, root_cert: config.tls_ca_pem.clone() };
        if config.cluster {
            let mut builder = ClusterClient::builder(config.urls.clone())
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.response_timeout)
                .retries(6);
            if config.tls_ca_pem.is_some() {
                builder = builder.certs(certificates());
            }
            let client = builder.build().map_err(unavailable)?;
            let connection = client.get_async_connection().await.map_err(unavailable)?;
            Ok(Self::Cluster(Arc::new(HealingCluster {
                client,
                current: RwLock::new(connection),
                rebuilds: Mutex::new(Rebuilds::new(Instant::now())),
                rebuilding: AtomicBool::new(false),
            })))
        } else {
            let url = config.urls[0].as_str();
            let client = match config.tls_ca_pem {
                Some(_) => redis::Client::build_with_tls(url, certificates()),
                None => redis::Client::open(url),
            }
            .map_err(unavailable)?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout))
                .set_number_of_retries(3);
            Ok(Self::Standalone(ConnectionManager::new_with_config(client, manager_config).await.map_err(unavailable)?))
        }
    }

    /// Waits until `replicas` replicas of the master that owns `key` hold
    /// every write sent to it so far, for at most `timeout`; returns how many
    /// do. A deduction acknowledged this way survives a failover.
    pub async fn wait_for_replicas(&self, key: &str, replicas: u32, timeout: Duration) -> Result<u32, StoreError> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis() as u64);
        let acked = match self {
            Self::Standalone(conn) => wait.query_async(&mut conn.clone()).await.map_err(unavailable)?,
            Self::Cluster(cluster) => {
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = cluster.connection().route_command(wait, routing).await.map_err(unavailable)?;
                redis::from_redis_value(value).map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?
            }
        };
        Ok(acked)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(unavailable)
    }
}

impl ConnectionLike for RedisConn {
    /// Inside a request, a command waits no longer than the request's
    /// deadline (the connection's own response timeout still bounds it).
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let deadline = surge_guard::deadline::current();
        let command: RedisFuture<'a, Value> = match self {
            Self::Standalone(conn) => conn.req_packed_command(cmd),
            Self::Cluster(cluster) => {
                let cluster = Arc::clone(cluster);
                Box::pin(async move {
                    let result = cluster.connection().req_packed_command(cmd).await;
                    if let Err(error) = &result {
                        cluster.failed(error);
                    }
                    result
                })
            }
        };
        match deadline {
            None => command,
            Some(deadline) => Box::pin(async move {
                tokio::time::timeout(deadline.remaining(), command).await.unwrap_or_else(|_| {
                    Err(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the request's deadline passed",
                    )))
                })
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster) => {
                let cluster = Arc::clone(cluster);
                Box::pin(async move {
                    let result = cluster.connection().req_packed_commands(pipeline, offset, count).await;
                    if let Err(error) = &result {
                        cluster.failed(error);
                    }
                    result
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(conn) => conn.get_db(),
            Self::Cluster(cluster) => cluster.connection().get_db(),
        }
    }
}

/// The key of one of a sale's structures; the hash tag keeps a sale's keys
/// in one cluster slot.
fn sale_key(namespace: &str, sale: SaleId, what: &str) -> String {
    format!("{namespace}:{{s:{}}}:{what}", sale.get())
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TLS is compiled in: a `rediss://` URL reaches a Redis that speaks
    /// only TLS, trusting the configured CA (`redis.tls_ca_file`). The
    /// server and its self-signed certificate are the test's own
    /// (`openssl`, `redis-server --tls-port`).
    #[tokio::test]
    async fn a_rediss_url_talks_tls_to_a_tls_only_redis() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, cert, key) = crate::testing::tls_certificates(dir.path());
        let port = crate::testing::free_port();
        let mut server = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--tls-auth-clients",
                "no",
            ])
            .args(["--tls-port", &port.to_string(), "--tls-cert-file"])
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let config = RedisConfig {
            urls: vec![format!("rediss://127.0.0.1:{port}")],
            tls_ca_pem: Some(std::fs::read(&ca).expect("ca")),
            ..RedisConfig::default()
        };
        let mut connected = Err(StoreError::Unavailable("never tried".to_owned()));
        for _ in 0..20 {
            connected = RedisConn::connect(&config).await;
            if connected.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let result = match connected {
            Ok(conn) => conn.ping().await,
            Err(error) => Err(error),
        };
        let _ = server.kill();
        let _ = server.wait();
        result.expect("PING over TLS");
    }

    #[test]
    fn a_connection_is_rebuilt_after_a_burst_of_failures_and_not_again_at_once() {
        let start = Instant::now();
        let mut rebuilds = Rebuilds::new(start);
        let at = |ms: u64| start + Duration::from_millis(ms);
        let due: Vec<bool> = (0..Rebuilds::FAILURES).map(|n| rebuilds.failed(at(u64::from(n)))).collect();
        assert_eq!(due.iter().filter(|d| **d).count(), 1, "the twentieth failure in the window");
        assert!(due[Rebuilds::FAILURES as usize - 1]);
        // Still failing right after: not again until a window has passed.
        assert!(!(0..Rebuilds::FAILURES).any(|n| rebuilds.failed(at(100 + u64::from(n)))));
        assert!((0..Rebuilds::FAILURES).any(|n| rebuilds.failed(at(3_200 + u64::from(n)))));
    }

    #[test]
    fn scattered_failures_never_rebuild() {
        let start = Instant::now();
        let mut rebuilds = Rebuilds::new(start);
        // One failure a second for a minute: a busy but working cluster.
        assert!(!(1..=60u64).any(|s| rebuilds.failed(start + Duration::from_secs(s))));
        // Two a second for long enough: a quiet node that is stuck.
        assert!((0..20u64).any(|n| rebuilds.failed(start + Duration::from_millis(61_000 + n * 500))));
    }
}
