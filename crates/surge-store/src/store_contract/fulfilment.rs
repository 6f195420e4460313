//! Fulfilment's part of the store contract: dispatch racing on several
//! handles (nodes) assigns each parcel once and never takes a courier over
//! capacity; going off shift and the pick-up timeout give parcels back;
//! scans follow the shipment's state machine, only by its courier, and
//! the delivered scan moves the order. On SQLite and on PostgreSQL.

use std::collections::HashMap;

use surge_domain::fulfilment::{
    Courier, Direction, FulfilmentStore, JournalScan, NewCourier, NewShipment, Scan, ScanKind, ScanOutcome, Shipment,
    ShipmentStatus, ZoneMap, plan,
};
use surge_domain::order::{Order, OrderStatus, OrderStore};
use surge_domain::{CourierId, OrderId};

use super::inventory::{line, order, placed_order, product};
use super::{Backend, PgBackend, SqliteBackend, Store, at_ms, now_ms};

contract!(
    racing_dispatchers_assign_each_parcel_once_and_no_courier_over_capacity,
    scans_follow_the_parcel_only_by_its_courier_and_delivery_moves_the_order,
    parcels_not_picked_up_in_time_or_left_by_a_courier_going_off_go_back,
    racing_batch_plans_assign_each_parcel_once_and_no_courier_over_capacity,
    greedy_and_batch_nodes_and_a_courier_leaving_race_without_deadlock_or_a_parcel_twice,
    a_late_replay_of_older_scans_writes_nothing_twice_and_moves_no_shipment_back,
);

/// Order `i` of merchant 1 (product 1, one unit), paid.
async fn paid<S: Store>(store: &S, i: i64) -> Order {
    let placed = placed_order(store, 1_000 + i, 7, order(i, 1, vec![line(1, 1)])).await;
    store.transition(placed.id, OrderStatus::Created, OrderStatus::Paid, now_ms()).await.expect("pay").expect("paid")
}

/// Opens and packs order `i`'s shipment in `zone`.
pub(super) async fn packed<S: Store>(store: &S, i: i64, zone: &str) -> Shipment {
    let order = paid(store, i).await;
    let new = NewShipment {
        waybill: Shipment::forward_waybill(order.id),
        order_id: order.id,
        user_id: order.user_id,
        merchant_id: order.merchant_id,
        direction: Direction::Forward,
        region: "north".into(),
        zone: zone.into(),
    };
    let opened = store.open_shipment(&new, now_ms()).await.expect("open");
    assert_eq!(store.open_shipment(&new, now_ms()).await.expect("open again"), opened, "one per waybill");
    let packed = store.pack(&opened.waybill, now_ms()).await.expect("pack").expect("created, so packed");
    assert_eq!(packed.status, ShipmentStatus::AwaitingCourier);
    assert_eq!(store.pack(&opened.waybill, now_ms()).await.expect("pack again"), None, "packed once");
    let order = OrderStore::get(store, order.id).await.expect("get").expect("order");
    assert_eq!(order.status, OrderStatus::Fulfilling, "packing moves the order");
    packed
}

pub(super) async fn courier_on<S: Store>(store: &S, id: i64, zone: &str, capacity: u32) -> Courier {
    let new = NewCourier {
        id: CourierId::new(id),
        name: format!("C{id}"),
        region: "north".into(),
        zone: zone.into(),
        capacity,
    };
    store.put_courier(&new, now_ms()).await.expect("courier");
    let (courier, released) =
        store.set_shift(CourierId::new(id), true, zone, now_ms()).await.expect("shift").expect("exists");
    assert!(released.is_empty());
    courier
}

/// Couriers' loads as stored, and as counted from the parcels.
async fn loads<S: Store>(store: &S, couriers: &[i64]) -> (HashMap<i64, u32>, HashMap<i64, u32>) {
    let mut stored = HashMap::new();
    let mut counted = HashMap::new();
    for &id in couriers {
        let courier = store.courier(CourierId::new(id)).await.expect("courier").expect("exists");
        assert!(courier.load <= courier.capacity, "courier {id} over capacity: {courier:?}");
        stored.insert(id, courier.load);
        counted.insert(id, store.tasks(CourierId::new(id)).await.expect("tasks").len() as u32);
    }
    (stored, counted)
}

