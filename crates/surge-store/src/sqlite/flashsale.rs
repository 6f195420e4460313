//! `SaleStore` on SQLite (the statements are in `crate::sql`).

use async_trait::async_trait;
use surge_domain::flashsale::{FlashSale, SaleStore};
use surge_domain::{SaleId, StoreError};
use time::OffsetDateTime;

use super::{SqliteStore, store_error};
use crate::rows::{SALE_COLUMNS as COLUMNS, SaleRow, unix_ms};

crate::sql::sale_store!(SqliteStore);
