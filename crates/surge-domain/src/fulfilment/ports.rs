//! What fulfilment needs from a store.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{Courier, Direction, IllegalScan, Scan, Shipment, ShipmentStatus};
use crate::ids::{CourierId, MerchantId, OrderId, UserId};
use crate::store::StoreError;

/// A courier as the admin declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCourier {
    pub id: CourierId,
    pub name: String,
    pub region: String,
    pub zone: String,
    pub capacity: u32,
}

/// A shipment to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewShipment {
    pub waybill: String,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub merchant_id: MerchantId,
    pub direction: Direction,
    pub region: String,
    pub zone: String,
}

/// What a scan did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    /// Written; the shipment as it is now.
    Applied(Shipment),
    NotFound,
    /// The parcel is not assigned to this courier.
    NotAssigned,
    Illegal(IllegalScan),
}

/// A scan taken behind the cache (write-behind): what the journal keeps
/// and the flusher writes to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalScan {
    pub waybill: String,
    pub courier: CourierId,
    /// Its place in the waybill's timeline (1, 2, ...): a scan written
    /// twice (a replay) is written once.
    pub seq: i64,
    pub scan: Scan,
    /// Where the scan took the parcel.
    pub to: ShipmentStatus,
    /// When it was taken.
    pub recorded_at: OffsetDateTime,
}

/// Why a scan was not taken behind the cache.
#[derive(Debug)]
pub enum ScanRefused {
    /// Too many scans wait to be written to the store.
    Overloaded,
    Unavailable(StoreError),
}

impl From<StoreError> for ScanRefused {
    fn from(error: StoreError) -> Self {
        ScanRefused::Unavailable(error)
    }
}

/// Parcels' tracking documents held in front of the store, their scans
/// written behind it (write-behind; see the store's `WriteBehind`).
#[async_trait]
pub trait TrackingDocs: Send + Sync + 'static {
    /// Takes `courier`'s scan of a picked-up parcel; answered once it is
    /// durable, before the store holds it.
    async fn scan(
        &self,
        waybill: &str,
        courier: CourierId,
        scan: &Scan,
        now: OffsetDateTime,
    ) -> Result<ScanOutcome, ScanRefused>;

    /// The parcel's shipment as its scans left it, when some may not be in
    /// the store yet (else the store's is current). Read it before the
    /// store's row: a flush in between then hides nothing.
    async fn shipment(&self, waybill: &str) -> Result<Option<Shipment>, StoreError>;

    /// `courier`'s parcels not yet delivered: the store's, each as its
    /// scans left it.
    async fn tasks(&self, courier: CourierId) -> Result<Vec<Shipment>, StoreError>;

    /// The parcel's scans not yet in the store, with their `seq`. Read them
    /// before the store's: a flush in between then hides nothing.
    async fn unflushed(&self, waybill: &str) -> Result<Vec<(i64, Scan)>, StoreError>;
}

#[async_trait]
pub trait FulfilmentStore: Send + Sync + 'static {
    /// Declares a courier or changes its name, region, zone and capacity;
    /// its shift and load stay.
    async fn put_courier(&self, courier: &NewCourier, now: OffsetDateTime) -> Result<Courier, StoreError>;

    async fn courier(&self, id: CourierId) -> Result<Option<Courier>, StoreError>;

    /// Puts the courier on or off shift in `zone`. Going off shift, the
    /// parcels assigned to it and not yet picked up go back to
    /// `awaiting_courier` and its load drops by as many, in the same
    /// transaction: the courier and those parcels' waybills.
    async fn set_shift(
        &self,
        id: CourierId,
        on_shift: bool,
        zone: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(Courier, Vec<String>)>, StoreError>;

    /// Opens the shipment, or returns the one already open under its
    /// waybill (a redelivered event opens nothing new).
    async fn open_shipment(&self, shipment: &NewShipment, now: OffsetDateTime) -> Result<Shipment, StoreError>;

    async fn shipment(&self, waybill: &str) -> Result<Option<Shipment>, StoreError>;

    /// Packs a `created` shipment (it becomes `awaiting_courier`) and, for
    /// the order's own forward parcel, moves the order `PAID → FULFILLING`,
    /// in one transaction; `None` when the shipment is not `created` any
    /// more (or that order is not paid).
    async fn pack(&self, waybill: &str, now: OffsetDateTime) -> Result<Option<Shipment>, StoreError>;

    /// Assigns an `awaiting_courier` parcel to an on-shift courier of the
    /// first of `zones` that has one with spare capacity, least loaded
    /// first, in one transaction whose updates are conditional (the parcel
    /// still unassigned, the courier still on shift and under capacity):
    /// no parcel is assigned twice and no courier goes over capacity,
    /// whatever runs at the same time on any node. `None` when nobody can
    /// take it now or it is not waiting any more.
    async fn assign(
        &self,
        waybill: &str,
        zones: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<Shipment>, StoreError>;

    /// Writes a dispatch plan in one transaction (a few hundred per
    /// commit): each (parcel, courier) by the same two conditional updates
    /// as [`FulfilmentStore::assign`], so a pair whose courier is full or
    /// off shift by now, or whose parcel another node assigned, is skipped.
    /// The parcels assigned.
    async fn assign_many(&self, plan: &[(String, CourierId)], now: OffsetDateTime)
    -> Result<Vec<Shipment>, StoreError>;

    /// The on-shift couriers of `zones` with room for another parcel.
    async fn couriers_with_room(&self, zones: &[String]) -> Result<Vec<Courier>, StoreError>;

    /// Parcels waiting for a courier, oldest first.
    async fn awaiting(&self, limit: u32) -> Result<Vec<Shipment>, StoreError>;

    /// Parcels of `zones` waiting for a courier, oldest first.
    async fn awaiting_in(&self, zones: &[String], limit: u32) -> Result<Vec<Shipment>, StoreError>;

    /// The zones with an on-shift courier who has room.
    async fn zones_with_room(&self) -> Result<Vec<String>, StoreError>;

    /// Parcels assigned before `assigned_before` and still not picked up go
    /// back to `awaiting_courier`, their couriers' loads down by as many:
    /// their waybills.
    async fn release_stale(
        &self,
        assigned_before: OffsetDateTime,
        limit: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError>;

    /// Applies `courier`'s scan in one transaction: the parcel must be
    /// assigned to it and the step legal; the scan is appended to the
    /// waybill's timeline and the shipment moves. At `delivered` the order
    /// goes `FULFILLING → DELIVERED` and the courier's load drops.
    async fn scan(
        &self,
        waybill: &str,
        courier: CourierId,
        scan: &Scan,
        now: OffsetDateTime,
    ) -> Result<ScanOutcome, StoreError>;

    /// The courier's parcels not yet delivered, oldest first.
    async fn tasks(&self, courier: CourierId) -> Result<Vec<Shipment>, StoreError>;

    /// The waybill's scans, in the order they were written.
    async fn scans(&self, waybill: &str) -> Result<Vec<Scan>, StoreError>;

    /// The `seq` of the waybill's last scan written (0: none).
    async fn last_scan_seq(&self, waybill: &str) -> Result<i64, StoreError>;

    /// Writes scans taken behind the cache, in one transaction: each scan
    /// once (by waybill and `seq`; a replay writes nothing twice) with its
    /// `parcel_scanned` event; each shipment moved once, to its last scan's
    /// status (coalesced); a parcel that reaches `delivered` here frees its
    /// courier's slot and moves its order (or return) as the delivered scan
    /// does when written through.
    async fn flush_scans(&self, scans: &[JournalScan], now: OffsetDateTime) -> Result<(), StoreError>;
}
