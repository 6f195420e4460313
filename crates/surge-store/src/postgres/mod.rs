//! The shared store: one PostgreSQL that every node of a distributed
//! deployment reads and writes, each node through its own bounded pool.
//!
//! Tables, columns and the meaning of every port method are the SQLite
//! adapter's (`crate::rows` holds what the two share). What differs is that
//! several nodes' consumers write the same sale at once, so:
//! - every multi-statement write is one transaction, and every bound
//!   (`sold <= stock`, `bought <= per_user_limit`) is both a condition on the
//!   row-level update that moves it and a CHECK behind that;
//! - a transaction locks rows in one order: orders by id, then buyer rows,
//!   then sale rows (the cancel path in [`orders`] does the same);
//! - should PostgreSQL still abort one as a deadlock or serialization failure,
//!   it runs again from the start, a bounded number of times;
//! - a connection handed to a request carries the request's deadline as its
//!   `statement_timeout`, so PostgreSQL itself stops a statement the caller
//!   has stopped waiting for (a lock wait, a slow plan) instead of holding
//!   the connection and the locks past it. Work outside a request (the
//!   consumer, migrations) runs without one, as PostgreSQL's default.

mod aftersale;
mod catalog;
mod counters;
mod flashsale;
mod fulfilment;
mod inventory;
mod ledger;
mod orders;
mod outbox;
mod payments;
mod runtime_config;
mod settlements;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::conflict::TxError;
use sqlx::PgConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use surge_domain::StoreError;

#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user[:password]@host[:port]/database`.
    pub url: String,
    /// Connections this node keeps at most (PostgreSQL's `max_connections`
    /// is shared by every node).
    pub max_connections: u32,
    /// How long a caller waits for a free connection before the store counts
    /// as unavailable.
    pub acquire_timeout: Duration,
}

impl PgConfig {
    pub fn with_url(url: impl Into<String>) -> Self {
        Self { url: url.into(), max_connections: 16, acquire_timeout: Duration::from_secs(5) }
    }
}

/// The URL may carry a password: it never reaches a log.
impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &crate::without_credentials(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// The PostgreSQL adapter; cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The writer that places checkouts in batches (`inventory.rs`).
    checkouts: tokio::sync::mpsc::Sender<crate::sql_checkout::Waiting>,
}

impl PgStore {
    /// Connects and runs pending migrations (sqlx holds an advisory lock
    /// while migrating, so nodes starting together migrate once).
    pub async fn open(config: &PgConfig) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            // Both run in the acquiring task, where the request's deadline is.
            .after_connect(|conn, _| Box::pin(async move { bound_statements(conn).await }))
            .before_acquire(|conn, _| Box::pin(async move { bound_statements(conn).await.map(|()| true) }))
            .connect(&config.url)
            .await
            .map_err(unavailable)?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let (checkouts, receiver) = tokio::sync::mpsc::channel(inventory::CAPACITY);
        tokio::spawn(inventory::write_loop(pool.clone(), receiver));
        Ok(Self { pool, checkouts })
    }
}

/// The connection's `statement_timeout`: what the current request has left
/// (at least 1 ms: 0 means no limit), or none outside a request.
async fn bound_statements(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let limit_ms = match surge_guard::deadline::current() {
        Some(deadline) => deadline.remaining().as_millis().max(1),
        None => 0,
    };
    sqlx::query("SELECT set_config('statement_timeout', $1, false)")
        .bind(limit_ms.to_string())
        .execute(conn)
        .await
        .map(drop)
}

