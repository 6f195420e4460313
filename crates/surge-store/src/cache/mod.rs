//! Cache-aside decorators: each wraps a store adapter, implements the same
//! port, and keeps the domain unaware that a read was served from memory.

mod product;
mod sale;

pub use product::{CacheMetrics, CachedCatalog, ProductCacheConfig};
pub use sale::{CachedSales, SaleCacheConfig};
