//! A limiter whose state lives outside this process, shared by every node
//! (a cluster-wide limit): asking it is a network call, so it is async and
//! it can fail. The caller decides what a failure means; for intake it
//! admits, since the node-local limits still hold.

use async_trait::async_trait;

use super::Decision;

/// The shared state could not be reached; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limiter unavailable: {0}")]
pub struct LimiterUnavailable(pub String);

#[async_trait]
pub trait SharedLimiter: Send + Sync + 'static {
    /// One admission of `key` (a route, a user, a SKU...), across nodes.
    async fn decide(&self, key: &str) -> Result<Decision, LimiterUnavailable>;
}
