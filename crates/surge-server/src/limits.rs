//! Intake rate limits: per customer and per sale, GCRA token buckets from
//! `governor`. The general limiter layers arrive with the resilience work;
//! these two guard the flash-sale intake now.

use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError, RwLock};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use surge_domain::{SaleId, UserId};

use crate::error::ApiError;

/// The two limiters; swapped whole when the rates change at run time.
struct Buckets {
    per_user: DefaultKeyedRateLimiter<UserId>,
    per_sale: DefaultKeyedRateLimiter<SaleId>,
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
        let quota = |n: u32| Quota::per_second(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Self {
            per_user: RateLimiter::keyed(quota(per_user_per_sec)),
            per_sale: RateLimiter::keyed(quota(per_sale_per_sec)),
        }
    }

    fn check(&self, user: UserId, sale: SaleId) -> Result<(), ApiError> {
        let refused = |not_until: governor::NotUntil<_>| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::rate_limited(wait.as_secs() + 1)
        };
        self.per_user.check_key(&user).map_err(refused)?;
        self.per_sale.check_key(&sale).map_err(refused)?;
        Ok(())
    }

    fn shrink(&self) {
        self.per_user.retain_recent();
        self.per_sale.retain_recent();
        self.per_user.shrink_to_fit();
    }
}
