//! Durability of the embedded mode across a restart.

use crate::helpers::{spawn_app, spawn_app_in};

#[tokio::test]
async fn data_written_before_a_restart_is_there_after_it() {
    let app = spawn_app().await;
    let token = app.merchant(5);
    let product = app.create_product(5, "KEEP").await;
    let id = product["id"].as_str().expect("id").to_owned();
    let response = app
        .send_json(reqwest::Method::PUT, &format!("/v1/products/{id}/stock"), &token, &serde_json::json!({"stock": 3}))
        .await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let before: serde_json::Value = response.json().await.expect("json");

    let data_dir = app.stop().await;
    let again = spawn_app_in(data_dir, |_| {}).await;

    assert_eq!(again.product(&id).await, before);
    // The generated secret survived too: the old token still works.
    let patch = again
        .send_json(reqwest::Method::PATCH, &format!("/v1/products/{id}"), &token, &serde_json::json!({"name": "Kept"}))
        .await;
    assert_eq!(patch.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn an_idempotency_key_still_names_its_order_after_a_restart() {
    let app = spawn_app().await;
    let sale = app.active_sale(10, 1).await;
    let body = serde_json::json!({});
    let first: serde_json::Value = app.place(1, &sale, Some("k-restart"), &body).await.json().await.expect("json");
    let id = first["order_id"].as_str().expect("id").to_owned();
    app.settled_order(&id).await;

    let again = spawn_app_in(app.stop().await, |_| {}).await;
    let replay = again.place(1, &sale, Some("k-restart"), &body).await;
    assert_eq!(replay.status(), reqwest::StatusCode::ACCEPTED);
    assert_eq!(replay.json::<serde_json::Value>().await.expect("json")["order_id"], id.as_str());
    assert_eq!(again.sale(&sale).await["stock_left"], 9);
    assert_eq!(again.all_orders().await.len(), 1);
}
