//! Checkout: a cart becomes one order per merchant (as large retail
//! platforms split a cart), every unit of every item reserved from its
//! product in one transaction, or none.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use thiserror::Error;
use time::OffsetDateTime;

use super::Order;
use super::ports::StockKeeper;
use crate::actor::Actor;
use crate::catalog::CatalogStore;
use crate::clock::Clock;
use crate::flashsale::Quantity;
use crate::idempotency::IdempotencyKey;
use crate::ids::{IdGenerator, MerchantId, OrderId, ProductId, UserId};
use crate::input::{InvalidInput, Rule};
use crate::store::StoreError;

/// One line of a cart: a product and how many of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckoutLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// A cart as checked out: 1 to [`Checkout::ITEMS_MAX`] lines, each product
/// once, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    lines: Vec<CheckoutLine>,
    address: Address,
}

impl Checkout {
    pub const ITEMS_MAX: usize = 100;

    pub fn parse(lines: Vec<CheckoutLine>, address: Address) -> Result<Self, InvalidInput> {
        if lines.is_empty() || lines.len() > Self::ITEMS_MAX {
            return Err(InvalidInput::new("items", Rule::Entries { min: 1, max: Self::ITEMS_MAX }));
        }
        let mut seen = HashSet::with_capacity(lines.len());
        if let Some(twice) = lines.iter().find(|line| !seen.insert(line.product_id)) {
            let rule = Rule::Must("is in items twice; give it once with the whole quantity");
            return Err(InvalidInput::new(format!("product {}", twice.product_id), rule));
        }
        Ok(Self { lines, address })
    }

    pub fn lines(&self) -> &[CheckoutLine] {
        &self.lines
    }

    pub fn address(&self) -> &Address {
        &self.address
    }
}

/// A delivery address. `region` routes fulfilment later, so it is kept as
/// given (trimmed); every field is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub region: String,
    pub city: String,
    pub line1: String,
    pub postcode: String,
    pub phone: String,
}

impl Address {
    /// Characters a field may hold at most (the phone: [`Self::PHONE_MAX`]).
    pub const FIELD_MAX: usize = 200;
    pub const PHONE_MAX: usize = 32;

    pub fn parse(region: &str, city: &str, line1: &str, postcode: &str, phone: &str) -> Result<Self, InvalidInput> {
        let phone = phone.trim();
        let phone_chars = |c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')');
        if phone.len() < 3 || phone.len() > Self::PHONE_MAX || !phone.chars().all(phone_chars) {
            let alphabet = "digits, '+', '-', ' ', '(' and ')'";
            return Err(InvalidInput::new("address.phone", Rule::Chars { min: 3, max: Self::PHONE_MAX, alphabet }));
        }
        Ok(Self {
            region: text("address.region", region)?,
            city: text("address.city", city)?,
            line1: text("address.line1", line1)?,
            postcode: text("address.postcode", postcode)?,
            phone: phone.to_owned(),
        })
    }
}

fn text(field: &'static str, raw: &str) -> Result<String, InvalidInput> {
    let trimmed = raw.trim();
    let chars = trimmed.chars().count();
    if chars == 0 || chars > Address::FIELD_MAX || trimmed.chars().any(char::is_control) {
        return Err(InvalidInput::new(field, Rule::Text { min: 1, max: Address::FIELD_MAX }));
    }
    Ok(trimmed.to_owned())
}

/// One merchant's share of a cart, as the store is asked to write it: its
/// id, and its lines in cart order. Prices and SKUs are read in the
/// transaction that reserves the units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCheckoutOrder {
    pub id: OrderId,
    pub merchant_id: MerchantId,
    pub lines: Vec<CheckoutLine>,
}

/// What the store did with a checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// Every unit reserved, these orders written (one per merchant, in
    /// merchant order).
    Created(Vec<Order>),
    /// The buyer's key names an earlier checkout: its orders, as they are
    /// now; nothing was reserved.
    Replayed(Vec<Order>),
    /// This product had fewer sellable units than asked: nothing reserved,
    /// nothing written.
    InsufficientStock(ProductId),
    /// A product disappeared between the check and the write.
    UnknownProduct(ProductId),
}

#[async_trait]
pub trait CheckoutStore: Send + Sync + 'static {
    /// In one transaction: claims the buyer's idempotency key if one is
    /// given (when another checkout holds it: [`Placed::Replayed`], nothing
    /// changed); moves every line's units from its product's `stock` to its
    /// `reserved`, taking products in ascending order (when
    /// one is short: [`Placed::InsufficientStock`], nothing changed); writes
    /// the orders `CREATED`, payable until `pay_by`, at the products'
    /// prices of that moment.
    async fn place(&self, checkout: &NewCheckout) -> Result<Placed, StoreError>;
}

