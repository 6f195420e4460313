//! In-process adapters of the embedded mode: the stock ledger, the pending
//! orders and the intake idempotency keys. Durability comes from elsewhere:
//! the ledger is rebuilt from the order store at start-up, after the queue
//! has been drained into it.

mod intake_keys;
mod ledger;
mod pending;

pub use intake_keys::MemoryIntakeKeys;
pub use ledger::MemoryLedger;
pub use pending::MemoryPending;
