//! Tracking documents written behind Redis (`crate::redis::RedisTracking`),
//! over PostgreSQL, on a standalone Redis and on the Redis Cluster: two
//! nodes scanning the same parcels at once take each scan once, with its
//! own `seq`, and their racing flushers write each once, in order; a
//! partition's bound refuses scans past it; `kill -9` of a Redis that
//! fsyncs every write (`appendfsync always`) loses no acknowledged scan.

use std::sync::Arc;
use std::time::Duration;

use surge_domain::fulfilment::{
    FulfilmentStore, Scan, ScanKind, ScanOutcome, ScanRefused, ShipmentStatus, TrackingDocs,
};
use surge_domain::order::{OrderStatus, OrderStore};
use surge_domain::{CourierId, StoreError};

use super::fulfilment::{courier_on, packed, scan, zones};
use super::inventory::product;
use super::{Backend, PgBackend, now_ms};
use crate::behind::{BehindConfig, TrackingFlusher};
use crate::postgres::PgStore;
use crate::redis::{Durability, RedisConfig, RedisConn, RedisTracking};

fn config(max_pending: usize) -> BehindConfig {
    BehindConfig { delay: Duration::from_millis(5), batch: 64, max_pending }
}

fn node(conn: &RedisConn, namespace: &str, store: &Arc<PgStore>, max_pending: usize) -> RedisTracking {
    let store = Arc::clone(store) as Arc<dyn FulfilmentStore>;
    RedisTracking::new(conn.clone(), namespace, store, config(max_pending), Durability::default())
}

/// `parcels` parcels, one per courier (ids 1, 2, ...), assigned and picked
/// up (written through): (courier, waybill).
async fn picked_up(store: &PgStore, parcels: i64) -> Vec<(CourierId, String)> {
    product(store, 1, 1, parcels).await;
    let mut picked = Vec::new();
    for i in 1..=parcels {
        courier_on(store, i, &format!("z{i}"), 1).await;
        let waybill = packed(store, i, &format!("z{i}")).await.waybill;
        let zone = zones(&[&format!("z{i}")]);
        let assigned = store.assign(&waybill, &zone, now_ms()).await.expect("assign").expect("a courier");
        let courier = assigned.courier_id.expect("assigned");
        let outcome = store.scan(&waybill, courier, &scan(ScanKind::PickedUp), now_ms()).await.expect("pickup");
        assert!(matches!(outcome, ScanOutcome::Applied(_)), "{outcome:?}");
        picked.push((courier, waybill));
    }
    picked
}

fn noted(kind: ScanKind, note: String) -> Scan {
    Scan { note, ..scan(kind) }
}

async fn take(node: &RedisTracking, waybill: &str, courier: CourierId, scan: &Scan) -> ScanOutcome {
    node.scan(waybill, courier, scan, now_ms()).await.unwrap_or_else(|refused| panic!("{waybill}: {refused:?}"))
}

/// The waybill's notes as a reader sees them: the unflushed scans first,
/// then the store's.
async fn notes(node: &RedisTracking, store: &PgStore, waybill: &str) -> Vec<String> {
    let unflushed = node.unflushed(waybill).await.expect("unflushed");
    let mut scans = store.scans(waybill).await.expect("scans");
    let stored = scans.len() as i64;
    scans.extend(unflushed.into_iter().filter(|(seq, _)| *seq > stored).map(|(_, scan)| scan));
    scans.into_iter().map(|scan| scan.note).collect()
}

