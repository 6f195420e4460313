//! `StatementStore` on SQLite (the statements are in `crate::sql_settlements`).

use async_trait::async_trait;
use surge_domain::ids::SettlementId;
use surge_domain::settlement::{Statement, StatementStore};
use surge_domain::{IdGenerator, MerchantId, StoreError};
use time::OffsetDateTime;

use super::{SqliteStore, store_error};
use crate::rows::{from_unix_ms, unix_ms};

crate::sql_settlements::statement_store!(SqliteStore);
