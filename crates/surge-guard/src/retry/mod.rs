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

/// A retry policy for requests of type `R`: `is_idempotent` says which may
/// be retried, `deadline_of` when the caller stops waiting.
pub struct RetryPolicy<F, D> {
    settings: RetrySettings,
    budget: Arc<TpsBudget>,
    is_idempotent: F,
    deadline_of: D,
    /// Tries made so far for the current request.
    attempts: u32,
}

impl<F: Clone, D: Clone> Clone for RetryPolicy<F, D> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings,
            budget: Arc::clone(&self.budget),
            is_idempotent: self.is_idempotent.clone(),
            deadline_of: self.deadline_of.clone(),
            attempts: 1,
        }
    }
}

impl<F, D> RetryPolicy<F, D> {
    pub fn new(settings: RetrySettings, budget: Arc<TpsBudget>, is_idempotent: F, deadline_of: D) -> Self {
        Self { settings, budget, is_idempotent, deadline_of, attempts: 1 }
    }

    /// Full jitter: uniform in `[0, min(max, base·2^(attempt-1))]`.
    fn backoff(&self) -> Duration {
        let exponent = self.attempts.saturating_sub(1).min(20);
        let ceiling = self.settings.backoff_base.saturating_mul(1 << exponent).min(self.settings.backoff_max);
        let ceiling_us = ceiling.as_micros() as u64;
        Duration::from_micros(rand::rng().random_range(0..=ceiling_us))
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
            self.budget.deposit();
            return None;
        }
        if !(self.is_idempotent)(request) || self.attempts >= self.settings.attempts_max {
            return None;
        }
        let wait = self.backoff();
        if (self.deadline_of)(request).is_some_and(|deadline| Instant::now() + wait >= deadline.instant()) {
            return None;
        }
        if !self.budget.withdraw() {
            return None;
        }
        self.attempts += 1;
        Some(Box::pin(tokio::time::sleep(wait)))
    }

    fn clone_request(&mut self, request: &R) -> Option<R> {
        (self.is_idempotent)(request).then(|| request.clone())
    }
}
