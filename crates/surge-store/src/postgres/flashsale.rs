//! `SaleStore` on PostgreSQL (the statements are in `crate::sql`).

use async_trait::async_trait;
use surge_domain::flashsale::{FlashSale, SaleStore};
use surge_domain::{SaleId, StoreError};
use time::OffsetDateTime;

use super::{PgStore, store_error};
use crate::rows::{SALE_COLUMNS as COLUMNS, SaleRow, unix_ms};

crate::sql::sale_store!(PgStore);
