//! After-sale through the API: a buyer returns a delivered order; the
//! merchant approves; a courier brings the parcel back; the merchant
//! inspects it; the refund saga asks the payment context for the refund
//! until the provider says it went through. Refused steps change nothing.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use surge_domain::clock::ManualClock;
use surge_server::config::Secret;
use surge_store::sandbox::sign;

use crate::fulfilment::{eventually, get, order_status, paid_order, put, scan};
use crate::helpers::{TestApp, assert_error, spawn_app_on};

const SECRET: &str = "an-after-sale-sandbox-secret";
const ROUTE: [&str; 4] = ["picked_up", "arrived_hub", "out_for_delivery", "delivered"];

/// An app on a clock the test moves, couriers dispatched every 50 ms.
async fn app(auto_approve_under_cents: i64) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::starting_at(time::OffsetDateTime::now_utc()));
    let app = spawn_app_on(clock.clone(), |s| {
        s.fulfilment.zones.insert("1500".into(), "harbin-centre".into());
        s.fulfilment.dispatch_interval = Duration::from_millis(50);
        s.payments.sandbox.secret = Some(Secret::new(SECRET.to_owned()));
        s.returns.auto_approve_under_cents = auto_approve_under_cents;
    })
    .await;
    (app, clock)
}

/// Courier `courier` of harbin-centre, on shift.
async fn courier_on_shift(app: &TestApp, courier: u64) {
    let spec = json!({"name": "Sun", "region": "north", "zone": "harbin-centre", "capacity": 5});
    assert_eq!(put(app, &app.admin(), &format!("/v1/couriers/{courier}"), &spec).await.status(), StatusCode::OK);
    let shift = json!({"on_shift": true, "zone": "harbin-centre"});
    assert_eq!(put(app, &app.courier(courier), "/v1/couriers/me/shift", &shift).await.status(), StatusCode::OK);
}

/// Takes the parcel `waybill` along the whole route as `courier`, once it
/// is assigned to it.
async fn carry(app: &TestApp, courier: u64, waybill: &str) {
    let tracking = format!("/v1/waybills/{waybill}/tracking");
    eventually(app, &app.admin(), &tracking, |t| t["courier_id"].as_str() == Some(&courier.to_string())).await;
    for kind in ROUTE {
        assert_eq!(scan(app, courier, waybill, kind).await.status(), StatusCode::ACCEPTED, "{waybill} {kind}");
    }
}

/// Buyer 7's order of merchant 1, paid, packed and delivered by courier
/// 61: (order id, product id).
async fn delivered_order(app: &TestApp) -> (String, String) {
    let order = paid_order(app, "150003").await;
    let shipment = eventually(app, &app.merchant(1), &format!("/v1/orders/{order}/shipment"), |_| true).await;
    let waybill = shipment["waybill"].as_str().expect("waybill").to_owned();
    let packed = app.post_json(&format!("/v1/shipments/{waybill}/pack"), Some(&app.merchant(1)), &json!({})).await;
    assert_eq!(packed.status(), StatusCode::OK);
    carry(app, 61, &waybill).await;
    assert_eq!(order_status(app, &order).await, "DELIVERED");
    let (_, body) = app.order(&app.customer(7), &order).await;
    (order, body["items"][0]["product_id"].as_str().expect("product").to_owned())
}

async fn ask_return(app: &TestApp, token: &str, order: &str, key: Option<&str>) -> Response {
    let mut request = app.client.post(app.url(&format!("/v1/orders/{order}/returns"))).bearer_auth(token);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.json(&json!({"reason": "the wrong size"})).send().await.expect("request")
}

async fn decide(app: &TestApp, token: &str, id: &str, verb: &str, body: &Value) -> Response {
    app.post_json(&format!("/v1/returns/{id}/{verb}"), Some(token), body).await
}

async fn the_return(app: &TestApp, id: &str) -> Value {
    get(app, &app.customer(7), &format!("/v1/returns/{id}")).await.json().await.expect("json")
}

async fn stock(app: &TestApp, product: &str) -> i64 {
    app.product(product).await["stock"].as_i64().expect("stock")
}

