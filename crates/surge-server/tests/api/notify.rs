//! Notification after purchase: the webhook adapter delivers the order, and
//! a dead webhook never fails or holds up the order.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::routing::post;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app_with;

/// A webhook receiver on port 0 that keeps what it is sent.
async fn receiver(status: StatusCode) -> (String, Arc<Mutex<Vec<Value>>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hook",
        post(move |Json(body): Json<Value>| {
            let kept = Arc::clone(&kept);
            async move {
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
    let app = spawn_app_with(|s| s.notify.webhook_url = Some(url)).await;
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
}

#[tokio::test]
async fn a_failing_webhook_does_not_fail_the_order() {
    let (url, _received) = receiver(StatusCode::INTERNAL_SERVER_ERROR).await;
    let app = spawn_app_with(|s| s.notify.webhook_url = Some(url)).await;
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
