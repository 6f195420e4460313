//! Circuit breaker: stop calling a dependency that is failing or slow, give
//! it time, then probe it before trusting it again.
//!
//! Closed → (a trip rule fires over the sliding window, with at least
//! `min_calls` in it) → Open for `open_for` (calls refused at once) →
//! HalfOpen (`probes` calls let through) → Closed when every probe succeeds,
//! Open again when one fails. Trip rules: error ratio, slow-call ratio,
//! consecutive failures; any one that fires opens the breaker.
//!
//! The window is ten buckets of `window / 10`, so memory stays constant
//! whatever the call rate. Time is `tokio::time::Instant` (paused-clock
//! tests). State changes are logged and passed to an observer (metrics, the
//! degradation switchboard).

mod error;
mod layer;
mod window;

#[cfg(test)]
mod tests;

pub use error::BreakerOpen;
pub use layer::{Breaker, BreakerLayer};

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use window::Window;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TripRule {
    /// Failures / calls in the window reach this ratio.
    ErrorRatio(f64),
    /// Calls slower than `slow_call` / calls reach `ratio`.
    SlowCallRatio { ratio: f64, slow_call: Duration },
    /// This many failures in a row (regardless of `min_calls`).
    ConsecutiveFailures(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub rules: Vec<TripRule>,
    pub window: Duration,
    /// The ratio rules need at least this many calls in the window.
    pub min_calls: u32,
    /// How long the breaker stays open before probing.
    pub open_for: Duration,
    /// Probe calls in half-open; all must succeed to close.
    pub probes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Told of every state change: (breaker name, from, to).
pub type Observer = Arc<dyn Fn(&str, BreakerState, BreakerState) + Send + Sync>;

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { unclaimed: u32, succeeded: u32 },
}

struct Inner {
    config: BreakerConfig,
    state: State,
    window: Window,
    consecutive_failures: u32,
}

pub struct CircuitBreaker {
    name: String,
    inner: Mutex<Inner>,
    observer: Option<Observer>,
}

/// Leave to make one call; report how it went with [`Permit::record`].
#[derive(Debug)]
#[must_use = "record the outcome, or the breaker learns nothing"]
pub struct Permit {
    probe: bool,
    started: Instant,
}

impl CircuitBreaker {
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        let window = Window::new(config.window);
        Self {
            name: name.into(),
            inner: Mutex::new(Inner { config, state: State::Closed, window, consecutive_failures: 0 }),
            observer: None,
        }
    }

    pub fn config(&self) -> BreakerConfig {
        self.lock().config.clone()
    }

    /// New thresholds at run time (the config centre). The window starts
    /// afresh; the state (open, closed) is kept.
    pub fn reconfigure(&self, config: BreakerConfig) {
        let mut inner = self.lock();
        inner.window = Window::new(config.window);
        inner.config = config;
    }

    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit to call, or how long until the breaker will probe again.
    pub fn try_acquire(&self) -> Result<Permit, BreakerOpen> {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.state {
            State::Closed => Ok(Permit { probe: false, started: now }),
            State::Open { until } if now < until => Err(BreakerOpen { retry_after: until - now }),
            State::Open { .. } => {
                let probes = inner.config.probes.max(1);
                self.change(&mut inner, State::HalfOpen { unclaimed: probes - 1, succeeded: 0 });
                Ok(Permit { probe: true, started: now })
            }
            State::HalfOpen { ref mut unclaimed, .. } if *unclaimed > 0 => {
                *unclaimed -= 1;
                Ok(Permit { probe: true, started: now })
            }
            State::HalfOpen { .. } => Err(BreakerOpen { retry_after: inner.config.open_for }),
        }
    }

    /// Reports one call's outcome: `failed` as the caller classifies it.
    pub fn record(&self, permit: Permit, failed: bool) {
        let now = Instant::now();
        let latency = now - permit.started;
        let mut inner = self.lock();
        let slow = is_slow(&inner.config, latency);
        let open_for = inner.config.open_for;
        let probes = inner.config.probes.max(1);
        match inner.state {
            State::Closed => {
                inner.window.record(now, failed, slow);
                inner.consecutive_failures = if failed { inner.consecutive_failures + 1 } else { 0 };
                if trips(&mut inner, now) {
                    self.change(&mut inner, State::Open { until: now + open_for });
                }
            }
            State::HalfOpen { ref mut succeeded, .. } if permit.probe && !failed && !slow => {
                *succeeded += 1;
                if *succeeded >= probes {
                    self.change(&mut inner, State::Closed);
                }
            }
            State::HalfOpen { .. } if permit.probe => {
                self.change(&mut inner, State::Open { until: now + open_for });
            }
            // Late answers to calls made before the state changed.
            State::HalfOpen { .. } | State::Open { .. } => {}
        }
    }

    fn change(&self, inner: &mut Inner, to: State) {
        let from = state_of(&inner.state);
        inner.state = to;
        let to = state_of(&inner.state);
        if to == BreakerState::Closed {
            inner.window.clear();
            inner.consecutive_failures = 0;
        }
        match to {
            BreakerState::Open => tracing::warn!(breaker = %self.name, from = from.as_str(), "circuit breaker opened"),
            _ => {
                tracing::info!(breaker = %self.name, from = from.as_str(), to = to.as_str(), "circuit breaker changed")
            }
        }
        if let Some(observer) = &self.observer {
            observer(&self.name, from, to);
        }
    }
}

fn is_slow(config: &BreakerConfig, latency: Duration) -> bool {
    config.rules.iter().any(|rule| matches!(rule, TripRule::SlowCallRatio { slow_call, .. } if latency >= *slow_call))
}

fn trips(inner: &mut Inner, now: Instant) -> bool {
    let totals = inner.window.totals(now);
    let config = &inner.config;
    config.rules.iter().any(|rule| match *rule {
        TripRule::ConsecutiveFailures(n) => inner.consecutive_failures >= n.max(1),
        _ if totals.calls < u64::from(config.min_calls.max(1)) => false,
        TripRule::ErrorRatio(ratio) => totals.failures as f64 >= ratio * totals.calls as f64,
        TripRule::SlowCallRatio { ratio, .. } => totals.slow as f64 >= ratio * totals.calls as f64,
    })
}

fn state_of(state: &State) -> BreakerState {
    match state {
        State::Closed => BreakerState::Closed,
        State::Open { .. } => BreakerState::Open,
        State::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}
