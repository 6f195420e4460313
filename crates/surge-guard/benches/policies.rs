//! Cost per admitted call of each limiter and of the breaker, and our token
//! bucket against governor's GCRA, measured in the same run.
//!
//!     cargo bench -p surge-guard --bench policies

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use surge_guard::breaker::{BreakerConfig, CircuitBreaker, TripRule};
use surge_guard::rate::{FixedWindow, Gcra, LeakyBucket, Limiter, SlidingLog, TokenBucket};
use tokio::time::Instant;

/// Enough allowance that every measured call is admitted.
const PLENTY: u32 = u32::MAX / 2;

fn limiters(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("limiter_admit_one_key");
    let fixed = FixedWindow::new(PLENTY, Duration::from_secs(3600), Instant::now());
    group.bench_function("fixed_window", |b| b.iter(|| fixed.decide(black_box(&7u64), Instant::now())));
    let sliding = SlidingLog::new(PLENTY, Duration::from_millis(1));
    group.bench_function("sliding_log", |b| b.iter(|| sliding.decide(black_box(&7u64), Instant::now())));
    let leaky = LeakyBucket::new(Duration::ZERO, Duration::ZERO);
    group.bench_function("leaky_bucket", |b| b.iter(|| leaky.decide(black_box(&7u64), Instant::now())));
    let token = TokenBucket::new(PLENTY, 1e12);
    group.bench_function("token_bucket", |b| b.iter(|| token.decide(black_box(&7u64), Instant::now())));
    let quota = NonZeroU32::new(PLENTY).expect("non-zero");
    let gcra = Gcra::new(quota, quota);
    group.bench_function("governor_gcra", |b| b.iter(|| gcra.decide(black_box(&7u64), Instant::now())));
    group.finish();
}

fn breaker(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _guard = runtime.enter();
    let config = BreakerConfig {
        rules: vec![
            TripRule::ErrorRatio(0.5),
            TripRule::SlowCallRatio { ratio: 0.8, slow_call: Duration::from_secs(1) },
            TripRule::ConsecutiveFailures(5),
        ],
        window: Duration::from_secs(10),
        min_calls: 10,
        open_for: Duration::from_secs(5),
        probes: 1,
    };
    let breaker = CircuitBreaker::new("bench", config);
    c.bench_function("breaker_acquire_and_record", |b| {
        b.iter(|| {
            let permit = breaker.try_acquire().expect("closed");
            breaker.record(permit, false);
        })
    });
}

criterion_group!(benches, limiters, breaker);
criterion_main!(benches);
