//! Fulfilment through the API: a paid order's shipment is opened by the
//! outbox's consumer, the merchant packs it, the dispatcher assigns it to
//! an on-shift courier of its zone, the courier's scans take it to the
//! buyer; refused steps change nothing.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app_with};

async fn app() -> TestApp {
    spawn_app_with(|s| {
        s.fulfilment.zones.insert("1500".into(), "harbin-centre".into());
        s.fulfilment.dispatch_interval = Duration::from_millis(50);
    })
    .await
}

/// Buyer 7's paid order of one unit of merchant 1's product, delivered to
/// postcode `postcode`: its id.
pub(crate) async fn paid_order(app: &TestApp, postcode: &str) -> String {
    let product = app.create_product_with_stock(1, &format!("SHIP-{}", crate::helpers::uuid_like()), 5).await;
    let address = json!({"region": "north", "city": "Harbin", "line1": "1 Main St", "postcode": postcode,
                         "phone": "+86 451 0000"});
    let cart = json!({"items": [{"product_id": product["id"], "quantity": 1}], "address": address});
    let response = app.post_json("/v1/checkout", Some(&app.customer(7)), &cart).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("json");
    let order = created["orders"][0]["id"].as_str().expect("order id").to_owned();
    let paid = app.post_json(&format!("/v1/orders/{order}/pay"), Some(&app.customer(7)), &json!({})).await;
    assert_eq!(paid.status(), StatusCode::OK);
    order
}

pub(crate) async fn get(app: &TestApp, token: &str, path: &str) -> Response {
    app.client.get(app.url(path)).bearer_auth(token).send().await.expect("request")
}

pub(crate) async fn put(app: &TestApp, token: &str, path: &str, body: &Value) -> Response {
    app.client.put(app.url(path)).bearer_auth(token).json(body).send().await.expect("request")
}

