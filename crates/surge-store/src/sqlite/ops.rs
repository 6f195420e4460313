//! `SwitchStore` and `ConfigStore` on SQLite (the statements are in
//! `crate::sql`).

use async_trait::async_trait;
use surge_domain::StoreError;
use time::OffsetDateTime;

use super::{SqliteStore, store_error};
use crate::ops::{ConfigStore, StoredSwitch, SwitchStore};
use crate::rows::unix_ms;

crate::sql::ops_store!(SqliteStore);