pub(super) fn zones(zones: &[&str]) -> Vec<String> {
    zones.iter().map(|zone| (*zone).to_owned()).collect()
}

async fn racing_dispatchers_assign_each_parcel_once_and_no_courier_over_capacity<B: Backend>(backend: &B) {
    const PARCELS: i64 = 60;
    let store = backend.open().await;
    product(&store, 1, 1, 1_000).await;
    // 10 × 3 in the parcels' zone and 2 × 5 next door: 40 slots.
    let mut couriers = Vec::new();
    for id in 1..=10 {
        courier_on(&store, id, "z1", 3).await;
        couriers.push(id);
    }
    for id in 11..=12 {
        courier_on(&store, id, "z2", 5).await;
        couriers.push(id);
    }
    courier_on(&store, 13, "elsewhere", 50).await;
    let mut waybills = Vec::new();
    for i in 1..=PARCELS {
        waybills.push(packed(&store, i, "z1").await.waybill);
    }

    // Four nodes each try to assign every parcel, in different orders.
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(backend.open().await);
    }
    let serving = zones(&["z1", "z2"]);
    let runs = nodes.iter().enumerate().map(|(n, node)| {
        let (serving, mut order) = (serving.clone(), waybills.clone());
        order.rotate_left(n * 15);
        async move {
            let mut won = Vec::new();
            for waybill in order {
                if let Some(shipment) = node.assign(&waybill, &serving, now_ms()).await.expect("assign") {
                    won.push(shipment);
                }
            }
            won
        }
    });
    let won: Vec<Shipment> = futures::future::join_all(runs).await.into_iter().flatten().collect();

    let mut assigned: Vec<&str> = won.iter().map(|shipment| shipment.waybill.as_str()).collect();
    assigned.sort_unstable();
    assigned.dedup();
    assert_eq!(assigned.len(), won.len(), "a parcel assigned twice");
    assert_eq!(won.len(), 40, "every slot of the serving zones filled, none beyond");
    assert!(won.iter().all(|shipment| shipment.status == ShipmentStatus::Packed && shipment.courier_id.is_some()));
    let (stored, counted) = loads(&store, &couriers).await;
    assert_eq!(stored, counted, "each load is the courier's parcels");
    assert!(couriers.iter().all(|id| stored[id] == if *id <= 10 { 3 } else { 5 }), "{stored:?}");
    let by_zone = won.iter().filter(|shipment| shipment.courier_id.is_some_and(|c| c.get() <= 10)).count();
    assert_eq!(by_zone, 30, "the parcel's own zone first");
    assert_eq!(store.courier(CourierId::new(13)).await.expect("get").expect("exists").load, 0, "not a serving zone");
    assert_eq!(store.awaiting(500).await.expect("awaiting").len(), 20, "the rest wait");
    // A pass looks only where a courier has room: not at z1's backlog.
    assert_eq!(store.zones_with_room().await.expect("zones"), vec!["elsewhere".to_owned()]);
    assert!(store.awaiting_in(&zones(&["elsewhere"]), 500).await.expect("awaiting").is_empty());
    assert_eq!(store.awaiting_in(&zones(&["z1", "z2"]), 500).await.expect("awaiting").len(), 20);
    assert_eq!(store.assign(&won[0].waybill, &serving, now_ms()).await.expect("assign"), None, "assigned already");
}

pub(super) fn scan(kind: ScanKind) -> Scan {
    Scan { kind, at: now_ms(), location: "Harbin hub".into(), note: String::new() }
}

