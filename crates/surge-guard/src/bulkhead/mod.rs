//! Bulkheads and overload protection.
//!
//! - [`Bulkhead`]: a fixed pool of concurrent calls for one class of work
//!   (core: intake, orders, payment; non-core: listings, reports), so one
//!   class can't starve the other. A call that finds the pool full waits at
//!   most `max_wait`, then is shed.
//! - [`AdaptiveLimit`]: the node's concurrency limit, found by AIMD: +1/limit
//!   per call that finished within `target_latency`, ×`backoff` per call
//!   that was slow or failed, within `[min, max]`. Calls beyond it are shed
//!   at once.
//!
//! Shedding answers fast with [`Overloaded`] instead of queueing without
//! bound: memory stays bounded under any load.

mod layer;

#[cfg(test)]
mod tests;

pub use layer::{CarrySlot, Shed, ShedLayer, SlotHold};

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The call was shed; retry after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    pub retry_after: Duration,
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("overloaded; call shed")
    }
}

impl std::error::Error for Overloaded {}

/// Admission for one call; dropping it gives the slot back.
pub trait Admission: Send + Sync + 'static {
    type Ticket: Send + 'static;
    fn admit(&self) -> impl std::future::Future<Output = Result<Self::Ticket, Overloaded>> + Send;
    /// The decision without waiting, when one can be made: the hot path.
    fn try_admit(&self) -> Option<Result<Self::Ticket, Overloaded>>;
    /// Tells the limiter how the call went.
    fn finish(&self, ticket: Self::Ticket, latency: Duration, failed: bool);
    /// Gives the slot back for a call that was not made (a later guard
    /// refused it); learns nothing from it.
    fn release(&self, ticket: Self::Ticket);
}

/// Two admissions as one (the node limit, then a pool): one layer, one
/// boxed service per request instead of two.
pub struct FirstThen<A, B> {
    pub first: Arc<A>,
    pub then: Arc<B>,
}

impl<A: Admission, B: Admission> Admission for FirstThen<A, B> {
    type Ticket = (A::Ticket, B::Ticket);

    async fn admit(&self) -> Result<Self::Ticket, Overloaded> {
        let first = self.first.admit().await?;
        match self.then.admit().await {
            Ok(then) => Ok((first, then)),
            Err(shed) => {
                self.first.release(first);
                Err(shed)
            }
        }
    }

    fn try_admit(&self) -> Option<Result<Self::Ticket, Overloaded>> {
        let first = match self.first.try_admit()? {
            Ok(ticket) => ticket,
            Err(shed) => return Some(Err(shed)),
        };
        match self.then.try_admit() {
            Some(Ok(then)) => Some(Ok((first, then))),
            Some(Err(shed)) => {
                self.first.release(first);
                Some(Err(shed))
            }
            None => {
                // The pool needs a wait: take the slow path for both.
                self.first.release(first);
                None
            }
        }
    }

    fn finish(&self, (first, then): Self::Ticket, latency: Duration, failed: bool) {
        self.then.finish(then, latency, failed);
        self.first.finish(first, latency, failed);
    }

    fn release(&self, (first, then): Self::Ticket) {
        self.then.release(then);
        self.first.release(first);
    }
}

pub struct Bulkhead {
    name: &'static str,
    slots: Arc<Semaphore>,
    size: Mutex<usize>,
    max_wait: Duration,
}

impl Bulkhead {
    pub fn new(name: &'static str, size: usize, max_wait: Duration) -> Self {
        let size = size.max(1);
        Self { name, slots: Arc::new(Semaphore::new(size)), size: Mutex::new(size), max_wait }
    }

