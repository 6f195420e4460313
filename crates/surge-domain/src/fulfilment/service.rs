//! Fulfilment use cases: couriers and their shifts, opening a shipment
//! when an order is paid, packing, dispatch, scans and tracking.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use super::ports::{FulfilmentStore, NewCourier, NewShipment, ScanOutcome, ScanRefused, TrackingDocs};
use super::{
    Courier, Direction, DispatchMode, IllegalScan, Scan, ScanKind, Shipment, ShipmentStatus, Tracking, ZoneMap, plan,
};
use crate::actor::Actor;
use crate::clock::Clock;
use crate::ids::{CourierId, MerchantId, OrderId, UserId};
use crate::input::{InvalidInput, Rule};
use crate::order::{Address, OrderStore};
use crate::outbox::{DomainEvent, EventHandler, EventRecord};
use crate::store::StoreError;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FulfilmentError {
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    /// The step does not start where the shipment is (packing needs a
    /// `created` one).
    #[error("the shipment is {}", .0.as_str())]
    NotNow(ShipmentStatus),
    /// Another request moved the shipment first.
    #[error("the shipment changed meanwhile; read it again")]
    ChangedMeanwhile,
    #[error(transparent)]
    IllegalScan(#[from] IllegalScan),
    #[error("{0}")]
    Invalid(InvalidInput),
    /// Too many scans wait for the write-behind flusher.
    #[error("too many scans wait to be written; retry shortly")]
    Overloaded,
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

/// Longest name, region, zone or scan location.
pub const MAX_TEXT: usize = 64;
/// Most parcels one courier carries.
pub const MAX_CAPACITY: u32 = 1_000;
/// Longest scan note.
pub const MAX_NOTE: usize = 500;
/// Parcels one batch pass plans.
const BATCH_PLAN: u32 = 20_000;
/// Parcels one greedy pass looks at.
const DISPATCH_BATCH: u32 = 500;

/// `value` as given, if it is 1-64 printable characters, not all blank.
fn text(field: &'static str, value: &str) -> Result<String, FulfilmentError> {
    if value.trim().is_empty() || value.chars().count() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(FulfilmentError::Invalid(InvalidInput::new(field, Rule::Text { min: 1, max: MAX_TEXT })));
    }
    Ok(value.to_owned())
}

/// What a waybill looks like (`SF` and the order id): anything else names
/// no shipment and is not looked up (a database may refuse odd text, such
/// as a NUL, with an error rather than "no row").
fn is_waybill(waybill: &str) -> bool {
    let bytes = waybill.as_bytes();
    (3..=21).contains(&bytes.len())
        && bytes[..2].iter().all(u8::is_ascii_uppercase)
        && bytes[2..].iter().all(u8::is_ascii_digit)
}

pub struct Fulfilment {
    store: Arc<dyn FulfilmentStore>,
    zones: ZoneMap,
    clock: Arc<dyn Clock>,
    mode: DispatchMode,
    /// Scans after pickup written behind the cache, when set.
    behind: Option<Arc<dyn TrackingDocs>>,
}

impl Fulfilment {
    pub fn new(store: Arc<dyn FulfilmentStore>, zones: ZoneMap, clock: Arc<dyn Clock>) -> Self {
        Self { store, zones, clock, mode: DispatchMode::Greedy, behind: None }
    }

    /// Writes scans after pickup behind the cache (see [`TrackingDocs`]).
    pub fn with_write_behind(self, behind: Arc<dyn TrackingDocs>) -> Self {
        Self { behind: Some(behind), ..self }
    }

    /// The shipment `waybill` as its scans left it (the document written
    /// behind, read before the store's row), if it exists.
    async fn current(&self, waybill: &str) -> Result<Option<Shipment>, StoreError> {
        let written_behind = match &self.behind {
            Some(behind) => behind.shipment(waybill).await?,
            None => None,
        };
        let stored = self.store.shipment(waybill).await?;
        Ok(written_behind.or(stored))
    }

    /// Dispatch in `mode` (greedy by default).
    pub fn with_mode(self, mode: DispatchMode) -> Self {
        Self { mode, ..self }
    }

    /// Declares or changes a courier (admin).
    pub async fn put_courier(&self, actor: &Actor, courier: NewCourier) -> Result<Courier, FulfilmentError> {
        if !actor.is_admin() {
            return Err(FulfilmentError::Forbidden("only an admin declares couriers"));
        }
        if courier.capacity == 0 || courier.capacity > MAX_CAPACITY {
            let rule = Rule::Between { min: 1, max: i64::from(MAX_CAPACITY) };
            return Err(FulfilmentError::Invalid(InvalidInput::new("capacity", rule)));
        }
        let courier = NewCourier {
            name: text("name", &courier.name)?,
            region: text("region", &courier.region)?,
            zone: text("zone", &courier.zone)?,
            ..courier
        };
        Ok(self.store.put_courier(&courier, self.clock.now()).await?)
    }

    fn courier_of(actor: &Actor) -> Result<CourierId, FulfilmentError> {
        match actor {
            Actor::Courier(id) => Ok(*id),
            _ => Err(FulfilmentError::Forbidden("couriers only")),
        }
    }

    /// The calling courier goes on or off shift in `zone`; parcels it had
    /// not picked up when going off are dispatched again.
    pub async fn set_shift(&self, actor: &Actor, on_shift: bool, zone: &str) -> Result<Courier, FulfilmentError> {
        let id = Self::courier_of(actor)?;
        let zone = text("zone", zone)?;
        let (courier, released) = self
            .store
            .set_shift(id, on_shift, &zone, self.clock.now())
            .await?
            .ok_or(FulfilmentError::NotFound("courier"))?;
        if self.mode == DispatchMode::Greedy {
            for waybill in released {
                let dispatched = match self.store.shipment(&waybill).await {
                    Ok(Some(shipment)) => self.dispatch(&shipment).await.map(|_| ()),
                    Ok(None) => Ok(()),
                    Err(error) => Err(error),
                };
                if let Err(error) = dispatched {
                    tracing::warn!(%error, %waybill, "handed back; dispatch left to the next pass");
                }
            }
        }
        Ok(courier)
    }

    /// The calling courier's parcels not yet delivered.
    pub async fn tasks(&self, actor: &Actor) -> Result<Vec<Shipment>, FulfilmentError> {
        let courier = Self::courier_of(actor)?;
        Ok(match &self.behind {
            Some(behind) => behind.tasks(courier).await?,
            None => self.store.tasks(courier).await?,
        })
    }

    /// May `actor` see this shipment? Its buyer, its merchant, the courier
    /// it is assigned to, an admin. Others get `NotFound`: waybills are
    /// guessable.
    fn visible(actor: &Actor, shipment: &Shipment) -> bool {
        match actor {
            Actor::Admin(_) => true,
            Actor::Customer(user) => shipment.user_id == *user,
            Actor::Merchant(merchant) => shipment.merchant_id == *merchant,
            Actor::Courier(courier) => shipment.courier_id == Some(*courier),
        }
    }

    async fn visible_shipment(&self, actor: &Actor, waybill: &str) -> Result<Shipment, FulfilmentError> {
        if !is_waybill(waybill) {
            return Err(FulfilmentError::NotFound("shipment"));
        }
        match self.current(waybill).await? {
            Some(shipment) if Self::visible(actor, &shipment) => Ok(shipment),
            _ => Err(FulfilmentError::NotFound("shipment")),
        }
    }

    /// The forward shipment of an order (made when it was paid).
    pub async fn shipment_of_order(&self, actor: &Actor, order: OrderId) -> Result<Shipment, FulfilmentError> {
        match self.current(&Shipment::forward_waybill(order)).await? {
            Some(shipment) if Self::visible(actor, &shipment) => Ok(shipment),
            _ => Err(FulfilmentError::NotFound("shipment")),
        }
    }

    /// The merchant packs its parcel: the order is `FULFILLING` and the
    /// parcel is assigned to a courier, or waits for one.
    pub async fn pack(&self, actor: &Actor, waybill: &str) -> Result<Shipment, FulfilmentError> {
        let shipment = self.visible_shipment(actor, waybill).await?;
        if !matches!(actor, Actor::Merchant(merchant) if *merchant == shipment.merchant_id) {
            return Err(FulfilmentError::Forbidden("only the order's merchant packs it"));
        }
        if shipment.status != ShipmentStatus::Created {
            return Err(FulfilmentError::NotNow(shipment.status));
        }
        let packed = self.store.pack(waybill, self.clock.now()).await?.ok_or(FulfilmentError::ChangedMeanwhile)?;
        if self.mode == DispatchMode::Batch {
            // The next batch pass assigns it.
            return Ok(packed);
        }
        // Packed is written: a failed dispatch leaves it to the next pass
        // rather than failing a request whose change went through.
        match self.dispatch(&packed).await {
            Ok(assigned) => Ok(assigned.unwrap_or(packed)),
            Err(error) => {
                tracing::warn!(%error, waybill = %packed.waybill, "packed; dispatch left to the next pass");
                Ok(packed)
            }
        }
    }

    /// Assigns a waiting parcel to a courier of its zone or the adjacent
    /// ones; `None` when nobody can take it yet.
    async fn dispatch(&self, shipment: &Shipment) -> Result<Option<Shipment>, StoreError> {
        let zones = self.zones.serving(&shipment.zone);
        self.store.assign(&shipment.waybill, &zones, self.clock.now()).await
    }

    /// Assigns the waiting parcel `waybill` now when dispatch is greedy;
    /// in batch mode the next pass plans it.
    pub async fn dispatch_now(&self, waybill: &str) -> Result<(), StoreError> {
        if self.mode == DispatchMode::Batch {
            return Ok(());
        }
        if let Some(shipment) = self.store.shipment(waybill).await? {
            self.dispatch(&shipment).await?;
        }
        Ok(())
    }

    /// One dispatch pass: parcels assigned longer than `pickup_timeout` ago
    /// and not picked up are taken back, then waiting parcels are assigned
    /// where capacity is free. How many were assigned.
    pub async fn dispatch_waiting(&self, pickup_timeout: Duration) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let released = self.store.release_stale(now - pickup_timeout, DISPATCH_BATCH, now).await?;
        if !released.is_empty() {
            tracing::warn!(parcels = released.len(), "parcels not picked up in time go to another courier");
        }
        match self.mode {
            DispatchMode::Greedy => {
                let mut assigned = 0;
                let zones = self.servable().await?;
                if zones.is_empty() {
                    return Ok(0);
                }
                for shipment in self.store.awaiting_in(&zones, DISPATCH_BATCH).await? {
                    if self.dispatch(&shipment).await?.is_some() {
                        assigned += 1;
                    }
                }
                Ok(assigned)
            }
            DispatchMode::Batch => self.dispatch_batch(BATCH_PLAN).await,
        }
    }

    /// The zones whose waiting parcels some courier could take now: a pass
    /// looks only at those, so a backlog nobody can carry (a zone with no
    /// courier on shift) never hides the parcels behind it.
    async fn servable(&self) -> Result<Vec<String>, StoreError> {
        let room = self.store.zones_with_room().await?;
        Ok(self.zones.served_by(&room))
    }

    /// Plans up to `limit` waiting parcels, oldest first, against the free
    /// slots of the couriers who may take them, and writes the plan: how
    /// many were assigned.
    pub async fn dispatch_batch(&self, limit: u32) -> Result<usize, StoreError> {
        let servable = self.servable().await?;
        if servable.is_empty() {
            return Ok(0);
        }
        let parcels = self.store.awaiting_in(&servable, limit).await?;
        if parcels.is_empty() {
            return Ok(0);
        }
        let mut zones: Vec<String> = parcels.iter().flat_map(|parcel| self.zones.serving(&parcel.zone)).collect();
        zones.sort_unstable();
        zones.dedup();
        let couriers = self.store.couriers_with_room(&zones).await?;
        let planned = plan(&parcels, &couriers, &self.zones);
        if planned.is_empty() {
            return Ok(0);
        }
        Ok(self.store.assign_many(&planned, self.clock.now()).await?.len())
    }

    /// The assigned courier scans its parcel.
    pub async fn scan(&self, actor: &Actor, waybill: &str, scan: Scan) -> Result<Shipment, FulfilmentError> {
        let courier = Self::courier_of(actor)?;
        if !is_waybill(waybill) {
            return Err(FulfilmentError::NotFound("shipment"));
        }
        let now = self.clock.now();
        if (scan.at - now).abs() > time::Duration::days(1) {
            return Err(FulfilmentError::Invalid(InvalidInput::new("at", Rule::Must("must be within a day of now"))));
        }
        if scan.note.chars().count() > MAX_NOTE || scan.note.chars().any(char::is_control) {
            return Err(FulfilmentError::Invalid(InvalidInput::new("note", Rule::Text { min: 0, max: MAX_NOTE })));
        }
        let scan = Scan { location: text("location", &scan.location)?, ..scan };
        let outcome = match &self.behind {
            // Pickup is written through: the store's dispatch races it.
            Some(behind) if scan.kind != ScanKind::PickedUp => {
                behind.scan(waybill, courier, &scan, now).await.map_err(|refused| match refused {
                    ScanRefused::Overloaded => FulfilmentError::Overloaded,
                    ScanRefused::Unavailable(cause) => FulfilmentError::Unavailable(cause),
                })?
            }
            _ => self.store.scan(waybill, courier, &scan, now).await?,
        };
        match outcome {
            ScanOutcome::Applied(shipment) => Ok(shipment),
            ScanOutcome::NotFound => Err(FulfilmentError::NotFound("shipment")),
            // As for an unknown waybill: waybills are guessable, and a
            // courier learns nothing of parcels that are not its own.
            ScanOutcome::NotAssigned => Err(FulfilmentError::NotFound("shipment")),
            ScanOutcome::Illegal(illegal) => Err(FulfilmentError::IllegalScan(illegal)),
        }
    }

    /// Opens a paid order's forward shipment in the zone of its address.
    /// The waybill is the order's, so opening it again opens nothing new.
    pub async fn open_forward(
        &self,
        order_id: OrderId,
        user_id: UserId,
        merchant_id: MerchantId,
        address: Option<&Address>,
    ) -> Result<Shipment, StoreError> {
        let (region, zone) = self.zones.locate(address);
        let shipment = NewShipment {
            waybill: Shipment::forward_waybill(order_id),
            order_id,
            user_id,
            merchant_id,
            direction: Direction::Forward,
            region,
            zone,
        };
        self.store.open_shipment(&shipment, self.clock.now()).await
    }

    /// The waybill's tracking, for its buyer, merchant, courier or an admin.
    pub async fn tracking(&self, actor: &Actor, waybill: &str) -> Result<Tracking, FulfilmentError> {
        let shipment = self.visible_shipment(actor, waybill).await?;
        // The scans not yet in the store are read first: a flush between
        // the two reads hides nothing (the store then has them).
        let unflushed = match &self.behind {
            Some(behind) => behind.unflushed(waybill).await?,
            None => Vec::new(),
        };
        let mut events = self.store.scans(waybill).await?;
        let stored = events.len() as i64;
        events.extend(unflushed.into_iter().filter(|(seq, _)| *seq > stored).map(|(_, scan)| scan));
        Ok(Tracking { shipment, events })
    }
}

/// Opens the forward shipment of every paid order (the `fulfilment`
/// consumer of the outbox), through the context's own service.
pub struct ShipmentOpener {
    pub fulfilment: Arc<Fulfilment>,
    pub orders: Arc<dyn OrderStore>,
}

#[async_trait]
impl EventHandler for ShipmentOpener {
    fn consumer(&self) -> &'static str {
        "fulfilment"
    }

    fn wants(&self, event: &DomainEvent) -> bool {
        matches!(event, DomainEvent::OrderPaid { .. })
    }

    async fn apply(&self, record: &EventRecord) -> Result<(), StoreError> {
        let DomainEvent::OrderPaid { order_id, user_id, merchant_id, .. } = record.event else {
            return Ok(());
        };
        let address = self.orders.get(order_id).await?.and_then(|order| order.address);
        self.fulfilment.open_forward(order_id, user_id, merchant_id, address.as_ref()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_waybill;

    #[test]
    fn only_waybill_shaped_text_is_looked_up() {
        assert!(is_waybill("SF253230957300023296"));
        for odd in ["", "SF", "sf1", "S1", "SF1a", "SF\u{0}", "aé1", "SF12345678901234567890"] {
            assert!(!is_waybill(odd), "{odd:?}");
        }
    }
}
