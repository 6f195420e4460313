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
    /// How scans after pickup reach the store.
    pub tracking: TrackingSettings,
}

/// Scans written through (one transaction each) or behind the cache (a
/// durable journal, answered at once, flushed in batches): Hazelcast's
/// and Redisson's write-behind knobs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingSettings {
    pub mode: TrackingMode,
    /// How long the flusher waits when less than a batch is journaled
    /// (Hazelcast's `write-delay-seconds`).
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// Most scans one flush writes (`write-batch-size`); each shipment is
    /// moved once per flush whatever its number of scans (coalescing).
    pub batch: usize,
    /// Most scans journaled and not flushed; past half of it scans slow
    /// down, at it they get 503 `overloaded`.
    pub max_pending: usize,
}

impl Default for TrackingSettings {
    fn default() -> Self {
        Self { mode: TrackingMode::WriteThrough, delay: Duration::from_millis(100), batch: 1_000, max_pending: 100_000 }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TrackingMode {
    WriteThrough,
    /// The documents in the node's memory (embedded mode) or in Redis
    /// (`shared.kind = "redis"`).
    WriteBehind,
}

impl Default for FulfilmentSettings {
    fn default() -> Self {
        Self {
            zones: BTreeMap::new(),
            dispatch: DispatchSetting::Greedy,
            adjacent: BTreeMap::new(),
            pickup_timeout: 30 * MINUTE,
            dispatch_interval: Duration::from_secs(1),
            tracking: TrackingSettings::default(),
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
        )?;
        let tracking = &self.tracking;
        ensure(
            tracking.delay >= Duration::from_millis(1) && tracking.delay <= MINUTE,
            "fulfilment.tracking.delay",
            "must be 1ms-1m",
        )?;
        ensure((1..=10_000).contains(&tracking.batch), "fulfilment.tracking.batch", "must be 1-10000")?;
        ensure(
            (2..=10_000_000).contains(&tracking.max_pending),
            "fulfilment.tracking.max_pending",
            "must be 2-10000000",
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
