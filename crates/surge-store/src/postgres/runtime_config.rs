//! `SwitchStore`, `ConfigStore` and `RelationalStore` (the store as a whole)
//! on PostgreSQL (the statements are in `crate::sql`).

use async_trait::async_trait;
use surge_domain::StoreError;
use time::OffsetDateTime;

use super::{PgStore, store_error};
use crate::rows::unix_ms;
use surge_domain::runtime_config::{ConfigStore, StoredSwitch, SwitchStore};

crate::sql::runtime_config_store!(PgStore);
crate::sql::relational_store!(PgStore);