/// Reads `path` as `token` until `done` holds of its 200 body (a few
/// seconds at most): the outbox and the dispatcher work in the background.
pub(crate) async fn eventually(app: &TestApp, token: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let response = get(app, token, path).await;
        if response.status() == StatusCode::OK {
            last = response.json().await.expect("json");
            if done(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never got there; last: {last}");
}

pub(crate) async fn order_status(app: &TestApp, order: &str) -> String {
    let order: Value = get(app, &app.customer(7), &format!("/v1/orders/{order}")).await.json().await.expect("json");
    order["status"].as_str().expect("status").to_owned()
}

pub(crate) async fn scan(app: &TestApp, courier: u64, waybill: &str, kind: &str) -> Response {
    let at = crate::helpers::rfc3339(time::OffsetDateTime::now_utc());
    let body = json!({"type": kind, "at": at, "location": "Harbin hub", "note": kind});
    app.post_json(&format!("/v1/shipments/{waybill}/scans"), Some(&app.courier(courier)), &body).await
}

#[tokio::test]
async fn a_paid_order_goes_from_packing_to_the_buyers_door() {
    let app = app().await;
    let order = paid_order(&app, "150001").await;
    let path = format!("/v1/orders/{order}/shipment");
    let shipment = eventually(&app, &app.customer(7), &path, |_| true).await;
    assert_eq!(
        (&shipment["status"], &shipment["zone"], &shipment["direction"]),
        (&json!("created"), &json!("harbin-centre"), &json!("forward"))
    );
    assert_eq!(shipment["courier_id"], Value::Null);
    let waybill = shipment["waybill"].as_str().expect("waybill").to_owned();
    assert_eq!(get(&app, &app.customer(8), &path).await.status(), StatusCode::NOT_FOUND, "someone else's");
    assert_eq!(get(&app, &app.merchant(1), &path).await.status(), StatusCode::OK, "the merchant's");

    // Couriers are declared by an admin only.
    let courier = json!({"name": "Li", "region": "north", "zone": "harbin-centre", "capacity": 2});
    assert_error(put(&app, &app.merchant(1), "/v1/couriers/31", &courier).await, StatusCode::FORBIDDEN, "forbidden")
        .await;
    let declared: Value = put(&app, &app.admin(), "/v1/couriers/31", &courier).await.json().await.expect("json");
    assert_eq!((&declared["on_shift"], &declared["load"]), (&json!(false), &json!(0)));
    let bad = json!({"name": "Li", "region": "north", "zone": "harbin-centre", "capacity": 0});
    assert_error(put(&app, &app.admin(), "/v1/couriers/31", &bad).await, StatusCode::BAD_REQUEST, "bad_request").await;

    // Only the merchant packs; nobody is on shift, so it waits.
    let pack = format!("/v1/shipments/{waybill}/pack");
    assert_error(app.post_json(&pack, Some(&app.customer(7)), &json!({})).await, StatusCode::FORBIDDEN, "forbidden")
        .await;
    assert_eq!(app.post_json(&pack, Some(&app.merchant(2)), &json!({})).await.status(), StatusCode::NOT_FOUND);
    let packed: Value = app.post_json(&pack, Some(&app.merchant(1)), &json!({})).await.json().await.expect("json");
    assert_eq!(packed["status"], "awaiting_courier", "{packed}");
    assert_eq!(order_status(&app, &order).await, "FULFILLING");
    let again = app.post_json(&pack, Some(&app.merchant(1)), &json!({})).await;
    assert_error(again, StatusCode::UNPROCESSABLE_ENTITY, "invalid_state").await;

    // The courier comes on shift; the dispatcher gives it the parcel.
    let shift = json!({"on_shift": true, "zone": "harbin-centre"});
    assert_error(
        put(&app, &app.customer(7), "/v1/couriers/me/shift", &shift).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let on: Value = put(&app, &app.courier(31), "/v1/couriers/me/shift", &shift).await.json().await.expect("json");
    assert_eq!(on["on_shift"], true, "{on}");
    let assigned = eventually(&app, &app.customer(7), &path, |s| s["status"] == "packed").await;
    assert_eq!(assigned["courier_id"], "31");
    let tasks: Value = get(&app, &app.courier(31), "/v1/couriers/me/tasks").await.json().await.expect("json");
    assert_eq!(tasks["items"][0]["waybill"], json!(waybill));

    // Another courier may not scan it; an out-of-order scan changes nothing.
    put(&app, &app.admin(), "/v1/couriers/32", &courier).await;
    assert_error(scan(&app, 32, &waybill, "picked_up").await, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(scan(&app, 31, &waybill, "delivered").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_state").await;
    let now = time::OffsetDateTime::now_utc();
    let week_ago = crate::helpers::rfc3339(now - time::Duration::days(7));
    for bad in [
        json!({"type": "teleported", "at": crate::helpers::rfc3339(now), "location": "Harbin hub"}),
        json!({"type": "picked_up", "at": week_ago, "location": "Harbin hub"}),
        json!({"type": "picked_up", "at": crate::helpers::rfc3339(now), "location": ""}),
    ] {
        let response = app.post_json(&format!("/v1/shipments/{waybill}/scans"), Some(&app.courier(31)), &bad).await;
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let odd = get(&app, &app.admin(), "/v1/waybills/SF%00/tracking").await;
    assert_eq!(odd.status(), StatusCode::NOT_FOUND, "not a waybill, not looked up");
    let tracking = format!("/v1/waybills/{waybill}/tracking");
    let seen: Value = get(&app, &app.customer(7), &tracking).await.json().await.expect("json");
    assert_eq!(seen["events"], json!([]), "refused scans leave nothing");

    let route = ["picked_up", "arrived_hub", "out_for_delivery", "delivered"];
    for kind in route {
        let response = scan(&app, 31, &waybill, kind).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{kind}");
        let seen: Value = get(&app, &app.customer(7), &tracking).await.json().await.expect("json");
        assert_eq!(seen["events"].as_array().expect("events").last().expect("the scan")["type"], kind, "read at once");
    }
    let seen: Value = get(&app, &app.merchant(1), &tracking).await.json().await.expect("json");
    let kinds: Vec<&str> =
        seen["events"].as_array().expect("events").iter().map(|e| e["type"].as_str().expect("type")).collect();
    assert_eq!(kinds, route);
    assert_eq!((&seen["status"], &seen["courier_id"]), (&json!("delivered"), &json!("31")));
    assert_eq!(get(&app, &app.customer(8), &tracking).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&app, &app.courier(32), &tracking).await.status(), StatusCode::NOT_FOUND, "not its parcel");
    assert_eq!(order_status(&app, &order).await, "DELIVERED");
    let tasks: Value = get(&app, &app.courier(31), "/v1/couriers/me/tasks").await.json().await.expect("json");
    assert_eq!(tasks["items"], json!([]));
    let me: Value = put(&app, &app.courier(31), "/v1/couriers/me/shift", &shift).await.json().await.expect("json");
    assert_eq!(me["load"], 0, "the slot is free again");
}

/// Going off shift hands back what the courier has not picked up, and the
/// dispatcher gives it to a courier of an adjacent zone.
#[tokio::test]
async fn parcels_a_courier_leaves_go_to_a_courier_next_door() {
    let app = spawn_app_with(|s| {
        s.fulfilment.zones.insert("1500".into(), "harbin-centre".into());
        s.fulfilment.adjacent.insert("harbin-centre".into(), vec!["harbin-east".into()]);
        s.fulfilment.dispatch_interval = Duration::from_millis(50);
    })
    .await;
    for (id, zone) in [(41, "harbin-centre"), (42, "harbin-east")] {
        let courier = json!({"name": "Wang", "region": "north", "zone": zone, "capacity": 1});
        assert_eq!(put(&app, &app.admin(), &format!("/v1/couriers/{id}"), &courier).await.status(), StatusCode::OK);
    }
    let shift = |zone: &str, on: bool| json!({"on_shift": on, "zone": zone});
    put(&app, &app.courier(41), "/v1/couriers/me/shift", &shift("harbin-centre", true)).await;
    let order = paid_order(&app, "150002").await;
    let path = format!("/v1/orders/{order}/shipment");
    let shipment = eventually(&app, &app.merchant(1), &path, |_| true).await;
    let waybill = shipment["waybill"].as_str().expect("waybill");
    let packed: Value = app
        .post_json(&format!("/v1/shipments/{waybill}/pack"), Some(&app.merchant(1)), &json!({}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!((&packed["status"], &packed["courier_id"]), (&json!("packed"), &json!("41")), "assigned at once");

    put(&app, &app.courier(42), "/v1/couriers/me/shift", &shift("harbin-east", true)).await;
    let off: Value = put(&app, &app.courier(41), "/v1/couriers/me/shift", &shift("harbin-centre", false))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!((&off["on_shift"], &off["load"]), (&json!(false), &json!(0)));
    let moved = eventually(&app, &app.merchant(1), &path, |s| s["courier_id"] == "42").await;
    assert_eq!(moved["status"], "packed");
    assert_error(scan(&app, 41, waybill, "picked_up").await, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(scan(&app, 42, waybill, "picked_up").await.status(), StatusCode::ACCEPTED);
}

/// In batch mode a packed parcel waits for the next pass, which assigns it.
#[tokio::test]
async fn in_batch_mode_the_next_pass_assigns_what_was_packed() {
    let app = spawn_app_with(|s| {
        s.fulfilment.dispatch = surge_server::config::DispatchSetting::Batch;
        s.fulfilment.dispatch_interval = Duration::from_millis(50);
    })
    .await;
    let courier = json!({"name": "Zhao", "region": "north", "zone": "north", "capacity": 5});
    assert_eq!(put(&app, &app.admin(), "/v1/couriers/51", &courier).await.status(), StatusCode::OK);
    put(&app, &app.courier(51), "/v1/couriers/me/shift", &json!({"on_shift": true, "zone": "north"})).await;
    let order = paid_order(&app, "999999").await;
    let path = format!("/v1/orders/{order}/shipment");
    let shipment = eventually(&app, &app.merchant(1), &path, |_| true).await;
    assert_eq!(shipment["zone"], "north", "no prefix matches: the region's zone");
    let waybill = shipment["waybill"].as_str().expect("waybill");
    let packed: Value = app
        .post_json(&format!("/v1/shipments/{waybill}/pack"), Some(&app.merchant(1)), &json!({}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(packed["status"], "awaiting_courier", "not assigned on the spot: {packed}");
    let assigned = eventually(&app, &app.merchant(1), &path, |s| s["status"] == "packed").await;
    assert_eq!(assigned["courier_id"], "51");
}

/// The buyer hears of pickup, out-for-delivery and delivery (not of every
/// hub), through the outbox and the notification webhook.
#[tokio::test]
async fn the_buyer_hears_of_pickup_out_for_delivery_and_delivery() {
    let (url, received) = crate::notify::receiver(StatusCode::OK).await;
    let app = spawn_app_with(|s| s.notify.webhook_url = Some(url.parse().expect("a webhook URL"))).await;
    let courier = json!({"name": "Sun", "region": "north", "zone": "north", "capacity": 5});
    assert_eq!(put(&app, &app.admin(), "/v1/couriers/61", &courier).await.status(), StatusCode::OK);
    put(&app, &app.courier(61), "/v1/couriers/me/shift", &json!({"on_shift": true, "zone": "north"})).await;
    let order = paid_order(&app, "150001").await;
    let shipment = eventually(&app, &app.merchant(1), &format!("/v1/orders/{order}/shipment"), |_| true).await;
    let waybill = shipment["waybill"].as_str().expect("waybill");
    app.post_json(&format!("/v1/shipments/{waybill}/pack"), Some(&app.merchant(1)), &json!({})).await;
    for kind in ["picked_up", "arrived_hub", "out_for_delivery", "delivered"] {
        assert_eq!(scan(&app, 61, waybill, kind).await.status(), StatusCode::ACCEPTED, "{kind}");
    }
    let parcel_news = || -> Vec<Value> {
        received.lock().expect("lock").iter().filter(|body| body["event"] == "parcel_moved").cloned().collect()
    };
    for _ in 0..200 {
        if parcel_news().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let news = parcel_news();
    let scans: Vec<&str> = news.iter().map(|body| body["parcel"]["scan"].as_str().expect("scan")).collect();
    assert_eq!(scans, ["picked_up", "out_for_delivery", "delivered"], "{news:?}");
    assert!(news.iter().all(|body| body["parcel"]["order_id"] == order.as_str() && body["parcel"]["user_id"] == "7"));
    assert!(news[2]["sms"].as_str().expect("sms").contains("was delivered"), "{}", news[2]);
}
