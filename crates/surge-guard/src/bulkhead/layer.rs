//! Any [`Admission`] as a tower layer: admit or shed, then report.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::Admission;
use crate::BoxError;

/// `failed(&result)` says whether a finished call counts against the limit.
pub struct ShedLayer<A, C> {
    admission: Arc<A>,
    failed: C,
}

impl<A, C: Clone> Clone for ShedLayer<A, C> {
    fn clone(&self) -> Self {
        Self { admission: Arc::clone(&self.admission), failed: self.failed.clone() }
    }
}

impl<A, C> ShedLayer<A, C> {
    pub fn new(admission: Arc<A>, failed: C) -> Self {
        Self { admission, failed }
    }
}

impl<S, A, C: Clone> Layer<S> for ShedLayer<A, C> {
    type Service = Shed<S, A, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed { inner, admission: Arc::clone(&self.admission), failed: self.failed.clone() }
    }
}

pub struct Shed<S, A, C> {
    inner: S,
    admission: Arc<A>,
    failed: C,
}

impl<S: Clone, A, C: Clone> Clone for Shed<S, A, C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), admission: Arc::clone(&self.admission), failed: self.failed.clone() }
    }
}

impl<S, R, A, C> Service<R> for Shed<S, A, C>
where
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    R: Send + 'static,
    A: Admission,
    C: Fn(&Result<S::Response, BoxError>) -> bool + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let admission = Arc::clone(&self.admission);
        let failed = self.failed.clone();
        match admission.try_admit() {
            // Decided at once (the usual case): call the readied service.
            Some(Ok(ticket)) => {
                let call = self.inner.call(request);
                Box::pin(async move {
                    let started = Instant::now();
                    let result = call.await.map_err(Into::into);
                    admission.finish(ticket, started.elapsed(), failed(&result));
                    result
                })
            }
            Some(Err(shed)) => Box::pin(async move { Err(shed.into()) }),
            // A slot may free up within the wait: a fresh handle calls later.
            None => {
                let inner = self.inner.clone();
                Box::pin(async move {
                    let ticket = admission.admit().await?;
                    let started = Instant::now();
                    let result = inner.oneshot(request).await.map_err(Into::into);
                    admission.finish(ticket, started.elapsed(), failed(&result));
                    result
                })
            }
        }
    }
}
