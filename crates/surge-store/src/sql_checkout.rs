//! Checkouts written together, shared by SQLite and PostgreSQL as in
//! `crate::sql`: a batch of waiting checkouts is placed in one transaction
//! by a few set-based statements instead of about ten per checkout. The
//! batch's keys are claimed by one insert; its products are read (and on
//! PostgreSQL locked, in ascending id) by one select; the units are shared
//! out here, checkout by checkout in batch order, all of a checkout's lines
//! or none ([`Shelf`]); then one update per chunk of products moves what
//! was taken from `stock` to `reserved`, one insert writes the orders and
//! one the outbox events. A refused checkout gives its key back in the same
//! transaction, so nothing of it is ever seen. The result is what placing
//! the checkouts one after the other would have written.

use std::collections::{BTreeMap, HashMap, HashSet};

use surge_domain::order::{NewCheckout, NewCheckoutOrder, Order, OrderKind, OrderStatus, Placed};
use surge_domain::{ProductId, StoreError};

use tokio::sync::oneshot;

use crate::rows::{ItemDoc, from_unix_ms, unix_ms};

/// A checkout waiting for its store's writer (SQLite's group commit,
/// PostgreSQL's checkout writer), with where its answer goes.
pub(crate) struct Waiting {
    pub new: NewCheckout,
    pub done: oneshot::Sender<Result<Placed, StoreError>>,
}

impl Waiting {
    /// `checkout` to hand to a writer, and where its answer will come.
    pub(crate) fn new(checkout: &NewCheckout) -> (Self, oneshot::Receiver<Result<Placed, StoreError>>) {
        let (done, answer) = oneshot::channel();
        (Self { new: checkout.clone(), done }, answer)
    }

    /// Its caller gave up (its deadline passed) while it waited: nobody
    /// would hear of its orders, so a writer does not place it.
    pub(crate) fn abandoned(&self) -> bool {
        self.done.is_closed()
    }
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").field("checkout_id", &self.new.checkout_id).finish_non_exhaustive()
    }
}

/// Rows one statement writes or reads at most (the drivers bound the
/// parameters of a statement: SQLite to 32,766, PostgreSQL to 65,535).
pub(crate) const CHUNK: usize = 1_000;

/// The batch's checkouts split by key: those to place now, and those whose
/// buyer's key an earlier checkout of the batch holds (placed one by one
/// after the others, so each replays what its twin wrote or goes on alone).
pub(crate) fn first_of_each_key(checkouts: &[&NewCheckout]) -> (Vec<usize>, Vec<usize>) {
    let mut keys = HashSet::with_capacity(checkouts.len());
    let (mut now, mut later) = (Vec::with_capacity(checkouts.len()), Vec::new());
    for (index, checkout) in checkouts.iter().enumerate() {
        match checkout.idempotency_key.as_deref() {
            Some(key) if !keys.insert((checkout.user, key)) => later.push(index),
            _ => now.push(index),
        }
    }
    (now, later)
}

/// A product as the batch found it.
#[derive(Debug, Clone)]
pub(crate) struct Shelved {
    pub left: i64,
    pub sku: String,
    pub price_cents: i64,
}

/// The batch's products and what its checkouts took of them.
#[derive(Debug, Default)]
pub(crate) struct Shelf {
    products: HashMap<ProductId, Shelved>,
    taken: BTreeMap<ProductId, i64>,
}

impl Shelf {
    pub(crate) fn new(products: HashMap<ProductId, Shelved>) -> Self {
        Self { products, taken: BTreeMap::new() }
    }

    /// Takes every unit `checkout` asks for, or none: the refusal names its
    /// first product (ascending) that is missing or short, as the
    /// one-by-one conditional updates would.
    pub(crate) fn take(&mut self, checkout: &NewCheckout) -> Result<(), Placed> {
        let mut asked: BTreeMap<ProductId, i64> = BTreeMap::new();
        for line in checkout.orders.iter().flat_map(|order| order.lines.iter()) {
            *asked.entry(line.product_id).or_default() += i64::from(line.quantity.get());
        }
        for (&product, &units) in &asked {
            match self.products.get(&product) {
                None => return Err(Placed::UnknownProduct(product)),
                Some(shelved) if shelved.left < units => return Err(Placed::InsufficientStock(product)),
                Some(_) => {}
            }
        }
        for (product, units) in asked {
            if let Some(shelved) = self.products.get_mut(&product) {
                shelved.left -= units;
            }
            *self.taken.entry(product).or_default() += units;
        }
        Ok(())
    }

    /// Units taken per product, in ascending product order.
    pub(crate) fn taken(&self) -> impl Iterator<Item = (ProductId, i64)> + '_ {
        self.taken.iter().map(|(product, units)| (*product, *units))
    }

    /// The SKU and unit price a product's units were taken at.
    pub(crate) fn price(&self, product: ProductId) -> Option<(&str, i64)> {
        self.products.get(&product).map(|shelved| (shelved.sku.as_str(), shelved.price_cents))
    }
}