/// A checkout as the store writes it: the buyer's cart split into one new
/// order per merchant, with what the write needs besides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCheckout {
    pub checkout_id: i64,
    pub user: UserId,
    pub orders: Vec<NewCheckoutOrder>,
    pub address: Address,
    pub idempotency_key: Option<IdempotencyKey>,
    /// Unpaid orders are cancelled from then on.
    pub pay_by: OffsetDateTime,
    pub now: OffsetDateTime,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CheckoutError {
    #[error("only a customer checks out")]
    Forbidden,
    #[error("{0}")]
    Invalid(InvalidInput),
    #[error("product {0} has fewer units left than asked")]
    InsufficientStock(ProductId),
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

pub struct Checkouts {
    catalog: Arc<dyn CatalogStore>,
    store: Arc<dyn CheckoutStore>,
    stock: Arc<dyn StockKeeper>,
    ids: Arc<IdGenerator>,
    clock: Arc<dyn Clock>,
    payment_timeout: Duration,
}

impl Checkouts {
    pub fn new(
        catalog: Arc<dyn CatalogStore>,
        store: Arc<dyn CheckoutStore>,
        stock: Arc<dyn StockKeeper>,
        ids: Arc<IdGenerator>,
        clock: Arc<dyn Clock>,
        payment_timeout: Duration,
    ) -> Self {
        Self { catalog, store, stock, ids, clock, payment_timeout }
    }

    /// Splits the cart by merchant and has the store reserve and write it
    /// (see [`CheckoutStore::place`]). The same key from the same buyer
    /// returns the first checkout's orders. The store's outbox tells the
    /// other contexts (the buyer is notified of each new order from it).
    pub async fn place(
        &self,
        actor: &Actor,
        checkout: &Checkout,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Vec<Order>, CheckoutError> {
        let Actor::Customer(user) = actor else {
            return Err(CheckoutError::Forbidden);
        };
        let orders = self.split_by_merchant(checkout).await?;
        let now = self.clock.now();
        let new = NewCheckout {
            checkout_id: self.ids.next_id(),
            user: *user,
            orders,
            address: checkout.address().clone(),
            idempotency_key: idempotency_key.cloned(),
            pay_by: now + self.payment_timeout,
            now,
        };
        let placed = self.store.place(&new).await?;
        match placed {
            Placed::Created(orders) => {
                let products: Vec<ProductId> = checkout.lines().iter().map(|line| line.product_id).collect();
                self.stock.products_moved(&products).await;
                Ok(orders)
            }
            Placed::Replayed(orders) => Ok(orders),
            Placed::InsufficientStock(product) => Err(CheckoutError::InsufficientStock(product)),
            Placed::UnknownProduct(product) => Err(unknown(product)),
        }
    }

    /// One new order per merchant, in merchant order, each with its lines
    /// in cart order. A product no one sells is bad input.
    async fn split_by_merchant(&self, checkout: &Checkout) -> Result<Vec<NewCheckoutOrder>, CheckoutError> {
        let mut by_merchant: BTreeMap<MerchantId, Vec<CheckoutLine>> = BTreeMap::new();
        for line in checkout.lines() {
            let merchant = self.catalog.merchant_of(line.product_id).await?.ok_or_else(|| unknown(line.product_id))?;
            by_merchant.entry(merchant).or_default().push(*line);
        }
        Ok(by_merchant
            .into_iter()
            .map(|(merchant_id, lines)| NewCheckoutOrder { id: OrderId::new(self.ids.next_id()), merchant_id, lines })
            .collect())
    }
}

fn unknown(product: ProductId) -> CheckoutError {
    CheckoutError::Invalid(InvalidInput::new(format!("product_id {product}"), Rule::NamesNo("product")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> Address {
        Address::parse("north", "Harbin", "1 Main St", "150000", "+86 123").expect("address")
    }

    fn line(product: i64, quantity: u32) -> CheckoutLine {
        CheckoutLine { product_id: ProductId::new(product), quantity: Quantity::from_trusted(quantity) }
    }

    #[test]
    fn a_cart_holds_one_to_a_hundred_distinct_products() {
        assert!(Checkout::parse(vec![], address()).is_err());
        assert!(Checkout::parse((1..=100).map(|p| line(p, 1)).collect(), address()).is_ok());
        assert!(Checkout::parse((1..=101).map(|p| line(p, 1)).collect(), address()).is_err());
        assert!(Checkout::parse(vec![line(1, 1), line(2, 1), line(1, 3)], address()).is_err());
    }

    #[test]
    fn every_address_field_is_required_and_the_phone_looks_like_one() {
        assert!(Address::parse(" north ", "c", "l", "p", "123").is_ok_and(|a| a.region == "north"));
        for (region, city, line1, postcode, phone) in [
            ("", "c", "l", "p", "123"),
            ("r", "  ", "l", "p", "123"),
            ("r", "c", "", "p", "123"),
            ("r", "c", "l", "\t", "123"),
            ("r", "c", "l", "p", ""),
            ("r", "c", "l", "p", "call me"),
            ("r", "c\nx", "l", "p", "123"),
        ] {
            assert!(Address::parse(region, city, line1, postcode, phone).is_err(), "{region:?} {city:?} {phone:?}");
        }
    }
}
