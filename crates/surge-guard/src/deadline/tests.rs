use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use tower::{Layer, ServiceExt, service_fn};

use super::*;

/// A service that takes `work` to answer and reports the deadline it saw.
fn slow_service(
    work: Duration,
    started: Arc<AtomicUsize>,
) -> impl tower::Service<Request<()>, Response = Option<Deadline>, Error = Infallible, Future: Send> + Clone {
    service_fn(move |request: Request<()>| {
        let started = Arc::clone(&started);
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(work).await;
            Ok::<_, Infallible>(request.extensions().get::<Deadline>().copied())
        }
    })
}

fn request(header: Option<&str>) -> Request<()> {
    let mut builder = Request::builder();
    if let Some(value) = header {
        builder = builder.header(DEADLINE_HEADER, value);
    }
    builder.body(()).expect("valid request")
}

#[tokio::test(start_paused = true)]
async fn work_within_the_route_budget_completes_and_sees_its_deadline() {
    let started = Arc::new(AtomicUsize::new(0));
    let service = DeadlineLayer::new(Duration::from_secs(2)).layer(slow_service(Duration::from_secs(1), started));
    let before = tokio::time::Instant::now();
    let seen = service.oneshot(request(None)).await.expect("within budget");
    assert_eq!(seen.map(Deadline::instant), Some(before + Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn slow_work_is_cut_off_at_the_route_budget() {
    let started = Arc::new(AtomicUsize::new(0));
    let service = DeadlineLayer::new(Duration::from_millis(500)).layer(slow_service(Duration::from_secs(5), started));
    let before = tokio::time::Instant::now();
    let error = service.oneshot(request(None)).await.expect_err("must time out");
    assert!(error.is::<DeadlineExpired>());
    assert_eq!(tokio::time::Instant::now() - before, Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn a_shorter_client_deadline_wins_over_the_route_budget() {
    let started = Arc::new(AtomicUsize::new(0));
    let service = DeadlineLayer::new(Duration::from_secs(10)).layer(slow_service(Duration::from_secs(5), started));
    let before = tokio::time::Instant::now();
    let error = service.oneshot(request(Some("200"))).await.expect_err("client deadline must cut off");
    assert!(error.is::<DeadlineExpired>());
    assert_eq!(tokio::time::Instant::now() - before, Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn a_longer_client_deadline_is_capped_by_the_route_budget() {
    let started = Arc::new(AtomicUsize::new(0));
    let service = DeadlineLayer::new(Duration::from_secs(1)).layer(slow_service(Duration::ZERO, started));
    let before = tokio::time::Instant::now();
    let seen = service.oneshot(request(Some("60000"))).await.expect("instant work");
    assert_eq!(seen.map(Deadline::instant), Some(before + Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_does_no_work() {
    let started = Arc::new(AtomicUsize::new(0));
    let service = DeadlineLayer::new(Duration::from_secs(1)).layer(slow_service(Duration::ZERO, Arc::clone(&started)));
    let error = service.oneshot(request(Some("0"))).await.expect_err("no time left");
    assert!(error.is::<DeadlineSpent>());
    assert_eq!(started.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_deadline_header_is_rejected_without_work() {
    for bad in ["", "-5", "1.5", "soon", "99999999999"] {
        let started = Arc::new(AtomicUsize::new(0));
        let service =
            DeadlineLayer::new(Duration::from_secs(1)).layer(slow_service(Duration::ZERO, Arc::clone(&started)));
        let error = service.oneshot(request(Some(bad))).await.expect_err("bad header");
        assert!(error.is::<InvalidDeadlineHeader>(), "{bad:?}");
        assert_eq!(started.load(Ordering::SeqCst), 0);
    }
}

#[test]
fn downstream_budget_never_exceeds_what_is_left() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build();
    let runtime = runtime.expect("runtime");
    runtime.block_on(async {
        let deadline = Deadline::after(Duration::from_millis(300));
        assert_eq!(deadline.budget_for(Duration::from_secs(1)), Duration::from_millis(300));
        assert_eq!(deadline.budget_for(Duration::from_millis(100)), Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(deadline.header_value(), "50");
    });
}

/// The timeout funnel downstream: inside the handler, every call's budget is
/// `min(time left, its own timeout)`; outside a request, its own.
#[tokio::test(start_paused = true)]
async fn downstream_calls_inside_the_handler_get_what_is_left_of_the_deadline() {
    let service = DeadlineLayer::new(Duration::from_secs(2)).layer(service_fn(|_request: Request<()>| async {
        let at_start = budget_for_call(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(600)).await;
        let later = budget_for_call(Duration::from_secs(5));
        let short_own = budget_for_call(Duration::from_millis(100));
        Ok::<_, Infallible>((current().is_some(), at_start, later, short_own))
    }));
    let (inside, at_start, later, short_own) = service.oneshot(request(Some("1000"))).await.expect("within budget");
    assert!(inside);
    assert_eq!(at_start, Duration::from_millis(1_000), "the client's 1 s, not the call's own 5 s");
    assert_eq!(later, Duration::from_millis(400), "what is left after 600 ms of work");
    assert_eq!(short_own, Duration::from_millis(100), "a call's own shorter timeout stands");
    assert_eq!(current(), None, "outside a request there is no deadline");
    assert_eq!(budget_for_call(Duration::from_millis(300)), Duration::from_millis(300));
}
