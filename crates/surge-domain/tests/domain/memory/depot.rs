//! Couriers, shipments and scans in memory, keeping the fulfilment store's
//! contract one caller at a time (the store contract proves it against
//! SQLite and PostgreSQL under races).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use surge_domain::fulfilment::{
    Courier, FulfilmentStore, JournalScan, NewCourier, NewShipment, Scan, ScanOutcome, Shipment, ShipmentStatus,
};
use surge_domain::{CourierId, StoreError};
use time::OffsetDateTime;

use super::lock;

#[derive(Default)]
struct Yard {
    couriers: BTreeMap<CourierId, Courier>,
    /// By waybill, with the order they were opened in.
    shipments: BTreeMap<String, (u64, Shipment)>,
    opened: u64,
    scans: BTreeMap<String, Vec<Scan>>,
}

impl Yard {
    fn waiting(&self) -> Vec<Shipment> {
        let mut waiting: Vec<&(u64, Shipment)> =
            self.shipments.values().filter(|(_, s)| s.status == ShipmentStatus::AwaitingCourier).collect();
        waiting.sort_by_key(|(opened, _)| *opened);
        waiting.into_iter().map(|(_, shipment)| shipment.clone()).collect()
    }

    fn has_room(courier: &Courier) -> bool {
        courier.on_shift && courier.load < courier.capacity
    }

    /// Gives the parcel to `courier` if both still can.
    fn give(&mut self, waybill: &str, courier: CourierId, now: OffsetDateTime) -> Option<Shipment> {
        let taker = self.couriers.get_mut(&courier).filter(|c| Self::has_room(c))?;
        let (_, shipment) =
            self.shipments.get_mut(waybill).filter(|(_, s)| s.status == ShipmentStatus::AwaitingCourier)?;
        taker.load += 1;
        (shipment.status, shipment.courier_id, shipment.updated_at) = (ShipmentStatus::Packed, Some(courier), now);
        Some(shipment.clone())
    }

    /// Parcels of `courier` (or all) assigned and not picked up go back.
    fn hand_back(&mut self, matches: impl Fn(&Shipment) -> bool, now: OffsetDateTime) -> Vec<String> {
        let mut back = Vec::new();
        for (_, shipment) in self.shipments.values_mut() {
            if shipment.status == ShipmentStatus::Packed && matches(shipment) {
                if let Some(courier) = shipment.courier_id.and_then(|id| self.couriers.get_mut(&id)) {
                    courier.load -= 1;
                }
                (shipment.status, shipment.courier_id, shipment.updated_at) =
                    (ShipmentStatus::AwaitingCourier, None, now);
                back.push(shipment.waybill.clone());
            }
        }
        back
    }
}

#[derive(Default)]
pub struct MemDepot(Mutex<Yard>);

impl MemDepot {
    pub fn parcel(&self, waybill: &str) -> Shipment {
        lock(&self.0).shipments[waybill].1.clone()
    }

    /// Moves a parcel as the steps a test skips would have (a delivery).
    pub fn set_status(&self, waybill: &str, status: ShipmentStatus, now: OffsetDateTime) {
        if let Some((_, shipment)) = lock(&self.0).shipments.get_mut(waybill) {
            (shipment.status, shipment.updated_at) = (status, now);
        }
    }

    pub fn load_of(&self, courier: CourierId) -> u32 {
        lock(&self.0).couriers[&courier].load
    }
}

#[async_trait]
impl FulfilmentStore for MemDepot {
    async fn put_courier(&self, courier: &NewCourier, now: OffsetDateTime) -> Result<Courier, StoreError> {
        let mut yard = lock(&self.0);
        let (on_shift, load) = yard.couriers.get(&courier.id).map_or((false, 0), |c| (c.on_shift, c.load));
        let NewCourier { id, name, region, zone, capacity } = courier.clone();
        let stored = Courier { id, name, region, zone, capacity, on_shift, load, updated_at: now };
        yard.couriers.insert(id, stored.clone());
        Ok(stored)
    }

    async fn courier(&self, id: CourierId) -> Result<Option<Courier>, StoreError> {
        Ok(lock(&self.0).couriers.get(&id).cloned())
    }

