//! The flash-sale use cases, one file per concern: a sale's lifecycle, the
//! intake (the hot path), what happens to reserved units afterwards, the
//! ledger's recovery and its reconciliation with the order store. This file
//! holds what they share: the ports, the registry of sales this node serves
//! and the clock.

mod error;
mod intake;
mod lifecycle;
mod reconcile;
mod recovery;
mod reservations;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

pub use error::{IntakeError, SaleError};
pub use reconcile::Reconciliation;

use super::ports::{IntakeKeys, OrderQueue, SaleStore, StockLedger};
use super::sale::{FlashSale, SaleStatus};
use crate::catalog::CatalogStore;
use crate::clock::Clock;
use crate::ids::{IdGenerator, SaleId};
use crate::order::{OrderStore, PendingOrders};

/// A sale with its live stock, as `GET /v1/flash-sales/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleView {
    pub sale: FlashSale,
    pub stock_left: i64,
    pub status: SaleStatus,
}

/// A sale this node serves, with its local sold-out flag: once set, intake
/// rejects without touching shared state.
struct LiveSale {
    sale: FlashSale,
    sold_out: AtomicBool,
    /// When this node first found the ledger without the sale's counters
    /// (Unix ms; 0: not lost), and when it last tried to rebuild them.
    lost_since_ms: AtomicI64,
    rebuild_tried_ms: AtomicI64,
    /// The difference the last reconciliation measured (0: none).
    difference: AtomicI64,
}

impl LiveSale {
    fn new(sale: FlashSale, sold_out: bool) -> Self {
        Self {
            sale,
            sold_out: AtomicBool::new(sold_out),
            lost_since_ms: AtomicI64::new(0),
            rebuild_tried_ms: AtomicI64::new(0),
            difference: AtomicI64::new(0),
        }
    }
}

/// The adapters the flash-sale path runs on.
pub struct FlashSalePorts {
    pub sales: Arc<dyn SaleStore>,
    pub catalog: Arc<dyn CatalogStore>,
    pub ledger: Arc<dyn StockLedger>,
    pub queue: Arc<dyn OrderQueue>,
    pub orders: Arc<dyn OrderStore>,
    pub pending: Arc<dyn PendingOrders>,
    pub keys: Arc<dyn IntakeKeys>,
}

pub struct FlashSales {
    ports: FlashSalePorts,
    ids: Arc<IdGenerator>,
    /// Sales this node serves: every sale not ended (and, for a while,
    /// those that ended), with their counters in the ledger.
    live: RwLock<HashMap<SaleId, Arc<LiveSale>>>,
    /// The stock a forgotten sale ended with (bounded: see `lifecycle`).
    ended: RwLock<HashMap<SaleId, i64>>,
    /// The longest from a deduction to its append landing (the request
    /// budget plus the clock skew between nodes).
    intake_max: Duration,
    /// Every "now" of the sale path: windows, stamps, ages of losses.
    clock: Arc<dyn Clock>,
}

impl FlashSales {
    pub fn new(ports: FlashSalePorts, ids: Arc<IdGenerator>, clock: Arc<dyn Clock>) -> Self {
        Self {
            ports,
            ids,
            live: RwLock::default(),
            ended: RwLock::default(),
            intake_max: Duration::from_secs(11),
            clock,
        }
    }

    /// See the field; the default suits the default request budget.
    pub fn with_intake_max(mut self, intake_max: Duration) -> Self {
        self.intake_max = intake_max;
        self
    }

    /// Sales this node serves (a gauge: it falls as ended ones go).
    pub fn served(&self) -> usize {
        self.live.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The sale, if this node serves it already.
    fn cached(&self, id: SaleId) -> Option<Arc<LiveSale>> {
        self.live.read().unwrap_or_else(PoisonError::into_inner).get(&id).cloned()
    }

    /// Stock may be back: intake asks the ledger again instead of refusing
    /// on the local flag.
    fn may_sell_again(&self, sale: SaleId) {
        if let Some(live) = self.cached(sale) {
            live.sold_out.store(false, Ordering::SeqCst);
        }
    }
}
