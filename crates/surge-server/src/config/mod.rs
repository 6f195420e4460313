//! Settings: plain data with defaults, loaded in layers and validated in one
//! place.
//!
//! Layers, later wins: built-in defaults → `surge.toml` (or `--config FILE`)
//! → `SURGE_*` environment variables (`__` separates sections:
//! `SURGE_CACHE__TTL=30s`) → command-line flags. Unknown keys are errors, so
//! a typo stops start-up with its name instead of being silently ignored.
//!
//! The deployment is chosen by three enums, each a section with a `kind`:
//! `store` (`sqlite` | `postgres`), `shared` (`in_process` | `redis`) and
//! `queue` (`log` | `nats` | `kafka`). A setting that belongs to another
//! kind is an unknown key. Each section validates itself and converts into
//! its adapter's or policy's config beside it; rules across sections are
//! below, in [`Settings::validate`].

mod cache;
mod flash_sale;
mod fulfilment;
mod http;
mod layers;
mod notify;
mod payments;
mod queue;
mod resilience;
mod returns;
mod shared;
mod store;
#[cfg(test)]
mod tests;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cache::CacheSettings;
pub use flash_sale::FlashSaleSettings;
pub use fulfilment::{DispatchSetting, FulfilmentSettings, TrackingMode, TrackingSettings};
pub use http::{AuthSettings, HttpSettings, LogFormat, LogSettings};
pub use notify::NotifySettings;
pub use payments::{PaymentSettings, SandboxSettings};
pub use queue::{KafkaSettings, LogQueueSettings, NatsSettings, QueueSettings};
pub use resilience::{BreakerSettings, OverloadSettings, RateSettings, RetrySettings};
pub use returns::ReturnSettings;
pub use shared::{InProcessSettings, RedisSettings, SharedSettings};
pub use store::{PostgresSettings, SqliteSettings, StoreSettings};
pub use values::{Secret, ServerUrl};

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
    /// Where the embedded mode keeps its database, queue and secret.
    pub data_dir: PathBuf,
    /// This node's id, 0–1023, unique among the nodes of a deployment: it is
    /// part of every id the node mints.
    pub node_id: u16,
    pub auth: AuthSettings,
    pub http: HttpSettings,
    pub cache: CacheSettings,
    pub store: StoreSettings,
    pub shared: SharedSettings,
    pub queue: QueueSettings,
    pub flash_sale: FlashSaleSettings,
    pub notify: NotifySettings,
    pub payments: PaymentSettings,
    pub fulfilment: FulfilmentSettings,
    pub returns: ReturnSettings,
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
            shared: SharedSettings::default(),
            queue: QueueSettings::default(),
            flash_sale: FlashSaleSettings::default(),
            notify: NotifySettings::default(),
            payments: PaymentSettings::default(),
            fulfilment: FulfilmentSettings::default(),
            returns: ReturnSettings::default(),
            overload: OverloadSettings::default(),
            rate: RateSettings::default(),
            dependency_breaker: BreakerSettings::for_dependencies(),
            log: LogSettings::default(),
        }
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
    /// The layers do not read as settings: an unknown key, a value of the
    /// wrong type. The message names the key and the layer it came from.
    #[error("invalid configuration: {0}")]
    Unreadable(String),
    /// A setting read fine but breaks a rule.
    #[error("invalid configuration: {setting} {reason}")]
    Invalid { setting: String, reason: String },
}

pub(crate) const MINUTE: Duration = Duration::from_secs(60);
pub(crate) const HOUR: Duration = Duration::from_secs(3600);
pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

fn invalid(setting: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { setting: setting.to_owned(), reason: reason.into() }
}

/// `setting` breaks its rule (`reason`) unless `ok`.
fn ensure(ok: bool, setting: &str, reason: &str) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(invalid(setting, reason)) }
}

