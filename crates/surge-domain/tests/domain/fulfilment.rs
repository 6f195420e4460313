//! The fulfilment service: who declares couriers and packs parcels, where
//! a packed parcel goes (greedy at once, or the batch pass), what a scan
//! must be, and who sees a waybill. The store's races are proven against
//! SQLite and PostgreSQL in the store contract; here it is in memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use surge_domain::fulfilment::{
    DispatchMode, Fulfilment, FulfilmentError, NewCourier, Scan, ScanKind, ShipmentStatus, ZoneMap,
};
use surge_domain::order::Address;
use surge_domain::{Actor, Clock, CourierId, InvalidInput, MerchantId, OrderId, Rule, UserId};

use crate::clock::{self, ManualClock};
use crate::memory::MemDepot;
use crate::world::{admin, customer, merchant};

/// Postcodes 15… are zone `north`, 16… `east`; `east` helps `north`.
pub fn zones() -> ZoneMap {
    let prefixes = [("15".to_owned(), "north".to_owned()), ("16".to_owned(), "east".to_owned())];
    ZoneMap::new(prefixes, HashMap::from([("north".to_owned(), vec!["east".to_owned()])]))
}

fn courier(id: i64) -> Actor {
    Actor::Courier(CourierId::new(id))
}

struct Yard {
    depot: Arc<MemDepot>,
    clock: Arc<ManualClock>,
    fulfilment: Fulfilment,
}

impl Yard {
    fn new(mode: DispatchMode) -> Self {
        let (depot, clock) = (Arc::new(MemDepot::default()), Arc::new(clock::paused()));
        let fulfilment = Fulfilment::new(depot.clone(), zones(), clock.clone()).with_mode(mode);
        Self { depot, clock, fulfilment }
    }

    /// Courier `id` of `zone`, on shift, carrying up to `capacity`.
    async fn on_shift(&self, id: i64, zone: &str, capacity: u32) {
        let declared = NewCourier {
            id: CourierId::new(id),
            name: format!("c{id}"),
            region: "hlj".into(),
            zone: zone.into(),
            capacity,
        };
        self.fulfilment.put_courier(&admin(), declared).await.expect("declared");
        self.fulfilment.set_shift(&courier(id), true, zone).await.expect("on shift");
    }

    /// Order `order` of buyer 7 and merchant 3, paid, to `postcode`: its
    /// forward waybill.
    async fn paid(&self, order: i64, postcode: &str) -> String {
        let address = Address::parse("hlj", "Harbin", "1 Main St", postcode, "+86 123").expect("address");
        let opened = self
            .fulfilment
            .open_forward(OrderId::new(order), UserId::new(7), MerchantId::new(3), Some(&address))
            .await
            .expect("opened");
        opened.waybill
    }

    fn scan(&self, kind: ScanKind) -> Scan {
        Scan { kind, at: self.clock.now(), location: "Harbin hub".into(), note: String::new() }
    }
}

#[tokio::test]
async fn only_an_admin_declares_a_courier_and_its_capacity_and_names_are_bounded() {
    let yard = Yard::new(DispatchMode::Greedy);
    let new = |capacity, name: &str| NewCourier {
        id: CourierId::new(1),
        name: name.into(),
        region: "hlj".into(),
        zone: "north".into(),
        capacity,
    };
    assert!(matches!(
        yard.fulfilment.put_courier(&merchant(3), new(5, "Li")).await,
        Err(FulfilmentError::Forbidden(_))
    ));
    let capacity = InvalidInput::new("capacity", Rule::Between { min: 1, max: 1_000 });
    assert_eq!(yard.fulfilment.put_courier(&admin(), new(0, "Li")).await, Err(FulfilmentError::Invalid(capacity)));
    let name = InvalidInput::new("name", Rule::Text { min: 1, max: 64 });
    assert_eq!(yard.fulfilment.put_courier(&admin(), new(5, " ")).await, Err(FulfilmentError::Invalid(name)));
    let declared = yard.fulfilment.put_courier(&admin(), new(5, "Li")).await.expect("declared");
    assert_eq!((declared.capacity, declared.on_shift), (5, false));
    assert!(matches!(yard.fulfilment.set_shift(&admin(), true, "north").await, Err(FulfilmentError::Forbidden(_))));
}

#[tokio::test]
async fn its_merchant_packs_a_parcel_to_the_least_loaded_courier_of_its_zone_then_of_a_neighbour() {
    let yard = Yard::new(DispatchMode::Greedy);
    yard.on_shift(1, "north", 1).await;
    yard.on_shift(2, "east", 5).await;
    let first = yard.paid(1, "150001").await;
    assert_eq!(yard.paid(1, "150001").await, first, "a redelivered event opens nothing new");
    assert_eq!(yard.depot.parcel(&first).zone, "north");

    assert!(matches!(yard.fulfilment.pack(&customer(7), &first).await, Err(FulfilmentError::Forbidden(_))));
    assert_eq!(yard.fulfilment.pack(&merchant(4), &first).await, Err(FulfilmentError::NotFound("shipment")));
    let packed = yard.fulfilment.pack(&merchant(3), &first).await.expect("packed");
    assert_eq!((packed.status, packed.courier_id), (ShipmentStatus::Packed, Some(CourierId::new(1))), "own zone first");
    assert_eq!(yard.fulfilment.pack(&merchant(3), &first).await, Err(FulfilmentError::NotNow(ShipmentStatus::Packed)));

    let second = yard.paid(2, "150002").await;
    let packed = yard.fulfilment.pack(&merchant(3), &second).await.expect("packed");
    assert_eq!(packed.courier_id, Some(CourierId::new(2)), "north is full: its neighbour east takes it");
    let far = yard.paid(3, "990000").await;
    let waiting = yard.fulfilment.pack(&merchant(3), &far).await.expect("packed");
    assert_eq!((waiting.status, waiting.courier_id), (ShipmentStatus::AwaitingCourier, None), "nobody serves it");
}