/// Maps a driver error into the port's error; unique violations are named by
/// the constraint they hit (named in the migrations) so the domain can treat
/// them as conflicts.
fn store_error(error: sqlx::Error) -> StoreError {
    if let Some(db) = error.as_database_error()
        && db.is_unique_violation()
    {
        match db.constraint() {
            Some("products_merchant_sku_key") => return StoreError::Duplicate("sku"),
            Some("products_merchant_idempotency_key") => return StoreError::Duplicate("idempotency_key"),
            _ => {}
        }
    }
    unavailable(error)
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Runs `transaction` (which begins and commits its own transaction) again
/// on a conflict, as [`crate::conflict::again_on_conflict`] does.
async fn with_conflict_retry<T, F, Fut>(what: &'static str, transaction: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TxError>>,
{
    crate::conflict::again_on_conflict(what, transaction).await.map_err(|error| error.into_store_error(store_error))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::RelationalStore;
    use crate::testing::TestDatabase;

    /// Fails the statement with this SQLSTATE, as PostgreSQL would.
    async fn fail_with(pool: &PgPool, code: &str) -> Result<(), TxError> {
        let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'as asked' USING ERRCODE = '{code}'; END $$");
        sqlx::query(&sql).execute(pool).await?;
        Ok(())
    }

    /// TLS is compiled in: `sslmode=require` connects encrypted (the local
    /// server has `ssl = on`), and the server says the session is TLS.
    #[tokio::test]
    async fn sslmode_require_connects_over_tls() {
        let db = TestDatabase::create().await;
        let plain = db.config();
        let separator = if plain.url.contains('?') { '&' } else { '?' };
        let config = PgConfig { url: format!("{}{separator}sslmode=require", plain.url), ..plain };
        let store = PgStore::open(&config).await.expect("a TLS connection");
        let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&store.pool)
            .await
            .expect("pg_stat_ssl");
        assert!(ssl, "the session is encrypted");
        store.close().await;
    }

    #[tokio::test]
    async fn a_transaction_aborted_by_a_conflict_runs_again_a_bounded_number_of_times() {
        let db = TestDatabase::create().await;
        let store = PgStore::open(&db.config()).await.expect("open");
        let attempts = AtomicU32::new(0);
        let fails_twice = || async {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            let code = if attempt % 2 == 1 { "40P01" } else { "40001" };
            if attempt < 3 {
                fail_with(&store.pool, code).await?;
            }
            Ok(attempt)
        };
        assert_eq!(with_conflict_retry("test", fails_twice).await, Ok(3), "a deadlock, then a serialization failure");

        attempts.store(0, Ordering::SeqCst);
        let always = || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            fail_with(&store.pool, "40P01").await
        };
        assert!(matches!(with_conflict_retry("test", always).await, Err(StoreError::Unavailable(_))));
        assert_eq!(attempts.load(Ordering::SeqCst), crate::conflict::ATTEMPTS);

        attempts.store(0, Ordering::SeqCst);
        let other_failure = || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            fail_with(&store.pool, "23514").await
        };
        assert!(matches!(with_conflict_retry("test", other_failure).await, Err(StoreError::Unavailable(_))));
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "only conflicts are worth another attempt");
        store.close().await;
    }

    /// The timeout funnel reaches PostgreSQL: a statement run for a request
    /// is stopped by the server at the request's deadline, not when the lock
    /// it waits for is let go; outside a request there is no limit.
    #[tokio::test]
    async fn a_statement_for_a_request_is_stopped_by_the_server_at_its_deadline() {
        let db = TestDatabase::create().await;
        let store = PgStore::open(&db.config()).await.expect("open");
        let mut locker = store.pool.begin().await.expect("a second connection");
        sqlx::query("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE").execute(&mut *locker).await.expect("lock");

        let deadline = surge_guard::deadline::Deadline::after(Duration::from_millis(300));
        let blocked = surge_guard::deadline::within(deadline, store.max_id());
        // The guard only keeps a broken build from hanging the suite.
        let stopped = tokio::time::timeout(Duration::from_secs(30), blocked).await.expect("the server stopped it");
        let error = stopped.expect_err("the read waits on the lock").to_string();
        assert!(error.contains("statement timeout"), "{error}");

        locker.rollback().await.expect("unlock");
        let free = store.max_id().await;
        assert_eq!(free, Ok(0), "the same read, outside a request, after the lock");
        let mut conn = store.pool.acquire().await.expect("acquire");
        let limit: String = sqlx::query_scalar("SHOW statement_timeout").fetch_one(&mut *conn).await.expect("show");
        assert_eq!(limit, "0", "no limit is left behind for work outside a request");
        drop(conn);
        store.close().await;
    }

    #[test]
    fn a_config_never_shows_the_password_it_holds() {
        let config = PgConfig::with_url("postgres://surge:secret@db:5432/surge");
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("@db:5432/surge"), "{shown}");
    }
}
