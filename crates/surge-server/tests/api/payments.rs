//! Payments: a buyer opens a payment of a `CREATED` order; the sandbox
//! provider's signed callbacks decide it, each applied once whatever the
//! repeats and the order of arrival; bad callbacks change nothing.

use futures::StreamExt;
use futures::stream;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use surge_server::config::Secret;
use surge_store::sandbox::{TOLERANCE_SECS, sign};

use std::sync::Arc;
use std::time::Duration;

use surge_domain::clock::ManualClock;

use crate::helpers::{TestApp, assert_error, spawn_app_on, spawn_app_with};

const SECRET: &str = "a-sandbox-secret-for-tests";

async fn app() -> TestApp {
    spawn_app_with(|s| s.payments.sandbox.secret = Some(Secret::new(SECRET.to_owned()))).await
}

/// A product of merchant 1 with 5 units, and buyer 7's checkout of 2 of
/// them: (product id, order id).
async fn ordered(app: &TestApp) -> (String, String) {
    let product = app.create_product_with_stock(1, &format!("PAY-{}", crate::helpers::uuid_like()), 5).await;
    let product = product["id"].as_str().expect("id").to_owned();
    let address = json!({"region": "north", "city": "Harbin", "line1": "1 Main St", "postcode": "150000",
                         "phone": "+86 451 0000"});
    let cart = json!({"items": [{"product_id": product, "quantity": 2}], "address": address});
    let response = app.post_json("/v1/checkout", Some(&app.customer(7)), &cart).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("json");
    (product, created["orders"][0]["id"].as_str().expect("order id").to_owned())
}

async fn start(app: &TestApp, token: &str, order: &str) -> Response {
    let path = format!("/v1/orders/{order}/payments");
    app.client.post(app.url(&path)).bearer_auth(token).json(&json!({})).send().await.expect("request")
}

/// Buyer 7 opens a payment of `order`: its JSON.
async fn started(app: &TestApp, order: &str) -> Value {
    let response = start(app, &app.customer(7), order).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.expect("json")
}

fn event(id: &str, kind: &str, payment: &Value) -> Vec<u8> {
    let body = json!({"event_id": id, "type": kind, "provider_ref": payment["provider_ref"],
                      "amount_cents": payment["amount_cents"]});
    serde_json::to_vec(&body).expect("json")
}

/// Posts `body` as the sandbox would, signed with `secret` at `t`.
async fn callback_signed(app: &TestApp, body: &[u8], secret: &str, t: i64) -> Response {
    app.client
        .post(app.url("/v1/payments/callbacks/sandbox"))
        .header("content-type", "application/json")
        .header("surge-signature", sign(secret.as_bytes(), t, body))
        .body(body.to_vec())
        .send()
        .await
        .expect("request")
}

async fn callback(app: &TestApp, body: &[u8]) -> Response {
    callback_signed(app, body, SECRET, time::OffsetDateTime::now_utc().unix_timestamp()).await
}

async fn payment(app: &TestApp, id: &Value) -> Value {
    let path = format!("/v1/payments/{}", id.as_str().expect("payment id"));
    let response = app.client.get(app.url(&path)).bearer_auth(app.customer(7)).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

async fn order_status(app: &TestApp, order: &str) -> Value {
    let (status, order) = app.order(&app.customer(7), order).await;
    assert_eq!(status, StatusCode::OK);
    order["status"].clone()
}

async fn units(app: &TestApp, product: &str) -> (Value, Value) {
    let product = app.product(product).await;
    (product["stock"].clone(), product["reserved"].clone())
}

#[tokio::test]
async fn a_success_pays_the_order_once_however_often_it_is_delivered() {
    let app = app().await;
    let (product, order) = ordered(&app).await;
    let opened = started(&app, &order).await;
    assert_eq!(
        (&opened["status"], &opened["provider"], &opened["amount_cents"]),
        (&json!("pending"), &json!("sandbox"), &json!(3998))
    );
    assert_eq!(opened["order_id"], order.as_str());
    let pay_url = opened["pay_url"].as_str().expect("pay_url");
    assert!(pay_url.ends_with(opened["provider_ref"].as_str().expect("ref")), "{pay_url}");
    assert_eq!(started(&app, &order).await["id"], opened["id"], "a second click opens nothing new");

    let succeeded = event("evt_ok_1", "payment.succeeded", &opened);
    for _ in 0..3 {
        let response = callback(&app, &succeeded).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json::<Value>().await.expect("json")["status"], "succeeded");
    }
    // Another success event for the same payment: seen, nothing moves.
    assert_eq!(callback(&app, &event("evt_ok_2", "payment.succeeded", &opened)).await.status(), StatusCode::OK);
    assert_eq!(payment(&app, &opened["id"]).await["status"], "succeeded");
    assert_eq!(order_status(&app, &order).await, "PAID");
    assert_eq!(units(&app, &product).await, (json!(3), json!(0)), "the units were sold once");
}

