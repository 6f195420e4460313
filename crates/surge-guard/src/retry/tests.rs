use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tower::retry::RetryLayer;
use tower::retry::budget::TpsBudget;
use tower::{Layer, ServiceExt, service_fn};

use super::*;

#[derive(Clone)]
struct Call {
    idempotent: bool,
    deadline: Option<Deadline>,
}

fn settings() -> RetrySettings {
    RetrySettings { attempts_max: 3, backoff_base: Duration::from_millis(10), backoff_max: Duration::from_millis(200) }
}

fn failing(
    counter: Arc<AtomicUsize>,
) -> impl tower::Service<Call, Response = (), Error = &'static str, Future: Send> + Clone {
    service_fn(move |_: Call| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>("down") }
    })
}

fn policy(
    budget: Arc<TpsBudget>,
) -> RetryPolicy<impl Fn(&Call) -> bool + Clone, impl Fn(&Call) -> Option<Deadline> + Clone> {
    RetryPolicy::new(settings(), budget, |c: &Call| c.idempotent, |c: &Call| c.deadline)
}

#[tokio::test(start_paused = true)]
async fn an_idempotent_call_is_tried_at_most_attempts_max_times() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 100, 1.0));
    let service = RetryLayer::new(policy(budget)).layer(failing(Arc::clone(&attempts)));
    let result = service.oneshot(Call { idempotent: true, deadline: None }).await;
    assert!(result.is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_call_not_marked_idempotent_is_never_retried() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 100, 1.0));
    let service = RetryLayer::new(policy(budget)).layer(failing(Arc::clone(&attempts)));
    let _ = service.oneshot(Call { idempotent: false, deadline: None }).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn no_retry_is_started_past_the_deadline() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 100, 1.0));
    let service = RetryLayer::new(policy(budget)).layer(failing(Arc::clone(&attempts)));
    let deadline = Some(Deadline::after(Duration::ZERO));
    let _ = service.oneshot(Call { idempotent: true, deadline }).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "no time left for a retry");
}

#[tokio::test(start_paused = true)]
async fn under_total_failure_the_budget_bounds_all_attempts() {
    // 10 retries a second of floor over a 10 s window, plus 20 % of calls.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    let attempts = Arc::new(AtomicUsize::new(0));
    let service = RetryLayer::new(policy(Arc::clone(&budget))).layer(failing(Arc::clone(&attempts)));
    let calls = 1_000;
    for _ in 0..calls {
        let _ = service.clone().oneshot(Call { idempotent: true, deadline: None }).await;
    }
    let total = attempts.load(Ordering::SeqCst);
    let retries = total - calls;
    println!("calls {calls}, attempts {total}, retries {retries}");
    // Without a budget it would be 3 000 attempts; the floor is 10/s · 10 s.
    assert!(retries <= 100 + calls / 5, "retries {retries} exceed the budget");
    assert!(retries > 0, "the floor still allows some retries");
}