#[tokio::test]
async fn two_nodes_racing_on_the_same_parcels_take_and_flush_each_scan_once_in_order() {
    const PARCELS: i64 = 6;
    const ROUNDS: usize = 12;
    for (name, conn, namespace) in crate::flow_contract::redis_conns().await {
        let backend = PgBackend::new().await;
        let store = Arc::new(backend.open().await);
        let parcels = picked_up(&store, PARCELS).await;
        let (a, b) = (node(&conn, &namespace, &store, 100_000), node(&conn, &namespace, &store, 100_000));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // Both nodes flush all along, racing for the partitions.
        let flushers = [&a, &b].map(|flusher| {
            let stopped = stopped.clone();
            async move {
                while !*stopped.borrow() {
                    flusher.flush_once(now_ms()).await.expect("flush");
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
        });
        let scanning = async {
            let per_parcel = parcels.iter().map(|(courier, waybill)| {
                let (a, b, store) = (&a, &b, &store);
                async move {
                    let mut expected = vec![String::new()];
                    for round in 0..ROUNDS {
                        // The two nodes scan the parcel at the same moment.
                        let (first, second) = (format!("{name} a{round}"), format!("{name} b{round}"));
                        let (x, y) =
                            (noted(ScanKind::ArrivedHub, first.clone()), noted(ScanKind::ArrivedHub, second.clone()));
                        let (x, y) = tokio::join!(take(a, waybill, *courier, &x), take(b, waybill, *courier, &y));
                        assert!(matches!((&x, &y), (ScanOutcome::Applied(_), ScanOutcome::Applied(_))), "{x:?} {y:?}");
                        let seen = notes(b, store, waybill).await;
                        let tail: std::collections::HashSet<&String> = seen[seen.len() - 2..].iter().collect();
                        assert_eq!(tail, [&first, &second].into_iter().collect(), "{waybill}: read at once");
                        expected.extend(seen[seen.len() - 2..].iter().cloned());
                    }
                    let last = [
                        (a, ScanKind::OutForDelivery, ShipmentStatus::OutForDelivery, "out"),
                        (b, ScanKind::Delivered, ShipmentStatus::Delivered, "done"),
                    ];
                    for (node, kind, status, note) in last {
                        let ScanOutcome::Applied(moved) =
                            take(node, waybill, *courier, &noted(kind, note.into())).await
                        else {
                            panic!("{kind:?} refused");
                        };
                        assert_eq!(moved.status, status);
                        assert_eq!(a.shipment(waybill).await.expect("read").map(|s| s.status), Some(status));
                        expected.push(note.to_owned());
                    }
                    // After delivery nothing more is taken, on either node.
                    let outcome = take(a, waybill, *courier, &scan(ScanKind::ArrivedHub)).await;
                    assert!(matches!(outcome, ScanOutcome::Illegal(_)), "{outcome:?}");
                    let tasks = b.tasks(*courier).await.expect("tasks");
                    assert!(tasks.is_empty(), "a delivered parcel leaves the courier's tasks at once: {tasks:?}");
                    (waybill.clone(), expected)
                }
            });
            let expected = futures::future::join_all(per_parcel).await;
            stop.send(true).expect("stop");
            expected
        };
        let [flusher_a, flusher_b] = flushers;
        let (expected, (), ()) = tokio::join!(scanning, flusher_a, flusher_b);
        a.flush_all(now_ms()).await.expect("flush a");
        b.flush_all(now_ms()).await.expect("flush b");
        assert_eq!(a.pending().await.expect("pending"), 0, "{name}");
        for (waybill, expected) in expected {
            let stored: Vec<String> = store.scans(&waybill).await.expect("scans").into_iter().map(|s| s.note).collect();
            assert_eq!(stored, expected, "{name} {waybill}: each scan once, in the order taken");
            assert_eq!(store.last_scan_seq(&waybill).await.expect("seq"), expected.len() as i64);
            let shipment = store.shipment(&waybill).await.expect("get").expect("exists");
            assert_eq!(shipment.status, ShipmentStatus::Delivered, "{name}");
            let order = OrderStore::get(&*store, shipment.order_id).await.expect("get").expect("order");
            assert_eq!(order.status, OrderStatus::Delivered, "{name}: the flushed delivery moved the order");
            let courier = store.courier(shipment.courier_id.expect("courier")).await.expect("get").expect("exists");
            assert_eq!(courier.load, 0, "{name}: the delivery freed the courier's slot");
        }
    }
}

#[tokio::test]
async fn past_its_partition_bound_a_scan_is_refused_and_nothing_is_taken() {
    let backend = PgBackend::new().await;
    let store = Arc::new(backend.open().await);
    let parcels = picked_up(&store, 1).await;
    let (courier, waybill) = &parcels[0];
    let (_, conn, namespace) = crate::flow_contract::redis_conns().await.into_iter().next().expect("redis");
    // Two scans per partition; nobody flushes.
    let behind = node(&conn, &namespace, &store, 2 * crate::redis::tracking::PARTITIONS);
    for i in 0..2 {
        let outcome = take(&behind, waybill, *courier, &noted(ScanKind::ArrivedHub, format!("n{i}"))).await;
        assert!(matches!(outcome, ScanOutcome::Applied(_)), "{outcome:?}");
    }
    let refused = behind.scan(waybill, *courier, &noted(ScanKind::ArrivedHub, "over".into()), now_ms()).await;
    assert!(matches!(refused, Err(ScanRefused::Overloaded)), "{refused:?}");
    assert_eq!(behind.pending().await.expect("pending"), 2, "the refused scan is not journaled");
    let unflushed: Vec<String> =
        behind.unflushed(waybill).await.expect("unflushed").into_iter().map(|(_, scan)| scan.note).collect();
    assert_eq!(unflushed, ["n0", "n1"], "nor in the document");
    assert_eq!(behind.flush_all(now_ms()).await.expect("flush"), 2);
    let outcome = take(&behind, waybill, *courier, &noted(ScanKind::ArrivedHub, "after".into())).await;
    assert!(matches!(outcome, ScanOutcome::Applied(_)), "taken again once flushed: {outcome:?}");
}

/// A Redis of the test's own in `dir`, fsyncing every write to its
/// append-only file, on `port`.
fn redis_with_aof(dir: &std::path::Path, port: u16) -> std::process::Child {
    std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server starts")
}

async fn connect(port: u16) -> RedisConn {
    let config = RedisConfig { urls: vec![format!("redis://127.0.0.1:{port}")], ..RedisConfig::default() };
    let mut last = StoreError::Unavailable("never tried".to_owned());
    for _ in 0..50 {
        match RedisConn::connect(&config).await {
            Ok(conn) if conn.ping().await.is_ok() => return conn,
            Ok(_) => {}
            Err(error) => last = error,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("redis on {port}: {last}");
}

#[tokio::test]
async fn kill_9_of_a_redis_that_fsyncs_every_write_loses_no_acknowledged_scan() {
    const PARCELS: i64 = 4;
    let backend = PgBackend::new().await;
    let store = Arc::new(backend.open().await);
    let parcels = picked_up(&store, PARCELS).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::testing::free_port();
    let mut redis = redis_with_aof(dir.path(), port);
    let conn = connect(port).await;
    let behind = node(&conn, "surge", &store, 100_000);

    // Couriers scan at once until Redis is killed; each keeps what was
    // acknowledged. Nobody flushes: everything is in Redis alone.
    let (kill, killed) = tokio::sync::watch::channel(false);
    let scanning = parcels.iter().map(|(courier, waybill)| {
        let (behind, killed) = (&behind, killed.clone());
        async move {
            let mut acknowledged = Vec::new();
            for i in 0..10_000 {
                if *killed.borrow() {
                    break;
                }
                let note = format!("n{i}");
                match behind.scan(waybill, *courier, &noted(ScanKind::ArrivedHub, note.clone()), now_ms()).await {
                    Ok(ScanOutcome::Applied(_)) => acknowledged.push(note),
                    Ok(other) => panic!("{other:?}"),
                    Err(_) => break,
                }
            }
            (waybill.clone(), acknowledged)
        }
    });
    let killer = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        redis.kill().expect("kill -9");
        redis.wait().expect("wait");
        kill.send(true).expect("tell");
    };
    let (acknowledged, ()) = tokio::join!(futures::future::join_all(scanning), killer);
    let total: usize = acknowledged.iter().map(|(_, notes)| notes.len()).sum();
    assert!(total >= PARCELS as usize, "scans were taken before the kill: {total}");

    // Redis restarts from its append-only file; a new node flushes it all.
    let mut redis = redis_with_aof(dir.path(), port);
    let conn = connect(port).await;
    let behind = node(&conn, "surge", &store, 100_000);
    behind.flush_all(now_ms()).await.expect("flush");
    let _ = redis.kill();
    let _ = redis.wait();
    for (waybill, notes) in &acknowledged {
        let stored: Vec<String> =
            store.scans(waybill).await.expect("scans").into_iter().skip(1).map(|s| s.note).collect();
        // A scan whose answer the kill cut off may be there too, last.
        assert!(stored.len() == notes.len() || stored.len() == notes.len() + 1, "{waybill}: {stored:?} vs {notes:?}");
        assert_eq!(&stored[..notes.len()], notes.as_slice(), "{waybill}: every acknowledged scan, once, in order");
    }
}

#[tokio::test]
async fn a_scan_retried_after_its_answer_was_lost_is_taken_once() {
    let backend = PgBackend::new().await;
    let store = Arc::new(backend.open().await);
    let parcels = picked_up(&store, 1).await;
    let (courier, waybill) = &parcels[0];
    let (_, conn, namespace) = crate::flow_contract::redis_conns().await.into_iter().next().expect("redis");
    let behind = node(&conn, &namespace, &store, 100_000);
    let (hub, now) = (noted(ScanKind::ArrivedHub, "hub".into()), now_ms());
    for _ in 0..2 {
        let outcome = behind.scan(waybill, *courier, &hub, now).await.expect("taken");
        let ScanOutcome::Applied(shipment) = outcome else { panic!("{outcome:?}") };
        assert_eq!(shipment.status, ShipmentStatus::AtHub);
    }
    // The same scan at another moment is another scan.
    take(&behind, waybill, *courier, &hub).await;
    let unflushed: Vec<i64> = behind.unflushed(waybill).await.expect("unflushed").iter().map(|(seq, _)| *seq).collect();
    assert_eq!(unflushed, [2, 3], "the retry took no seq of its own");
}