#[tokio::test]
async fn a_scan_is_its_couriers_within_a_day_and_a_step_the_parcel_can_take_and_only_its_parties_track_it() {
    let yard = Yard::new(DispatchMode::Greedy);
    yard.on_shift(1, "north", 3).await;
    yard.on_shift(2, "north", 3).await;
    let waybill = yard.paid(1, "150001").await;
    let carrier = yard.fulfilment.pack(&merchant(3), &waybill).await.expect("packed").courier_id.expect("assigned");
    let (mine, other) = if carrier == CourierId::new(1) { (courier(1), courier(2)) } else { (courier(2), courier(1)) };

    let scan = |kind| yard.scan(kind);
    let late = Scan { at: yard.clock.now() - Duration::from_secs(2 * 24 * 3600), ..scan(ScanKind::PickedUp) };
    let refused = yard.fulfilment.scan(&mine, &waybill, late).await;
    assert_eq!(
        refused,
        Err(FulfilmentError::Invalid(InvalidInput::new("at", Rule::Must("must be within a day of now"))))
    );
    let noisy = Scan { note: "bell\u{7}".into(), ..scan(ScanKind::PickedUp) };
    assert!(matches!(yard.fulfilment.scan(&mine, &waybill, noisy).await, Err(FulfilmentError::Invalid(_))));
    let nowhere = Scan { location: String::new(), ..scan(ScanKind::PickedUp) };
    assert!(matches!(yard.fulfilment.scan(&mine, &waybill, nowhere).await, Err(FulfilmentError::Invalid(_))));
    assert!(matches!(
        yard.fulfilment.scan(&other, &waybill, scan(ScanKind::PickedUp)).await,
        Err(FulfilmentError::NotFound("shipment"))
    ));
    assert!(matches!(
        yard.fulfilment.scan(&mine, &waybill, scan(ScanKind::Delivered)).await,
        Err(FulfilmentError::IllegalScan(_))
    ));
    assert!(matches!(
        yard.fulfilment.scan(&mine, "SF%00", scan(ScanKind::PickedUp)).await,
        Err(FulfilmentError::NotFound(_))
    ));
    let picked = yard.fulfilment.scan(&mine, &waybill, scan(ScanKind::PickedUp)).await.expect("picked up");
    assert_eq!(picked.status, ShipmentStatus::PickedUp);

    let tracked = yard.fulfilment.tracking(&customer(7), &waybill).await.expect("the buyer tracks it");
    assert_eq!(tracked.events.iter().map(|event| event.kind).collect::<Vec<_>>(), vec![ScanKind::PickedUp]);
    for stranger in [customer(8), merchant(4), other] {
        assert_eq!(yard.fulfilment.tracking(&stranger, &waybill).await, Err(FulfilmentError::NotFound("shipment")));
    }
}

#[tokio::test]
async fn batch_dispatch_leaves_a_packed_parcel_to_the_pass_which_fills_every_free_slot() {
    let yard = Yard::new(DispatchMode::Batch);
    yard.on_shift(1, "north", 1).await;
    yard.on_shift(2, "north", 1).await;
    let mut waybills = Vec::new();
    for order in 1..=3 {
        let waybill = yard.paid(order, "150001").await;
        let packed = yard.fulfilment.pack(&merchant(3), &waybill).await.expect("packed");
        assert_eq!(packed.status, ShipmentStatus::AwaitingCourier, "the pass assigns it");
        waybills.push(waybill);
    }
    assert_eq!(yard.fulfilment.dispatch_waiting(Duration::from_secs(1800)).await, Ok(2));
    let assigned: Vec<Option<CourierId>> =
        waybills.iter().map(|waybill| yard.depot.parcel(waybill).courier_id).collect();
    assert_eq!(assigned.iter().filter(|courier| courier.is_some()).count(), 2);
    assert_eq!((yard.depot.load_of(CourierId::new(1)), yard.depot.load_of(CourierId::new(2))), (1, 1));
    assert_eq!(yard.fulfilment.dispatch_waiting(Duration::from_secs(1800)).await, Ok(0), "nobody has room");
}

#[tokio::test]
async fn parcels_left_by_a_courier_going_off_shift_or_not_picked_up_in_time_go_to_another() {
    let yard = Yard::new(DispatchMode::Greedy);
    yard.on_shift(1, "north", 5).await;
    let waybill = yard.paid(1, "150001").await;
    yard.fulfilment.pack(&merchant(3), &waybill).await.expect("packed");
    yard.on_shift(2, "north", 5).await;
    yard.fulfilment.set_shift(&courier(1), false, "north").await.expect("off shift");
    assert_eq!(yard.depot.parcel(&waybill).courier_id, Some(CourierId::new(2)), "handed back and dispatched again");

    yard.on_shift(1, "north", 5).await;
    yard.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(yard.fulfilment.dispatch_waiting(Duration::from_secs(30 * 60)).await, Ok(1));
    let again = yard.depot.parcel(&waybill);
    assert_eq!(
        (again.status, again.courier_id),
        (ShipmentStatus::Packed, Some(CourierId::new(1))),
        "not picked up in 30 min"
    );
    assert_eq!(yard.depot.load_of(CourierId::new(2)), 0);
}
