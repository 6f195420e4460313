//! Fulfilment, the forward flow: a paid order becomes a shipment with a
//! waybill; the merchant packs it; the dispatcher assigns it to a courier
//! of its zone; the courier's scans move it to the buyer's door.
//!
//! A shipment's state machine is [`ShipmentStatus::scan`]; what moves the
//! order with it (`FULFILLING` when packed, `DELIVERED` at the delivered
//! scan) is written in the same transaction as the shipment, so the two
//! never disagree. Dispatch never assigns a parcel twice nor a courier
//! beyond capacity: both are conditional updates the store makes in one
//! transaction (see [`FulfilmentStore::assign`]).

mod dispatch;
mod ports;
mod service;
mod zones;

pub use dispatch::{DispatchMode, plan};
pub use ports::{FulfilmentStore, JournalScan, NewCourier, NewShipment, ScanOutcome, ScanRefused, TrackingDocs};
pub use service::{Fulfilment, FulfilmentError, MAX_CAPACITY, MAX_NOTE, MAX_TEXT, ShipmentOpener};
pub use zones::ZoneMap;

use serde::Serialize;
use time::OffsetDateTime;

use crate::ids::{CourierId, MerchantId, OrderId, UserId};

/// A courier: works one zone of a region, on shift or not, carrying at
/// most `capacity` parcels that are assigned and not yet delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Courier {
    pub id: CourierId,
    pub name: String,
    pub region: String,
    pub zone: String,
    pub capacity: u32,
    pub on_shift: bool,
    /// Parcels assigned to the courier and not yet delivered.
    pub load: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the merchant to the buyer.
    Forward,
    /// From the buyer back to the merchant's warehouse (after-sale).
    Reverse,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::Reverse => "reverse",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "forward" => Some(Direction::Forward),
            "reverse" => Some(Direction::Reverse),
            _ => None,
        }
    }
}

/// Where a shipment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    /// Made when the order was paid; the merchant has not packed it.
    Created,
    /// Packed; no courier of its zone (or the adjacent ones) can take it
    /// yet. The dispatcher assigns it as soon as one can.
    AwaitingCourier,
    /// Packed and assigned; the courier has not picked it up.
    Packed,
    PickedUp,
    /// At a hub on the way (a parcel may pass several).
    AtHub,
    OutForDelivery,
    Delivered,
    /// The courier could not hand it over; it goes out again.
    DeliveryFailed,
}

/// A courier's scan of a parcel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanKind {
    PickedUp,
    ArrivedHub,
    OutForDelivery,
    Delivered,
    DeliveryFailed,
}

impl ScanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanKind::PickedUp => "picked_up",
            ScanKind::ArrivedHub => "arrived_hub",
            ScanKind::OutForDelivery => "out_for_delivery",
            ScanKind::Delivered => "delivered",
            ScanKind::DeliveryFailed => "delivery_failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "picked_up" => ScanKind::PickedUp,
            "arrived_hub" => ScanKind::ArrivedHub,
            "out_for_delivery" => ScanKind::OutForDelivery,
            "delivered" => ScanKind::Delivered,
            "delivery_failed" => ScanKind::DeliveryFailed,
            _ => return None,
        })
    }
}

/// A scan that does not follow from where the parcel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {} shipment cannot be scanned {}", .from.as_str(), .scan.as_str())]
pub struct IllegalScan {
    pub from: ShipmentStatus,
    pub scan: ScanKind,
}