async fn scans_follow_the_parcel_only_by_its_courier_and_delivery_moves_the_order<B: Backend>(backend: &B) {
    let store = backend.open().await;
    product(&store, 1, 1, 10).await;
    courier_on(&store, 1, "z1", 2).await;
    courier_on(&store, 2, "z1", 2).await;
    let waybill = packed(&store, 1, "z1").await.waybill;
    let assigned = store.assign(&waybill, &zones(&["z1"]), now_ms()).await.expect("assign").expect("a courier");
    let (mine, other) = match assigned.courier_id.map(CourierId::get) {
        Some(1) => (CourierId::new(1), CourierId::new(2)),
        _ => (CourierId::new(2), CourierId::new(1)),
    };

    let outcome = store.scan(&waybill, other, &scan(ScanKind::PickedUp), now_ms()).await.expect("scan");
    assert_eq!(outcome, ScanOutcome::NotAssigned);
    let outcome = store.scan(&waybill, mine, &scan(ScanKind::Delivered), now_ms()).await.expect("scan");
    assert!(matches!(outcome, ScanOutcome::Illegal(_)), "{outcome:?}");
    let outcome = store.scan("SF0", mine, &scan(ScanKind::PickedUp), now_ms()).await.expect("scan");
    assert_eq!(outcome, ScanOutcome::NotFound);
    assert!(store.scans(&waybill).await.expect("scans").is_empty(), "refused scans leave nothing");

    let route = [ScanKind::PickedUp, ScanKind::ArrivedHub, ScanKind::OutForDelivery, ScanKind::DeliveryFailed];
    let mut expected = ShipmentStatus::Packed;
    for kind in route.into_iter().chain([ScanKind::OutForDelivery, ScanKind::Delivered]) {
        let ScanOutcome::Applied(shipment) = store.scan(&waybill, mine, &scan(kind), now_ms()).await.expect("scan")
        else {
            panic!("{kind:?} refused");
        };
        expected = expected.scan(kind).expect("a legal route");
        assert_eq!(shipment.status, expected);
    }
    let kinds: Vec<ScanKind> = store.scans(&waybill).await.expect("scans").into_iter().map(|s| s.kind).collect();
    assert_eq!(kinds, route.into_iter().chain([ScanKind::OutForDelivery, ScanKind::Delivered]).collect::<Vec<_>>());
    let shipment = store.shipment(&waybill).await.expect("get").expect("exists");
    assert_eq!(shipment.status, ShipmentStatus::Delivered);
    let order = OrderStore::get(&store, OrderId::new(1)).await.expect("get").expect("order");
    assert_eq!(order.status, OrderStatus::Delivered, "the delivered scan moves the order");
    assert_eq!(store.courier(mine).await.expect("get").expect("exists").load, 0, "a delivered parcel frees its slot");
    assert!(store.tasks(mine).await.expect("tasks").is_empty());
    let outcome = store.scan(&waybill, mine, &scan(ScanKind::DeliveryFailed), now_ms()).await.expect("scan");
    assert!(matches!(outcome, ScanOutcome::Illegal(_)), "nothing after delivery: {outcome:?}");
}

async fn parcels_not_picked_up_in_time_or_left_by_a_courier_going_off_go_back<B: Backend>(backend: &B) {
    let store = backend.open().await;
    product(&store, 1, 1, 10).await;
    courier_on(&store, 1, "z1", 5).await;
    let serving = zones(&["z1"]);
    let mut waybills = Vec::new();
    for i in 1..=3 {
        let waybill = packed(&store, i, "z1").await.waybill;
        store.assign(&waybill, &serving, at_ms(1_000 * i)).await.expect("assign").expect("a slot");
        waybills.push(waybill);
    }
    let picked = store.scan(&waybills[0], CourierId::new(1), &scan(ScanKind::PickedUp), now_ms()).await.expect("scan");
    assert!(matches!(picked, ScanOutcome::Applied(_)));

    // Assigned before 2.5 s and not picked up: the second parcel only.
    let released = store.release_stale(at_ms(2_500), 100, now_ms()).await.expect("release");
    assert_eq!(released, vec![waybills[1].clone()]);
    assert_eq!(store.courier(CourierId::new(1)).await.expect("get").expect("exists").load, 2);
    let back = store.shipment(&waybills[1]).await.expect("get").expect("exists");
    assert_eq!((back.status, back.courier_id), (ShipmentStatus::AwaitingCourier, None));

    // Going off shift leaves the parcel not picked up, keeps the one in hand.
    let (off, released) =
        store.set_shift(CourierId::new(1), false, "z1", now_ms()).await.expect("shift").expect("exists");
    assert_eq!(released, vec![waybills[2].clone()]);
    assert_eq!((off.on_shift, off.load), (false, 1));
    let tasks: Vec<String> =
        store.tasks(CourierId::new(1)).await.expect("tasks").into_iter().map(|s| s.waybill).collect();
    assert_eq!(tasks, vec![waybills[0].clone()]);
    assert_eq!(store.assign(&waybills[2], &serving, now_ms()).await.expect("assign"), None, "nobody on shift");
    let mut waiting: Vec<String> = store.awaiting(10).await.expect("awaiting").into_iter().map(|s| s.waybill).collect();
    waiting.sort_unstable();
    let mut expected = vec![waybills[1].clone(), waybills[2].clone()];
    expected.sort_unstable();
    assert_eq!(waiting, expected);
}

