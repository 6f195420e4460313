//! A sale's life on this node: created (and loaded before anyone can name
//! it), viewed with its live stock, found in the store when another node
//! created it, and forgotten a while after it ends.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::{FlashSales, LiveSale, SaleError, SaleView};
use crate::actor::Actor;
use crate::flashsale::sale::{FlashSale, NewSale};
use crate::ids::SaleId;
use crate::input::{InvalidInput, Rule};
use crate::store::StoreError;

/// Forgotten sales whose last stock figure this node keeps, at most.
const ENDED_KEPT: usize = 4_096;

impl FlashSales {
    pub async fn create(&self, actor: &Actor, new: NewSale) -> Result<FlashSale, SaleError> {
        if !actor.is_admin() {
            return Err(SaleError::Forbidden("only an admin creates flash sales"));
        }
        let product = self.ports.catalog.get(new.product_id).await?;
        let product =
            product.ok_or_else(|| SaleError::Invalid(InvalidInput::new("product_id", Rule::NamesNo("product"))))?;
        let sale = FlashSale {
            id: SaleId::new(self.ids.next_id()),
            product_id: new.product_id,
            merchant_id: product.merchant_id,
            stock: new.stock,
            price_cents: new.price_cents,
            starts_at: new.starts_at,
            ends_at: new.ends_at,
            per_user_limit: new.per_user_limit,
        };
        if !self.ports.sales.insert(&sale, self.clock.now()).await? {
            return Err(SaleError::InsufficientStock);
        }
        self.ports.catalog.stock_moved(&[sale.product_id]).await;
        // Loaded before anyone can name it: a node that finds an open
        // sale's counters missing takes them as lost. Loaded only if
        // absent, never over counters already in use.
        let live = Arc::new(self.loaded(sale.clone()).await?);
        self.live.write().unwrap_or_else(PoisonError::into_inner).entry(sale.id).or_insert(live);
        Ok(sale)
    }

    pub async fn view(&self, id: SaleId) -> Result<SaleView, SaleError> {
        let live = self.live_sale(id).await?.ok_or(SaleError::NotFound("flash sale"))?;
        let now = self.clock.now();
        let stock_left = match self.ports.ledger.stock_left(id).await? {
            Some(left) => left,
            // Lost from the ledger: rebuilt as soon as that is safe.
            None if live.sale.is_open(now) && self.rebuild_lost(&live).await? => {
                self.ports.ledger.stock_left(id).await?.unwrap_or(0)
            }
            None if now >= live.sale.ends_at => self.ended_with(&live.sale).await?,
            None => 0,
        };
        let status = live.sale.status(self.clock.now(), stock_left);
        Ok(SaleView { sale: live.sale.clone(), stock_left, status })
    }

    /// The sale from this node's registry, or from the store (a sale created
    /// on another node, or one that ended: such a one is not registered).
    pub(super) async fn live_sale(&self, id: SaleId) -> Result<Option<Arc<LiveSale>>, StoreError> {
        if let Some(live) = self.cached(id) {
            return Ok(Some(live));
        }
        let Some(sale) = self.ports.sales.get(id).await? else {
            return Ok(None);
        };
        if self.clock.now() >= sale.ends_at {
            // Over: nothing to serve, so nothing is loaded or kept.
            return Ok(Some(Arc::new(LiveSale::new(sale, true))));
        }
        let live = self.first_look(sale).await?;
        let mut registry = self.live.write().unwrap_or_else(PoisonError::into_inner);
        Ok(Some(Arc::clone(registry.entry(id).or_insert(live))))
    }

    /// Stops serving sales that ended more than `grace` ago (time for the
    /// queue to deliver their last requests and for the reaper to close
    /// their reservations): their counters and intake keys go, and only
    /// the stock they ended with stays, in a bounded map. A request that
    /// names one afterwards reads the sale from the store and is refused
    /// as ended; nothing is loaded for it again. Returns how many went.
    pub async fn forget_ended(&self, grace: Duration) -> Result<usize, StoreError> {
        let cutoff = self.clock.now() - grace;
        let over: Vec<SaleId> = self
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|live| live.sale.ends_at <= cutoff)
            .map(|live| live.sale.id)
            .collect();
        for &sale in &over {
            if let Some(left) = self.ports.ledger.stock_left(sale).await? {
                self.remember_ended(sale, left);
            }
            self.ports.ledger.forget(sale).await?;
            self.ports.keys.forget(sale).await;
            let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
            live.remove(&sale);
            live.shrink_to_fit();
        }
        Ok(over.len())
    }

    /// The stock an ended sale no ledger holds any more ended with: kept
    /// when it was forgotten, or counted from its orders.
    async fn ended_with(&self, sale: &FlashSale) -> Result<i64, StoreError> {
        if let Some(left) = self.ended.read().unwrap_or_else(PoisonError::into_inner).get(&sale.id) {
            return Ok(*left);
        }
        let sold = self.ports.orders.sale_holdings(sale.id).await?.sold;
        let left = (sale.stock - sold).max(0);
        self.remember_ended(sale.id, left);
        Ok(left)
    }

    fn remember_ended(&self, sale: SaleId, left: i64) {
        let mut ended = self.ended.write().unwrap_or_else(PoisonError::into_inner);
        if ended.len() >= ENDED_KEPT && !ended.contains_key(&sale) {
            // Any one makes room: a figure not kept is counted again.
            let evicted = ended.keys().next().copied();
            if let Some(evicted) = evicted {
                ended.remove(&evicted);
            }
        }
        ended.insert(sale, left);
    }
}
