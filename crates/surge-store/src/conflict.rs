//! A transaction PostgreSQL aborted to break a deadlock (40P01) or a
//! serialization conflict (40001) is run again, a bounded number of times:
//! the other party went through, so the next attempt usually does too. The
//! PostgreSQL adapter's own transactions and the steps both relational
//! adapters share run through it (SQLite reports neither code: it has one
//! writer).

use std::future::Future;
use std::time::Duration;

/// Attempts at one transaction, the first included.
pub(crate) const ATTEMPTS: u32 = 5;
/// The wait before another attempt grows by this much each time, plus up to
/// as much again at random so that the two parties of a deadlock part ways.
const BACKOFF_STEP: Duration = Duration::from_millis(5);

/// An error that may be a conflict worth another attempt.
pub(crate) trait Conflict {
    fn is_conflict(&self) -> bool;
}

impl Conflict for sqlx::Error {
    fn is_conflict(&self) -> bool {
        self.as_database_error().and_then(|db| db.code()).is_some_and(|code| code == "40P01" || code == "40001")
    }
}

/// Why a transaction stopped: the driver (which may be worth another
/// attempt) or a row the domain can't read.
#[derive(Debug)]
pub(crate) enum TxError {
    Driver(sqlx::Error),
    Row(surge_domain::StoreError),
}

impl From<sqlx::Error> for TxError {
    fn from(error: sqlx::Error) -> Self {
        TxError::Driver(error)
    }
}

impl From<surge_domain::StoreError> for TxError {
    fn from(error: surge_domain::StoreError) -> Self {
        TxError::Row(error)
    }
}

impl Conflict for TxError {
    /// Did PostgreSQL abort the transaction to break a deadlock (40P01) or a
    /// serialization conflict (40001)? Then running it again can succeed.
    fn is_conflict(&self) -> bool {
        matches!(self, TxError::Driver(error) if error.is_conflict())
    }
}

impl TxError {
    /// The store's error, with the driver's errors read by the adapter's
    /// `driver`.
    pub(crate) fn into_store_error(
        self,
        driver: fn(sqlx::Error) -> surge_domain::StoreError,
    ) -> surge_domain::StoreError {
        match self {
            TxError::Driver(error) => driver(error),
            TxError::Row(error) => error,
        }
    }
}

/// Runs `transaction` (which begins and commits its own transaction, so a
/// failed attempt has written nothing) until it succeeds, fails for another
/// reason than a conflict, or has been tried [`ATTEMPTS`] times.
pub(crate) async fn again_on_conflict<T, E, F, Fut>(what: &'static str, mut transaction: F) -> Result<T, E>
where
    E: Conflict,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match transaction().await {
            Err(error) if error.is_conflict() && attempt < ATTEMPTS => {
                let step = BACKOFF_STEP * attempt;
                let jitter = rand::random_range(0..=step.as_micros() as u64);
                tracing::warn!(transaction = what, attempt, "transaction aborted by a conflict; running it again");
                tokio::time::sleep(step + Duration::from_micros(jitter)).await;
                attempt += 1;
            }
            done => return done,
        }
    }
}
