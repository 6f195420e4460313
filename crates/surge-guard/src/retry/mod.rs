//! Retries that can't become a storm: only for idempotent operations, at
//! most `attempts_max` tries, exponential backoff with full jitter, never
//! past the caller's deadline, and within a retry budget (tower's
//! `TpsBudget`: retries ≤ a fraction of recent calls plus a small floor), so
//! a dependency that fails every call sees barely more load than without
//! retries.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use crate::deadline::Deadline;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySettings {
    /// Tries in all, the first included.
    pub attempts_max: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// The retry rules on their own, for loops that call a dependency by hand
/// (the notification worker); [`RetryPolicy`] is the same rules as a tower
/// policy. Clones share one budget.
#[derive(Clone)]
pub struct Retries {
    settings: RetrySettings,
    budget: Arc<TpsBudget>,
}

impl Retries {
    pub fn new(settings: RetrySettings, budget: Arc<TpsBudget>) -> Self {
        Self { settings, budget }
    }

    /// A call succeeded: it earns the budget a fraction of a retry.
    pub fn succeeded(&self) {
        self.budget.deposit();
    }

    /// After the `attempts`-th try of an idempotent call failed: how long to
    /// wait before the next one, or `None` when it must not be retried (tries
    /// used up, the wait would pass `deadline`, or the budget is spent).
    pub fn after_failure(&self, attempts: u32, deadline: Option<Instant>) -> Option<Duration> {
        if attempts >= self.settings.attempts_max {
            return None;
        }
        let wait = self.backoff(attempts);
        if deadline.is_some_and(|deadline| Instant::now() + wait >= deadline) {
            return None;
        }
        self.budget.withdraw().then_some(wait)
    }

    /// Full jitter: uniform in `[0, min(max, base·2^(attempts-1))]`.
    fn backoff(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(20);
        let ceiling = self.settings.backoff_base.saturating_mul(1 << exponent).min(self.settings.backoff_max);
        let ceiling_us = ceiling.as_micros() as u64;
        Duration::from_micros(rand::rng().random_range(0..=ceiling_us))
    }
}

/// A retry policy for requests of type `R`: `is_idempotent` says which may
/// be retried, `deadline_of` when the caller stops waiting.
pub struct RetryPolicy<F, D> {
    retries: Retries,
    is_idempotent: F,
    deadline_of: D,
    /// Tries made so far for the current request.
    attempts: u32,
}

impl<F: Clone, D: Clone> Clone for RetryPolicy<F, D> {
    fn clone(&self) -> Self {
        Self {
            retries: self.retries.clone(),
            is_idempotent: self.is_idempotent.clone(),
            deadline_of: self.deadline_of.clone(),
            attempts: 1,
        }
    }
}

impl<F, D> RetryPolicy<F, D> {
    pub fn new(settings: RetrySettings, budget: Arc<TpsBudget>, is_idempotent: F, deadline_of: D) -> Self {
        Self { retries: Retries::new(settings, budget), is_idempotent, deadline_of, attempts: 1 }
    }
}

impl<R, S, E, F, D> Policy<R, S, E> for RetryPolicy<F, D>
where
    R: Clone,
    F: Fn(&R) -> bool,
    D: Fn(&R) -> Option<Deadline>,
{
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(&mut self, request: &mut R, result: &mut Result<S, E>) -> Option<Self::Future> {
        if result.is_ok() {
            self.retries.succeeded();
            return None;
        }
        if !(self.is_idempotent)(request) {
            return None;
        }
        let deadline = (self.deadline_of)(request).map(|deadline| deadline.instant());
        let wait = self.retries.after_failure(self.attempts, deadline)?;
        self.attempts += 1;
        Some(Box::pin(tokio::time::sleep(wait)))
    }

    fn clone_request(&mut self, request: &R) -> Option<R> {
        (self.is_idempotent)(request).then(|| request.clone())
    }
}
