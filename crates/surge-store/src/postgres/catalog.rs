//! `CatalogStore` on PostgreSQL (the statements are in `crate::sql`).

use std::sync::Arc;

use async_trait::async_trait;
use surge_domain::catalog::{CatalogStore, NewProduct, Product, ProductName, ProductPage, ProductPatch, Stock};
use surge_domain::{Cents, MerchantId, ProductId, StoreError};
use time::OffsetDateTime;

use super::{PgStore, store_error};
use crate::rows::{PRODUCT_COLUMNS as COLUMNS, ProductRow, one_page, unix_ms};

crate::sql::catalog_store!(PgStore);
