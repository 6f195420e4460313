use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::advance;
use tower::{Layer, ServiceExt, service_fn};

use super::*;

fn config(rules: Vec<TripRule>) -> BreakerConfig {
    BreakerConfig { rules, window: Duration::from_secs(10), min_calls: 5, open_for: Duration::from_secs(30), probes: 2 }
}

fn call(breaker: &CircuitBreaker, failed: bool) -> Result<(), BreakerOpen> {
    let permit = breaker.try_acquire()?;
    breaker.record(permit, failed);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_error_ratio_trips_only_with_enough_calls() {
    let breaker = CircuitBreaker::new("dep", config(vec![TripRule::ErrorRatio(0.5)]));
    for _ in 0..4 {
        call(&breaker, true).expect("closed");
    }
    assert_eq!(breaker.state(), BreakerState::Closed, "4 calls are under min_calls");
    call(&breaker, true).expect("closed");
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(breaker.try_acquire().map(|_| ()), Err(BreakerOpen { retry_after: Duration::from_secs(30) }));
}

#[tokio::test(start_paused = true)]
async fn an_error_ratio_below_the_threshold_keeps_it_closed() {
    let breaker = CircuitBreaker::new("dep", config(vec![TripRule::ErrorRatio(0.5)]));
    for i in 0..40 {
        call(&breaker, i % 3 == 0).expect("closed");
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn old_failures_leave_the_window() {
    let breaker = CircuitBreaker::new("dep", config(vec![TripRule::ErrorRatio(0.5)]));
    for _ in 0..4 {
        call(&breaker, true).expect("closed");
    }
    advance(Duration::from_secs(11)).await;
    for _ in 0..4 {
        call(&breaker, false).expect("closed");
    }
    call(&breaker, true).expect("closed");
    assert_eq!(breaker.state(), BreakerState::Closed, "1 failure in 5 calls within the window");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_slow_call_ratio() {
    let rule = TripRule::SlowCallRatio { ratio: 0.6, slow_call: Duration::from_millis(100) };
    let breaker = CircuitBreaker::new("dep", config(vec![rule]));
    for i in 0..5 {
        let permit = breaker.try_acquire().expect("closed");
        advance(Duration::from_millis(if i < 3 { 150 } else { 10 })).await;
        breaker.record(permit, false);
    }
    assert_eq!(breaker.state(), BreakerState::Open, "3 of 5 calls were slow");
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_without_min_calls() {
    let breaker = CircuitBreaker::new("dep", config(vec![TripRule::ConsecutiveFailures(3)]));
    call(&breaker, true).expect("closed");
    call(&breaker, true).expect("closed");
    call(&breaker, false).expect("closed");
    call(&breaker, true).expect("closed");
    call(&breaker, true).expect("closed");
    assert_eq!(breaker.state(), BreakerState::Closed, "a success broke the run");
    call(&breaker, true).expect("closed");
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn after_the_wait_probes_close_it_or_reopen_it() {
    let seen: Arc<Mutex<Vec<(BreakerState, BreakerState)>>> = Arc::default();
    let record = Arc::clone(&seen);
    let observer: Observer = Arc::new(move |_, from, to| record.lock().expect("lock").push((from, to)));
    let breaker = CircuitBreaker::new("dep", config(vec![TripRule::ConsecutiveFailures(1)])).with_observer(observer);
    call(&breaker, true).expect("closed");
    advance(Duration::from_secs(29)).await;
    assert!(breaker.try_acquire().is_err(), "still open");
    advance(Duration::from_secs(1)).await;

    // Half-open: two probes, the third caller is refused.
    let first = breaker.try_acquire().expect("probe 1");
    let second = breaker.try_acquire().expect("probe 2");
    assert!(breaker.try_acquire().is_err());
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    breaker.record(first, false);
    breaker.record(second, true);
    assert_eq!(breaker.state(), BreakerState::Open, "a failed probe reopens");

    advance(Duration::from_secs(30)).await;
    call(&breaker, false).expect("probe");
    call(&breaker, false).expect("probe");
    assert_eq!(breaker.state(), BreakerState::Closed, "all probes succeeded");
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![
            (BreakerState::Closed, BreakerState::Open),
            (BreakerState::Open, BreakerState::HalfOpen),
            (BreakerState::HalfOpen, BreakerState::Open),
            (BreakerState::Open, BreakerState::HalfOpen),
            (BreakerState::HalfOpen, BreakerState::Closed),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_layer_stops_calling_a_failing_dependency() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let failing = service_fn(move |_: ()| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Err::<(), &str>("down")) }
    });
    let breaker = Arc::new(CircuitBreaker::new("dep", config(vec![TripRule::ConsecutiveFailures(3)])));
    let classify = |result: &Result<Result<(), &str>, crate::BoxError>| !matches!(result, Ok(Ok(())));
    let guarded = BreakerLayer::new(Arc::clone(&breaker), classify).layer(failing);
    for _ in 0..10 {
        let _ = guarded.clone().oneshot(()).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "after 3 failures no more calls reach it");
    let error = guarded.clone().oneshot(()).await.expect_err("open");
    assert!(error.is::<BreakerOpen>());
}

#[tokio::test(start_paused = true)]
async fn a_probe_whose_caller_gave_up_counts_as_failed() {
    let breaker = Arc::new(CircuitBreaker::new("dep", config(vec![TripRule::ConsecutiveFailures(1)])));
    call(&breaker, true).expect("closed");
    advance(Duration::from_secs(30)).await;
    let hanging = service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<_, Infallible>(())
    });
    let guarded = BreakerLayer::new(Arc::clone(&breaker), |r: &Result<(), crate::BoxError>| r.is_err()).layer(hanging);
    let gave_up = tokio::time::timeout(Duration::from_secs(1), guarded.oneshot(())).await;
    assert!(gave_up.is_err());
    assert_eq!(breaker.state(), BreakerState::Open, "the abandoned probe reopened it, none is lost");
}