/// One checkout order's columns besides its ids: its items (as its
/// document holds them, and that document), units and amount at the
/// reserved prices, and its first product.
pub(crate) struct OrderValues {
    pub item_docs: Vec<ItemDoc>,
    pub items: String,
    pub quantity: i64,
    pub amount_cents: i64,
    pub first_product: i64,
}

impl OrderValues {
    pub(crate) fn of<'a>(
        order: &NewCheckoutOrder,
        price: impl Fn(ProductId) -> Option<(&'a str, i64)>,
    ) -> Result<Self, serde_json::Error> {
        let items: Vec<ItemDoc> = order
            .lines
            .iter()
            .map(|line| {
                let (sku, unit_price) = price(line.product_id).unwrap_or_default();
                ItemDoc::new(line.product_id, sku.to_owned(), line.quantity.get(), unit_price)
            })
            .collect();
        Ok(Self {
            quantity: items.iter().map(|item| item.quantity).sum(),
            amount_cents: items.iter().map(ItemDoc::amount_cents).fold(0, i64::saturating_add),
            first_product: order.lines.first().map_or(0, |line| line.product_id.get()),
            items: serde_json::to_string(&items)?,
            item_docs: items,
        })
    }

    /// The order as its row reads once written (times to the millisecond,
    /// as stored), without reading it back.
    pub(crate) fn into_order(self, checkout: &NewCheckout, order: &NewCheckoutOrder) -> Order {
        let created = from_unix_ms(unix_ms(checkout.now));
        Order {
            id: order.id,
            user_id: checkout.user,
            merchant_id: order.merchant_id,
            product_id: ProductId::new(self.first_product),
            flash_sale_id: None,
            quantity: u32::try_from(self.quantity).unwrap_or(u32::MAX),
            amount_cents: self.amount_cents,
            status: OrderStatus::Created,
            kind: OrderKind::Checkout,
            items: self.item_docs.into_iter().map(Into::into).collect(),
            address: Some(checkout.address.clone()),
            created_at: created,
            updated_at: created,
            pay_by: Some(from_unix_ms(unix_ms(checkout.pay_by))),
        }
    }
}

