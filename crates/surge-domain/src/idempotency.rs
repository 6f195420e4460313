//! A client's `Idempotency-Key`: the same key from the same caller names
//! the same outcome (one order, one checkout, one refund, one return).

use std::fmt;
use std::ops::Deref;

use crate::input::{InvalidInput, Rule};

/// 1-128 visible ASCII characters. Only `parse` makes one from outside
/// input; it reads as the `str` it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if (1..=Self::MAX_LEN).contains(&raw.len()) && raw.bytes().all(|byte| byte.is_ascii_graphic()) {
            Ok(Self(raw.to_owned()))
        } else {
            let rule = Rule::Chars { min: 1, max: Self::MAX_LEN, alphabet: "visible ASCII" };
            Err(InvalidInput::new("Idempotency-Key", rule))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for IdempotencyKey {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::IdempotencyKey;

    #[test]
    fn a_key_is_1_to_128_visible_ascii_characters() {
        assert_eq!(IdempotencyKey::parse("k-1").map(|key| key.as_str().to_owned()), Ok("k-1".to_owned()));
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_ok());
        for bad in [String::new(), "k".repeat(129), "a b".into(), "ключ".into(), "k\u{7f}".into()] {
            assert!(IdempotencyKey::parse(&bad).is_err(), "{bad:?}");
        }
    }
}
