//! Intake rate limits: per customer and per sale, GCRA token buckets
//! (`surge_guard::rate::Gcra`, governor's), swapped whole when the config
//! centre changes the rates.

use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError, RwLock};

use surge_domain::{SaleId, UserId};
use surge_guard::rate::{Decision, Gcra, Limiter};
use tokio::time::Instant;

use crate::error::ApiError;

/// The two limiters; swapped whole when the rates change at run time.
struct Buckets {
    per_user: Gcra<UserId>,
    per_sale: Gcra<SaleId>,
}

pub struct IntakeLimits {
    buckets: RwLock<Arc<Buckets>>,
}

impl IntakeLimits {
    pub fn new(per_user_per_sec: u32, per_sale_per_sec: u32) -> Self {
        Self { buckets: RwLock::new(Arc::new(Buckets::new(per_user_per_sec, per_sale_per_sec))) }
    }

    /// New rates (the config centre); buckets start full.
    pub fn reconfigure(&self, per_user_per_sec: u32, per_sale_per_sec: u32) {
        let fresh = Arc::new(Buckets::new(per_user_per_sec, per_sale_per_sec));
        *self.buckets.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    fn current(&self) -> Arc<Buckets> {
        Arc::clone(&self.buckets.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn check(&self, user: UserId, sale: SaleId) -> Result<(), ApiError> {
        self.current().check(user, sale)
    }

    /// Forgets keys whose buckets are full again (bounds memory).
    pub fn shrink(&self) {
        self.current().shrink();
    }
}

impl Buckets {
    fn new(per_user_per_sec: u32, per_sale_per_sec: u32) -> Self {
        let rate = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Self {
            per_user: Gcra::new(rate(per_user_per_sec), rate(per_user_per_sec)),
            per_sale: Gcra::new(rate(per_sale_per_sec), rate(per_sale_per_sec)),
        }
    }

    fn check(&self, user: UserId, sale: SaleId) -> Result<(), ApiError> {
        let refused = |decision: Decision| match decision {
            Decision::Reject { retry_after } => Err(ApiError::rate_limited(retry_after.as_secs() + 1)),
            Decision::Admit | Decision::AdmitAfter(_) => Ok(()),
        };
        let now = Instant::now();
        // In turn: a customer over its own rate takes nothing from the sale's.
        refused(self.per_user.decide(&user, now))?;
        refused(self.per_sale.decide(&sale, now))
    }

    fn shrink(&self) {
        let now = Instant::now();
        self.per_user.forget_idle(now);
        self.per_sale.forget_idle(now);
    }
}
