//! `SwitchStore` and `ConfigStore` on PostgreSQL (the statements are in
//! `crate::sql`).

use async_trait::async_trait;
use surge_domain::StoreError;
use time::OffsetDateTime;

use super::{PgStore, store_error};
use crate::ops::{ConfigStore, StoredSwitch, SwitchStore};
use crate::rows::unix_ms;

crate::sql::ops_store!(PgStore);
