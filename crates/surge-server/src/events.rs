//! What other nodes announce (distributed mode), applied to this node's own
//! state: a product changed (forget it from the local cache), a sale sold
//! out or came back, the settings moved on. Redis pub/sub carries the
//! events; what a node misses while unsubscribed it makes up for when it
//! subscribes again.

use std::sync::Arc;

use surge_domain::catalog::CatalogStore;
use surge_domain::flashsale::FlashSales;
use surge_store::cache::CachedCatalog;
use surge_store::redis::{Event, Signal, subscribe};

use crate::config::RedisSettings;
use crate::config_centre::ConfigCentre;
use crate::metrics::{EVENTS, Metrics};

/// The subscription: a background task that ends with its owner.
pub struct Subscription(tokio::task::JoinHandle<()>);

impl Drop for Subscription {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Applies the other nodes' events to this node's local state.
pub struct EventListener {
    pub catalog: Arc<CachedCatalog<dyn CatalogStore>>,
    pub flash_sales: Arc<FlashSales>,
    pub config_centre: Arc<ConfigCentre>,
    pub metrics: Arc<Metrics>,
}

impl EventListener {
    pub fn new(
        catalog: &Arc<CachedCatalog<dyn CatalogStore>>,
        flash_sales: &Arc<FlashSales>,
        config_centre: &Arc<ConfigCentre>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        Self {
            catalog: Arc::clone(catalog),
            flash_sales: Arc::clone(flash_sales),
            config_centre: Arc::clone(config_centre),
            metrics: Arc::clone(metrics),
        }
    }

    /// Subscribes to the deployment's events on its Redis.
    pub fn listen(self, redis: &RedisSettings) -> Subscription {
        Subscription(subscribe(redis.exposed_urls(), &redis.namespace, move |signal| self.on(signal)))
    }

    fn on(&self, signal: Signal) {
        let kind = match signal {
            Signal::Subscribed => {
                // Whatever changed while unsubscribed went unheard.
                self.catalog.forget_all();
                let centre = Arc::clone(&self.config_centre);
                tokio::spawn(async move { centre.catch_up().await });
                "subscribed"
            }
            Signal::Event(Event::SettingsChanged(version)) => {
                self.config_centre.heard(version);
                "settings_changed"
            }
            Signal::Event(Event::ProductChanged(id)) => {
                let catalog = Arc::clone(&self.catalog);
                tokio::spawn(async move { catalog.forget(id).await });
                "product_changed"
            }
            Signal::Event(Event::SoldOut(sale)) => {
                let flash_sales = Arc::clone(&self.flash_sales);
                tokio::spawn(async move {
                    if let Err(error) = flash_sales.sold_out_elsewhere(sale).await {
                        tracing::debug!(%error, sale_id = %sale, "sold-out event not applied");
                    }
                });
                "sold_out"
            }
            Signal::Event(Event::Restocked(sale)) => {
                self.flash_sales.restocked_elsewhere(sale);
                "restocked"
            }
        };
        self.metrics.counter(EVENTS, &[("event", kind)]).increment(1);
    }
}
