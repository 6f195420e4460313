//! The breaker as a tower layer: refuses at once while open, otherwise calls
//! and reports the outcome as `classify` sees it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::CircuitBreaker;
use crate::BoxError;

/// `classify(&result) == true` means the call failed.
#[derive(Clone)]
pub struct BreakerLayer<C> {
    breaker: Arc<CircuitBreaker>,
    classify: C,
}

impl<C> BreakerLayer<C> {
    pub fn new(breaker: Arc<CircuitBreaker>, classify: C) -> Self {
        Self { breaker, classify }
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = Breaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker { inner, breaker: Arc::clone(&self.breaker), classify: self.classify.clone() }
    }
}

#[derive(Clone)]
pub struct Breaker<S, C> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
    classify: C,
}

impl<S, R, C> Service<R> for Breaker<S, C>
where
    S: Service<R>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C: Fn(&Result<S::Response, BoxError>) -> bool + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(open) => return Box::pin(async move { Err(open.into()) }),
        };
        let call = self.inner.call(request);
        let mut pending = Pending { breaker: Arc::clone(&self.breaker), permit: Some(permit) };
        let classify = self.classify.clone();
        Box::pin(async move {
            let result = call.await.map_err(Into::into);
            pending.finish(classify(&result));
            result
        })
    }
}

/// A call in flight. Dropped unfinished (its caller gave up: a deadline, a
/// disconnect), it counts as a failure, so a half-open probe is never lost.
struct Pending {
    breaker: Arc<CircuitBreaker>,
    permit: Option<super::Permit>,
}

impl Pending {
    fn finish(&mut self, failed: bool) {
        if let Some(permit) = self.permit.take() {
            self.breaker.record(permit, failed);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(true);
    }
}