impl ShipmentStatus {
    /// Where a scan takes the parcel; every legal step, nothing else. A
    /// failed delivery goes out again or back to a hub.
    pub fn scan(self, scan: ScanKind) -> Result<ShipmentStatus, IllegalScan> {
        use ScanKind as K;
        use ShipmentStatus as S;
        let next = match (self, scan) {
            (S::Packed, K::PickedUp) => S::PickedUp,
            (S::PickedUp | S::AtHub | S::DeliveryFailed, K::ArrivedHub) => S::AtHub,
            (S::PickedUp | S::AtHub | S::DeliveryFailed, K::OutForDelivery) => S::OutForDelivery,
            (S::OutForDelivery, K::Delivered) => S::Delivered,
            (S::OutForDelivery, K::DeliveryFailed) => S::DeliveryFailed,
            (from, scan) => return Err(IllegalScan { from, scan }),
        };
        Ok(next)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ShipmentStatus::Created => "created",
            ShipmentStatus::AwaitingCourier => "awaiting_courier",
            ShipmentStatus::Packed => "packed",
            ShipmentStatus::PickedUp => "picked_up",
            ShipmentStatus::AtHub => "at_hub",
            ShipmentStatus::OutForDelivery => "out_for_delivery",
            ShipmentStatus::Delivered => "delivered",
            ShipmentStatus::DeliveryFailed => "delivery_failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "created" => ShipmentStatus::Created,
            "awaiting_courier" => ShipmentStatus::AwaitingCourier,
            "packed" => ShipmentStatus::Packed,
            "picked_up" => ShipmentStatus::PickedUp,
            "at_hub" => ShipmentStatus::AtHub,
            "out_for_delivery" => ShipmentStatus::OutForDelivery,
            "delivered" => ShipmentStatus::Delivered,
            "delivery_failed" => ShipmentStatus::DeliveryFailed,
            _ => return None,
        })
    }
}

/// A parcel on its way, with its waybill number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shipment {
    pub waybill: String,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub merchant_id: MerchantId,
    pub direction: Direction,
    pub status: ShipmentStatus,
    pub courier_id: Option<CourierId>,
    pub region: String,
    pub zone: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Shipment {
    /// The forward waybill of an order: one per order, so an `OrderPaid`
    /// delivered twice cannot make two shipments.
    pub fn forward_waybill(order: OrderId) -> String {
        format!("SF{order}")
    }
}

/// One scan as it is kept and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scan {
    pub kind: ScanKind,
    /// When the courier scanned (the courier's clock, as sent).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub location: String,
    pub note: String,
}

/// A waybill's tracking: where it is and every scan, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tracking {
    pub shipment: Shipment,
    pub events: Vec<Scan>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parcel_goes_from_pickup_to_the_door_and_may_go_out_again() {
        use ScanKind as K;
        let mut status = ShipmentStatus::Packed;
        for scan in [K::PickedUp, K::ArrivedHub, K::ArrivedHub, K::OutForDelivery, K::DeliveryFailed] {
            status = status.scan(scan).expect("legal");
        }
        status = status.scan(K::OutForDelivery).expect("out again");
        assert_eq!(status.scan(K::Delivered), Ok(ShipmentStatus::Delivered));
    }

    #[test]
    fn illegal_scans_are_refused() {
        use ShipmentStatus as S;
        let refused = [
            (S::Created, ScanKind::PickedUp),
            (S::AwaitingCourier, ScanKind::PickedUp),
            (S::Packed, ScanKind::Delivered),
            (S::PickedUp, ScanKind::Delivered),
            (S::PickedUp, ScanKind::PickedUp),
            (S::Delivered, ScanKind::OutForDelivery),
            (S::Delivered, ScanKind::DeliveryFailed),
        ];
        for (from, scan) in refused {
            assert_eq!(from.scan(scan), Err(IllegalScan { from, scan }), "{from:?} then {scan:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for status in [
            ShipmentStatus::Created,
            ShipmentStatus::AwaitingCourier,
            ShipmentStatus::Packed,
            ShipmentStatus::PickedUp,
            ShipmentStatus::AtHub,
            ShipmentStatus::OutForDelivery,
            ShipmentStatus::Delivered,
            ShipmentStatus::DeliveryFailed,
        ] {
            assert_eq!(ShipmentStatus::parse(status.as_str()), Some(status));
        }
        for scan in [ScanKind::PickedUp, ScanKind::ArrivedHub, ScanKind::OutForDelivery, ScanKind::Delivered] {
            assert_eq!(ScanKind::parse(scan.as_str()), Some(scan));
        }
        assert_eq!(ScanKind::parse("teleported"), None);
    }
}
