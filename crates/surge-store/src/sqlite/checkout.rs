//! `CheckoutStore` on SQLite with group commit. SQLite has one writer, so
//! checkouts are written one at a time whatever happens; what costs is the
//! commit's fsync (`synchronous = FULL`). One writer task takes every
//! checkout waiting (up to `BATCH_MAX`) and writes them in one transaction,
//! each inside its own savepoint: a checkout short of stock rolls back to
//! its savepoint and takes nothing, the others go on, and one fsync covers
//! the batch. A caller hears its answer only after the commit, so a 201 is
//! as durable as before; a failed commit fails every checkout of the batch.
//! Checkouts in one batch see each other's reservations and keys, exactly
//! as if they had been written one after the other.

use async_trait::async_trait;
use sqlx::{Sqlite, SqlitePool, Transaction};
use surge_domain::StoreError;
use surge_domain::UserId;
use surge_domain::order::{Address, CheckoutStore, NewCheckoutOrder, Placed};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::inventory::place_on;
use super::{SqliteStore, store_error};

/// Most checkouts one commit covers.
const BATCH_MAX: usize = 128;
/// Checkouts waiting for the writer; callers beyond it wait for room.
pub(super) const CAPACITY: usize = 4_096;

pub(super) struct Checkout {
    checkout_id: i64,
    user: UserId,
    orders: Vec<NewCheckoutOrder>,
    address: Address,
    idempotency_key: Option<String>,
    pay_by: OffsetDateTime,
    now: OffsetDateTime,
    done: oneshot::Sender<Result<Placed, StoreError>>,
}

impl std::fmt::Debug for Checkout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout").field("checkout_id", &self.checkout_id).finish_non_exhaustive()
    }
}

/// The writer: one transaction, one fsync, per batch of waiting checkouts.
pub(super) async fn write_loop(pool: SqlitePool, mut receiver: mpsc::Receiver<Checkout>) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while receiver.recv_many(&mut batch, BATCH_MAX).await > 0 {
        let answers = write_batch(&pool, &batch).await;
        for (checkout, answer) in batch.drain(..).zip(answers) {
            let _ = checkout.done.send(answer);
        }
    }
}

async fn write_batch(pool: &SqlitePool, batch: &[Checkout]) -> Vec<Result<Placed, StoreError>> {
    let failed = |error: &StoreError| batch.iter().map(|_| Err(error.clone())).collect();
    // IMMEDIATE: the write lock at once (a read first could not upgrade).
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await.map_err(store_error) {
        Ok(tx) => tx,
        Err(error) => return failed(&error),
    };
    let mut answers = Vec::with_capacity(batch.len());
    for checkout in batch {
        match one(&mut tx, checkout).await {
            Ok(answer) => answers.push(answer),
            // The transaction itself is broken: nothing of the batch holds.
            Err(error) => return failed(&error),
        }
    }
    match tx.commit().await.map_err(store_error) {
        Ok(()) => answers,
        Err(error) => failed(&error),
    }
}

/// One checkout inside its savepoint: kept if it placed its orders, rolled
/// back to the savepoint otherwise. `Err` only when the transaction can't
/// go on.
async fn one(
    tx: &mut Transaction<'static, Sqlite>,
    checkout: &Checkout,
) -> Result<Result<Placed, StoreError>, StoreError> {
    sqlx::query("SAVEPOINT checkout").execute(&mut **tx).await.map_err(store_error)?;
    let placed = place_on(
        tx,
        checkout.checkout_id,
        checkout.user,
        &checkout.orders,
        &checkout.address,
        checkout.idempotency_key.as_deref(),
        checkout.pay_by,
        checkout.now,
    )
    .await;
    if !matches!(placed, Ok(Placed::Created(_))) {
        sqlx::query("ROLLBACK TO checkout").execute(&mut **tx).await.map_err(store_error)?;
    }
    sqlx::query("RELEASE checkout").execute(&mut **tx).await.map_err(store_error)?;
    Ok(placed)
}

#[async_trait]
impl CheckoutStore for SqliteStore {
    async fn place(
        &self,
        checkout_id: i64,
        user: UserId,
        orders: &[NewCheckoutOrder],
        address: &Address,
        idempotency_key: Option<&str>,
        pay_by: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Placed, StoreError> {
        let (done, answer) = oneshot::channel();
        let checkout = Checkout {
            checkout_id,
            user,
            orders: orders.to_vec(),
            address: address.clone(),
            idempotency_key: idempotency_key.map(str::to_owned),
            pay_by,
            now,
            done,
        };
        let stopped = || StoreError::Unavailable("the checkout writer stopped".to_owned());
        self.checkouts.send(checkout).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}
