//! The flash-sale aggregate: a fixed stock of one product sold at one price
//! inside a time window, at most `per_user_limit` units per customer.

use serde::Serialize;
use time::OffsetDateTime;

use crate::idempotency::IdempotencyKey;
use crate::ids::{MerchantId, OrderId, ProductId, SaleId, UserId};
use crate::input::{InvalidInput, Rule};
use crate::money::Cents;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashSale {
    pub id: SaleId,
    pub product_id: ProductId,
    /// The product's merchant, copied so that orders know their tenant.
    pub merchant_id: MerchantId,
    pub stock: i64,
    pub price_cents: Cents,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub per_user_limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleStatus {
    Scheduled,
    Active,
    SoldOut,
    Ended,
}

impl FlashSale {
    /// Ending wins over selling out: an ended sale is `ended` whatever is left.
    pub fn status(&self, now: OffsetDateTime, stock_left: i64) -> SaleStatus {
        if now >= self.ends_at {
            SaleStatus::Ended
        } else if now < self.starts_at {
            SaleStatus::Scheduled
        } else if stock_left <= 0 {
            SaleStatus::SoldOut
        } else {
            SaleStatus::Active
        }
    }

    pub fn is_open(&self, now: OffsetDateTime) -> bool {
        self.starts_at <= now && now < self.ends_at
    }
}

/// A sale as an admin asks for it, every rule checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSale {
    pub product_id: ProductId,
    pub stock: i64,
    pub price_cents: Cents,
    pub starts_at: OffsetDateTime,
    pub ends_at: OffsetDateTime,
    pub per_user_limit: u32,
}

impl NewSale {
    pub const STOCK_MAX: i64 = 10_000_000;
    pub const PER_USER_LIMIT_MAX: u32 = 1_000;
    /// Clock skew tolerated for "starts now".
    pub const START_SLACK: time::Duration = time::Duration::seconds(60);
    pub const WINDOW_MAX: time::Duration = time::Duration::days(31);

    pub fn parse(
        product_id: ProductId,
        stock: i64,
        price_cents: Cents,
        starts_at: OffsetDateTime,
        ends_at: OffsetDateTime,
        per_user_limit: i64,
        now: OffsetDateTime,
    ) -> Result<Self, InvalidInput> {
        if !(1..=Self::STOCK_MAX).contains(&stock) {
            return Err(InvalidInput::new("stock", Rule::Between { min: 1, max: Self::STOCK_MAX }));
        }
        let limit_max = i64::from(Self::PER_USER_LIMIT_MAX);
        let per_user_limit = u32::try_from(per_user_limit)
            .ok()
            .filter(|limit| (1..=Self::PER_USER_LIMIT_MAX).contains(limit))
            .ok_or_else(|| InvalidInput::new("per_user_limit", Rule::Between { min: 1, max: limit_max }))?;
        if price_cents.times(per_user_limit).is_none() {
            return Err(InvalidInput::new("price_cents times per_user_limit", Rule::AtMost(Cents::MAX)));
        }
        if starts_at < now - Self::START_SLACK {
            return Err(InvalidInput::new("starts_at", Rule::Must("must be now or in the future")));
        }
        if ends_at <= starts_at {
            return Err(InvalidInput::new("ends_at", Rule::Must("must be after starts_at")));
        }
        if ends_at - starts_at > Self::WINDOW_MAX {
            return Err(InvalidInput::new("ends_at", Rule::Must("must be at most 31 days after starts_at")));
        }
        Ok(Self { product_id, stock, price_cents, starts_at, ends_at, per_user_limit })
    }
}

/// How many units one intake asks for: `1..=QUANTITY_MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 1_000;

    pub fn parse(value: i64) -> Result<Self, InvalidInput> {
        u32::try_from(value)
            .ok()
            .filter(|q| (1..=Self::MAX).contains(q))
            .map(Self)
            .ok_or_else(|| InvalidInput::new("quantity", Rule::Between { min: 1, max: i64::from(Self::MAX) }))
    }

    pub fn from_trusted(value: u32) -> Self {
        Self(value)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// The event appended to the queue by intake; the order consumer turns it
/// into an order. Everything the order needs is in it. How it is written
/// to a queue is the queue adapters' business (`surge_store::queue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequested {
    pub order_id: OrderId,
    pub sale_id: SaleId,
    pub user_id: UserId,
    pub product_id: ProductId,
    pub merchant_id: MerchantId,
    pub quantity: Quantity,
    pub amount_cents: Cents,
    pub idempotency_key: Option<IdempotencyKey>,
    /// Unix milliseconds.
    pub requested_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sale() -> FlashSale {
        FlashSale {
            id: SaleId::new(1),
            product_id: ProductId::new(2),
            merchant_id: MerchantId::new(3),
            stock: 10,
            price_cents: Cents::from_trusted(100),
            starts_at: datetime!(2030-01-01 10:00 UTC),
            ends_at: datetime!(2030-01-01 11:00 UTC),
            per_user_limit: 1,
        }
    }

    #[test]
    fn status_follows_the_window_then_the_stock() {
        let sale = sale();
        assert_eq!(sale.status(datetime!(2030-01-01 09:59 UTC), 10), SaleStatus::Scheduled);
        assert_eq!(sale.status(datetime!(2030-01-01 10:00 UTC), 10), SaleStatus::Active);
        assert_eq!(sale.status(datetime!(2030-01-01 10:30 UTC), 0), SaleStatus::SoldOut);
        assert_eq!(sale.status(datetime!(2030-01-01 11:00 UTC), 0), SaleStatus::Ended);
        assert_eq!(sale.status(datetime!(2030-01-01 11:00 UTC), 5), SaleStatus::Ended);
    }

    #[test]
    fn a_new_sale_needs_stock_a_limit_and_a_forward_window() {
        let now = datetime!(2030-01-01 10:00 UTC);
        let ok = |stock, limit, start, end| {
            NewSale::parse(ProductId::new(1), stock, Cents::from_trusted(1), start, end, limit, now).is_ok()
        };
        let (start, end) = (datetime!(2030-01-01 10:00 UTC), datetime!(2030-01-01 11:00 UTC));
        assert!(ok(1, 1, start, end));
        assert!(!ok(0, 1, start, end));
        assert!(!ok(-5, 1, start, end));
        assert!(!ok(1, 0, start, end));
        assert!(!ok(1, -1, start, end));
        assert!(!ok(1, 1, end, start));
        assert!(!ok(1, 1, datetime!(2029-12-31 10:00 UTC), end));
        assert!(!ok(1, 1, start, datetime!(2030-03-01 10:00 UTC)));
        // An order of the whole limit must be an amount: price times limit.
        let priced = |price, limit| {
            NewSale::parse(ProductId::new(1), 1, Cents::from_trusted(price), start, end, limit, now).map(|_| ())
        };
        assert_eq!(priced(Cents::MAX / 10, 10), Ok(()));
        let refused = priced(Cents::MAX / 10, 11).expect_err("past the largest amount");
        assert_eq!(refused, InvalidInput::new("price_cents times per_user_limit", Rule::AtMost(Cents::MAX)));
    }

    #[test]
    fn quantity_is_bounded() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-1).is_err());
        assert!(Quantity::parse(i64::MAX).is_err());
        assert_eq!(Quantity::parse(3).map(Quantity::get), Ok(3));
    }
}
