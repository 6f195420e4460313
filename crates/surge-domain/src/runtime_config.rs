//! The ports of the operational settings kept in the store: the degradation switches an
//! operator set by hand, and settings changed at run time (so both survive a
//! restart).

use crate::StoreError;
use async_trait::async_trait;

/// A manual switch setting as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSwitch {
    pub name: String,
    pub enabled: bool,
    pub reason: String,
}

#[async_trait]
pub trait SwitchStore: Send + Sync + 'static {
    async fn load_switches(&self) -> Result<Vec<StoredSwitch>, StoreError>;
    async fn save_switch(&self, switch: &StoredSwitch) -> Result<(), StoreError>;
    /// Forgets a manual setting (the switch goes back to automatic).
    async fn forget_switch(&self, name: &str) -> Result<(), StoreError>;
}

/// Run-time settings documents (JSON), by name.
#[async_trait]
pub trait ConfigStore: Send + Sync + 'static {
    async fn load_config(&self, name: &str) -> Result<Option<String>, StoreError>;
    async fn save_config(&self, name: &str, value: &str) -> Result<(), StoreError>;
}

/// The version of the switches and run-time settings every node shares
/// (distributed mode): bumped after each change, polled by every node.
#[async_trait]
pub trait SettingsVersion: Send + Sync + 'static {
    /// A change was saved: the next version, announced to the other nodes.
    async fn bump(&self) -> Result<u64, StoreError>;
    /// The latest version (0 before any change).
    async fn current(&self) -> Result<u64, StoreError>;
}
