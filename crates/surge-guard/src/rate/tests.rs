use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::{Instant, advance};
use tower::{Layer, ServiceExt, service_fn};

use super::*;

const KEY: &str = "sku-1";

fn admitted<L: Limiter<&'static str>>(limiter: &L, n: usize) -> usize {
    (0..n).filter(|_| limiter.decide(&KEY, Instant::now()).is_admitted()).count()
}

#[tokio::test(start_paused = true)]
async fn fixed_window_admits_the_limit_per_window_then_resets() {
    let limiter = FixedWindow::new(5, Duration::from_secs(1), Instant::now());
    assert_eq!(admitted(&limiter, 8), 5);
    let refused = limiter.decide(&KEY, Instant::now());
    assert_eq!(refused, Decision::Reject { retry_after: Duration::from_secs(1) });
    advance(Duration::from_millis(999)).await;
    assert_eq!(admitted(&limiter, 3), 0, "same window");
    advance(Duration::from_millis(1)).await;
    assert_eq!(admitted(&limiter, 8), 5, "next window");
    assert_eq!(admitted_for(&limiter, "other-key", 8), 5, "keys are independent");
}

fn admitted_for<L: Limiter<&'static str>>(limiter: &L, key: &'static str, n: usize) -> usize {
    (0..n).filter(|_| limiter.decide(&key, Instant::now()).is_admitted()).count()
}

#[tokio::test(start_paused = true)]
async fn sliding_log_admits_the_limit_in_any_window() {
    let limiter = SlidingLog::new(3, Duration::from_secs(1));
    assert_eq!(admitted(&limiter, 2), 2);
    advance(Duration::from_millis(600)).await;
    assert_eq!(admitted(&limiter, 5), 1, "two of three still in the window");
    match limiter.decide(&KEY, Instant::now()) {
        Decision::Reject { retry_after } => assert_eq!(retry_after, Duration::from_millis(400)),
        other => panic!("expected a rejection, got {other:?}"),
    }
    advance(Duration::from_millis(400)).await;
    assert_eq!(admitted(&limiter, 5), 2, "the first two left the window");
}

#[tokio::test(start_paused = true)]
async fn token_bucket_allows_a_burst_then_refills_at_its_rate() {
    let limiter = TokenBucket::new(10, 5.0);
    assert_eq!(admitted(&limiter, 20), 10, "the burst");
    advance(Duration::from_millis(200)).await;
    assert_eq!(admitted(&limiter, 5), 1, "one token per 200 ms");
    advance(Duration::from_secs(1)).await;
    assert_eq!(admitted(&limiter, 20), 5);
    advance(Duration::from_secs(60)).await;
    assert_eq!(admitted(&limiter, 20), 10, "refill stops at the burst");
}

#[tokio::test(start_paused = true)]
async fn leaky_bucket_spaces_admissions_and_refuses_past_the_max_wait() {
    let limiter = LeakyBucket::new(Duration::from_millis(100), Duration::from_millis(250));
    let decisions: Vec<Decision> = (0..5).map(|_| limiter.decide(&KEY, Instant::now())).collect();
    assert_eq!(
        decisions,
        vec![
            Decision::Admit,
            Decision::AdmitAfter(Duration::from_millis(100)),
            Decision::AdmitAfter(Duration::from_millis(200)),
            Decision::Reject { retry_after: Duration::from_millis(50) },
            Decision::Reject { retry_after: Duration::from_millis(50) },
        ]
    );
    advance(Duration::from_millis(300)).await;
    assert_eq!(limiter.decide(&KEY, Instant::now()), Decision::Admit);
}