#[tokio::test]
async fn a_failure_never_undoes_a_success_and_a_success_after_a_failure_counts() {
    let app = app().await;
    let (_, first) = ordered(&app).await;
    let paid = started(&app, &first).await;
    assert_eq!(callback(&app, &event("e1", "payment.succeeded", &paid)).await.status(), StatusCode::OK);
    let late_failure = callback(&app, &event("e2", "payment.failed", &paid)).await;
    assert_eq!(late_failure.status(), StatusCode::OK);
    assert_eq!(late_failure.json::<Value>().await.expect("json")["status"], "succeeded");
    assert_eq!(order_status(&app, &first).await, "PAID");

    let (_, second) = ordered(&app).await;
    let retried = started(&app, &second).await;
    assert_eq!(callback(&app, &event("e3", "payment.failed", &retried)).await.status(), StatusCode::OK);
    assert_eq!(payment(&app, &retried["id"]).await["status"], "failed");
    assert_eq!(order_status(&app, &second).await, "CREATED", "a failed payment leaves the order payable");
    assert_eq!(callback(&app, &event("e4", "payment.succeeded", &retried)).await.status(), StatusCode::OK);
    assert_eq!(payment(&app, &retried["id"]).await["status"], "succeeded");
    assert_eq!(order_status(&app, &second).await, "PAID");
}

