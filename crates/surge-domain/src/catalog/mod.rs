//! Catalog and inventory: products, their prices and stock, owned by merchants.
//!
//! Read-heavy: the read path goes through a cache-aside adapter that wraps the
//! store port; the use cases here never know whether a read was cached.

mod ports;
mod product;
mod service;

pub use ports::{CatalogStore, ProductPage};
pub use product::{NewProduct, Product, ProductName, ProductPatch, Sku, Stock};
pub use service::{Catalog, CatalogError, CreateProduct, PageRequest};
