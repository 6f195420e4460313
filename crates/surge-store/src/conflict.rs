//! A transaction PostgreSQL aborted to break a deadlock (40P01) or a
//! serialization conflict (40001) is run again, a bounded number of times:
//! the other party went through, so the next attempt usually does too.
//! Used by the steps both relational adapters share (SQLite reports
//! neither code: it has one writer).

use std::future::Future;
use std::time::Duration;

/// Attempts, the first included.
const ATTEMPTS: u32 = 5;

fn is_conflict(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|db| db.code()).is_some_and(|code| code == "40P01" || code == "40001")
}

/// Runs `attempt` (a whole transaction: a failed one wrote nothing) until
/// it succeeds, fails for another reason, or was tried [`ATTEMPTS`] times.
pub(crate) async fn again_on_conflict<T, F, Fut>(mut attempt: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut tried = 1;
    loop {
        match attempt().await {
            Err(error) if tried < ATTEMPTS && is_conflict(&error) => {
                tracing::debug!(%error, tried, "transaction aborted by a conflict; running it again");
                tokio::time::sleep(Duration::from_millis(5 * u64::from(tried))).await;
                tried += 1;
            }
            done => return done,
        }
    }
}
