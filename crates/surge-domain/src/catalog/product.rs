//! The product aggregate and the parsed values it is made of.

use crate::ids::{MerchantId, ProductId};
use crate::input::{InvalidInput, Rule};
use crate::money::Cents;
use serde::Serialize;
use time::OffsetDateTime;

/// A product as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Product {
    pub id: ProductId,
    pub merchant_id: MerchantId,
    pub sku: Sku,
    pub name: ProductName,
    pub price_cents: Cents,
    /// Units that can still be sold.
    pub stock: Stock,
    /// Units held by unpaid orders and by flash sales.
    pub reserved: Stock,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// What a new product is made of, every field already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    pub merchant_id: MerchantId,
    pub sku: Sku,
    pub name: ProductName,
    pub price_cents: Cents,
    pub stock: Stock,
}

/// A change of name and/or price; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductPatch {
    pub name: Option<ProductName>,
    pub price_cents: Option<Cents>,
}

impl ProductPatch {
    pub fn parse(name: Option<ProductName>, price_cents: Option<Cents>) -> Result<Self, InvalidInput> {
        if name.is_none() && price_cents.is_none() {
            return Err(InvalidInput::new("name or price_cents", Rule::Required));
        }
        Ok(Self { name, price_cents })
    }
}

/// A merchant's stock keeping unit: 1–64 characters of `A-Z a-z 0-9 - _ .`,
/// unique per merchant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Sku(String);

impl Sku {
    pub const LEN_MAX: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if raw.is_empty() || raw.len() > Self::LEN_MAX || !raw.chars().all(allowed) {
            let alphabet = "A-Z, a-z, 0-9, '-', '_', '.'";
            return Err(InvalidInput::new("sku", Rule::Chars { min: 1, max: Self::LEN_MAX, alphabet }));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn from_trusted(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name: 1–200 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ProductName(String);

impl ProductName {
    pub const CHARS_MAX: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > Self::CHARS_MAX || trimmed.chars().any(char::is_control) {
            return Err(InvalidInput::new("name", Rule::Text { min: 1, max: Self::CHARS_MAX }));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn from_trusted(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Units on hand: `0..=MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Stock(i64);

impl Stock {
    pub const MAX: i64 = 1_000_000_000;

    pub fn parse(value: i64) -> Result<Self, InvalidInput> {
        if !(0..=Self::MAX).contains(&value) {
            return Err(InvalidInput::new("stock", Rule::Between { min: 0, max: Self::MAX }));
        }
        Ok(Self(value))
    }

    pub fn from_trusted(value: i64) -> Self {
        Self(value)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sku_accepts_the_documented_alphabet_only() {
        assert!(Sku::parse("ABC-123_x.9").is_ok());
        for bad in ["", "has space", "émoji", "semi;colon", &"x".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn name_is_trimmed_and_bounded() {
        assert_eq!(ProductName::parse("  Tea  ").map(|n| n.as_str().to_owned()), Ok("Tea".to_owned()));
        assert!(ProductName::parse("   ").is_err());
        assert!(ProductName::parse("line\nbreak").is_err());
        assert!(ProductName::parse(&"é".repeat(200)).is_ok());
        assert!(ProductName::parse(&"é".repeat(201)).is_err());
    }

    #[test]
    fn an_empty_patch_is_refused() {
        assert!(ProductPatch::parse(None, None).is_err());
        assert!(ProductPatch::parse(None, Cents::parse("price_cents", 1).ok()).is_ok());
    }

    proptest! {
        #[test]
        fn stock_parse_accepts_exactly_the_range(value in any::<i64>()) {
            prop_assert_eq!(Stock::parse(value).is_ok(), (0..=Stock::MAX).contains(&value));
        }

        #[test]
        fn sku_parse_never_accepts_what_it_should_not(raw in "\\PC{0,80}") {
            if let Ok(sku) = Sku::parse(&raw) {
                prop_assert!(!sku.as_str().is_empty() && sku.as_str().len() <= Sku::LEN_MAX);
                prop_assert!(sku.as_str().chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
            }
        }
    }
}
