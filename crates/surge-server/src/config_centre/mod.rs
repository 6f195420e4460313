//! The config centre across nodes: a switch or a run-time setting changed
//! through any node reaches every node within a second.
//!
//! The store holds the truth (manual switches, the run-time settings
//! document). After a change, the node that made it bumps the settings'
//! version in Redis, which also announces it over pub/sub; every node
//! reloads from the store when it hears the event, and polls the version
//! every `POLL` in case it missed one (pub/sub delivers at most once). In
//! the embedded mode there is one node and nothing to follow.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use surge_domain::StoreError;
use surge_domain::runtime_config::{ConfigStore, SettingsVersion, SwitchStore};
use surge_guard::switch::{Mode, Switchboard};
use tokio::sync::watch;

mod runtime;

pub use runtime::{LiveConfig, TUNABLES, Tunables, aimd};

/// How often a node looks at the settings' version.
const POLL: Duration = Duration::from_millis(250);
/// How often a node reloads whatever the version says: a bump that failed
/// (Redis down at the time) is caught up too.
const RELOAD_ANYWAY: Duration = Duration::from_secs(30);

pub struct ConfigCentre {
    live: Arc<LiveConfig>,
    switches: Arc<Switchboard>,
    switch_store: Arc<dyn SwitchStore>,
    config_store: Arc<dyn ConfigStore>,
    /// The shared version (distributed mode only).
    version: Option<Arc<dyn SettingsVersion>>,
    /// The version this node has loaded.
    applied: AtomicU64,
    /// One reload, or one change through this node, at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl ConfigCentre {
    pub fn new(
        live: Arc<LiveConfig>,
        switches: Arc<Switchboard>,
        switch_store: Arc<dyn SwitchStore>,
        config_store: Arc<dyn ConfigStore>,
        version: Option<Arc<dyn SettingsVersion>>,
    ) -> Self {
        Self {
            live,
            switches,
            switch_store,
            config_store,
            version,
            applied: AtomicU64::new(0),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Held by a change through this node while it saves and applies, so a
    /// reload (which reads the store, then applies) can't interleave with
    /// it and put back what it just changed.
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.reloading.lock().await
    }

    /// A change through this node was saved and applied here: tell the
    /// others. A failure is logged, not returned (the change holds here and
    /// in the store; the others reload it within `RELOAD_ANYWAY`).
    pub async fn announce(&self) {
        let Some(version) = &self.version else { return };
        match version.bump().await {
            Ok(bumped) => {
                self.applied.store(bumped, Ordering::SeqCst);
            }
            Err(error) => tracing::warn!(%error, "settings change not announced; other nodes reload it later"),
        }
    }

    /// Another node announced `version`.
    pub fn heard(self: &Arc<Self>, version: u64) {
        if version != self.applied.load(Ordering::SeqCst) {
            let centre = Arc::clone(self);
            tokio::spawn(async move { centre.catch_up().await });
        }
    }

    /// Reloads if the shared version is not the one this node has: moved
    /// on, or gone back (Redis lost it and counts again from the start, so
    /// waiting for it to pass the old figure would miss every change until
    /// then).
    pub async fn catch_up(&self) {
        let Some(version) = &self.version else { return };
        match version.current().await {
            Ok(current) if current != self.applied.load(Ordering::SeqCst) => self.reload_as_of(current).await,
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "settings version not read"),
        }
    }

    /// Follows the other nodes' changes until `stopped`.
    pub async fn follow(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        if self.version.is_none() {
            return;
        }
        let mut poll = tokio::time::interval(POLL);
        let mut anyway = tokio::time::interval(RELOAD_ANYWAY);
        anyway.reset();
        loop {
            let reload_all = tokio::select! {
                _ = poll.tick() => false,
                _ = anyway.tick() => true,
                _ = stopped.wait_for(|stop| *stop) => return,
            };
            if reload_all {
                self.reload_as_of(self.applied.load(Ordering::SeqCst)).await;
            } else {
                self.catch_up().await;
            }
        }
    }

    async fn reload_as_of(&self, version: u64) {
        let _one_at_a_time = self.reloading.lock().await;
        match self.reload().await {
            Ok(()) => {
                self.applied.store(version, Ordering::SeqCst);
            }
            Err(error) => tracing::warn!(%error, "settings not reloaded; trying again at the next poll"),
        }
    }

    /// The switches and run-time settings as the store holds them, applied.
    async fn reload(&self) -> Result<(), StoreError> {
        let stored = self.switch_store.load_switches().await?;
        for switch in self.switches.list() {
            match stored.iter().find(|s| s.name == switch.name) {
                Some(want) => {
                    let same =
                        switch.mode == Mode::Manual && switch.enabled == want.enabled && switch.reason == want.reason;
                    if !same {
                        let _ = self.switches.set_manual(&want.name, want.enabled, &want.reason);
                        tracing::info!(switch = %want.name, enabled = want.enabled, "switch set through another node");
                    }
                }
                None if switch.mode == Mode::Manual => {
                    let _ = self.switches.release(&switch.name);
                    tracing::info!(switch = %switch.name, "switch handed back to its breaker through another node");
                }
                None => {}
            }
        }
        if let Some(document) = self.config_store.load_config(TUNABLES).await? {
            self.live.adopt(&document).await;
        }
        Ok(())
    }
}
