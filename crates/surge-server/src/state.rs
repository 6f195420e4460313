//! What every handler can reach: the contexts' services and the edge's tools.
//!
//! Axum clones the state for every extractor and middleware of every request,
//! so it is one `Arc`: one atomic increment per clone, whatever it holds.

use std::ops::Deref;
use std::sync::Arc;

use surge_domain::aftersale::AfterSale;
use surge_domain::catalog::{Catalog, CatalogStore};
use surge_domain::flashsale::FlashSales;
use surge_domain::fulfilment::Fulfilment;
use surge_domain::order::{Checkouts, Orders};
use surge_domain::payment::Payments;
use surge_domain::settlement::Settlement;

use surge_domain::runtime_config::SwitchStore;
use surge_guard::switch::{SwitchHandle, Switchboard};

use crate::auth::Keys;
use crate::config_centre::ConfigCentre;
use crate::config_centre::LiveConfig;
use crate::limits::IntakeLimits;
use crate::metrics::Metrics;
use crate::readiness::Readiness;

#[derive(Clone)]
pub struct AppState(Arc<AppServices>);

pub struct AppServices {
    pub catalog: Catalog,
    /// Where every "now" comes from (the system's clock but in tests).
    pub clock: Arc<dyn surge_domain::Clock>,
    pub flash_sales: Arc<FlashSales>,
    pub orders: Arc<Orders>,
    pub checkouts: Arc<Checkouts>,
    pub payments: Arc<Payments>,
    pub settlement: Arc<Settlement>,
    pub fulfilment: Arc<Fulfilment>,
    pub after_sale: Arc<AfterSale>,
    pub intake_limits: Arc<IntakeLimits>,
    /// Per-customer intake limit shared by every node (Redis), if set.
    pub cluster_user_limit: Option<Arc<dyn surge_guard::rate::SharedLimiter>>,
    pub switches: Arc<Switchboard>,
    pub switch_store: Arc<dyn SwitchStore>,
    /// `flash_sale_intake`: off → intake answers 503 degraded.
    pub intake_switch: SwitchHandle,
    /// `product_detail_live`: off → product reads come from the cache only.
    pub product_detail_switch: SwitchHandle,
    /// Settings changeable at run time.
    pub live: Arc<LiveConfig>,
    /// Tells the other nodes of a change and follows theirs.
    pub config_centre: Arc<ConfigCentre>,
    pub keys: Keys,
    pub metrics: Arc<Metrics>,
    /// The product reads' cache over the store.
    pub store: Arc<dyn CatalogStore>,
    /// Every dependency, asked by `/readyz`.
    pub readiness: Arc<Readiness>,
}

impl AppState {
    pub fn new(parts: AppServices) -> Self {
        Self(Arc::new(parts))
    }
}

impl Deref for AppState {
    type Target = AppServices;

    fn deref(&self) -> &AppServices {
        &self.0
    }
}