/// `place_all_on(conn, checkouts)` for `$conn` (a connection of `$db`);
/// `$lock` is what the products' read adds to lock their rows. The
/// adapter's module imports what it uses, and `place_on` for the checkouts
/// set aside by [`first_of_each_key`].
macro_rules! checkout_batch {
    ($conn:ty, $db:ty, $lock:literal) => {
        /// Places `checkouts` inside the caller's transaction; one answer
        /// each, in their order. They are placed together inside a
        /// savepoint; when that fails for another reason than a conflict
        /// (which the caller runs again whole), it is rolled back and each
        /// checkout is placed alone, so that one checkout's error is its
        /// own. `Err`: a conflict, or the transaction can't go on.
        pub(crate) async fn place_all_on<E>(
            conn: &mut $conn,
            checkouts: &[&NewCheckout],
        ) -> Result<Vec<Result<Placed, StoreError>>, E>
        where
            E: From<sqlx::Error> + From<StoreError> + crate::conflict::Conflict + std::fmt::Debug,
        {
            if checkouts.is_empty() {
                // A batch of callbacks only (SQLite's group commit).
                return Ok(Vec::new());
            }
            sqlx::query("SAVEPOINT batch").execute(&mut *conn).await?;
            match place_together::<E>(conn, checkouts).await {
                Ok(answers) => {
                    sqlx::query("RELEASE batch").execute(&mut *conn).await?;
                    Ok(answers.into_iter().map(Ok).collect())
                }
                Err(error) if error.is_conflict() => Err(error),
                Err(error) => {
                    tracing::warn!(?error, checkouts = checkouts.len(), "a checkout batch failed; placing each alone");
                    sqlx::query("ROLLBACK TO batch").execute(&mut *conn).await?;
                    sqlx::query("RELEASE batch").execute(&mut *conn).await?;
                    let mut answers = Vec::with_capacity(checkouts.len());
                    for checkout in checkouts {
                        answers.push(place_alone(conn, checkout).await?);
                    }
                    Ok(answers)
                }
            }
        }

        /// The checkouts placed by the batch's set-based statements. `Err`
        /// leaves writes the caller rolls back.
        async fn place_together<E>(conn: &mut $conn, checkouts: &[&NewCheckout]) -> Result<Vec<Placed>, E>
        where
            E: From<sqlx::Error> + From<StoreError>,
        {
            let (now, later) = crate::sql_checkout::first_of_each_key(checkouts);
            let mut answers: Vec<Option<Placed>> = vec![None; checkouts.len()];
            let claimed = claim_keys(conn, checkouts, &now).await?;
            let mut going = Vec::with_capacity(now.len());
            for index in now {
                let checkout = checkouts[index];
                match checkout.idempotency_key.as_deref() {
                    Some(key) if !claimed.contains(&(checkout.user.get(), key.to_owned())) => {
                        answers[index] = Some(Placed::Replayed(checkout_orders_on(conn, checkout.user, key).await?));
                    }
                    _ => going.push(index),
                }
            }
            let mut shelf = crate::sql_checkout::Shelf::new(shelve(conn, checkouts, &going).await?);
            let (mut created, mut given_back) = (Vec::with_capacity(going.len()), Vec::new());
            for index in going {
                let checkout = checkouts[index];
                match shelf.take(checkout) {
                    Ok(()) => created.push(index),
                    Err(refused) => {
                        answers[index] = Some(refused);
                        if let Some(key) = checkout.idempotency_key.as_deref() {
                            given_back.push((checkout.user.get(), key));
                        }
                    }
                }
            }
            let latest = checkouts.iter().map(|checkout| checkout.now).max();
            take_units(conn, &shelf, latest.map_or(0, unix_ms)).await?;
            give_keys_back(conn, &given_back).await?;
            for (index, orders) in insert_orders(conn, checkouts, &created, &shelf).await? {
                answers[index] = Some(Placed::Created(orders));
            }
            for index in later {
                answers[index] = Some(place_alone(conn, checkouts[index]).await??);
            }
            answers
                .into_iter()
                .map(|answer| {
                    answer.ok_or_else(|| {
                        StoreError::Unavailable("a checkout of the batch went unanswered".to_owned()).into()
                    })
                })
                .collect()
        }

        /// Claims the keys of `indexes` that have one; the claimed pairs
        /// (buyer, key). A pair not returned is held by an earlier checkout.
        async fn claim_keys(
            conn: &mut $conn,
            checkouts: &[&NewCheckout],
            indexes: &[usize],
        ) -> Result<std::collections::HashSet<(i64, String)>, sqlx::Error> {
            let mut keyed: Vec<_> =
                indexes.iter().map(|&index| checkouts[index]).filter(|c| c.idempotency_key.is_some()).collect();
            // In one order on every node, so two batches claiming the same
            // keys wait for each other instead of deadlocking.
            keyed.sort_by(|a, b| (a.user, a.idempotency_key.as_deref()).cmp(&(b.user, b.idempotency_key.as_deref())));
            let mut claimed = std::collections::HashSet::with_capacity(keyed.len());
            for chunk in keyed.chunks(crate::sql_checkout::CHUNK) {
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO checkouts (user_id, idempotency_key, id, created_at_ms) ",
                );
                insert.push_values(chunk, |mut row, checkout| {
                    row.push_bind(checkout.user.get())
                        .push_bind(checkout.idempotency_key.as_deref().unwrap_or_default().to_owned())
                        .push_bind(checkout.checkout_id)
                        .push_bind(unix_ms(checkout.now));
                });
                insert.push(" ON CONFLICT DO NOTHING RETURNING user_id, idempotency_key");
                let rows: Vec<(i64, String)> = insert.build_query_as().persistent(false).fetch_all(&mut *conn).await?;
                claimed.extend(rows);
            }
            Ok(claimed)
        }

        /// The products the checkouts of `indexes` name, as they are now.
        async fn shelve(
            conn: &mut $conn,
            checkouts: &[&NewCheckout],
            indexes: &[usize],
        ) -> Result<std::collections::HashMap<ProductId, crate::sql_checkout::Shelved>, sqlx::Error> {
            let ids: std::collections::BTreeSet<i64> = indexes
                .iter()
                .flat_map(|&index| checkouts[index].orders.iter().flat_map(|order| order.lines.iter()))
                .map(|line| line.product_id.get())
                .collect();
            let ids: Vec<i64> = ids.into_iter().collect();
            let mut shelved = std::collections::HashMap::with_capacity(ids.len());
            for chunk in ids.chunks(crate::sql_checkout::CHUNK) {
                let mut select =
                    sqlx::QueryBuilder::<$db>::new("SELECT id, stock, sku, price_cents FROM products WHERE id IN (");
                let mut list = select.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                select.push(") ORDER BY id");
                select.push($lock);
                let rows: Vec<(i64, i64, String, i64)> =
                    select.build_query_as().persistent(false).fetch_all(&mut *conn).await?;
                for (id, left, sku, price_cents) in rows {
                    shelved.insert(ProductId::new(id), crate::sql_checkout::Shelved { left, sku, price_cents });
                }
            }
            Ok(shelved)
        }

        /// Moves what the shelf's checkouts took from `stock` to `reserved`.
        /// The condition holds (the rows were read in this transaction and
        /// locked or under the one writer); the CHECK stands behind it.
        async fn take_units(
            conn: &mut $conn,
            shelf: &crate::sql_checkout::Shelf,
            now_ms: i64,
        ) -> Result<(), sqlx::Error> {
            let taken: Vec<_> = shelf.taken().collect();
            for chunk in taken.chunks(crate::sql_checkout::CHUNK) {
                let mut update = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE products SET stock = products.stock - taken.column2, \
                     reserved = products.reserved + taken.column2, updated_at_ms = ",
                );
                update.push_bind(now_ms).push(" FROM (");
                update.push_values(chunk, |mut row, (product, units)| {
                    row.push_bind(product.get()).push_bind(*units);
                });
                update.push(") AS taken WHERE products.id = taken.column1");
                update.build().persistent(false).execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// Drops the claims of refused checkouts.
        async fn give_keys_back(conn: &mut $conn, keys: &[(i64, &str)]) -> Result<(), sqlx::Error> {
            for (user, key) in keys {
                sqlx::query("DELETE FROM checkouts WHERE user_id = $1 AND idempotency_key = $2")
                    .bind(*user)
                    .bind(*key)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        }

        /// Writes the orders of the checkouts of `indexes`, `CREATED`, and
        /// their `order_placed` events; each checkout's orders, in its order.
        async fn insert_orders(
            conn: &mut $conn,
            checkouts: &[&NewCheckout],
            indexes: &[usize],
            shelf: &crate::sql_checkout::Shelf,
        ) -> Result<Vec<(usize, Vec<Order>)>, sqlx::Error> {
            let encode = |error: serde_json::Error| sqlx::Error::Encode(Box::new(error));
            let mut rows = Vec::new();
            for &index in indexes {
                let checkout = checkouts[index];
                let address =
                    std::sync::Arc::new(serde_json::to_string(&AddressDoc::from(&checkout.address)).map_err(encode)?);
                for order in &checkout.orders {
                    let values =
                        crate::sql_checkout::OrderValues::of(order, |product| shelf.price(product)).map_err(encode)?;
                    rows.push((index, order, values, address.clone()));
                }
            }
            for chunk in rows.chunks(crate::sql_checkout::CHUNK) {
                let mut insert = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO orders (id, user_id, merchant_id, product_id, quantity, amount_cents, status, \
                     pay_by_ms, created_at_ms, updated_at_ms, kind, items, address, checkout_id) ",
                );
                insert.push_values(chunk, |mut row, (index, order, values, address)| {
                    let checkout = checkouts[*index];
                    let created = unix_ms(checkout.now);
                    row.push_bind(order.id.get())
                        .push_bind(checkout.user.get())
                        .push_bind(order.merchant_id.get())
                        .push_bind(values.first_product)
                        .push_bind(values.quantity)
                        .push_bind(values.amount_cents)
                        .push("'CREATED'")
                        .push_bind(unix_ms(checkout.pay_by))
                        .push_bind(created)
                        .push_bind(created)
                        .push("'checkout'")
                        .push_bind(values.items.as_str())
                        .push_bind(address.as_str())
                        .push_bind(checkout.checkout_id);
                });
                insert.build().persistent(false).execute(&mut *conn).await?;
            }
            let mut placed: Vec<(usize, Vec<Order>)> = Vec::with_capacity(indexes.len());
            for (index, order, values, _) in rows {
                let order = values.into_order(checkouts[index], order);
                match placed.last_mut() {
                    Some((last, orders)) if *last == index => orders.push(order),
                    _ => placed.push((index, vec![order])),
                }
            }
            let events: Vec<_> = placed
                .iter()
                .flat_map(|(index, orders)| crate::sql_outbox::placed(orders, checkouts[*index].now))
                .collect();
            record_events(&mut *conn, &events).await?;
            Ok(placed)
        }

        /// One checkout on its own, inside a savepoint: kept when created,
        /// rolled back to the savepoint otherwise (an error included). The
        /// outer `Err` only when the transaction can't go on.
        async fn place_alone(
            conn: &mut $conn,
            checkout: &NewCheckout,
        ) -> Result<Result<Placed, StoreError>, sqlx::Error> {
            sqlx::query("SAVEPOINT checkout").execute(&mut *conn).await?;
            let placed = place_on(&mut *conn, checkout).await;
            if !matches!(placed, Ok(Placed::Created(_))) {
                sqlx::query("ROLLBACK TO checkout").execute(&mut *conn).await?;
            }
            sqlx::query("RELEASE checkout").execute(&mut *conn).await?;
            Ok(placed)
        }
    };
}

pub(crate) use checkout_batch;

#[cfg(test)]
mod tests;
