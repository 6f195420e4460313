//! Why an input was refused: the field and the rule it broke, by name. The
//! edge answers it as a 400 whose message is its text ("quantity must be
//! between 1 and 1000"); callers and tests match on the rule.

use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {rule}")]
pub struct InvalidInput {
    /// The field as the client wrote it (`address.phone`), or the entry it
    /// is about (`product 42`).
    pub field: Cow<'static, str>,
    pub rule: Rule,
}

impl InvalidInput {
    pub fn new(field: impl Into<Cow<'static, str>>, rule: Rule) -> Self {
        Self { field: field.into(), rule }
    }
}

/// The rules inputs are held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Missing where it is needed.
    Required,
    /// An integer in `min..=max`.
    Between {
        min: i64,
        max: i64,
    },
    AtLeast(i64),
    AtMost(i64),
    /// `min..=max` characters, none of them a control character.
    Text {
        min: usize,
        max: usize,
    },
    /// `min..=max` characters, each one of `alphabet` (said in words).
    Chars {
        min: usize,
        max: usize,
        alphabet: &'static str,
    },
    /// A list of `min..=max` entries.
    Entries {
        min: usize,
        max: usize,
    },
    /// Names nothing of this kind.
    NamesNo(&'static str),
    /// A rule of its own, said in words ("must be after starts_at").
    Must(&'static str),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Required => f.write_str("is required"),
            Rule::Between { min, max } => write!(f, "must be between {min} and {max}"),
            Rule::AtLeast(min) => write!(f, "must be at least {min}"),
            Rule::AtMost(max) => write!(f, "must be at most {max}"),
            Rule::Text { min, max } => write!(f, "must be {min}-{max} characters without control characters"),
            Rule::Chars { min, max, alphabet } => write!(f, "must be {min}-{max} characters of {alphabet}"),
            Rule::Entries { min, max } => write!(f, "must hold {min} to {max} entries"),
            Rule::NamesNo(what) => write!(f, "names no {what}"),
            Rule::Must(rule) => f.write_str(rule),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{InvalidInput, Rule};

    #[test]
    fn a_refusal_reads_as_its_field_then_its_rule() {
        let quantity = InvalidInput::new("quantity", Rule::Between { min: 1, max: 1000 });
        assert_eq!(quantity.to_string(), "quantity must be between 1 and 1000");
        let product = InvalidInput::new(format!("product_id {}", 42), Rule::NamesNo("product"));
        assert_eq!(product.to_string(), "product_id 42 names no product");
        let phone = InvalidInput::new("address.phone", Rule::Chars { min: 3, max: 32, alphabet: "digits" });
        assert_eq!(phone.to_string(), "address.phone must be 3-32 characters of digits");
    }
}
