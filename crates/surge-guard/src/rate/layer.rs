//! The rate-limit layer: keys each request, asks the limiter, then calls,
//! waits and calls, or refuses with [`RateLimited`].

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{Decision, Limiter, RateLimited};
use crate::BoxError;

/// Limits requests of type `R` by the key `key_of` finds in them; requests
/// without a key pass unlimited.
pub struct RateLimitLayer<K, L, F> {
    limiter: Arc<L>,
    key_of: F,
    key: PhantomData<fn() -> K>,
}

impl<K, L, F: Clone> Clone for RateLimitLayer<K, L, F> {
    fn clone(&self) -> Self {
        Self { limiter: Arc::clone(&self.limiter), key_of: self.key_of.clone(), key: PhantomData }
    }
}

impl<K, L, F> RateLimitLayer<K, L, F> {
    pub fn new(limiter: Arc<L>, key_of: F) -> Self {
        Self { limiter, key_of, key: PhantomData }
    }
}

impl<S, K, L, F: Clone> Layer<S> for RateLimitLayer<K, L, F> {
    type Service = RateLimit<S, K, L, F>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner, limiter: Arc::clone(&self.limiter), key_of: self.key_of.clone(), key: PhantomData }
    }
}

pub struct RateLimit<S, K, L, F> {
    inner: S,
    limiter: Arc<L>,
    key_of: F,
    key: PhantomData<fn() -> K>,
}

impl<S: Clone, K, L, F: Clone> Clone for RateLimit<S, K, L, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
            key_of: self.key_of.clone(),
            key: PhantomData,
        }
    }
}

impl<S, R, K, L, F> Service<R> for RateLimit<S, K, L, F>
where
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    R: Send + 'static,
    L: Limiter<K>,
    F: Fn(&R) -> Option<K>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let decision = (self.key_of)(&request).map_or(Decision::Admit, |key| self.limiter.decide(&key, Instant::now()));
        match decision {
            Decision::Admit => {
                let call = self.inner.call(request);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            Decision::AdmitAfter(wait) => {
                // The slot is later: take a fresh handle to the inner service
                // and call it then, leaving this one ready for others.
                let inner = self.inner.clone();
                Box::pin(async move {
                    tokio::time::sleep(wait).await;
                    inner.oneshot(request).await.map_err(Into::into)
                })
            }
            Decision::Reject { retry_after } => Box::pin(async move { Err(RateLimited { retry_after }.into()) }),
        }
    }
}
