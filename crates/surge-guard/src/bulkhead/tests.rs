use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::advance;
use tower::{Layer, ServiceExt, service_fn};

use super::*;

fn aimd() -> AimdSettings {
    AimdSettings { initial: 4, min: 2, max: 8, target_latency: Duration::from_millis(100), backoff: 0.5 }
}

#[tokio::test(start_paused = true)]
async fn calls_beyond_the_limit_are_shed_at_once() {
    let limit = AdaptiveLimit::new(aimd());
    let mut admitted = Vec::new();
    for _ in 0..4 {
        admitted.push(limit.admit().await.expect("within the limit"));
    }
    assert_eq!(limit.admit().await.map(|_| ()), Err(Overloaded { retry_after: Duration::from_secs(1) }));
    assert_eq!(limit.in_flight(), 4);
    limit.finish(admitted.pop().expect("one"), Duration::from_millis(5), false);
    assert!(limit.admit().await.is_ok(), "a slot came back");
}

#[tokio::test(start_paused = true)]
async fn the_limit_grows_additively_and_shrinks_multiplicatively() {
    let limit = AdaptiveLimit::new(aimd());
    for _ in 0..40 {
        let ticket = limit.admit().await.expect("admitted");
        limit.finish(ticket, Duration::from_millis(5), false);
    }
    assert_eq!(limit.limit(), 8, "fast calls raise it up to max");
    let ticket = limit.admit().await.expect("admitted");
    limit.finish(ticket, Duration::from_millis(500), false);
    assert_eq!(limit.limit(), 4, "a slow call halves it");
    for _ in 0..5 {
        let ticket = limit.admit().await.expect("admitted");
        limit.finish(ticket, Duration::ZERO, true);
    }
    assert_eq!(limit.limit(), 2, "never below min");
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_sheds_after_its_max_wait_and_spares_the_other_pool() {
    let core = Arc::new(Bulkhead::new("core", 2, Duration::from_millis(50)));
    let non_core = Arc::new(Bulkhead::new("non_core", 1, Duration::ZERO));
    let slow = service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, Infallible>(())
    });
    let never_failed = |_: &Result<(), crate::BoxError>| false;
    let core_service = ShedLayer::new(Arc::clone(&core), never_failed).layer(slow);
    let non_core_service = ShedLayer::new(Arc::clone(&non_core), never_failed).layer(slow);

    let busy = tokio::spawn(non_core_service.clone().oneshot(()));
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let shed = non_core_service.clone().oneshot(()).await.expect_err("non-core pool is full");
    assert!(shed.is::<Overloaded>());
    assert_eq!(tokio::time::Instant::now(), started, "shed at once, no queueing");

    let (a, b) = tokio::join!(core_service.clone().oneshot(()), core_service.clone().oneshot(()));
    assert!(a.is_ok() && b.is_ok(), "the core pool is untouched by non-core load");

    let first = tokio::spawn(core_service.clone().oneshot(()));
    let second = tokio::spawn(core_service.clone().oneshot(()));
    tokio::task::yield_now().await;
    let waited = core_service.clone().oneshot(());
    let (third, _) = tokio::join!(waited, advance(Duration::from_millis(60)));
    assert!(third.expect_err("core full past max_wait").is::<Overloaded>());
    for call in [first, second, busy] {
        call.await.expect("join").expect("served");
    }
}

#[tokio::test(start_paused = true)]
async fn a_bulkhead_resized_at_run_time_admits_the_new_number() {
    let pool = Bulkhead::new("core", 2, Duration::ZERO);
    pool.resize(5);
    let mut held = Vec::new();
    while let Ok(ticket) = pool.admit().await {
        held.push(ticket);
    }
    assert_eq!(held.len(), 5);
    held.clear();
    pool.resize(1);
    let first = pool.admit().await.expect("one slot");
    assert!(pool.admit().await.is_err(), "shrunk to one");
    drop(first);
    assert_eq!(pool.size(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_takes_new_bounds_at_run_time() {
    let limit = AdaptiveLimit::new(aimd());
    limit.reconfigure(AimdSettings { min: 1, max: 2, ..aimd() });
    assert_eq!(limit.limit(), 2, "the limit moves into the new bounds");
}

#[tokio::test(start_paused = true)]
async fn a_pool_refusing_after_the_node_admitted_gives_the_node_slot_back() {
    let node = Arc::new(AdaptiveLimit::new(aimd()));
    let pool = Arc::new(Bulkhead::new("non_core", 1, Duration::ZERO));
    let both = FirstThen { first: Arc::clone(&node), then: Arc::clone(&pool) };
    let held = both.try_admit().expect("decided").expect("admitted");
    assert_eq!(node.in_flight(), 1);
    assert!(both.try_admit().expect("decided").is_err(), "the pool is full");
    assert_eq!(node.in_flight(), 1, "the refused call holds no node slot");
    both.finish(held, Duration::from_millis(1), false);
    assert_eq!(node.in_flight(), 0);
}

/// A call cut off (its deadline, a client gone) drops its future: the
/// node's slot must come back, or each one would shrink the node for good.
#[tokio::test(start_paused = true)]
async fn a_call_dropped_midway_gives_its_slots_back_and_counts_as_failed() {
    let node = Arc::new(AdaptiveLimit::new(aimd()));
    let pool = Arc::new(Bulkhead::new("core", 1, Duration::ZERO));
    let both = Arc::new(FirstThen { first: Arc::clone(&node), then: Arc::clone(&pool) });
    let never = service_fn(|_: ()| std::future::pending::<Result<(), Infallible>>());
    let service = ShedLayer::new(both, |_: &Result<(), crate::BoxError>| false).layer(never);
    let cut_off = tokio::time::timeout(Duration::from_millis(10), service.clone().oneshot(())).await;
    assert!(cut_off.is_err(), "the call never answers");
    assert_eq!(node.in_flight(), 0, "the node slot came back");
    assert_eq!(pool.available(), 1, "the pool slot came back");
    assert_eq!(node.limit(), 2, "a call cut off is a sign of overload: the limit of 4 halved");
}

/// Work spawned from a call (an intake that must finish) holds the call's
/// slots past its response, through the request's `SlotHold`.
#[tokio::test(start_paused = true)]
async fn work_spawned_with_the_slot_hold_keeps_the_slot_until_it_ends() {
    let pool = Arc::new(Bulkhead::new("core", 1, Duration::ZERO));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let done_rx = Arc::new(tokio::sync::Mutex::new(Some(done_rx)));
    let spawning = service_fn(move |request: http::Request<()>| {
        let done_rx = Arc::clone(&done_rx);
        async move {
            let hold = request.extensions().get::<SlotHold>().cloned().expect("the layer put a hold");
            let done = done_rx.lock().await.take().expect("called once");
            tokio::spawn(async move {
                let _ = done.await;
                drop(hold);
            });
            Ok::<_, Infallible>(())
        }
    });
    let service = ShedLayer::new(Arc::clone(&pool), |_: &Result<(), crate::BoxError>| false).carrying().layer(spawning);
    service.clone().oneshot(http::Request::new(())).await.expect("answered");
    assert_eq!(pool.available(), 0, "the spawned work holds the slot after the response");
    done_tx.send(()).expect("the spawned work waits");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(pool.available(), 1, "the slot came back when the work ended");
}
