//! Money in integer minor units: never a float, never negative.

use serde::{Deserialize, Serialize};
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

    pub fn parse(value: i64) -> Result<Self, String> {
        if !(0..=Self::MAX).contains(&value) {
            return Err(format!("must be between 0 and {}", Self::MAX));
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
        assert!(Cents::parse(-1).is_err());
        assert!(Cents::parse(Cents::MAX + 1).is_err());
        assert_eq!(Cents::parse(0).map(Cents::get), Ok(0));
        assert_eq!(Cents::parse(Cents::MAX).map(Cents::get), Ok(Cents::MAX));
    }
}