/// The sandbox's callback about the refund `refund_id`, signed.
async fn refund_callback(app: &TestApp, event_id: &str, kind: &str, refund_id: &Value, cents: &Value) -> StatusCode {
    let body = json!({"event_id": event_id, "type": kind, "provider_ref": format!("sbr_{}", refund_id.as_str().expect("id")),
                      "amount_cents": cents});
    let body = serde_json::to_vec(&body).expect("json");
    let t = time::OffsetDateTime::now_utc().unix_timestamp();
    let response = app
        .client
        .post(app.url("/v1/payments/callbacks/sandbox"))
        .header("content-type", "application/json")
        .header("surge-signature", sign(SECRET.as_bytes(), t, &body))
        .body(body)
        .send()
        .await
        .expect("request");
    response.status()
}

async fn reconciliation(app: &TestApp) -> Vec<Value> {
    let response = app.post_json("/v1/admin/reconciliation/run", Some(&app.admin()), &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let pass: Value = response.json().await.expect("json");
    pass["mismatches"].as_array().expect("mismatches").clone()
}

#[tokio::test]
async fn a_returned_parcel_comes_back_passes_inspection_and_is_refunded_through_a_failed_attempt() {
    let (app, clock) = app(0).await;
    courier_on_shift(&app, 61).await;
    let (order, product) = delivered_order(&app).await;

    assert_error(ask_return(&app, &app.merchant(1), &order, None).await, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(ask_return(&app, &app.customer(8), &order, None).await.status(), StatusCode::NOT_FOUND);
    let asked = ask_return(&app, &app.customer(7), &order, Some("ret-1")).await;
    assert_eq!(asked.status(), StatusCode::CREATED);
    let asked: Value = asked.json().await.expect("json");
    let id = asked["id"].as_str().expect("return id").to_owned();
    assert_eq!((&asked["status"], &asked["waybill"]), (&json!("requested"), &Value::Null));
    assert_eq!(order_status(&app, &order).await, "RETURN_REQUESTED");
    let again: Value = ask_return(&app, &app.customer(7), &order, Some("ret-1")).await.json().await.expect("json");
    assert_eq!(again["id"], asked["id"], "the key names the first return");
    let second = ask_return(&app, &app.customer(7), &order, None).await;
    assert_error(second, StatusCode::UNPROCESSABLE_ENTITY, "invalid_state").await;
    assert_eq!(get(&app, &app.customer(8), &format!("/v1/returns/{id}")).await.status(), StatusCode::NOT_FOUND);

    // Only its merchant (or an admin) decides; nothing to inspect yet.
    assert_error(decide(&app, &app.customer(7), &id, "approve", &json!({})).await, StatusCode::FORBIDDEN, "forbidden")
        .await;
    assert_eq!(decide(&app, &app.merchant(2), &id, "approve", &json!({})).await.status(), StatusCode::NOT_FOUND);
    let early = decide(&app, &app.merchant(1), &id, "inspect", &json!({"passed": true, "refund_cents": 1})).await;
    assert_error(early, StatusCode::UNPROCESSABLE_ENTITY, "invalid_state").await;
    // Approvals at once (a double click, two tabs): one wins, the others
    // change nothing.
    let merchant = app.merchant(1);
    let empty = json!({});
    let approvals = (0..6).map(|_| decide(&app, &merchant, &id, "approve", &empty));
    let statuses: Vec<StatusCode> = futures::future::join_all(approvals).await.iter().map(Response::status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::UNPROCESSABLE_ENTITY).count(), 5, "{statuses:?}");
    let approved = the_return(&app, &id).await;
    assert_eq!(approved["status"], "approved", "{approved}");
    let reverse = approved["waybill"].as_str().expect("reverse waybill").to_owned();
    assert!(reverse.starts_with("SR"), "{reverse}");
    let twice = decide(&app, &app.merchant(1), &id, "reject", &json!({})).await;
    assert_error(twice, StatusCode::UNPROCESSABLE_ENTITY, "invalid_state").await;

    // The same dispatcher gives the reverse parcel to a courier, who
    // brings it to the warehouse.
    carry(&app, 61, &reverse).await;
    let tracking: Value =
        get(&app, &app.customer(7), &format!("/v1/waybills/{reverse}/tracking")).await.json().await.expect("json");
    assert_eq!(tracking["status"], "delivered");
    assert_eq!(the_return(&app, &id).await["status"], "received");
    assert_eq!(order_status(&app, &order).await, "RETURN_REQUESTED");

    // Inspection: bad amounts are 400, the buyer may not; passed puts the
    // unit back and the refund follows.
    let (_, body) = app.order(&app.customer(7), &order).await;
    let amount = body["amount_cents"].as_i64().expect("amount");
    for bad in [
        json!({"passed": true, "refund_cents": 0}),
        json!({"passed": true, "refund_cents": amount + 1}),
        json!({"passed": false, "refund_cents": 5}),
        json!({"passed": "yes"}),
    ] {
        let response = decide(&app, &app.merchant(1), &id, "inspect", &bad).await;
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let by_buyer =
        decide(&app, &app.customer(7), &id, "inspect", &json!({"passed": true, "refund_cents": amount})).await;
    assert_error(by_buyer, StatusCode::FORBIDDEN, "forbidden").await;
    // Inspections at once: one puts the unit back, the others are 422.
    let before = stock(&app, &product).await;
    let pass = json!({"passed": true, "refund_cents": amount});
    let inspections = (0..6).map(|_| decide(&app, &merchant, &id, "inspect", &pass));
    let answers = futures::future::join_all(inspections).await;
    let statuses: Vec<StatusCode> = answers.iter().map(Response::status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::UNPROCESSABLE_ENTITY).count(), 5, "{statuses:?}");
    let inspected = the_return(&app, &id).await;
    assert_eq!(inspected["refund_cents"], amount);
    assert_eq!(order_status(&app, &order).await, "RETURNED");
    assert_eq!(stock(&app, &product).await, before + 1, "the unit is back, once");
    let again = decide(&app, &merchant, &id, "inspect", &pass).await;
    assert_error(again, StatusCode::UNPROCESSABLE_ENTITY, "invalid_state").await;

    // The saga asks for the refund; the provider fails it; after its
    // backoff the saga asks again, and reconciliation shows it meanwhile.
    let path = format!("/v1/returns/{id}");
    let first = eventually(&app, &app.customer(7), &path, |r| !r["refund_id"].is_null()).await;
    assert_eq!(
        refund_callback(&app, "rf-a", "refund.failed", &first["refund_id"], &json!(amount)).await,
        StatusCode::OK
    );
    let waiting = eventually(&app, &app.customer(7), &path, |r| r["refund_attempts"] == 1).await;
    assert_eq!((&waiting["status"], &waiting["refund_id"]), (&json!("refunding"), &Value::Null), "waits its backoff");
    let outstanding: Vec<Value> =
        reconciliation(&app).await.into_iter().filter(|m| m["kind"] == "return_refund_outstanding").collect();
    assert_eq!(outstanding.len(), 1, "{outstanding:?}");
    assert_eq!(outstanding[0]["order_id"], order.as_str());
    clock.advance(Duration::from_secs(2));
    let retried = eventually(&app, &app.customer(7), &path, |r| !r["refund_id"].is_null()).await;
    assert_ne!(retried["refund_id"], first["refund_id"], "a new refund");
    assert_eq!(
        refund_callback(&app, "rf-b", "refund.succeeded", &retried["refund_id"], &json!(amount)).await,
        StatusCode::OK
    );
    let done = eventually(&app, &app.customer(7), &path, |r| r["status"] == "refunded").await;
    assert_eq!(done["refund_attempts"], 1);
    assert_eq!(order_status(&app, &order).await, "REFUNDED");
    assert!(reconciliation(&app).await.iter().all(|m| m["kind"] != "return_refund_outstanding"));
}

#[tokio::test]
async fn a_rejected_return_or_a_failed_inspection_refunds_nothing_and_a_late_one_is_refused() {
    let (app, clock) = app(0).await;
    courier_on_shift(&app, 61).await;
    let (order, product) = delivered_order(&app).await;

    // Rejected: the order is delivered again, and may be returned again.
    let asked: Value = ask_return(&app, &app.customer(7), &order, None).await.json().await.expect("json");
    let rejected: Value = decide(&app, &app.admin(), asked["id"].as_str().expect("id"), "reject", &json!({}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(order_status(&app, &order).await, "DELIVERED");

    // Failed inspection: no refund, no stock; the parcel goes back.
    let asked: Value = ask_return(&app, &app.customer(7), &order, None).await.json().await.expect("json");
    let id = asked["id"].as_str().expect("id").to_owned();
    let approved: Value = decide(&app, &app.merchant(1), &id, "approve", &json!({})).await.json().await.expect("json");
    carry(&app, 61, approved["waybill"].as_str().expect("waybill")).await;
    let before = stock(&app, &product).await;
    let failed: Value =
        decide(&app, &app.merchant(1), &id, "inspect", &json!({"passed": false})).await.json().await.expect("json");
    assert_eq!((&failed["status"], &failed["refund_id"]), (&json!("inspection_failed"), &Value::Null));
    assert_eq!(order_status(&app, &order).await, "DELIVERED");
    assert_eq!(stock(&app, &product).await, before);
    let back: Value =
        get(&app, &app.merchant(1), &format!("/v1/waybills/SB{id}/tracking")).await.json().await.expect("json");
    assert_eq!(back["status"], "created", "the merchant packs it back to the buyer");
    let again = decide(&app, &app.merchant(1), &id, "inspect", &json!({"passed": true, "refund_cents": 1})).await;
    assert_error(again, StatusCode::UNPROCESSABLE_ENTITY, "invalid_state").await;
    let packed = app.post_json(&format!("/v1/shipments/SB{id}/pack"), Some(&app.merchant(1)), &json!({})).await;
    assert_eq!(packed.status(), StatusCode::OK, "the order is delivered, yet its parcel back ships");
    carry(&app, 61, &format!("SB{id}")).await;
    assert_eq!(order_status(&app, &order).await, "DELIVERED");
    let own = get(&app, &app.customer(7), &format!("/v1/orders/{order}/shipment")).await.json::<Value>().await;
    assert_eq!(own.expect("json")["waybill"], format!("SF{order}"), "the order's shipment is still its own");

    // A minute before the window closes a request is taken; a minute
    // after, it is refused and nothing changes.
    let window = Duration::from_secs(7 * 24 * 3600);
    clock.advance(window - Duration::from_secs(60));
    let last: Value = ask_return(&app, &app.customer(7), &order, None).await.json().await.expect("json");
    assert_eq!(last["status"], "requested", "{last}");
    let path = format!("/v1/returns/{}/reject", last["id"].as_str().expect("id"));
    assert_eq!(app.post_json(&path, Some(&app.merchant(1)), &json!({})).await.status(), StatusCode::OK);
    clock.advance(Duration::from_secs(120));
    let late = ask_return(&app, &app.customer(7), &order, None).await;
    assert_error(late, StatusCode::UNPROCESSABLE_ENTITY, "invalid_state").await;
    assert_eq!(order_status(&app, &order).await, "DELIVERED");
}

#[tokio::test]
async fn a_return_under_the_auto_approve_amount_is_approved_at_once() {
    let (app, _clock) = app(1_000_000_000).await;
    courier_on_shift(&app, 61).await;
    let (order, _) = delivered_order(&app).await;
    let asked = ask_return(&app, &app.customer(7), &order, None).await;
    assert_eq!(asked.status(), StatusCode::CREATED);
    let asked: Value = asked.json().await.expect("json");
    assert_eq!(asked["status"], "approved", "{asked}");
    let reverse = asked["waybill"].as_str().expect("waybill");
    let tracking = format!("/v1/waybills/{reverse}/tracking");
    let assigned = eventually(&app, &app.customer(7), &tracking, |t| t["courier_id"] == "61").await;
    assert_eq!(assigned["status"], "packed");
}
