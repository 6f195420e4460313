//! Money in integer minor units: never a float, never negative.

use serde::{Deserialize, Serialize};

use crate::input::{InvalidInput, Rule};
use std::fmt;

/// An amount in minor units (cents). Only `parse` makes one from outside
/// input, so every `Cents` in the system is within `0..=MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cents(i64);

impl Cents {
    /// Ten billion units of currency: far above any single price, far below
    /// where sums of a few thousand of them could overflow an `i64`.
    pub const MAX: i64 = 1_000_000_000_000;

    /// `value` of the input `field`, if within `0..=MAX`.
    pub fn parse(field: &'static str, value: i64) -> Result<Self, InvalidInput> {
        if !(0..=Self::MAX).contains(&value) {
            return Err(InvalidInput::new(field, Rule::Between { min: 0, max: Self::MAX }));
        }
        Ok(Self(value))
    }

    /// For values read back from our own store, which only ever holds parsed ones.
    pub fn from_trusted(value: i64) -> Self {
        debug_assert!((0..=Self::MAX).contains(&value));
        Self(value)
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// An order's amount as an earlier version queued it: price times
    /// quantity, which could pass `MAX` before a sale's price times its
    /// per-buyer limit was bounded. Read back as it is, so that an accepted
    /// order is never lost in an upgrade; only negatives are refused.
    pub fn from_legacy_amount(value: i64) -> Option<Self> {
        (value >= 0).then_some(Self(value))
    }

    /// `units` of this price, unless that passes `MAX`.
    pub fn times(self, units: u32) -> Option<Self> {
        self.0.checked_mul(i64::from(units)).filter(|amount| *amount <= Self::MAX).map(Self)
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_reject_negative_and_absurd_amounts() {
        let refused = Cents::parse("price_cents", -1).expect_err("negative");
        assert_eq!(refused.to_string(), format!("price_cents must be between 0 and {}", Cents::MAX));
        assert!(Cents::parse("price_cents", Cents::MAX + 1).is_err());
        assert_eq!(Cents::parse("price_cents", 0).map(Cents::get), Ok(0));
        assert_eq!(Cents::parse("price_cents", Cents::MAX).map(Cents::get), Ok(Cents::MAX));
    }

    #[test]
    fn a_price_times_units_is_an_amount_or_nothing_past_the_largest() {
        assert_eq!(Cents::from_trusted(250).times(4).map(Cents::get), Some(1_000));
        assert_eq!(Cents::from_trusted(Cents::MAX / 2).times(2).map(Cents::get), Some(Cents::MAX));
        assert_eq!(Cents::from_trusted(Cents::MAX / 2).times(3), None);
        assert_eq!(Cents::from_trusted(Cents::MAX).times(u32::MAX), None);
    }
}
