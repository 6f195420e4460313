//! The error every store port returns. Adapters map their driver's errors
//! into this small set so that domain code can decide without knowing the
//! backend: a unique-key violation is a business conflict, anything else is
//! an outage of the store.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A unique constraint refused the write; the payload names the constraint
    /// in business words (`sku`, `order_id`, ...).
    #[error("duplicate {0}")]
    Duplicate(&'static str),
    /// The backend did not answer or failed; the message is for logs only.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The call may or may not have taken effect (a write whose
    /// acknowledgement was lost): nothing that depends on it not having
    /// happened may be undone on the strength of it.
    #[error("store outcome unknown: {0}")]
    Indeterminate(String),
}