async fn racing_batch_plans_assign_each_parcel_once_and_no_courier_over_capacity<B: Backend>(backend: &B) {
    let store = backend.open().await;
    product(&store, 1, 1, 1_000).await;
    let couriers: Vec<i64> = (1..=10).collect();
    for &id in &couriers {
        courier_on(&store, id, "z1", 3).await;
    }
    for i in 1..=40 {
        packed(&store, i, "z1").await;
    }
    // Four nodes plan from the same picture, each starting from other
    // parcels, then write their plans at once.
    let mut nodes = Vec::new();
    for n in 0..4 {
        let node = backend.open().await;
        let mut waiting = node.awaiting(100).await.expect("awaiting");
        waiting.rotate_left(n * 10);
        let room = node.couriers_with_room(&zones(&["z1", "z9"])).await.expect("couriers");
        assert_eq!(room.len(), 10);
        let planned = plan(&waiting, &room, &ZoneMap::default());
        assert_eq!(planned.len(), 30, "every slot planned");
        nodes.push((node, planned));
    }
    let writes = nodes.iter().map(|(node, planned)| node.assign_many(planned, now_ms()));
    let won: Vec<Shipment> =
        futures::future::join_all(writes).await.into_iter().flat_map(|made| made.expect("assign many")).collect();
    let mut assigned: Vec<&str> = won.iter().map(|shipment| shipment.waybill.as_str()).collect();
    assigned.sort_unstable();
    assigned.dedup();
    assert_eq!(assigned.len(), won.len(), "a parcel assigned twice");
    assert_eq!(won.len(), 30, "every slot filled once");
    let (stored, counted) = loads(&store, &couriers).await;
    assert_eq!(stored, counted, "each load is the courier's parcels");
    assert!(stored.values().all(|load| *load == 3), "{stored:?}");
    assert_eq!(store.awaiting(100).await.expect("awaiting").len(), 10);
    assert!(store.couriers_with_room(&zones(&["z1"])).await.expect("couriers").is_empty(), "all full");
}

/// Nodes in either dispatch mode at once (a rolling change of
/// `fulfilment.dispatch`), while a courier goes off shift and the pick-up
/// timeout runs: every transaction takes its rows in the same order, so
/// none deadlocks (PostgreSQL would abort one, and each call must succeed),
/// and the books hold each parcel once, within every capacity.
async fn greedy_and_batch_nodes_and_a_courier_leaving_race_without_deadlock_or_a_parcel_twice<B: Backend>(backend: &B) {
    let store = backend.open().await;
    product(&store, 1, 1, 1_000).await;
    let couriers: Vec<i64> = (1..=10).collect();
    for &id in &couriers {
        courier_on(&store, id, "z1", 3).await;
    }
    let mut waybills = Vec::new();
    for i in 1..=40 {
        waybills.push(packed(&store, i, "z1").await.waybill);
    }
    let serving = zones(&["z1"]);
    let mut batch = Vec::new();
    for n in 0..2 {
        let node = backend.open().await;
        let mut waiting = node.awaiting(100).await.expect("awaiting");
        waiting.rotate_left(n * 20);
        let room = node.couriers_with_room(&serving).await.expect("couriers");
        let planned = plan(&waiting, &room, &ZoneMap::default());
        batch.push((node, planned));
    }
    let mut greedy = Vec::new();
    for _ in 0..2 {
        greedy.push(backend.open().await);
    }
    let leaving = backend.open().await;

    let plans = batch.iter().map(|(node, planned)| async move {
        node.assign_many(planned, now_ms()).await.expect("a batch write neither deadlocks nor fails");
    });
    let singles = greedy.iter().enumerate().map(|(n, node)| {
        let (serving, mut order) = (serving.clone(), waybills.clone());
        order.rotate_left(n * 13 + 7);
        async move {
            for waybill in order {
                node.assign(&waybill, &serving, now_ms()).await.expect("a greedy assign neither deadlocks nor fails");
            }
        }
    });
    let leave = async {
        leaving.set_shift(CourierId::new(1), false, "z1", now_ms()).await.expect("off shift").expect("exists");
        leaving.release_stale(at_ms(now_ms().unix_timestamp() * 1000 + 60_000), 500, now_ms()).await.expect("stale");
    };
    futures::future::join3(futures::future::join_all(plans), futures::future::join_all(singles), leave).await;

    let (stored, counted) = loads(&store, &couriers).await;
    assert_eq!(stored, counted, "each load is the courier's parcels");
    let mut held: Vec<String> = Vec::new();
    for &id in &couriers {
        held.extend(store.tasks(CourierId::new(id)).await.expect("tasks").into_iter().map(|shipment| shipment.waybill));
    }
    let distinct: std::collections::HashSet<&String> = held.iter().collect();
    assert_eq!(distinct.len(), held.len(), "a parcel held by two couriers");
    let waiting = store.awaiting(100).await.expect("awaiting").len();
    assert_eq!(held.len() + waiting, 40, "every parcel is held once or waits");
}

