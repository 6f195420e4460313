//! Identifiers: 64-bit, time-ordered, unique across nodes, shown as strings.
//!
//! The layout is Twitter's snowflake: 41 bits of milliseconds since
//! [`EPOCH_UNIX_MS`], 10 bits of node id, 12 bits of sequence. Ids sort by
//! creation time (keyset pagination and range sharding rely on that) and two
//! nodes with different `node_id`s can never mint the same id. JSON carries
//! them as strings of digits so JavaScript keeps them exact.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// 2025-01-01T00:00:00Z; 41 bits of milliseconds from here last until 2094.
pub const EPOCH_UNIX_MS: u64 = 1_735_689_600_000;
pub const NODE_ID_MAX: u16 = (1 << NODE_BITS) - 1;

const NODE_BITS: u32 = 10;
const SEQUENCE_BITS: u32 = 12;
const SEQUENCE_MAX: u64 = (1 << SEQUENCE_BITS) - 1;

/// Mints ids for one node. Lock-free: one compare-and-swap per id.
#[derive(Debug)]
pub struct IdGenerator {
    node_id: u16,
    /// `(milliseconds since epoch << SEQUENCE_BITS) | sequence` of the last id.
    last: AtomicU64,
}

impl IdGenerator {
    pub fn new(node_id: u16) -> Result<Self, String> {
        if node_id > NODE_ID_MAX {
            return Err(format!("node_id must be at most {NODE_ID_MAX}"));
        }
        Ok(Self { node_id, last: AtomicU64::new(0) })
    }

    /// Never mint an id at or below `id` (the largest id already stored):
    /// after a restart with a clock that went back, ids stay unique.
    pub fn resume_after(&self, id: i64) {
        let ms = (id.max(0) as u64) >> (NODE_BITS + SEQUENCE_BITS);
        self.last.fetch_max((ms << SEQUENCE_BITS) | SEQUENCE_MAX, Ordering::Relaxed);
    }

    pub fn next_id(&self) -> i64 {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .saturating_sub(EPOCH_UNIX_MS);
        self.next_at(now_ms)
    }

    /// The clock is an argument so that tests can drive it. If the clock runs
    /// backwards, or more than 4,096 ids are asked for in one millisecond, the
    /// generator keeps counting from its last id (borrowing the next
    /// millisecond) instead of waiting: ids stay unique and increasing.
    fn next_at(&self, now_ms: u64) -> i64 {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let last_ms = last >> SEQUENCE_BITS;
            let next = if now_ms > last_ms {
                now_ms << SEQUENCE_BITS
            } else if last & SEQUENCE_MAX < SEQUENCE_MAX {
                last + 1
            } else {
                (last_ms + 1) << SEQUENCE_BITS
            };
            match self.last.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return self.compose(next),
                Err(actual) => last = actual,
            }
        }
    }

    fn compose(&self, stamp: u64) -> i64 {
        let ms = stamp >> SEQUENCE_BITS;
        let sequence = stamp & SEQUENCE_MAX;
        let id = (ms << (NODE_BITS + SEQUENCE_BITS)) | (u64::from(self.node_id) << SEQUENCE_BITS) | sequence;
        debug_assert!(id < (1 << 63), "ids must stay positive i64");
        id as i64
    }
}

/// Declares an id newtype: an `i64` inside, a string of digits on the wire.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(i64);

        impl $name {
            pub fn new(value: i64) -> Self {
                Self(value)
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_id(s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A product of the catalog.
    ProductId
);
id_type!(
    /// A payment of an order, with a provider.
    PaymentId
);
id_type!(
    /// A refund of (part of) a payment.
    RefundId
);
id_type!(
    /// A merchant's settlement statement of one day.
    SettlementId
);
id_type!(
    /// A payout of a merchant's closed statements.
    PayoutId
);
id_type!(
    /// A merchant, which is also a tenant.
    MerchantId
);
id_type!(
    /// A customer.
    UserId
);
id_type!(
    /// A flash-sale event.
    SaleId
);
id_type!(
    /// An order; minted at intake, before the order row exists.
    OrderId
);
id_type!(
    /// A courier of the fulfilment context (a token's subject).
    CourierId
);
id_type!(
    /// A buyer's return of a delivered order (after-sale).
    ReturnId
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an id is a string of 1 to 19 digits within a signed 64-bit integer")]
pub struct IdParseError;

/// Only plain ASCII digits: no sign, no spaces, no `+`.
fn parse_id(s: &str) -> Result<i64, IdParseError> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdParseError);
    }
    s.parse().map_err(|_| IdParseError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_increase_within_a_node_even_when_the_clock_stalls_or_runs_back() {
        let ids = IdGenerator::new(7).expect("node id in range");
        let mut previous = 0;
        for now in [5, 5, 5, 4, 3, 9, 9, 2] {
            let id = ids.next_at(now);
            assert!(id > previous, "{id} after {previous}");
            previous = id;
        }
    }

    #[test]
    fn ids_from_two_nodes_never_collide() {
        let a = IdGenerator::new(1).expect("node id in range");
        let b = IdGenerator::new(2).expect("node id in range");
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(a.next_at(42)));
            assert!(seen.insert(b.next_at(42)));
        }
    }

    #[test]
    fn sequence_overflow_borrows_the_next_millisecond() {
        let ids = IdGenerator::new(0).expect("node id in range");
        let all: Vec<i64> = (0..=SEQUENCE_MAX + 1).map(|_| ids.next_at(10)).collect();
        let set: HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
        assert_eq!(all.last().map(|id| (*id as u64) >> (NODE_BITS + SEQUENCE_BITS)), Some(11));
    }

    #[test]
    fn after_resuming_ids_pass_the_largest_stored_one_even_with_the_clock_behind() {
        let before = IdGenerator::new(3).expect("node id in range");
        let stored = before.next_at(1_000);
        let after = IdGenerator::new(3).expect("node id in range");
        after.resume_after(stored);
        assert!(after.next_at(10) > stored);
    }

    #[test]
    fn node_id_is_bounded() {
        assert!(IdGenerator::new(NODE_ID_MAX).is_ok());
        assert!(IdGenerator::new(NODE_ID_MAX + 1).is_err());
    }

    #[test]
    fn ids_parse_only_from_plain_digits() {
        assert_eq!("42".parse::<ProductId>(), Ok(ProductId::new(42)));
        for bad in ["", "-1", "+1", " 1", "1a", "99999999999999999999", "9223372036854775808"] {
            assert!(bad.parse::<ProductId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_travel_as_json_strings() {
        assert_eq!(serde_json::to_string(&ProductId::new(123)).ok(), Some("\"123\"".to_owned()));
        assert_eq!(serde_json::from_str::<ProductId>("\"123\"").ok(), Some(ProductId::new(123)));
        assert!(serde_json::from_str::<ProductId>("123").is_err(), "a bare number is not an id");
    }
}
