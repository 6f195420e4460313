//! What the flash-sale use cases answer when they refuse: by name, so that
//! the edge maps each to its status without reading a message.

use thiserror::Error;

use crate::input::InvalidInput;
use crate::store::StoreError;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SaleError {
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Invalid(InvalidInput),
    /// The product has fewer sellable units than the sale would take.
    #[error("the product has fewer units left than the sale's stock")]
    InsufficientStock,
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IntakeError {
    #[error("only customers place orders")]
    Forbidden,
    #[error("no such flash sale")]
    NotFound,
    #[error("the flash sale is not active")]
    NotActive,
    #[error("sold out")]
    SoldOut,
    #[error("per-user limit reached")]
    LimitExceeded,
    /// Requests with this idempotency key kept failing while another held
    /// it; the client retries later.
    #[error("requests with this idempotency key keep failing")]
    KeyContended,
    /// The sale's counters were lost and are not rebuilt yet (see
    /// `FlashSales::rebuild_lost`); the client retries later.
    #[error("the sale's stock counters are being rebuilt")]
    CountersRebuilding,
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}