#[tokio::test]
async fn bad_callbacks_are_400_and_change_nothing() {
    let app = app().await;
    let (product, order) = ordered(&app).await;
    let opened = started(&app, &order).await;
    let body = event("evt_bad", "payment.succeeded", &opened);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    assert_error(
        callback_signed(&app, &body, "not-the-secret-at-all", now).await,
        StatusCode::BAD_REQUEST,
        "bad_signature",
    )
    .await;
    let stale = callback_signed(&app, &body, SECRET, now - TOLERANCE_SECS - 60).await;
    assert_error(stale, StatusCode::BAD_REQUEST, "bad_signature").await;
    let unsigned =
        app.client.post(app.url("/v1/payments/callbacks/sandbox")).body(body.clone()).send().await.expect("req");
    assert_error(unsigned, StatusCode::BAD_REQUEST, "bad_signature").await;
    let tampered = {
        let header = sign(SECRET.as_bytes(), now, &body);
        let other =
            event("evt_bad", "payment.succeeded", &json!({"provider_ref": opened["provider_ref"], "amount_cents": 1}));
        app.client.post(app.url("/v1/payments/callbacks/sandbox")).header("surge-signature", header).body(other).send()
    };
    assert_error(tampered.await.expect("req"), StatusCode::BAD_REQUEST, "bad_signature").await;

    let unknown = event("evt_unknown", "payment.succeeded", &json!({"provider_ref": "sb_404", "amount_cents": 3998}));
    assert_error(callback(&app, &unknown).await, StatusCode::BAD_REQUEST, "bad_request").await;
    let wrong_amount =
        event("evt_amount", "payment.succeeded", &json!({"provider_ref": opened["provider_ref"], "amount_cents": 1}));
    assert_error(callback(&app, &wrong_amount).await, StatusCode::BAD_REQUEST, "bad_request").await;
    for malformed in
        [&b"{not json"[..], br#"{"event_id":"x","type":"payment.teleported","provider_ref":"r","amount_cents":1}"#]
    {
        assert_error(callback(&app, malformed).await, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let elsewhere =
        app.client.post(app.url("/v1/payments/callbacks/acme")).body(body.clone()).send().await.expect("req");
    assert_error(elsewhere, StatusCode::NOT_FOUND, "not_found").await;

    assert_eq!(payment(&app, &opened["id"]).await["status"], "pending");
    assert_eq!(order_status(&app, &order).await, "CREATED");
    assert_eq!(units(&app, &product).await, (json!(3), json!(2)));
    // None of them was recorded: the same event, signed, still applies.
    assert_eq!(callback(&app, &body).await.status(), StatusCode::OK);
    assert_eq!(order_status(&app, &order).await, "PAID");
}

#[tokio::test]
async fn only_the_buyer_opens_a_payment_of_a_created_order_and_only_they_and_the_merchant_read_it() {
    let app = app().await;
    let (_, order) = ordered(&app).await;
    assert_error(start(&app, &app.customer(8), &order).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(start(&app, &app.merchant(1), &order).await, StatusCode::FORBIDDEN, "forbidden").await;
    let opened = started(&app, &order).await;
    let path = format!("/v1/payments/{}", opened["id"].as_str().expect("id"));
    for (token, status) in [
        (app.customer(7), StatusCode::OK),
        (app.merchant(1), StatusCode::OK),
        (app.admin(), StatusCode::OK),
        (app.customer(8), StatusCode::NOT_FOUND),
        (app.merchant(2), StatusCode::NOT_FOUND),
    ] {
        let response = app.client.get(app.url(&path)).bearer_auth(token).send().await.expect("request");
        assert_eq!(response.status(), status);
    }
    assert_eq!(callback(&app, &event("paid", "payment.succeeded", &opened)).await.status(), StatusCode::OK);
    assert_error(start(&app, &app.customer(7), &order).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_state").await;
}

#[tokio::test]
async fn concurrent_repeats_and_rival_events_apply_once() {
    let app = app().await;
    let (product, order) = ordered(&app).await;
    let opened = started(&app, &order).await;
    // 30 deliveries of one success, 10 other successes and 10 failures, at once.
    let bodies: Vec<Vec<u8>> = (0..50)
        .map(|i| match i {
            0..30 => event("evt_same", "payment.succeeded", &opened),
            30..40 => event(&format!("evt_ok_{i}"), "payment.succeeded", &opened),
            _ => event(&format!("evt_fail_{i}"), "payment.failed", &opened),
        })
        .collect();
    let statuses: Vec<StatusCode> = stream::iter(bodies.iter())
        .map(|body| callback(&app, body))
        .buffer_unordered(16)
        .map(|r| r.status())
        .collect()
        .await;
    assert!(statuses.iter().all(|status| *status == StatusCode::OK), "{statuses:?}");
    assert_eq!(payment(&app, &opened["id"]).await["status"], "succeeded", "a success wins, whatever came first");
    assert_eq!(order_status(&app, &order).await, "PAID");
    assert_eq!(units(&app, &product).await, (json!(3), json!(0)), "the reservation left once");
    let ledger = trial_balance(&app).await;
    assert_eq!(ledger["balanced"], true, "{ledger}");
    assert_eq!(account(&ledger, "provider_clearing"), (3998, 0), "captured once");
}

async fn trial_balance(app: &TestApp) -> Value {
    let response = app.client.get(app.url("/v1/admin/ledger/trial-balance")).bearer_auth(app.admin()).send().await;
    let response = response.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

/// (debit, credit) of one account of the trial balance.
fn account(balance: &Value, name: &str) -> (i64, i64) {
    let accounts = balance["accounts"].as_array().expect("accounts");
    let account =
        accounts.iter().find(|account| account["name"] == name).unwrap_or_else(|| panic!("no {name}: {balance}"));
    (account["debit_cents"].as_i64().expect("debit"), account["credit_cents"].as_i64().expect("credit"))
}

async fn balance(app: &TestApp, token: &str, merchant: u64) -> Response {
    let path = format!("/v1/merchants/{merchant}/balance");
    app.client.get(app.url(&path)).bearer_auth(token).send().await.expect("request")
}

#[tokio::test]
async fn the_ledger_stays_balanced_and_a_merchant_is_owed_what_was_captured_less_commission() {
    let app = app().await;
    let mut payments = Vec::new();
    for _ in 0..3 {
        let (_, order) = ordered(&app).await;
        payments.push(started(&app, &order).await);
    }
    let commission = payments[0]["commission_cents"].as_i64().expect("commission");
    assert_eq!(commission, 3998 * 500 / 10_000, "5% by default, rounded down");
    let opened: Value = balance(&app, &app.merchant(1), 1).await.json().await.expect("json");
    assert_eq!(opened, json!({"pending_cents": 3 * 3998, "available_cents": 0, "paid_out_cents": 0}));

    for (id, kind, payment) in [
        ("l1", "payment.succeeded", &payments[0]),
        ("l1", "payment.succeeded", &payments[0]),
        ("l2", "payment.failed", &payments[1]),
        ("l3", "payment.failed", &payments[2]),
        ("l4", "payment.succeeded", &payments[2]),
    ] {
        assert_eq!(callback(&app, &event(id, kind, payment)).await.status(), StatusCode::OK);
    }
    let ledger = trial_balance(&app).await;
    assert_eq!(ledger["balanced"], true, "{ledger}");
    assert_eq!(ledger["debits_cents"], ledger["credits_cents"]);
    assert_eq!(account(&ledger, "provider_clearing"), (2 * 3998, 0), "two captures");
    assert_eq!(account(&ledger, "merchant_payable:1"), (2 * commission, 2 * 3998));
    assert_eq!(account(&ledger, "platform_commission"), (0, 2 * commission));
    let settled: Value = balance(&app, &app.admin(), 1).await.json().await.expect("json");
    let available = 2 * (3998 - commission);
    assert_eq!(settled, json!({"pending_cents": 0, "available_cents": available, "paid_out_cents": 0}));

    assert_error(balance(&app, &app.merchant(2), 1).await, StatusCode::FORBIDDEN, "forbidden").await;
    assert_error(balance(&app, &app.customer(7), 1).await, StatusCode::FORBIDDEN, "forbidden").await;
    let as_merchant = app.client.get(app.url("/v1/admin/ledger/trial-balance")).bearer_auth(app.merchant(1)).send();
    assert_error(as_merchant.await.expect("request"), StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn the_pay_shortcut_is_a_payment_captured_at_once_and_posted_to_the_ledger() {
    let app = app().await;
    let (product, order) = ordered(&app).await;
    let path = format!("/v1/orders/{order}/pay");
    let paid = app.client.post(app.url(&path)).bearer_auth(app.customer(7)).json(&json!({})).send().await;
    let paid = paid.expect("request");
    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(paid.json::<Value>().await.expect("json")["status"], "PAID");
    assert_eq!(units(&app, &product).await, (json!(3), json!(0)));
    let ledger = trial_balance(&app).await;
    assert_eq!(ledger["balanced"], true, "{ledger}");
    assert_eq!(account(&ledger, "provider_clearing"), (3998, 0));
    let again = app.client.post(app.url(&path)).bearer_auth(app.customer(7)).json(&json!({})).send().await;
    assert_error(again.expect("request"), StatusCode::UNPROCESSABLE_ENTITY, "invalid_state").await;
    assert_eq!(account(&trial_balance(&app).await, "provider_clearing"), (3998, 0), "posted once");
}

async fn refund(app: &TestApp, token: &str, order: &str, amount: i64, key: Option<&str>) -> Response {
    let path = format!("/v1/orders/{order}/refunds");
    let mut request =
        app.client.post(app.url(&path)).bearer_auth(token).json(&json!({"amount_cents": amount, "reason": "damaged"}));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("request")
}

async fn refunded(app: &TestApp, order: &str, amount: i64, key: Option<&str>) -> Value {
    let response = refund(app, &app.merchant(1), order, amount, key).await;
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((&body["status"], &body["amount_cents"]), (&json!("pending"), &json!(amount)));
    body
}

fn refund_event(id: &str, kind: &str, refund: &Value) -> Vec<u8> {
    let body = json!({"event_id": id, "type": kind, "provider_ref": refund["provider_ref"],
                      "amount_cents": refund["amount_cents"]});
    serde_json::to_vec(&body).expect("json")
}

#[tokio::test]
async fn refunds_never_pass_what_was_captured_and_post_to_the_ledger() {
    let app = app().await;
    let (_, order) = ordered(&app).await;
    let nothing_captured = refund(&app, &app.merchant(1), &order, 100, None).await;
    assert_error(nothing_captured, StatusCode::CONFLICT, "refund_exceeds_payment").await;
    let opened = started(&app, &order).await;
    assert_eq!(callback(&app, &event("cap", "payment.succeeded", &opened)).await.status(), StatusCode::OK);

    let first = refunded(&app, &order, 1_000, Some("r-1")).await;
    assert_eq!(refunded(&app, &order, 1_000, Some("r-1")).await["id"], first["id"], "the key replays it");
    let second = refunded(&app, &order, 2_000, None).await;
    let over = refund(&app, &app.merchant(1), &order, 999, None).await;
    assert_error(over, StatusCode::CONFLICT, "refund_exceeds_payment").await;
    refunded(&app, &order, 998, None).await;
    assert_eq!(payment(&app, &opened["id"]).await["refunded_cents"], 3_998, "all of it, and not a cent more");

    let settled = refund_event("rf-1", "refund.succeeded", &first);
    for _ in 0..2 {
        assert_eq!(callback(&app, &settled).await.status(), StatusCode::OK);
    }
    assert_eq!(callback(&app, &refund_event("rf-2", "refund.failed", &second)).await.status(), StatusCode::OK);
    assert_eq!(payment(&app, &opened["id"]).await["refunded_cents"], 1_998, "a failed refund gives its room back");
    let late = callback(&app, &refund_event("rf-3", "refund.succeeded", &second)).await;
    assert_eq!(late.status(), StatusCode::OK, "a failed refund stays failed");
    refunded(&app, &order, 2_000, None).await;

    let ledger = trial_balance(&app).await;
    assert_eq!(ledger["balanced"], true, "{ledger}");
    assert_eq!(account(&ledger, "provider_clearing"), (3_998, 1_000), "captured, and one refund went back");
    let commission = opened["commission_cents"].as_i64().expect("commission");
    assert_eq!(account(&ledger, "merchant_payable:1"), (commission + 1_000, 3_998));
    let owed: Value = balance(&app, &app.merchant(1), 1).await.json().await.expect("json");
    let asked = 998 + 2_000;
    assert_eq!(owed["available_cents"], 3_998 - commission - 1_000 - asked, "refunds asked are not available");
    assert_eq!(owed["pending_cents"], 0);
}

#[tokio::test]
async fn only_the_merchant_or_an_admin_refunds_and_bad_refunds_are_400() {
    let app = app().await;
    let (_, order) = ordered(&app).await;
    let opened = started(&app, &order).await;
    assert_eq!(callback(&app, &event("cap", "payment.succeeded", &opened)).await.status(), StatusCode::OK);
    assert_error(refund(&app, &app.customer(7), &order, 1, None).await, StatusCode::FORBIDDEN, "forbidden").await;
    assert_error(refund(&app, &app.merchant(2), &order, 1, None).await, StatusCode::NOT_FOUND, "not_found").await;
    for amount in [0, -1] {
        assert_error(refund(&app, &app.admin(), &order, amount, None).await, StatusCode::BAD_REQUEST, "bad_request")
            .await;
    }
    let path = format!("/v1/orders/{order}/refunds");
    for body in [
        json!({"amount_cents": 1, "reason": "  "}),
        json!({"amount_cents": 1}),
        json!({"amount_cents": 1, "reason": "x", "extra": 1}),
    ] {
        let response = app.client.post(app.url(&path)).bearer_auth(app.admin()).json(&body).send().await.expect("req");
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    assert_eq!(payment(&app, &opened["id"]).await["refunded_cents"], 0, "nothing was taken");
    let by_admin = refund(&app, &app.admin(), &order, 1, None).await;
    assert_eq!(by_admin.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_reconciliation_lists_a_capture_whose_order_was_cancelled_and_nothing_else() {
    let app = app().await;
    let (_, fine) = ordered(&app).await;
    let paid = started(&app, &fine).await;
    assert_eq!(callback(&app, &event("ok", "payment.succeeded", &paid)).await.status(), StatusCode::OK);
    let (_, cancelled) = ordered(&app).await;
    let late = started(&app, &cancelled).await;
    let path = format!("/v1/orders/{cancelled}/cancel");
    let cancel = app.client.post(app.url(&path)).bearer_auth(app.customer(7)).json(&json!({})).send().await;
    assert_eq!(cancel.expect("request").status(), StatusCode::OK);
    assert_eq!(callback(&app, &event("late", "payment.succeeded", &late)).await.status(), StatusCode::OK);
    assert_eq!(order_status(&app, &cancelled).await, "CANCELLED", "a late capture does not revive the order");

    let run = |token: String| {
        let app = &app;
        async move {
            let url = app.url("/v1/admin/reconciliation/run");
            app.client.post(url).bearer_auth(token).json(&json!({})).send().await.expect("request")
        }
    };
    assert_error(run(app.merchant(1)).await, StatusCode::FORBIDDEN, "forbidden").await;
    let response = run(app.admin()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let pass: Value = response.json().await.expect("json");
    assert_eq!(pass["checked"], 3, "one paid order, two payments: {pass}");
    let mismatches = pass["mismatches"].as_array().expect("mismatches");
    assert_eq!(mismatches.len(), 1, "{pass}");
    assert_eq!(mismatches[0]["kind"], "capture_without_paid_order");
    assert_eq!(mismatches[0]["order_id"], cancelled.as_str());
}

async fn settle(app: &TestApp, until: Option<&str>) -> Vec<Value> {
    let body = until.map_or(json!({}), |until| json!({"until": until}));
    let url = app.url("/v1/admin/settlements/run");
    let response = app.client.post(url).bearer_auth(app.admin()).json(&body).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.expect("json");
    page["items"].as_array().expect("items").clone()
}

#[tokio::test]
async fn a_settlement_run_closes_each_ended_day_once_the_statements_add_up_to_the_balance_and_a_payout_pays_them() {
    let clock = Arc::new(ManualClock::starting_at(time::OffsetDateTime::now_utc()));
    let app = spawn_app_on(clock.clone(), |s| s.payments.sandbox.secret = Some(Secret::new(SECRET.to_owned()))).await;
    let (_, order) = ordered(&app).await;
    let paid = started(&app, &order).await;
    assert_eq!(callback(&app, &event("cap", "payment.succeeded", &paid)).await.status(), StatusCode::OK);
    let back = refunded(&app, &order, 1_000, None).await;
    assert_eq!(callback(&app, &refund_event("rf", "refund.succeeded", &back)).await.status(), StatusCode::OK);
    let (_, unpaid) = ordered(&app).await;
    started(&app, &unpaid).await;

    assert!(settle(&app, None).await.is_empty(), "today has not ended");
    // A day closes once its grace has passed too: from the first minutes
    // after midnight, a day on is not enough.
    clock.advance(Duration::from_secs(24 * 3_600) + surge_domain::settlement::CLOSE_GRACE);
    let closed = settle(&app, None).await;
    assert_eq!(closed.len(), 1, "{closed:?}");
    let commission = paid["commission_cents"].as_i64().expect("commission");
    let statement = &closed[0];
    assert_eq!(statement["merchant_id"], "1");
    assert_eq!(statement["status"], "closed");
    let sums = ["gross_cents", "refunds_cents", "commission_cents", "net_cents"].map(|field| statement[field].clone());
    assert_eq!(sums, [json!(3_998), json!(1_000), json!(commission), json!(3_998 - 1_000 - commission)]);
    assert!(settle(&app, None).await.is_empty(), "a day is closed once");
    assert!(settle(&app, Some("2000-01-01T00:00:00Z")).await.is_empty());

    let path = "/v1/merchants/1/settlements";
    let listed = app.client.get(app.url(path)).bearer_auth(app.merchant(1)).send().await.expect("request");
    let listed: Value = listed.json().await.expect("json");
    assert_eq!(listed["items"], json!(closed));
    let net: i64 =
        listed["items"].as_array().expect("items").iter().map(|s| s["net_cents"].as_i64().expect("net")).sum();
    let owed: Value = balance(&app, &app.merchant(1), 1).await.json().await.expect("json");
    assert_eq!(owed["available_cents"], net, "the balance is the sum of the statements");
    let theirs = app.client.get(app.url(path)).bearer_auth(app.merchant(2)).send().await.expect("request");
    assert_error(theirs, StatusCode::FORBIDDEN, "forbidden").await;

    // The payout takes the closed statement: the balance moves from
    // available to paid out, the ledger still balances, and a second run
    // pays nothing.
    let as_merchant = app.client.post(app.url("/v1/admin/payouts/run")).bearer_auth(app.merchant(1)).send().await;
    assert_error(as_merchant.expect("request"), StatusCode::FORBIDDEN, "forbidden").await;
    let paid = pay_out(&app).await;
    assert_eq!(paid.len(), 1, "{paid:?}");
    assert_eq!((&paid[0]["merchant_id"], &paid[0]["amount_cents"]), (&json!("1"), &json!(net)));
    assert_eq!((&paid[0]["statements"], &paid[0]["status"]), (&json!(1), &json!("paid")));
    assert!(pay_out(&app).await.is_empty(), "a statement is paid once");
    let owed: Value = balance(&app, &app.merchant(1), 1).await.json().await.expect("json");
    let unpaid_pending = owed["pending_cents"].clone();
    assert_eq!(owed, json!({"pending_cents": unpaid_pending, "available_cents": 0, "paid_out_cents": net}));
    let listed = app.client.get(app.url(path)).bearer_auth(app.merchant(1)).send().await.expect("request");
    let listed: Value = listed.json().await.expect("json");
    assert_eq!((&listed["items"][0]["status"], &listed["items"][0]["payout_id"]), (&json!("paid"), &paid[0]["id"]));
    let payouts = app.client.get(app.url("/v1/merchants/1/payouts")).bearer_auth(app.merchant(1)).send().await;
    let payouts: Value = payouts.expect("request").json().await.expect("json");
    assert_eq!(payouts["items"], json!(paid));
    let ledger = trial_balance(&app).await;
    assert_eq!(ledger["balanced"], true, "{ledger}");
    assert_eq!(account(&ledger, "provider_clearing"), (3_998, 1_000 + net), "captured, refunded, paid out");
}

/// With `payments.payout_interval` set, a node pays out what the settlement
/// closed by itself, as an admin's run would, and only once.
#[tokio::test]
async fn scheduled_payouts_pay_a_closed_statement_once_without_an_admin() {
    let clock = Arc::new(ManualClock::starting_at(time::OffsetDateTime::now_utc()));
    let app = spawn_app_on(clock.clone(), |s| {
        s.payments.sandbox.secret = Some(Secret::new(SECRET.to_owned()));
        s.payments.payout_interval = Some(Duration::from_millis(200));
    })
    .await;
    let (_, order) = ordered(&app).await;
    let paid = started(&app, &order).await;
    assert_eq!(callback(&app, &event("cap", "payment.succeeded", &paid)).await.status(), StatusCode::OK);
    // Nothing is closed yet, so the schedule pays nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let owed: Value = balance(&app, &app.merchant(1), 1).await.json().await.expect("json");
    assert_eq!(owed["paid_out_cents"], 0, "{owed}");

    clock.advance(Duration::from_secs(24 * 3_600) + surge_domain::settlement::CLOSE_GRACE);
    let closed = settle(&app, None).await;
    assert_eq!(closed.len(), 1, "{closed:?}");
    let net = closed[0]["net_cents"].as_i64().expect("net");
    let mut owed = Value::Null;
    for _ in 0..100 {
        owed = balance(&app, &app.merchant(1), 1).await.json().await.expect("json");
        if owed["paid_out_cents"] == net {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((&owed["paid_out_cents"], &owed["available_cents"]), (&json!(net), &json!(0)), "{owed}");
    // Later ticks find nothing more to pay, and an admin's run neither.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pay_out(&app).await.is_empty(), "a statement is paid once");
    let payouts = app.client.get(app.url("/v1/merchants/1/payouts")).bearer_auth(app.merchant(1)).send().await;
    let payouts: Value = payouts.expect("request").json().await.expect("json");
    let items = payouts["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{payouts}");
    assert_eq!((&items[0]["amount_cents"], &items[0]["statements"]), (&json!(net), &json!(1)));
    assert_eq!(trial_balance(&app).await["balanced"], true);
}

async fn pay_out(app: &TestApp) -> Vec<Value> {
    let url = app.url("/v1/admin/payouts/run");
    let response = app.client.post(url).bearer_auth(app.admin()).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.expect("json");
    page["items"].as_array().expect("items").clone()
}

/// The sandbox as its own process (`surge payments-sandbox`), deciding by
/// itself: Surge opens the intent and the refund there, the process posts
/// every callback twice and follows each decision with a stale event of the
/// other outcome; the order is paid once, the refund goes through once,
/// and the provider's own report says the same.
#[tokio::test]
async fn the_sandbox_process_opens_decides_and_calls_back_as_a_provider_does() {
    use crate::helpers::free_port;

    let port = free_port();
    let sandbox = format!("http://127.0.0.1:{port}");
    let app = spawn_app_with(|s| {
        s.payments.sandbox.secret = Some(Secret::new(SECRET.to_owned()));
        s.payments.sandbox.url = Some(sandbox.parse().expect("url"));
    })
    .await;
    let callback = app.url("/v1/payments/callbacks/sandbox");
    let auto = ["--auto-after", "100ms", "--duplicate-ratio", "1", "--reorder-ratio", "1"];
    let _process = SandboxProcess::start(port, &callback, &auto).await;

    let (_, order) = ordered(&app).await;
    let opened = started(&app, &order).await;
    let provider_ref = opened["provider_ref"].as_str().expect("ref").to_owned();
    assert!(provider_ref.starts_with("sbp_"), "opened at the process: {opened}");
    let paid = || async { order_status(&app, &order).await == "PAID" };
    for _ in 0..100 {
        if paid().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(paid().await, "the process decided and called back");
    let asked = refunded(&app, &order, 500, Some("sandbox-refund")).await;
    assert!(asked["provider_ref"].as_str().expect("ref").starts_with("sbr_"), "{asked}");
    // The same key again: the first refund, and the process is not asked
    // again (its report below holds one refund).
    let again = refunded(&app, &order, 500, Some("sandbox-refund")).await;
    assert_eq!(again["id"], asked["id"], "the key replays the refund");
    let report = || async {
        let url = format!("{sandbox}/report");
        app.client.get(url).send().await.expect("report").json::<Value>().await.expect("json")
    };
    let mut through = false;
    for _ in 0..100 {
        through = account(&trial_balance(&app).await, "provider_clearing") == (3998, 500);
        if through {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(through, "the refund went through once: {}", trial_balance(&app).await);
    // The stale events and the repeats land too, and move nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(payment(&app, &opened["id"]).await["status"], "succeeded");
    assert_eq!(account(&trial_balance(&app).await, "provider_clearing"), (3998, 500));
    let report = report().await;
    let lines: Vec<(&str, &str, i64)> = report
        .as_array()
        .expect("lines")
        .iter()
        .map(|line| {
            let field = |name: &str| line[name].as_str().expect("field");
            (field("kind"), field("status"), line["amount_cents"].as_i64().expect("amount"))
        })
        .collect();
    assert_eq!(lines, vec![("payment", "succeeded", 3998), ("refund", "succeeded", 500)], "{report}");
    let url = app.url("/v1/admin/reconciliation/run");
    let pass = app.client.post(url).bearer_auth(app.admin()).json(&json!({})).send().await.expect("run");
    let pass: Value = pass.json().await.expect("json");
    assert_eq!((&pass["mismatches"], &pass["checked"]), (&json!([]), &json!(4)), "books and report agree: {pass}");
}

/// A callback that never arrives, and a capture the provider never made:
/// the reconciliation compares the sandbox process's report with the books
/// and names both, with their orders.
#[tokio::test]
async fn the_reconciliation_finds_what_the_provider_and_the_books_disagree_on() {
    use crate::helpers::free_port;

    let port = free_port();
    let sandbox = format!("http://127.0.0.1:{port}");
    let app = spawn_app_with(|s| {
        s.payments.sandbox.secret = Some(Secret::new(SECRET.to_owned()));
        s.payments.sandbox.url = Some(sandbox.parse().expect("url"));
    })
    .await;
    // Its callbacks go nowhere: nothing listens there.
    let nowhere = format!("http://127.0.0.1:{}/v1/payments/callbacks/sandbox", free_port());
    let _process = SandboxProcess::start(port, &nowhere, &[]).await;
    let (_, lost) = ordered(&app).await;
    let lost_payment = started(&app, &lost).await;
    let (_, forged) = ordered(&app).await;
    let forged_payment = started(&app, &forged).await;
    let run = || async {
        let url = app.url("/v1/admin/reconciliation/run");
        let response = app.client.post(url).bearer_auth(app.admin()).json(&json!({})).send().await.expect("run");
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.expect("json")
    };
    assert_eq!(run().await["mismatches"], json!([]), "both pending on both sides");

    // The provider captures the first; its callback is lost.
    let path = format!("/intents/{}/succeed", lost_payment["provider_ref"].as_str().expect("ref"));
    let decided = app.client.post(format!("{sandbox}{path}")).send().await.expect("decide");
    assert_eq!(decided.status(), StatusCode::OK);
    // The second is "captured" by a callback the provider never sent.
    let response = callback(&app, &event("forged-1", "payment.succeeded", &forged_payment)).await;
    assert_eq!(response.status(), StatusCode::OK);

    let pass = run().await;
    let found: Vec<(&str, &str)> = pass["mismatches"]
        .as_array()
        .expect("mismatches")
        .iter()
        .map(|m| (m["kind"].as_str().expect("kind"), m["order_id"].as_str().expect("order")))
        .collect();
    assert_eq!(
        found,
        vec![("provider_decision_not_applied", lost.as_str()), ("unknown_to_provider", forged.as_str())],
        "{pass}"
    );
}

/// `surge payments-sandbox` on `port`, calling back `callback`, stopped
/// when dropped.
struct SandboxProcess(std::process::Child);

impl SandboxProcess {
    async fn start(port: u16, callback: &str, flags: &[&str]) -> Self {
        let mut command = std::process::Command::new(crate::helpers::surge_bin());
        // The test suite's own switches are not settings of the binary.
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("SURGE_TEST_")) {
            command.env_remove(name);
        }
        let process = command
            .args(["payments-sandbox", "--listen", &format!("127.0.0.1:{port}"), "--callback", callback])
            .args(["--secret", SECRET])
            .args(flags)
            .env_remove("SURGE_CONFIG")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the sandbox starts");
        let process = Self(process);
        // A debug binary on a loaded machine can take seconds to listen.
        for _ in 0..600 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the sandbox process never listened on {port}");
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