#[tokio::test(start_paused = true)]
async fn forgetting_idle_keys_keeps_only_live_state() {
    let limiter = TokenBucket::new(2, 1.0);
    limiter.decide(&KEY, Instant::now());
    limiter.forget_idle(Instant::now());
    assert_eq!(limiter.tracked_keys(), 1, "not yet full");
    advance(Duration::from_secs(5)).await;
    limiter.forget_idle(Instant::now());
    assert_eq!(limiter.tracked_keys(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_layer_refuses_with_retry_after_and_delays_leaky_admissions() {
    let service = service_fn(|request: &'static str| async move { Ok::<_, Infallible>(request) });
    let limiter = Arc::new(FixedWindow::new(1, Duration::from_secs(1), Instant::now()));
    let limited = RateLimitLayer::new(limiter, |r: &&'static str| Some(*r)).layer(service);
    assert_eq!(limited.clone().oneshot("a").await.ok(), Some("a"));
    let error = limited.clone().oneshot("a").await.expect_err("second in the window");
    let refused = error.downcast_ref::<RateLimited>().copied();
    assert_eq!(refused, Some(RateLimited { retry_after: Duration::from_secs(1) }));
    assert_eq!(limited.clone().oneshot("b").await.ok(), Some("b"), "another key");

    let leaky = Arc::new(LeakyBucket::new(Duration::from_millis(100), Duration::from_secs(1)));
    let smoothed = RateLimitLayer::new(leaky, |_: &&'static str| Some(())).layer(service);
    let started = Instant::now();
    let (first, second) = tokio::join!(smoothed.clone().oneshot("x"), smoothed.clone().oneshot("y"));
    assert!(first.is_ok() && second.is_ok());
    assert_eq!(Instant::now() - started, Duration::from_millis(100), "the second waited for its slot");
}

#[tokio::test]
async fn gcra_from_governor_admits_its_burst() {
    let limiter = Gcra::new(std::num::NonZeroU32::new(3).expect("3"), std::num::NonZeroU32::new(1).expect("1"));
    assert_eq!(admitted(&limiter, 10), 3);
}

/// Runs arrivals (gaps in ms) through a limiter on a fresh paused clock and
/// returns the admission times in ms since start.
fn admissions(gaps_ms: &[u64], limiter: impl Limiter<u8>) -> Vec<u64> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build();
    runtime.expect("runtime").block_on(async move {
        let start = Instant::now();
        let mut times = Vec::new();
        for gap in gaps_ms {
            advance(Duration::from_millis(*gap)).await;
            match limiter.decide(&0, Instant::now()) {
                Decision::Admit => times.push((Instant::now() - start).as_millis() as u64),
                Decision::AdmitAfter(wait) => times.push((Instant::now() + wait - start).as_millis() as u64),
                Decision::Reject { .. } => {}
            }
        }
        times
    })
}

/// Most admissions in any window `[t, t + window)` that starts at an admission.
fn busiest(times: &[u64], window: u64) -> usize {
    times.iter().map(|start| times.iter().filter(|t| **t >= *start && **t < start + window).count()).max().unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sliding_log_never_admits_more_than_its_limit_in_any_window(gaps in prop::collection::vec(0u64..60, 1..300)) {
        let times = admissions(&gaps, SlidingLog::new(7, Duration::from_millis(100)));
        prop_assert!(busiest(&times, 100) <= 7);
    }

    #[test]
    fn fixed_window_never_admits_more_than_its_limit_per_window(gaps in prop::collection::vec(0u64..60, 1..300)) {
        let runtime_start_aligned = admissions(&gaps, FixedWindow::new(7, Duration::from_millis(100), Instant::now()));
        let mut per_window = std::collections::HashMap::new();
        for t in runtime_start_aligned {
            *per_window.entry(t / 100).or_insert(0) += 1;
        }
        prop_assert!(per_window.values().all(|n| *n <= 7));
    }

    #[test]
    fn token_bucket_never_admits_more_than_burst_plus_refill(gaps in prop::collection::vec(0u64..60, 1..300)) {
        // burst 5, 10 per second: at most 5 + 10·T in any window of T seconds.
        let times = admissions(&gaps, TokenBucket::new(5, 10.0));
        for window in [1u64, 100, 500, 1000] {
            let bound = 5 + (10 * window).div_ceil(1000) as usize;
            prop_assert!(busiest(&times, window) <= bound, "window {window} ms");
        }
    }

    #[test]
    fn leaky_bucket_never_schedules_two_admissions_closer_than_its_interval(gaps in prop::collection::vec(0u64..60, 1..300)) {
        let mut times = admissions(&gaps, LeakyBucket::new(Duration::from_millis(20), Duration::from_millis(200)));
        times.sort_unstable();
        prop_assert!(times.windows(2).all(|pair| pair[1] - pair[0] >= 20));
    }
}
