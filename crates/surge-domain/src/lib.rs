//! Surge's business, one module per bounded context.
//!
//! Nothing here knows how it is stored, cached, queued or served: each context
//! states what it needs as a port (a trait) and the adapters in `surge-store`
//! implement it once per backend. The server wires a context's application
//! service to adapters chosen by configuration.

pub mod actor;
pub mod aftersale;
pub mod catalog;
pub mod clock;
pub mod degradation;
pub mod flashsale;
pub mod fulfilment;
pub mod idempotency;
pub mod ids;
pub mod input;
pub mod inventory;
pub mod money;
pub mod notification;
pub mod order;
pub mod outbox;
pub mod payment;
pub mod runtime_config;
pub mod settlement;
pub mod store;

pub use actor::Actor;
pub use clock::{Clock, SystemClock};
pub use idempotency::IdempotencyKey;
pub use ids::{CourierId, IdGenerator, MerchantId, OrderId, PaymentId, ProductId, RefundId, ReturnId, SaleId, UserId};
pub use input::{InvalidInput, Rule};
pub use money::Cents;
pub use store::StoreError;
