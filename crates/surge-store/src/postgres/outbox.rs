//! The outbox and inbox on PostgreSQL (the statements are in
//! `crate::sql_outbox`). Relays on several nodes claim disjoint rows: the
//! claiming subquery skips rows another claim holds locked.

use async_trait::async_trait;
use surge_domain::StoreError;

use super::{PgStore, store_error};

crate::sql_outbox::outbox_store!(PgStore, sqlx::Postgres, "FOR UPDATE SKIP LOCKED");
crate::sql_outbox::outbox_moves!(sqlx::PgConnection, sqlx::Postgres);
