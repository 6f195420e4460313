//! Any [`Admission`] as a tower layer: admit or shed, then report.
//!
//! The slot is held until the call is over: its response, or the drop of
//! its future (a deadline or a client gone), which counts as failed. On a
//! layer made [`carrying`](ShedLayer::carrying), also past either while
//! work spawned from the call holds the request's [`SlotHold`] (that costs
//! an allocation or two per call, so only routes that spawn carry it).

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::Admission;
use crate::BoxError;

/// `failed(&result)` says whether a finished call counts against the limit.
pub struct ShedLayer<A, C> {
    admission: Arc<A>,
    failed: C,
    carry: bool,
}

impl<A, C: Clone> Clone for ShedLayer<A, C> {
    fn clone(&self) -> Self {
        Self { admission: Arc::clone(&self.admission), failed: self.failed.clone(), carry: self.carry }
    }
}

impl<A, C> ShedLayer<A, C> {
    pub fn new(admission: Arc<A>, failed: C) -> Self {
        Self { admission, failed, carry: false }
    }

    /// Puts a [`SlotHold`] in each admitted request, for handlers that
    /// spawn work which must keep the slot.
    pub fn carrying(mut self) -> Self {
        self.carry = true;
        self
    }
}

impl<S, A, C: Clone> Layer<S> for ShedLayer<A, C> {
    type Service = Shed<S, A, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed { inner, admission: Arc::clone(&self.admission), failed: self.failed.clone(), carry: self.carry }
    }
}

pub struct Shed<S, A, C> {
    inner: S,
    admission: Arc<A>,
    failed: C,
    carry: bool,
}

impl<S: Clone, A, C: Clone> Clone for Shed<S, A, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            admission: Arc::clone(&self.admission),
            failed: self.failed.clone(),
            carry: self.carry,
        }
    }
}

/// An admitted call's slot, in the request's extensions: work the call
/// spawns to run past its response (an intake or a cancel that must
/// finish) keeps a clone, and the slot comes back when the last is gone.
#[derive(Clone)]
pub struct SlotHold {
    _admitted: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for SlotHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlotHold")
    }
}

/// A request that can carry its [`SlotHold`] to the handler.
pub trait CarrySlot {
    fn carry(&mut self, hold: SlotHold);
}

impl<B> CarrySlot for http::Request<B> {
    fn carry(&mut self, hold: SlotHold) {
        self.extensions_mut().insert(hold);
    }
}

/// Plain values (tests, internal services) carry nothing.
impl CarrySlot for () {
    fn carry(&mut self, _hold: SlotHold) {}
}

/// The ticket of an admitted call; dropped, it finishes the call with the
/// outcome recorded at its response, or as failed when it had none.
struct Admitted<A: Admission> {
    admission: Arc<A>,
    ticket: Mutex<Option<A::Ticket>>,
    started: Instant,
    outcome: OnceLock<(Duration, bool)>,
}

impl<A: Admission> Admitted<A> {
    fn new(admission: Arc<A>, ticket: A::Ticket) -> Self {
        Self { admission, ticket: Mutex::new(Some(ticket)), started: Instant::now(), outcome: OnceLock::new() }
    }

    /// Shared with the request, when the layer carries a hold.
    fn held_by<R: CarrySlot>(self, request: &mut R, carry: bool) -> Held<A> {
        if !carry {
            return Held::Here(self);
        }
        let shared = Arc::new(self);
        request.carry(SlotHold { _admitted: Arc::clone(&shared) as Arc<dyn Any + Send + Sync> });
        Held::Shared(shared)
    }

    fn answered(&self, failed: bool) {
        let _ = self.outcome.set((self.started.elapsed(), failed));
    }
}

/// An admitted call's ticket, owned by the call or shared with its hold.
enum Held<A: Admission> {
    Here(Admitted<A>),
    Shared(Arc<Admitted<A>>),
}

impl<A: Admission> Held<A> {
    fn answered(&self, failed: bool) {
        match self {
            Held::Here(admitted) => admitted.answered(failed),
            Held::Shared(admitted) => admitted.answered(failed),
        }
    }
}

impl<A: Admission> Drop for Admitted<A> {
    fn drop(&mut self) {
        let ticket = self.ticket.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(ticket) = ticket {
            let (latency, failed) = self.outcome.get().copied().unwrap_or_else(|| (self.started.elapsed(), true));
            self.admission.finish(ticket, latency, failed);
        }
    }
}

impl<S, R, A, C> Service<R> for Shed<S, A, C>
where
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    R: CarrySlot + Send + 'static,
    A: Admission,
    C: Fn(&Result<S::Response, BoxError>) -> bool + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: R) -> Self::Future {
        let admission = Arc::clone(&self.admission);
        let (failed, carry) = (self.failed.clone(), self.carry);
        match admission.try_admit() {
            // Decided at once (the usual case): call the readied service.
            Some(Ok(ticket)) => {
                let admitted = Admitted::new(admission, ticket).held_by(&mut request, carry);
                let call = self.inner.call(request);
                Box::pin(async move {
                    let result = call.await.map_err(Into::into);
                    admitted.answered(failed(&result));
                    result
                })
            }
            Some(Err(shed)) => Box::pin(async move { Err(shed.into()) }),
            // A slot may free up within the wait: a fresh handle calls later.
            None => {
                let inner = self.inner.clone();
                Box::pin(async move {
                    let ticket = admission.admit().await?;
                    let admitted = Admitted::new(admission, ticket).held_by(&mut request, carry);
                    let result = inner.oneshot(request).await.map_err(Into::into);
                    admitted.answered(failed(&result));
                    result
                })
            }
        }
    }
}
