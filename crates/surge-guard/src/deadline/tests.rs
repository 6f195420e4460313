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
