//! Group commit on SQLite for the hot writes: checkouts (`CheckoutStore`)
//! and provider callbacks (`PaymentStore::apply`). SQLite has one writer,
//! so these are written one at a time whatever happens; what costs is the
//! commit's fsync (`synchronous = FULL`), and on the one writer each
//! statement. One writer task takes every write waiting (up to
//! `BATCH_MAX`) and runs them in one transaction: the checkouts together,
//! by a few set-based statements (`crate::sql_checkout`: one refused leaves
//! nothing), then each callback inside its own savepoint (one to drop, a
//! repeat or an unknown reference, rolls back to it and leaves nothing);
//! the others go on, and one fsync covers the batch. A caller
//! hears its answer only after the commit, so a 201 or a callback's 200 is
//! as durable as before; a failed commit fails every write of the batch.
//! Writes in one batch see each other's effects, exactly as if they had
//! been written one after the other (the checkouts first).

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, Sqlite, SqliteConnection, SqlitePool, Transaction};
use surge_domain::StoreError;
use surge_domain::order::{CheckoutStore, NewCheckout, Placed};
use surge_domain::payment::{Applied, ProviderEvent};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::inventory::place_all_on;
use super::payments::apply_in;
use super::{SqliteStore, store_error};
use crate::conflict::TxError;
use crate::sql_checkout::Waiting;

/// Most writes one commit covers.
const BATCH_MAX: usize = 128;
/// Writes waiting for the writer; callers beyond it wait for room.
pub(super) const CAPACITY: usize = 4_096;

/// One write for the writer, with where its answer goes.
#[derive(Debug)]
pub(super) enum Write {
    Checkout(Waiting),
    Callback(Callback),
}

pub(super) struct Callback {
    provider: String,
    event: ProviderEvent,
    now: OffsetDateTime,
    done: oneshot::Sender<Result<Applied, StoreError>>,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback").field("event_id", &self.event.event_id).finish_non_exhaustive()
    }
}

/// A write's answer, before it goes back to its caller.
enum Answer {
    Placed(Placed),
    Applied(Box<Applied>),
}

/// The writer: one transaction, one fsync, per batch of waiting writes, on
/// a connection it keeps while writes keep coming, so a batch under load
/// never waits for the readers to hand one back. A checkout whose caller
/// gave up while it waited is not placed.
pub(super) async fn write_loop(pool: SqlitePool, mut receiver: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    let mut held: Option<PoolConnection<Sqlite>> = None;
    while receiver.recv_many(&mut batch, BATCH_MAX).await > 0 {
        batch.retain(|write| !matches!(write, Write::Checkout(checkout) if checkout.abandoned()));
        if batch.is_empty() {
            continue;
        }
        let answers = match held.take() {
            Some(conn) => Ok(conn),
            None => pool.acquire().await.map_err(store_error),
        };
        let answers = match answers {
            Ok(mut conn) => {
                let answers = write_batch(&mut conn, &batch).await;
                // Kept while writes wait and it works; given back when the
                // queue is empty, so closing the pool at shutdown finds it
                // (and with a pool of one the readers get their turn).
                let keep = answers.iter().any(Result::is_ok) && !receiver.is_empty();
                if keep && pool.options().get_max_connections() > 1 {
                    held = Some(conn);
                }
                answers
            }
            Err(error) => batch.iter().map(|_| Err(error.clone())).collect(),
        };
        for (write, answer) in batch.drain(..).zip(answers) {
            match (write, answer) {
                (Write::Checkout(checkout), answer) => {
                    let _ = checkout.done.send(answer.and_then(|answer| match answer {
                        Answer::Placed(placed) => Ok(placed),
                        Answer::Applied(_) => Err(mixed_up()),
                    }));
                }
                (Write::Callback(callback), answer) => {
                    let _ = callback.done.send(answer.and_then(|answer| match answer {
                        Answer::Applied(applied) => Ok(*applied),
                        Answer::Placed(_) => Err(mixed_up()),
                    }));
                }
            }
        }
    }
}

/// Answers go back in the order of the writes; a mismatch is a bug.
fn mixed_up() -> StoreError {
    StoreError::Unavailable("the group-commit writer mixed up its answers".to_owned())
}

async fn write_batch(conn: &mut SqliteConnection, batch: &[Write]) -> Vec<Result<Answer, StoreError>> {
    let failed = |error: &StoreError| batch.iter().map(|_| Err(error.clone())).collect();
    // IMMEDIATE: the write lock at once (a read first could not upgrade).
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await.map_err(store_error) {
        Ok(tx) => tx,
        Err(error) => return failed(&error),
    };
    match answer_all(&mut tx, batch).await {
        Ok(answers) => match tx.commit().await.map_err(store_error) {
            Ok(()) => answers,
            Err(error) => failed(&error),
        },
        // The transaction itself is broken: nothing of the batch holds.
        Err(error) => failed(&error),
    }
}

/// Every write's answer: the checkouts placed together
/// (`crate::sql_checkout`), then each callback inside its savepoint.
/// `Err` only when the transaction can't go on.
async fn answer_all(
    tx: &mut Transaction<'_, Sqlite>,
    batch: &[Write],
) -> Result<Vec<Result<Answer, StoreError>>, StoreError> {
    let checkouts: Vec<&NewCheckout> = batch
        .iter()
        .filter_map(|write| match write {
            Write::Checkout(checkout) => Some(&checkout.new),
            Write::Callback(_) => None,
        })
        .collect();
    let mut placed =
        place_all_on::<TxError>(tx, &checkouts).await.map_err(|error| error.into_store_error(store_error))?.into_iter();
    let mut answers = Vec::with_capacity(batch.len());
    for write in batch {
        answers.push(match write {
            Write::Checkout(_) => placed.next().ok_or_else(mixed_up)?.map(Answer::Placed),
            Write::Callback(callback) => {
                apply_once(tx, callback).await?.map(|applied| Answer::Applied(Box::new(applied)))
            }
        });
    }
    Ok(answers)
}

/// One callback inside its savepoint: kept if it did what it came for,
/// rolled back to the savepoint otherwise. The outer `Err` only when the
/// transaction can't go on.
async fn apply_once(
    tx: &mut Transaction<'_, Sqlite>,
    callback: &Callback,
) -> Result<Result<Applied, StoreError>, StoreError> {
    sqlx::query("SAVEPOINT write").execute(&mut **tx).await.map_err(store_error)?;
    let (answer, keep) = match apply_in(tx, &callback.provider, &callback.event, callback.now).await {
        Ok((applied, keep)) => (Ok(applied), keep),
        Err(error) => (Err(error), false),
    };
    if !keep {
        sqlx::query("ROLLBACK TO write").execute(&mut **tx).await.map_err(store_error)?;
    }
    sqlx::query("RELEASE write").execute(&mut **tx).await.map_err(store_error)?;
    Ok(answer)
}

#[async_trait]
impl CheckoutStore for SqliteStore {
    async fn place(&self, checkout: &NewCheckout) -> Result<Placed, StoreError> {
        let (waiting, answer) = Waiting::new(checkout);
        self.writes.send(Write::Checkout(waiting)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the group-commit writer stopped".to_owned())
}

impl SqliteStore {
    /// A provider event, group-committed with the other hot writes.
    pub(super) async fn apply_event(
        &self,
        provider: &str,
        event: &ProviderEvent,
        now: OffsetDateTime,
    ) -> Result<Applied, StoreError> {
        let (done, answer) = oneshot::channel();
        let callback = Callback { provider: provider.to_owned(), event: event.clone(), now, done };
        self.writes.send(Write::Callback(callback)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}