/// Upper bounds on every size, rate and duration: a value past them is a
/// typo or an attack (`PUT /v1/admin/config`), never a deployment, and
/// would otherwise reach a pool, a timer or an allocation as it is.
fn at_most(setting: &str, value: u64, max: u64) -> Result<(), ConfigError> {
    ensure(value <= max, setting, &format!("must be at most {max}"))
}

fn at_most_for(setting: &str, value: Duration, max: Duration) -> Result<(), ConfigError> {
    ensure(value <= max, setting, &format!("must be at most {}", humantime::format_duration(max)))
}

impl Settings {
    /// Loads every layer. `file` is `--config`; without it `surge.toml` in
    /// the working directory is read if present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        // A variable that is not UTF-8 is no setting of ours.
        let variables =
            std::env::vars_os().filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
        Self::load_from(Path::new("."), file, variables, overrides)
    }

    /// Loads every layer from `dir` (where `file` and `surge.toml` are
    /// looked for) and the given variables instead of the process's.
    pub fn load_from(
        dir: &Path,
        file: Option<&Path>,
        variables: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let settings = layers::read(dir, Self::defaults(), file, variables, overrides)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The built-in defaults, the first layer. Of the three deployment
    /// sections only the `kind` is given: the rest of a section belongs to
    /// its kind, and a later layer that picks another kind must not inherit
    /// the default kind's settings (it takes its own kind's defaults).
    fn defaults() -> serde_json::Value {
        let mut defaults = serde_json::to_value(Settings::default()).unwrap_or_default();
        for section in ["store", "shared", "queue"] {
            if let Some(section) = defaults.get_mut(section).and_then(serde_json::Value::as_object_mut) {
                section.retain(|key, _| key == "kind");
            }
        }
        defaults
    }

    /// Every section's own rules, then the rules across sections. The
    /// error names the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let max_node = surge_domain::ids::NODE_ID_MAX;
        ensure(self.node_id <= max_node, "node_id", &format!("must be at most {max_node}"))?;
        self.auth.validate()?;
        self.http.validate()?;
        self.cache.validate()?;
        self.store.validate(&self.http)?;
        self.shared.validate(&self.http)?;
        self.queue.validate(self)?;
        self.flash_sale.validate(&self.http)?;
        self.notify.validate(&self.http)?;
        self.payments.validate()?;
        self.fulfilment.validate()?;
        self.returns.validate()?;
        self.dependency_breaker.validate("dependency_breaker")?;
        self.rate.validate()?;
        self.overload.validate(&self.http)?;
        self.log.validate()?;
        self.validate_deployment()?;
        ensure(
            self.ops_listen.is_none_or(|ops| ops != self.listen || ops.port() == 0),
            "ops_listen",
            "must differ from listen",
        )
    }

    /// The distributed mode hangs together: one shared secret, and no
    /// shared ledger or queue in front of a per-node SQLite file (the nodes
    /// would each write orders the others can't see).
    fn validate_deployment(&self) -> Result<(), ConfigError> {
        let redis = self.shared.redis().is_some();
        let shared = redis || self.queue.is_shared();
        ensure(
            !(shared || self.store.is_postgres()) || self.auth.jwt_secret.is_some(),
            "auth.jwt_secret",
            "must be set in the distributed mode: every node verifies tokens with one shared secret, and none may \
             mint its own",
        )?;
        ensure(
            !shared || self.store.is_postgres(),
            "store.kind",
            "must be \"postgres\" with a shared state in Redis or a NATS or Kafka queue: a shared ledger or queue in \
             front of a per-node SQLite file would split the orders",
        )?;
        ensure(
            self.flash_sale.cluster_per_user_rate == 0 || redis,
            "flash_sale.cluster_per_user_rate",
            "needs shared.kind = \"redis\"",
        )?;
        ensure(
            self.fulfilment.tracking.mode != TrackingMode::WriteBehind
                || redis
                || !(shared || self.store.is_postgres()),
            "fulfilment.tracking.mode",
            "\"write_behind\" keeps its documents in the node's memory (the embedded mode) or in Redis (shared.kind = \
             \"redis\"); nodes sharing a store without Redis write scans through",
        )
    }
}
