//! Notification after purchase: the webhook adapter delivers the order, and
//! a dead webhook never fails or holds up the order.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::routing::post;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app_with;

/// A webhook receiver on port 0 that keeps what it is sent.
pub async fn receiver(status: StatusCode) -> (String, Arc<Mutex<Vec<Value>>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, Json(mut body): Json<Value>| {
            let kept = Arc::clone(&kept);
            async move {
                // The deadline the webhook was given, kept beside the body.
                let deadline = headers.get("x-request-deadline-ms").and_then(|v| v.to_str().ok()).map(str::to_owned);
                body["_deadline_ms"] = json!(deadline);
                kept.lock().expect("lock").push(body);
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn a_created_order_is_posted_to_the_webhook() {
    let (url, received) = receiver(StatusCode::OK).await;
    let app = spawn_app_with(|s| s.notify.webhook_url = Some(url.parse().expect("a webhook URL"))).await;
    let sale = app.active_sale(5, 1).await;
    let accepted: Value = app.place(3, &sale, None, &json!({})).await.json().await.expect("json");
    let id = accepted["order_id"].as_str().expect("id").to_owned();
    app.settled_order(&id).await;
    for _ in 0..200 {
        if !received.lock().expect("lock").is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let received = received.lock().expect("lock").clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["event"], "order_created");
    assert_eq!(received[0]["order"]["id"], id.as_str());
    assert_eq!(received[0]["order"]["status"], "CREATED");
    assert_eq!(received[0]["_deadline_ms"], "2000", "the webhook is told its deadline (notify.timeout)");
}

#[tokio::test]
async fn a_failing_webhook_does_not_fail_the_order() {
    let (url, _received) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    let app = spawn_app_with(|s| s.notify.webhook_url = Some(url.parse().expect("a webhook URL"))).await;
    let sale = app.active_sale(5, 1).await;
    let accepted: Value = app.place(3, &sale, None, &json!({})).await.json().await.expect("json");
    let order = app.settled_order(accepted["order_id"].as_str().expect("id")).await;
    assert_eq!(order["status"], "CREATED");
    let mut failed = 0.0;
    for _ in 0..200 {
        failed = app.metric("surge_notifications_total{result=\"failed\"}").await;
        if failed >= 3.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(failed, 3.0, "each of the 3 attempts is counted as failed");
}

#[tokio::test]
async fn under_total_failure_retries_stay_within_the_budget() {
    let (url, received) = receiver(StatusCode::SERVICE_UNAVAILABLE).await;
    let app = spawn_app_with(|s| {
        s.notify.webhook_url = Some(url.parse().expect("a webhook URL"));
        // Keep the breaker out of it: only the retry budget limits calls.
        s.notify.breaker.consecutive_failures = 10_000;
        s.notify.breaker.min_calls = 10_000;
        s.notify.retry.attempts_max = 3;
        s.notify.retry.backoff_base = std::time::Duration::from_millis(5);
        s.notify.retry.backoff_max = std::time::Duration::from_millis(10);
        s.notify.retry.budget_floor_per_sec = 1;
        s.notify.retry.budget_window = std::time::Duration::from_secs(1);
    })
    .await;
    let started = std::time::Instant::now();
    let orders = 20;
    let sale = app.active_sale(orders, 1).await;
    for user in 0..orders as u64 {
        let accepted: Value = app.place(100 + user, &sale, None, &json!({})).await.json().await.expect("json");
        app.settled_order(accepted["order_id"].as_str().expect("id")).await;
    }
    // Every order's first try is made; then wait until the calls stop.
    let mut seen = 0;
    for _ in 0..400 {
        let now = received.lock().expect("lock").len();
        if now >= orders as usize && now == seen {
            break;
        }
        seen = now;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let attempts = received.lock().expect("lock").len();
    // The floor allows one retry a second, over the window and the run.
    let floor = 1 + started.elapsed().as_secs() as usize + 1;
    println!("{orders} notifications, {attempts} calls (without the budget: {})", orders * 3);
    assert!(attempts >= orders as usize, "every notification is tried once");
    assert!(attempts <= orders as usize + floor, "{attempts} calls exceed {orders} + a floor of {floor}");
}

#[tokio::test]
async fn each_order_of_a_checkout_is_posted_to_the_webhook() {
    let (url, received) = receiver(StatusCode::OK).await;
    let app = spawn_app_with(|s| s.notify.webhook_url = Some(url.parse().expect("a webhook URL"))).await;
    let first = app.create_product_with_stock(1, "N-1", 5).await;
    let second = app.create_product_with_stock(2, "N-2", 5).await;
    let address = json!({"region": "north", "city": "Harbin", "line1": "1 Main St", "postcode": "150000",
                         "phone": "+86 451 0000"});
    let cart = json!({"items": [{"product_id": first["id"], "quantity": 1}, {"product_id": second["id"], "quantity": 2}],
                      "address": address});
    let response = app.post_json("/v1/checkout", Some(&app.customer(3)), &cart).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let orders: Value = response.json().await.expect("json");
    for _ in 0..200 {
        if received.lock().expect("lock").len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let received = received.lock().expect("lock").clone();
    let posted: Vec<&Value> = received.iter().map(|event| &event["order"]["id"]).collect();
    let placed: Vec<&Value> = orders["orders"].as_array().expect("orders").iter().map(|order| &order["id"]).collect();
    assert_eq!(posted.len(), 2, "{received:?}");
    assert!(placed.iter().all(|id| posted.contains(id)), "{placed:?} vs {posted:?}");
    assert!(received.iter().all(|event| event["event"] == "order_created" && event["order"]["kind"] == "checkout"));
}

#[tokio::test]
async fn a_refund_that_went_through_is_posted_to_the_webhook_as_an_sms() {
    const SECRET: &str = "a-sandbox-secret-for-notify";
    let (url, received) = receiver(StatusCode::OK).await;
    let app = spawn_app_with(|s| {
        s.notify.webhook_url = Some(url.parse().expect("a webhook URL"));
        s.payments.sandbox.secret = Some(surge_server::config::Secret::new(SECRET.to_owned()));
    })
    .await;
    let product = app.create_product_with_stock(1, "N-R", 5).await;
    let address = json!({"region": "north", "city": "Harbin", "line1": "1 Main St", "postcode": "150000",
                         "phone": "+86 451 0000"});
    let cart = json!({"items": [{"product_id": product["id"], "quantity": 1}], "address": address});
    let placed: Value = app.post_json("/v1/checkout", Some(&app.customer(3)), &cart).await.json().await.expect("json");
    let order = placed["orders"][0]["id"].as_str().expect("order").to_owned();
    let paid = app.post_json(&format!("/v1/orders/{order}/pay"), Some(&app.customer(3)), &json!({})).await;
    assert_eq!(paid.status(), StatusCode::OK);
    let asked = json!({"amount_cents": 500, "reason": "late delivery"});
    let refund: Value = app
        .post_json(&format!("/v1/orders/{order}/refunds"), Some(&app.merchant(1)), &asked)
        .await
        .json()
        .await
        .expect("json");
    let event = json!({"event_id": "rf-ok", "type": "refund.succeeded", "provider_ref": refund["provider_ref"],
                       "amount_cents": 500});
    let body = serde_json::to_vec(&event).expect("json");
    let signature =
        surge_store::sandbox::sign(SECRET.as_bytes(), time::OffsetDateTime::now_utc().unix_timestamp(), &body);
    let applied = app
        .client
        .post(app.url("/v1/payments/callbacks/sandbox"))
        .header("surge-signature", signature)
        .body(body)
        .send()
        .await
        .expect("callback");
    assert_eq!(applied.status(), StatusCode::OK);
    let refunded = || received.lock().expect("lock").iter().find(|event| event["event"] == "refund_succeeded").cloned();
    for _ in 0..200 {
        if refunded().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let notice = refunded().expect("the refund was notified");
    assert_eq!(notice["refund"]["id"], refund["id"]);
    assert_eq!(notice["sms"], format!("Surge: 5.00 refunded for order {order}."));
    let created = received.lock().expect("lock").iter().filter(|event| event["event"] == "order_created").count();
    assert_eq!(created, 1, "the purchase was notified once");
}
