//! In-memory implementations of the domain's ports, as small as they can be
//! while keeping each port's documented contract: the same outcomes the
//! store contract suites demand of the real adapters.

mod catalog;
mod depot;
mod keys;
mod ledger;
mod orders;
mod pending;
mod queue;
mod returns;
mod sales;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use catalog::MemCatalog;
pub use depot::MemDepot;
pub use keys::MemKeys;
pub use ledger::MemLedger;
pub use orders::MemOrders;
pub use pending::MemPending;
pub use queue::MemQueue;
pub use returns::MemReturns;
pub use sales::MemSales;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
