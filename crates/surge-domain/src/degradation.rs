//! The features an operator, or a breaker, can turn off to their fallback
//! (manual and automatic degradation). The switchboard that holds their
//! state is generic (`surge_guard::switch`); this is the one list of them.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// Off: order notifications are not sent (queued ones are dropped).
    Notification,
    /// Off: flash-sale intake answers 503 `degraded`.
    FlashSaleIntake,
    /// Off: product details are served from the cache only.
    ProductDetailLive,
    /// Off: the order consumer holds back (maintenance of the store); the
    /// queue keeps every accepted request meanwhile.
    OrderConsumer,
}

impl Feature {
    pub const ALL: [Feature; 4] =
        [Feature::Notification, Feature::FlashSaleIntake, Feature::ProductDetailLive, Feature::OrderConsumer];

    /// The switch's name in the admin API, the store and the metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Feature::Notification => "notification",
            Feature::FlashSaleIntake => "flash_sale_intake",
            Feature::ProductDetailLive => "product_detail_live",
            Feature::OrderConsumer => "order_consumer",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|feature| feature.name() == name)
    }
}

impl AsRef<str> for Feature {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_is_found_by_its_name_and_no_two_share_one() {
        for feature in Feature::ALL {
            assert_eq!(Feature::from_name(feature.name()), Some(feature));
        }
        let mut names: Vec<_> = Feature::ALL.iter().map(|feature| feature.name()).collect();
        names.dedup();
        assert_eq!(names.len(), Feature::ALL.len());
        assert_eq!(Feature::from_name("flash_sale"), None);
    }
}
