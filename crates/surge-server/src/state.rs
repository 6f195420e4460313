//! What every handler can reach: the contexts' services and the edge's tools.

use std::sync::Arc;

use surge_domain::catalog::{Catalog, CatalogStore};

use crate::auth::Keys;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub keys: Arc<Keys>,
    pub metrics: Arc<Metrics>,
    /// The store behind the catalog, asked by `/readyz`.
    pub store: Arc<dyn CatalogStore>,
}