/// Two flushers replaying one journal (a flush lease that lapsed): the
/// older batch, written after the newer one, adds no scan and leaves the
/// shipment where the newer one took it.
async fn a_late_replay_of_older_scans_writes_nothing_twice_and_moves_no_shipment_back<B: Backend>(backend: &B) {
    let store = backend.open().await;
    product(&store, 1, 1, 10).await;
    courier_on(&store, 1, "z1", 1).await;
    let waybill = packed(&store, 1, "z1").await.waybill;
    let courier = CourierId::new(1);
    store.assign(&waybill, &zones(&["z1"]), now_ms()).await.expect("assign").expect("the courier");
    let outcome = store.scan(&waybill, courier, &scan(ScanKind::PickedUp), now_ms()).await.expect("pickup");
    assert!(matches!(outcome, ScanOutcome::Applied(_)), "{outcome:?}");
    let journaled = |seq: i64, kind: ScanKind, to: ShipmentStatus| JournalScan {
        waybill: waybill.clone(),
        courier,
        seq,
        scan: Scan { note: format!("n{seq}"), ..scan(kind) },
        to,
        recorded_at: now_ms(),
    };
    let newer = [
        journaled(2, ScanKind::ArrivedHub, ShipmentStatus::AtHub),
        journaled(3, ScanKind::ArrivedHub, ShipmentStatus::AtHub),
        journaled(4, ScanKind::OutForDelivery, ShipmentStatus::OutForDelivery),
    ];
    store.flush_scans(&newer, now_ms()).await.expect("flush");
    store.flush_scans(&newer[..2], now_ms()).await.expect("a late replay");
    let shipment = store.shipment(&waybill).await.expect("get").expect("exists");
    assert_eq!(shipment.status, ShipmentStatus::OutForDelivery, "not moved back to the hub");
    let notes: Vec<String> = store.scans(&waybill).await.expect("scans").into_iter().map(|s| s.note).collect();
    assert_eq!(notes, ["", "n2", "n3", "n4"], "each scan once");

    // The delivered scan, then its batch replayed: one delivery.
    let delivered = [journaled(5, ScanKind::Delivered, ShipmentStatus::Delivered)];
    store.flush_scans(&delivered, now_ms()).await.expect("flush");
    store.flush_scans(&delivered, now_ms()).await.expect("replay");
    store.flush_scans(&newer, now_ms()).await.expect("an older replay");
    let shipment = store.shipment(&waybill).await.expect("get").expect("exists");
    assert_eq!(shipment.status, ShipmentStatus::Delivered);
    assert_eq!(store.courier(courier).await.expect("get").expect("exists").load, 0, "freed once");
    let order = OrderStore::get(&store, shipment.order_id).await.expect("get").expect("order");
    assert_eq!(order.status, OrderStatus::Delivered);
    assert_eq!(store.scans(&waybill).await.expect("scans").len(), 5);
}
