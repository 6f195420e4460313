//! Tracking documents written behind the cache (`fulfilment.tracking.mode =
//! "write_behind"`, embedded mode): scans after pickup are answered once
//! journaled and read back at once; the flusher writes them to the store;
//! with the store stalled, scans slow down and then get 503 while the
//! journal stays under its bound; `kill -9` loses no acknowledged scan.

use std::time::Duration;

use futures::StreamExt;
use futures::stream;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;
use surge_server::auth::{Keys, Role, load_or_create_secret};
use surge_server::config::AuthSettings;
use surge_server::config::TrackingMode;
use tempfile::TempDir;

use crate::helpers::{ChildSurge, TestApp, free_port, rfc3339, spawn_app_in, wait_ready};

/// A node's base URL and the tokens it accepts.
pub(crate) struct Node<'a> {
    pub(crate) client: &'a Client,
    pub(crate) base: String,
    pub(crate) keys: Keys,
}

impl Node<'_> {
    fn token(&self, role: Role, sub: &str) -> String {
        self.keys.mint(role, sub, Duration::from_secs(600)).expect("mint")
    }

    async fn send(&self, method: reqwest::Method, path: &str, token: &str, body: &Value) -> reqwest::Response {
        let request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        request.json(body).send().await.expect("request")
    }

    async fn ok(&self, method: reqwest::Method, path: &str, token: &str, body: &Value) -> Value {
        let response = self.send(method, path, token, body).await;
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.expect("json")
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        let response = self.client.get(format!("{}{path}", self.base)).bearer_auth(token).send().await;
        let response = response.expect("request");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.expect("json")
    }

    /// A scan by `courier` of `waybill`, with `note` to tell it apart.
    async fn scan(&self, courier: u64, waybill: &str, kind: &str, note: &str) -> StatusCode {
        let body = json!({"type": kind, "at": rfc3339(time::OffsetDateTime::now_utc()), "location": "hub",
                          "note": note});
        let path = format!("/v1/shipments/{waybill}/scans");
        self.send(reqwest::Method::POST, &path, &self.token(Role::Courier, &courier.to_string()), &body).await.status()
    }

    pub(crate) async fn tracking(&self, waybill: &str) -> Vec<Value> {
        let tracking = self.get(&format!("/v1/waybills/{waybill}/tracking"), &self.token(Role::Admin, "ops")).await;
        tracking["events"].as_array().expect("events").clone()
    }

    /// Each courier scans its parcel (`arrived_hub`, notes `scan 0`, `scan
    /// 1`, ...) until `killed` turns true or a scan is not answered 202:
    /// each waybill with the notes that were.
    pub(crate) async fn scan_until(
        &self,
        parcels: &[(u64, String, String)],
        killed: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<(String, Vec<String>)> {
        stream::iter(parcels)
            .map(|(courier, waybill, _)| {
                let killed = killed.clone();
                async move {
                    let mut accepted = Vec::new();
                    for i in 0..10_000 {
                        if *killed.borrow() {
                            break;
                        }
                        let note = format!("scan {i}");
                        let body = json!({"type": "arrived_hub", "at": rfc3339(time::OffsetDateTime::now_utc()),
                                          "location": "hub", "note": note});
                        let token = self.token(Role::Courier, &courier.to_string());
                        let url = format!("{}/v1/shipments/{waybill}/scans", self.base);
                        match self.client.post(url).bearer_auth(token).json(&body).send().await {
                            Ok(response) if response.status() == StatusCode::ACCEPTED => accepted.push(note),
                            _ => break,
                        }
                    }
                    (waybill.clone(), accepted)
                }
            })
            .buffer_unordered(parcels.len().max(1))
            .collect()
            .await
    }

    /// `couriers` parcels, one per courier (ids 500, 501, ...), packed,
    /// assigned and picked up: (courier, waybill, order).
    pub(crate) async fn picked_up(&self, couriers: u64) -> Vec<(u64, String, String)> {
        use reqwest::Method;
        let (admin, merchant) = (self.token(Role::Admin, "ops"), self.token(Role::Merchant, "1"));
        let sku = format!("TRK-{}", crate::helpers::uuid_like());
        let body = json!({"sku": sku, "name": "Tracked", "price_cents": 100, "stock": couriers});
        let product = self.ok(Method::POST, "/v1/products", &merchant, &body).await;
        for courier in 500..500 + couriers {
            let spec = json!({"name": "C", "region": "north", "zone": "north", "capacity": 1});
            self.ok(Method::PUT, &format!("/v1/couriers/{courier}"), &admin, &spec).await;
            let token = self.token(Role::Courier, &courier.to_string());
            let shift = json!({"on_shift": true, "zone": "north"});
            self.ok(Method::PUT, "/v1/couriers/me/shift", &token, &shift).await;
        }
        let mut orders = Vec::new();
        for customer in 1..=couriers {
            let token = self.token(Role::Customer, &customer.to_string());
            let address = json!({"region": "north", "city": "Harbin", "line1": "1 Main St", "postcode": "150000",
                                 "phone": "+86 451 0000"});
            let cart = json!({"items": [{"product_id": product["id"], "quantity": 1}], "address": address});
            let placed = self.ok(Method::POST, "/v1/checkout", &token, &cart).await;
            let order = placed["orders"][0]["id"].as_str().expect("order").to_owned();
            self.ok(Method::POST, &format!("/v1/orders/{order}/pay"), &token, &json!({})).await;
            orders.push(order);
        }
        for order in &orders {
            let url = format!("{}/v1/orders/{order}/shipment", self.base);
            let mut waybill = None;
            for _ in 0..200 {
                let response = self.client.get(&url).bearer_auth(&merchant).send().await.expect("get");
                if response.status() == StatusCode::OK {
                    waybill = Some(response.json::<Value>().await.expect("json")["waybill"].clone());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let waybill = waybill.expect("the shipment was opened");
            let path = format!("/v1/shipments/{}/pack", waybill.as_str().expect("waybill"));
            self.ok(Method::POST, &path, &merchant, &json!({})).await;
        }
        let mut parcels = Vec::new();
        for courier in 500..500 + couriers {
            let token = self.token(Role::Courier, &courier.to_string());
            let tasks = self.get("/v1/couriers/me/tasks", &token).await;
            let task = &tasks["items"][0];
            let waybill = task["waybill"].as_str().expect("an assigned parcel").to_owned();
            assert_eq!(self.scan(courier, &waybill, "picked_up", "pickup").await, StatusCode::ACCEPTED);
            parcels.push((courier, waybill, task["order_id"].as_str().expect("order").to_owned()));
        }
        parcels
    }
}

/// The `i`-th scan after pickup of a parcel given `total` of them: hubs,
/// then out for delivery, then delivered.
fn kind(i: usize, total: usize) -> &'static str {
    match total - i {
        1 => "delivered",
        2 => "out_for_delivery",
        _ => "arrived_hub",
    }
}

async fn app_behind(dir: TempDir, max_pending: usize) -> TestApp {
    spawn_app_in(dir, |s| {
        s.fulfilment.tracking.mode = TrackingMode::WriteBehind;
        s.fulfilment.tracking.delay = Duration::from_millis(20);
        s.fulfilment.tracking.max_pending = max_pending;
        s.fulfilment.dispatch_interval = Duration::from_millis(50);
    })
    .await
}

fn node_of(app: &TestApp) -> Node<'_> {
    let keys =
        Keys::new(&load_or_create_secret(&app.settings.auth, app.data_dir.path()).expect("secret"), &app.settings.auth);
    Node { client: &app.client, base: app.address.clone(), keys }
}

