//! What `/readyz` asks: every dependency the node needs to take traffic
//! (the relational store, the shared Redis, the queue's broker), each with
//! one round trip under a timeout, all at once.
//!
//! The answer names a dependency and says "unavailable" or "no answer";
//! the driver's own text (which can carry host names, users, even a
//! password in a URL) goes to the log only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use surge_domain::StoreError;

use crate::backend::Backend;

type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// One dependency's round trip.
struct Probe {
    name: &'static str,
    call: Box<dyn Fn() -> ProbeFuture + Send + Sync>,
}

/// Every dependency of this node, by name.
pub struct Readiness {
    probes: Vec<Probe>,
    timeout: Duration,
}

/// One dependency's state: `Ok` or why it is down, fit for a client.
pub type Check = (&'static str, Result<(), &'static str>);

impl Readiness {
    /// The store, Redis when there is one, and the queue.
    pub fn of(backend: &Backend, timeout: Duration) -> Self {
        let mut readiness = Self { probes: Vec::new(), timeout };
        let catalog = Arc::clone(&backend.catalog);
        readiness.add("store", move || {
            let catalog = Arc::clone(&catalog);
            Box::pin(async move { catalog.ping().await })
        });
        if let Some(redis) = backend.redis.clone() {
            readiness.add("redis", move || {
                let redis = redis.clone();
                Box::pin(async move { redis.ping().await })
            });
        }
        let queue = Arc::clone(&backend.queue);
        readiness.add("queue", move || {
            let queue = Arc::clone(&queue);
            Box::pin(async move { queue.ping().await })
        });
        readiness
    }

    fn add(&mut self, name: &'static str, call: impl Fn() -> ProbeFuture + Send + Sync + 'static) {
        self.probes.push(Probe { name, call: Box::new(call) });
    }

    /// The names of the dependencies probed.
    pub fn dependencies(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.probes.iter().map(|probe| probe.name)
    }

    /// One dependency's round trip (the driver's error is logged, not
    /// returned); `Err` for a name not probed here.
    pub async fn check_one(&self, name: &str) -> Result<(), &'static str> {
        let probe = self.probes.iter().find(|probe| probe.name == name).ok_or("unknown")?;
        match tokio::time::timeout(self.timeout, (probe.call)()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::warn!(dependency = probe.name, %error, "not ready");
                Err("unavailable")
            }
            Err(_) => {
                tracing::warn!(dependency = probe.name, timeout = ?self.timeout, "not ready: no answer");
                Err("no answer")
            }
        }
    }

    /// Every dependency's state, probed concurrently.
    pub async fn check(&self) -> Vec<Check> {
        let checks = self.probes.iter().map(|probe| async move { (probe.name, self.check_one(probe.name).await) });
        futures::future::join_all(checks).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_dependency_is_named_without_its_drivers_text() {
        let mut readiness = Readiness { probes: Vec::new(), timeout: Duration::from_millis(50) };
        readiness.add("store", || Box::pin(async { Ok(()) }));
        readiness.add("redis", || {
            Box::pin(async { Err(StoreError::Unavailable("redis://:hunter2@10.0.0.7:6379 refused".to_owned())) })
        });
        readiness.add("queue", || Box::pin(std::future::pending()));
        let checks = readiness.check().await;
        assert_eq!(checks, vec![("store", Ok(())), ("redis", Err("unavailable")), ("queue", Err("no answer"))]);
    }
}
