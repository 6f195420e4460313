//! The degradation switchboard: named features that can be turned off (to
//! their fallback) by an operator, or automatically by a breaker.
//!
//! Reads are one atomic load (`SwitchHandle::is_enabled`), so every hot path
//! can ask on every request and a flip takes effect on all routes at once.
//! A manual setting wins over automatic ones: a breaker neither re-enables a
//! feature an operator turned off nor disables one an operator forced on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

/// Who set a switch last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Manual,
    /// Tripped (or restored) by a breaker.
    Auto,
}

/// A switch as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub name: String,
    pub enabled: bool,
    pub reason: String,
    pub mode: Mode,
    pub updated_at: SystemTime,
}

/// A cheap handle on one switch for hot paths.
#[derive(Debug, Clone)]
pub struct SwitchHandle(Arc<AtomicBool>);

impl SwitchHandle {
    pub fn is_enabled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("no switch named {0}")]
pub struct UnknownSwitch(pub String);

struct Entry {
    flag: Arc<AtomicBool>,
    state: Switch,
}

#[derive(Default)]
pub struct Switchboard {
    entries: RwLock<BTreeMap<String, Entry>>,
}

impl Switchboard {
    /// A board with these switches, all enabled. Any `AsRef<str>` names a
    /// switch: the app's own enum of features, or a plain name.
    pub fn new<N: AsRef<str>>(names: &[N]) -> Self {
        let now = SystemTime::now();
        let entries = names
            .iter()
            .map(|name| {
                let name = name.as_ref();
                let state = Switch {
                    name: name.to_owned(),
                    enabled: true,
                    reason: String::new(),
                    mode: Mode::Auto,
                    updated_at: now,
                };
                (name.to_owned(), Entry { flag: Arc::new(AtomicBool::new(true)), state })
            })
            .collect();
        Self { entries: RwLock::new(entries) }
    }

    pub fn handle(&self, name: impl AsRef<str>) -> Result<SwitchHandle, UnknownSwitch> {
        let name = name.as_ref();
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.get(name).map(|e| SwitchHandle(Arc::clone(&e.flag))).ok_or_else(|| UnknownSwitch(name.to_owned()))
    }

    pub fn list(&self) -> Vec<Switch> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.values().map(|e| e.state.clone()).collect()
    }

    /// An operator's setting (also used to restore persisted settings).
    pub fn set_manual(&self, name: impl AsRef<str>, enabled: bool, reason: &str) -> Result<Switch, UnknownSwitch> {
        self.set(name.as_ref(), enabled, reason, Mode::Manual, SystemTime::now(), true)
    }

    /// A breaker's verdict; ignored while an operator's setting stands.
    pub fn set_auto(&self, name: impl AsRef<str>, enabled: bool, reason: &str) -> Result<Switch, UnknownSwitch> {
        self.set(name.as_ref(), enabled, reason, Mode::Auto, SystemTime::now(), false)
    }

    /// Hands a feature back to automatic control (enabled).
    pub fn release(&self, name: impl AsRef<str>) -> Result<Switch, UnknownSwitch> {
        self.set(name.as_ref(), true, "", Mode::Auto, SystemTime::now(), true)
    }

    fn set(
        &self,
        name: &str,
        enabled: bool,
        reason: &str,
        mode: Mode,
        at: SystemTime,
        override_manual: bool,
    ) -> Result<Switch, UnknownSwitch> {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get_mut(name).ok_or_else(|| UnknownSwitch(name.to_owned()))?;
        if entry.state.mode == Mode::Manual && !override_manual {
            return Ok(entry.state.clone());
        }
        entry.state = Switch { name: name.to_owned(), enabled, reason: reason.to_owned(), mode, updated_at: at };
        entry.flag.store(enabled, Ordering::Release);
        Ok(entry.state.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flip_is_seen_through_every_handle_at_once() {
        let board = Switchboard::new(&["notification", "flash_sale_intake"]);
        let a = board.handle("notification").expect("known");
        let b = board.handle("notification").expect("known");
        assert!(a.is_enabled() && b.is_enabled());
        board.set_manual("notification", false, "sms vendor outage").expect("known");
        assert!(!a.is_enabled() && !b.is_enabled());
        assert!(board.handle("flash_sale_intake").expect("known").is_enabled());
        assert_eq!(board.handle("nope").map(|_| ()), Err(UnknownSwitch("nope".into())));
    }

    #[test]
    fn an_operators_setting_wins_over_a_breaker_until_released() {
        let board = Switchboard::new(&["notification"]);
        let handle = board.handle("notification").expect("known");
        board.set_auto("notification", false, "breaker open").expect("known");
        assert!(!handle.is_enabled());
        assert_eq!(board.list()[0].mode, Mode::Auto);
        board.set_manual("notification", true, "forced on").expect("known");
        board.set_auto("notification", false, "breaker open").expect("known");
        assert!(handle.is_enabled(), "the breaker does not override the operator");
        board.release("notification").expect("known");
        board.set_auto("notification", false, "breaker open").expect("known");
        assert!(!handle.is_enabled());
    }
}