#[tokio::test]
async fn scans_written_behind_are_read_at_once_and_reach_the_store_once_in_order() {
    const COURIERS: u64 = 100;
    const SCANS: usize = 50;
    let app = app_behind(TempDir::new().expect("tempdir"), 100_000).await;
    let node = node_of(&app);
    let parcels = node.picked_up(COURIERS).await;

    // Every courier scans its parcel SCANS times while the flusher runs;
    // each read after a scan shows it, after the ones before.
    stream::iter(&parcels)
        .for_each_concurrent(None, |(courier, waybill, _)| {
            let node = &node;
            async move {
                for i in 0..SCANS {
                    let note = format!("scan {i}");
                    assert_eq!(node.scan(*courier, waybill, kind(i, SCANS), &note).await, StatusCode::ACCEPTED);
                    let events = node.tracking(waybill).await;
                    assert_eq!(events.len(), i + 2, "{waybill}: pickup and {} scans", i + 1);
                    assert_eq!(events.last().expect("the scan")["note"], note.as_str());
                }
            }
        })
        .await;

    // The flusher catches up: the store holds each scan once, in order,
    // and the delivered scans moved the orders and freed the couriers.
    for _ in 0..200 {
        if app.metric("surge_tracking_pending_scans").await == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(app.metric("surge_tracking_pending_scans").await, 0.0);
    assert_eq!(app.metric("surge_tracking_flushed_scans_total").await, (COURIERS as usize * SCANS) as f64);
    let admin = node.token(Role::Admin, "ops");
    for (courier, waybill, order) in &parcels {
        let notes: Vec<Value> = node.tracking(waybill).await.iter().map(|e| e["note"].clone()).collect();
        let expected: Vec<Value> =
            std::iter::once(json!("pickup")).chain((0..SCANS).map(|i| json!(format!("scan {i}")))).collect();
        assert_eq!(notes, expected, "{waybill}");
        assert_eq!(node.get(&format!("/v1/orders/{order}"), &admin).await["status"], "DELIVERED");
        let token = node.token(Role::Courier, &courier.to_string());
        let me = node
            .ok(reqwest::Method::PUT, "/v1/couriers/me/shift", &token, &json!({"on_shift": true, "zone": "north"}))
            .await;
        assert_eq!(me["load"], 0, "courier {courier}'s slot is free");
    }
}

/// Scans in the journal of the embedded log's file at `path`.
async fn journaled(path: &std::path::Path) -> i64 {
    let mut log = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.expect("connect");
    sqlx::query_scalar("SELECT COUNT(*) FROM scan_journal").fetch_one(&mut log).await.expect("count")
}

#[tokio::test]
async fn with_the_store_stalled_scans_get_503_and_the_journal_stays_bounded() {
    const MAX_PENDING: usize = 10;
    let dir = TempDir::new().expect("tempdir");
    let database = dir.path().join(surge_store::sqlite::DATABASE_FILE);
    let journal = dir.path().join(surge_store::queue::log::QUEUE_FILE);
    let app = app_behind(dir, MAX_PENDING).await;
    let node = node_of(&app);
    let parcels = node.picked_up(4).await;

    // Another connection takes the store's write lock and keeps it.
    let url = format!("sqlite://{}", database.display());
    let mut stall = sqlx::SqliteConnection::connect(&url).await.expect("connect");
    sqlx::query("BEGIN IMMEDIATE").execute(&mut stall).await.expect("lock");
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..40 {
        let (courier, waybill, _) = &parcels[i % parcels.len()];
        match node.scan(*courier, waybill, "arrived_hub", &format!("stalled {i}")).await {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::SERVICE_UNAVAILABLE => refused += 1,
            other => panic!("scan {i}: {other}"),
        }
        assert!(journaled(&journal).await <= MAX_PENDING as i64, "the journal stays within its bound");
    }
    assert_eq!(journaled(&journal).await, MAX_PENDING as i64, "nothing flushed while the store is stalled");
    assert_eq!(accepted, MAX_PENDING, "taken until the bound");
    assert_eq!(refused, 40 - MAX_PENDING, "then refused");

    // The store answers again: the journal drains and scans are taken.
    sqlx::query("ROLLBACK").execute(&mut stall).await.expect("unlock");
    let (courier, waybill, _) = &parcels[0];
    let mut taken = false;
    for _ in 0..200 {
        if node.scan(*courier, waybill, "arrived_hub", "after").await == StatusCode::ACCEPTED {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(taken, "scans are taken again once the store answers");
    let notes: Vec<Value> = node.tracking(waybill).await.iter().map(|e| e["note"].clone()).collect();
    assert_eq!(notes.last(), Some(&json!("after")));
}

#[tokio::test]
async fn every_scan_answered_202_survives_kill_9_once_and_in_order() {
    const COURIERS: u64 = 8;
    let dir = TempDir::new().expect("tempdir");
    let port = free_port();
    let client = Client::new();
    let env = [("SURGE_FULFILMENT__TRACKING__MODE", "write_behind"), ("SURGE_FULFILMENT__TRACKING__DELAY", "2s")];
    let mut surge = ChildSurge::start(&dir, port, &env);
    wait_ready(&client, &surge.base).await;
    let keys = Keys::new(
        &load_or_create_secret(&AuthSettings::default(), dir.path()).expect("secret"),
        &AuthSettings::default(),
    );
    let node = Node { client: &client, base: surge.base.clone(), keys };
    let parcels = node.picked_up(COURIERS).await;

    // Couriers scan until the node is killed; each keeps what got a 202.
    let (kill, killed) = tokio::sync::watch::channel(false);
    let scanning = node.scan_until(&parcels, killed);
    let killer = async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        surge.process.kill().expect("kill -9");
        surge.process.wait().expect("wait");
        kill.send(true).expect("tell");
    };
    let (accepted, ()) = tokio::join!(scanning, killer);
    let total: usize = accepted.iter().map(|(_, notes)| notes.len()).sum();
    assert!(total >= COURIERS as usize, "scans were taken before the kill: {total}");

    // Restarted on the same data, writing through (no flusher runs): the
    // journal left by the kill is flushed before serving, and every
    // acknowledged scan is in the store once, in order.
    let left = journaled(&dir.path().join(surge_store::queue::log::QUEUE_FILE)).await;
    assert!(left > 0, "the kill left scans in the journal");
    let surge = ChildSurge::start(&dir, port, &[("SURGE_FULFILMENT__TRACKING__MODE", "write_through")]);
    wait_ready(&client, &surge.base).await;
    for (waybill, notes) in &accepted {
        let events = node.tracking(waybill).await;
        let stored: Vec<&str> = events.iter().skip(1).map(|e| e["note"].as_str().expect("note")).collect();
        assert!(stored.len() == notes.len() || stored.len() == notes.len() + 1, "{waybill}: {stored:?} vs {notes:?}");
        assert_eq!(
            &stored[..notes.len()],
            notes.iter().map(String::as_str).collect::<Vec<_>>().as_slice(),
            "{waybill}"
        );
    }
}