    async fn set_shift(
        &self,
        id: CourierId,
        on_shift: bool,
        zone: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(Courier, Vec<String>)>, StoreError> {
        let mut yard = lock(&self.0);
        let Some(courier) = yard.couriers.get_mut(&id) else { return Ok(None) };
        (courier.on_shift, courier.zone, courier.updated_at) = (on_shift, zone.to_owned(), now);
        let released = if on_shift { Vec::new() } else { yard.hand_back(|s| s.courier_id == Some(id), now) };
        Ok(Some((yard.couriers[&id].clone(), released)))
    }

    async fn open_shipment(&self, shipment: &NewShipment, now: OffsetDateTime) -> Result<Shipment, StoreError> {
        let mut yard = lock(&self.0);
        if let Some((_, open)) = yard.shipments.get(&shipment.waybill) {
            return Ok(open.clone());
        }
        let NewShipment { waybill, order_id, user_id, merchant_id, direction, region, zone } = shipment.clone();
        let status = ShipmentStatus::Created;
        let opened = Shipment {
            waybill,
            order_id,
            user_id,
            merchant_id,
            direction,
            status,
            courier_id: None,
            region,
            zone,
            created_at: now,
            updated_at: now,
        };
        yard.opened += 1;
        let order = yard.opened;
        yard.shipments.insert(opened.waybill.clone(), (order, opened.clone()));
        Ok(opened)
    }

    async fn shipment(&self, waybill: &str) -> Result<Option<Shipment>, StoreError> {
        Ok(lock(&self.0).shipments.get(waybill).map(|(_, shipment)| shipment.clone()))
    }

    async fn pack(&self, waybill: &str, now: OffsetDateTime) -> Result<Option<Shipment>, StoreError> {
        let mut yard = lock(&self.0);
        let Some((_, shipment)) = yard.shipments.get_mut(waybill).filter(|(_, s)| s.status == ShipmentStatus::Created)
        else {
            return Ok(None);
        };
        (shipment.status, shipment.updated_at) = (ShipmentStatus::AwaitingCourier, now);
        Ok(Some(shipment.clone()))
    }

    async fn assign(
        &self,
        waybill: &str,
        zones: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<Shipment>, StoreError> {
        let mut yard = lock(&self.0);
        for zone in zones {
            let taker = yard
                .couriers
                .values()
                .filter(|c| &c.zone == zone && Yard::has_room(c))
                .min_by_key(|c| (c.load, c.id))
                .map(|c| c.id);
            if let Some(courier) = taker {
                return Ok(yard.give(waybill, courier, now));
            }
        }
        Ok(None)
    }

    async fn assign_many(
        &self,
        plan: &[(String, CourierId)],
        now: OffsetDateTime,
    ) -> Result<Vec<Shipment>, StoreError> {
        let mut yard = lock(&self.0);
        Ok(plan.iter().filter_map(|(waybill, courier)| yard.give(waybill, *courier, now)).collect())
    }

    async fn couriers_with_room(&self, zones: &[String]) -> Result<Vec<Courier>, StoreError> {
        let yard = lock(&self.0);
        Ok(yard.couriers.values().filter(|c| zones.contains(&c.zone) && Yard::has_room(c)).cloned().collect())
    }

    async fn awaiting(&self, limit: u32) -> Result<Vec<Shipment>, StoreError> {
        Ok(lock(&self.0).waiting().into_iter().take(limit as usize).collect())
    }

    async fn awaiting_in(&self, zones: &[String], limit: u32) -> Result<Vec<Shipment>, StoreError> {
        let waiting = lock(&self.0).waiting();
        Ok(waiting.into_iter().filter(|s| zones.contains(&s.zone)).take(limit as usize).collect())
    }

    async fn zones_with_room(&self) -> Result<Vec<String>, StoreError> {
        let yard = lock(&self.0);
        let mut zones: Vec<String> =
            yard.couriers.values().filter(|c| Yard::has_room(c)).map(|c| c.zone.clone()).collect();
        zones.sort_unstable();
        zones.dedup();
        Ok(zones)
    }

    async fn release_stale(
        &self,
        assigned_before: OffsetDateTime,
        _limit: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError> {
        Ok(lock(&self.0).hand_back(|s| s.updated_at < assigned_before, now))
    }

    async fn scan(
        &self,
        waybill: &str,
        courier: CourierId,
        scan: &Scan,
        now: OffsetDateTime,
    ) -> Result<ScanOutcome, StoreError> {
        let mut yard = lock(&self.0);
        let Some((_, shipment)) = yard.shipments.get_mut(waybill) else { return Ok(ScanOutcome::NotFound) };
        if shipment.courier_id != Some(courier) {
            return Ok(ScanOutcome::NotAssigned);
        }
        let next = match shipment.status.scan(scan.kind) {
            Ok(next) => next,
            Err(illegal) => return Ok(ScanOutcome::Illegal(illegal)),
        };
        (shipment.status, shipment.updated_at) = (next, now);
        let moved = shipment.clone();
        if next == ShipmentStatus::Delivered
            && let Some(carrier) = yard.couriers.get_mut(&courier)
        {
            carrier.load -= 1;
        }
        yard.scans.entry(waybill.to_owned()).or_default().push(scan.clone());
        Ok(ScanOutcome::Applied(moved))
    }

    async fn tasks(&self, courier: CourierId) -> Result<Vec<Shipment>, StoreError> {
        let yard = lock(&self.0);
        let mine = yard.shipments.values().map(|(_, s)| s);
        Ok(mine.filter(|s| s.courier_id == Some(courier) && s.status != ShipmentStatus::Delivered).cloned().collect())
    }

    async fn scans(&self, waybill: &str) -> Result<Vec<Scan>, StoreError> {
        Ok(lock(&self.0).scans.get(waybill).cloned().unwrap_or_default())
    }

    async fn last_scan_seq(&self, waybill: &str) -> Result<i64, StoreError> {
        Ok(lock(&self.0).scans.get(waybill).map_or(0, |scans| scans.len() as i64))
    }

    async fn flush_scans(&self, _scans: &[JournalScan], _now: OffsetDateTime) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("these tests write scans through".into()))
    }
}
