//! The outbox and inbox on SQLite (the statements are in
//! `crate::sql_outbox`). One node writes a SQLite file, so its claims lock
//! nothing more than the statement does.

use async_trait::async_trait;
use surge_domain::StoreError;

use super::{SqliteStore, store_error};

crate::sql_outbox::outbox_store!(SqliteStore, sqlx::Sqlite, "");
crate::sql_outbox::outbox_moves!(sqlx::SqliteConnection, sqlx::Sqlite);
