//! `StatementStore` on PostgreSQL (the statements are in `crate::sql_settlements`).

use async_trait::async_trait;
use surge_domain::ids::{PayoutId, SettlementId};
use surge_domain::settlement::{PROVIDER_CLEARING, Payout, Statement, StatementStore, merchant_payable};
use surge_domain::{IdGenerator, MerchantId, StoreError};
use time::OffsetDateTime;

use super::{PgStore, store_error};
use crate::rows::{from_unix_ms, unix_ms};

crate::sql_settlements::statement_store!(PgStore);