    pub fn size(&self) -> usize {
        *self.size.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new pool size at run time. Shrinking takes free slots away now and
    /// busy ones as they come back.
    pub fn resize(&self, size: usize) {
        let size = size.max(1);
        let mut current = self.size.lock().unwrap_or_else(PoisonError::into_inner);
        if size > *current {
            self.slots.add_permits(size - *current);
        } else {
            let mut owed = *current - size;
            owed -= self.slots.forget_permits(owed);
            if owed > 0 {
                let slots = Arc::clone(&self.slots);
                tokio::spawn(async move {
                    if let Ok(taken) = slots.acquire_many_owned(owed as u32).await {
                        taken.forget();
                    }
                });
            }
        }
        *current = size;
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

impl Admission for Bulkhead {
    type Ticket = OwnedSemaphorePermit;

    async fn admit(&self) -> Result<Self::Ticket, Overloaded> {
        let shed = Overloaded { retry_after: Duration::from_secs(1) };
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        if self.max_wait.is_zero() {
            return Err(shed);
        }
        match tokio::time::timeout(self.max_wait, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(shed),
        }
    }

    fn try_admit(&self) -> Option<Result<Self::Ticket, Overloaded>> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => Some(Ok(permit)),
            Err(_) if self.max_wait.is_zero() => Some(Err(Overloaded { retry_after: Duration::from_secs(1) })),
            Err(_) => None,
        }
    }

    fn finish(&self, _ticket: Self::Ticket, _latency: Duration, _failed: bool) {}

    fn release(&self, _ticket: Self::Ticket) {}
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AimdSettings {
    pub initial: usize,
    pub min: usize,
    pub max: usize,
    /// Calls slower than this count as a sign of overload.
    pub target_latency: Duration,
    /// Multiplier on overload, in (0, 1).
    pub backoff: f64,
}

pub struct AdaptiveLimit {
    /// Read on every call, written only by the config centre.
    settings: RwLock<AimdSettings>,
    /// The current limit, an `f64` in its bits: every call reads and moves
    /// it, so it is lock-free (a mutex here made the cores queue on each
    /// other under load).
    limit: AtomicU64,
    in_flight: AtomicUsize,
}

/// A call admitted by the adaptive limit.
#[derive(Debug)]
pub struct InFlight {
    started: Instant,
}

impl AdaptiveLimit {
    pub fn new(settings: AimdSettings) -> Self {
        let initial = settings.initial.clamp(settings.min.max(1), settings.max.max(1)) as f64;
        Self {
            settings: RwLock::new(settings),
            limit: AtomicU64::new(initial.to_bits()),
            in_flight: AtomicUsize::new(0),
        }
    }

    pub fn limit(&self) -> usize {
        f64::from_bits(self.limit.load(Ordering::Acquire)) as usize
    }

    pub fn settings(&self) -> AimdSettings {
        *self.settings.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// New bounds and target at run time; the limit moves into the bounds.
    pub fn reconfigure(&self, settings: AimdSettings) {
        *self.settings.write().unwrap_or_else(PoisonError::into_inner) = settings;
        let (min, max) = (settings.min.max(1) as f64, settings.max.max(1) as f64);
        let _ = self.limit.fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
            Some(f64::from_bits(bits).clamp(min, max).to_bits())
        });
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn decide(&self) -> Result<InFlight, Overloaded> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if now > self.limit() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(Overloaded { retry_after: Duration::from_secs(1) });
        }
        Ok(InFlight { started: Instant::now() })
    }

    fn adjust(&self, latency: Duration, failed: bool) {
        let settings = self.settings();
        let (min, max) = (settings.min.max(1) as f64, settings.max.max(1) as f64);
        let overloaded = failed || latency > settings.target_latency;
        let _ = self.limit.fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
            let limit = f64::from_bits(bits);
            let next = if overloaded { (limit * settings.backoff).max(min) } else { (limit + 1.0 / limit).min(max) };
            Some(next.to_bits())
        });
    }
}

impl Admission for AdaptiveLimit {
    type Ticket = InFlight;

    async fn admit(&self) -> Result<InFlight, Overloaded> {
        self.decide()
    }

    fn try_admit(&self) -> Option<Result<InFlight, Overloaded>> {
        Some(self.decide())
    }

    fn finish(&self, ticket: InFlight, latency: Duration, failed: bool) {
        debug_assert!(ticket.started <= Instant::now());
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.adjust(latency, failed);
    }

    fn release(&self, _ticket: InFlight) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
