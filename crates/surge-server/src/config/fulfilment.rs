//! Fulfilment: the zone map that routes parcels, and dispatch.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use surge_domain::fulfilment::{DispatchMode, ZoneMap};

use super::{ConfigError, MINUTE, ensure};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FulfilmentSettings {
    /// Postcode prefix → zone, the longest prefix winning
    /// (`zones = { "1500" = "harbin-centre" }`). An address no prefix
    /// matches falls in its region's default zone, named like the region.
    pub zones: BTreeMap<String, String>,
    /// Zone → the zones whose couriers take its parcels when none of its
    /// own can, tried in order (`adjacent = { "harbin-centre" = ["harbin-east"] }`).
    pub adjacent: BTreeMap<String, Vec<String>>,
    /// A parcel its courier has not picked up this long after it was
    /// assigned goes to another courier.
    #[serde(with = "humantime_serde")]
    pub pickup_timeout: Duration,
    /// `greedy`: each parcel is assigned as it is packed. `batch`: packed
    /// parcels wait and each dispatch pass plans them all against the
    /// couriers' free slots and writes the plan in a few transactions.
    pub dispatch: DispatchSetting,
    /// How often each node assigns the parcels waiting for a courier and
    /// takes back those not picked up in time.
    #[serde(with = "humantime_serde")]
    pub dispatch_interval: Duration,
}

impl Default for FulfilmentSettings {
    fn default() -> Self {
        Self {
            zones: BTreeMap::new(),
            dispatch: DispatchSetting::Greedy,
            adjacent: BTreeMap::new(),
            pickup_timeout: 30 * MINUTE,
            dispatch_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DispatchSetting {
    Greedy,
    Batch,
}

impl From<DispatchSetting> for DispatchMode {
    fn from(setting: DispatchSetting) -> Self {
        match setting {
            DispatchSetting::Greedy => DispatchMode::Greedy,
            DispatchSetting::Batch => DispatchMode::Batch,
        }
    }
}

fn zone_name(zone: &str) -> bool {
    !zone.is_empty() && zone.len() <= 64 && zone.bytes().all(|b| b.is_ascii_graphic())
}

impl FulfilmentSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.zones.iter().all(|(prefix, zone)| {
                !prefix.is_empty()
                    && prefix.len() <= 16
                    && prefix.bytes().all(|b| b.is_ascii_alphanumeric())
                    && zone_name(zone)
            }),
            "fulfilment.zones",
            "maps postcode prefixes (1-16 letters or digits) to zone names (1-64 visible characters)",
        )?;
        ensure(
            self.adjacent.iter().all(|(zone, neighbours)| zone_name(zone) && neighbours.iter().all(|n| zone_name(n))),
            "fulfilment.adjacent",
            "maps zone names to lists of zone names (1-64 visible characters)",
        )?;
        ensure(self.pickup_timeout >= Duration::from_secs(1), "fulfilment.pickup_timeout", "must be at least 1s")?;
        ensure(
            self.dispatch_interval >= Duration::from_millis(10) && self.dispatch_interval <= 10 * MINUTE,
            "fulfilment.dispatch_interval",
            "must be 10ms-10m",
        )
    }
}

impl From<&FulfilmentSettings> for ZoneMap {
    fn from(settings: &FulfilmentSettings) -> Self {
        let adjacent: HashMap<String, Vec<String>> =
            settings.adjacent.iter().map(|(zone, neighbours)| (zone.clone(), neighbours.clone())).collect();
        ZoneMap::new(settings.zones.iter().map(|(prefix, zone)| (prefix.clone(), zone.clone())), adjacent)
    }
}
