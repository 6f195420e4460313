//! `SwitchStore`, `ConfigStore` and `RelationalStore` (the store as a whole)
//! on SQLite (the statements are in `crate::sql`).

use async_trait::async_trait;
use surge_domain::StoreError;
use time::OffsetDateTime;

use super::{SqliteStore, store_error};
use crate::rows::unix_ms;
use surge_domain::runtime_config::{ConfigStore, StoredSwitch, SwitchStore};

crate::sql::runtime_config_store!(SqliteStore);
crate::sql::relational_store!(SqliteStore);
