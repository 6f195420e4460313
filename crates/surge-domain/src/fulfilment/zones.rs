//! Which zone a parcel belongs to, and which zones may serve it.
//!
//! The zone map is settings: postcode prefixes → zone, the longest prefix
//! winning; an address no prefix matches falls in its region's default
//! zone, named like the region. Adjacent zones are tried, in the order
//! listed, when no courier of the parcel's own zone can take it.

use std::collections::HashMap;

use crate::order::Address;

/// Where a parcel with no address goes (a flash-sale order has none).
pub const DEFAULT_REGION: &str = "default";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneMap {
    /// (postcode prefix, zone), longest prefix first.
    prefixes: Vec<(String, String)>,
    adjacent: HashMap<String, Vec<String>>,
}

impl ZoneMap {
    pub fn new(prefixes: impl IntoIterator<Item = (String, String)>, adjacent: HashMap<String, Vec<String>>) -> Self {
        let mut prefixes: Vec<(String, String)> = prefixes.into_iter().collect();
        prefixes.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Self { prefixes, adjacent }
    }

    /// The (region, zone) of a delivery address.
    pub fn locate(&self, address: Option<&Address>) -> (String, String) {
        let Some(address) = address else {
            return (DEFAULT_REGION.to_owned(), DEFAULT_REGION.to_owned());
        };
        let zone = self
            .prefixes
            .iter()
            .find(|(prefix, _)| address.postcode.starts_with(prefix.as_str()))
            .map_or_else(|| address.region.clone(), |(_, zone)| zone.clone());
        (address.region.clone(), zone)
    }

    /// The zones whose parcels a courier of one of `zones` may take: those
    /// zones, and every zone that lists one of them as adjacent.
    pub fn served_by(&self, zones: &[String]) -> Vec<String> {
        let mut served: Vec<String> = zones.to_vec();
        for (zone, neighbours) in &self.adjacent {
            if neighbours.iter().any(|n| zones.contains(n)) {
                served.push(zone.clone());
            }
        }
        served.sort_unstable();
        served.dedup();
        served
    }

    /// The zones whose couriers may take a parcel of `zone`: its own first,
    /// then its neighbours.
    pub fn serving(&self, zone: &str) -> Vec<String> {
        let mut zones = vec![zone.to_owned()];
        if let Some(neighbours) = self.adjacent.get(zone) {
            zones.extend(neighbours.iter().filter(|z| z.as_str() != zone).cloned());
        }
        zones
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(region: &str, postcode: &str) -> Address {
        Address::parse(region, "City", "1 Main St", postcode, "+86 123").expect("address")
    }

    #[test]
    fn the_longest_prefix_wins_and_an_unmatched_address_falls_in_its_region() {
        let map = ZoneMap::new(
            [("15".to_owned(), "north-1".to_owned()), ("1500".to_owned(), "north-centre".to_owned())],
            HashMap::new(),
        );
        assert_eq!(map.locate(Some(&address("north", "150001"))), ("north".into(), "north-centre".into()));
        assert_eq!(map.locate(Some(&address("north", "151000"))), ("north".into(), "north-1".into()));
        assert_eq!(map.locate(Some(&address("south", "510000"))), ("south".into(), "south".into()));
        assert_eq!(map.locate(None), (DEFAULT_REGION.into(), DEFAULT_REGION.into()));
    }

    #[test]
    fn a_zone_is_served_by_itself_then_its_neighbours() {
        let adjacent = HashMap::from([("a".to_owned(), vec!["b".to_owned(), "a".to_owned(), "c".to_owned()])]);
        let map = ZoneMap::new([], adjacent);
        assert_eq!(map.serving("a"), vec!["a", "b", "c"]);
        assert_eq!(map.serving("z"), vec!["z"]);
        assert_eq!(map.served_by(&["c".to_owned()]), vec!["a", "c"], "a's parcels may go to c");
        assert_eq!(map.served_by(&["a".to_owned()]), vec!["a"]);
    }
}
