//! The embedded store: one SQLite database file in the data dir, in WAL mode,
//! reached through a small sqlx pool.
//!
//! SQLite lets one writer in at a time; a busy timeout makes writers queue
//! briefly instead of failing, and WAL lets readers run beside the writer.

mod aftersale;
mod catalog;
mod counters;
mod flashsale;
mod fulfilment;
mod group_commit;
mod inventory;
mod ledger;
mod orders;
mod outbox;
mod payments;
mod runtime_config;
mod settlements;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use surge_domain::StoreError;

/// File name of the database inside the data dir.
pub const DATABASE_FILE: &str = "surge.db";

#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub max_connections: u32,
    /// How long a writer waits for the write lock before giving up.
    pub busy_timeout: Duration,
    /// SQLite's page cache, per connection, in KiB: what a connection keeps
    /// of the file in memory (SQLite's own default is about 2 MiB).
    pub page_cache_kib: u32,
}

impl SqliteConfig {
    pub fn in_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(DATABASE_FILE),
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
            page_cache_kib: 2048,
        }
    }
}

/// The SQLite adapter; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The group-committing writer of checkouts and callbacks
    /// (`group_commit.rs`).
    writes: tokio::sync::mpsc::Sender<group_commit::Write>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database and runs pending migrations.
    pub async fn open(config: &SqliteConfig) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}", config.path.display());
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(unavailable)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed transaction survives power loss, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(config.busy_timeout)
            // Negative: a size in KiB rather than in pages.
            .pragma("cache_size", format!("-{}", config.page_cache_kib))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let (writes, receiver) = tokio::sync::mpsc::channel(group_commit::CAPACITY);
        tokio::spawn(group_commit::write_loop(pool.clone(), receiver));
        Ok(Self { pool, writes })
    }
}

/// Maps a driver error into the port's error; unique violations are named by
/// the constraint they hit so the domain can treat them as conflicts.
fn store_error(error: sqlx::Error) -> StoreError {
    if let Some(db) = error.as_database_error()
        && db.is_unique_violation()
    {
        if db.message().contains("products.merchant_id, products.sku") {
            return StoreError::Duplicate("sku");
        }
        if db.message().contains("products.merchant_id, products.idempotency_key") {
            return StoreError::Duplicate("idempotency_key");
        }
    }
    unavailable(error)
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}
