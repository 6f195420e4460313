//! The timeout funnel's first hop: every request gets a deadline.
//!
//! A client may say how long it will wait (`X-Request-Deadline-Ms`,
//! milliseconds left); the route has its own budget. The request's deadline
//! is the sooner of the two. It is stored in the request's extensions as a
//! [`Deadline`] so that every downstream call can run under
//! `min(time left, its own timeout)`, and the whole request is cut off when
//! it passes. A request that arrives with no time left does no work at all.

mod error;
mod future;
mod layer;

pub use error::{DeadlineExpired, DeadlineSpent, InvalidDeadlineHeader};
pub use future::ResponseFuture;
pub use layer::DeadlineLayer;

use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tokio::time::Instant;
use tower::Service;

use crate::BoxError;

tokio::task_local! {
    /// The deadline of the request whose handler is being polled.
    static CURRENT: Deadline;
}

/// The deadline of the request this task is serving, if any: set while the
/// request's handler runs under [`RequestDeadline`]. Work spawned off the
/// request (a background task) has none and keeps its own timeouts.
pub fn current() -> Option<Deadline> {
    CURRENT.try_with(|deadline| *deadline).ok()
}

/// The time a downstream call may take: `min(time left, own)` inside a
/// request, `own` outside one. Every adapter's call goes through this, so
/// downstream timeouts shrink with the request's budget.
pub fn budget_for_call(own: std::time::Duration) -> std::time::Duration {
    current().map_or(own, |deadline| deadline.budget_for(own))
}

/// Runs `work` with `deadline` as the [`current`] one: work that is not an
/// HTTP request but has a deadline of its own (and tests of adapters).
pub async fn within<F: std::future::Future>(deadline: Deadline, work: F) -> F::Output {
    CURRENT.scope(deadline, work).await
}

pub(crate) fn poll_within<T>(deadline: Deadline, poll: impl FnOnce() -> T) -> T {
    CURRENT.sync_scope(deadline, poll)
}

/// The header a caller uses to pass its remaining budget, in milliseconds.
pub const DEADLINE_HEADER: &str = "x-request-deadline-ms";

/// The instant by which a request must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(budget: Duration) -> Self {
        Self(Instant::now() + budget)
    }

    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    pub fn instant(self) -> Instant {
        self.0
    }

    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    pub fn is_expired(self) -> bool {
        self.remaining().is_zero()
    }

    /// The timeout a downstream call may use: never more than what is left.
    pub fn budget_for(self, own_timeout: Duration) -> Duration {
        self.remaining().min(own_timeout)
    }

    /// The value to send downstream in [`DEADLINE_HEADER`].
    pub fn header_value(self) -> String {
        self.remaining().as_millis().to_string()
    }
}

/// Applies a deadline to every request; see the module docs.
#[derive(Debug, Clone)]
pub struct RequestDeadline<S> {
    inner: S,
    budget: Duration,
}

impl<S> RequestDeadline<S> {
    pub fn new(inner: S, budget: Duration) -> Self {
        Self { inner, budget }
    }
}

impl<S, B> Service<Request<B>> for RequestDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let asked = match asked_budget(&request) {
            Ok(asked) => asked,
            Err(error) => return ResponseFuture::rejected(error.into()),
        };
        let budget = asked.map_or(self.budget, |asked| asked.min(self.budget));
        if budget.is_zero() {
            return ResponseFuture::rejected(DeadlineSpent.into());
        }
        let deadline = request.extensions().get::<Deadline>().copied().map_or_else(
            || Deadline::after(budget),
            // An outer hop already set one: keep whichever comes first.
            |outer| outer.min(Deadline::after(budget)),
        );
        request.extensions_mut().insert(deadline);
        ResponseFuture::running(self.inner.call(request), deadline)
    }
}

/// The client's budget, if it sent one; an unreadable header is an error, not
/// something to ignore silently.
fn asked_budget<B>(request: &Request<B>) -> Result<Option<Duration>, InvalidDeadlineHeader> {
    let Some(value) = request.headers().get(DEADLINE_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| InvalidDeadlineHeader)?;
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidDeadlineHeader);
    }
    text.parse::<u64>().map(|ms| Some(Duration::from_millis(ms))).map_err(|_| InvalidDeadlineHeader)
}

#[cfg(test)]
mod tests;
