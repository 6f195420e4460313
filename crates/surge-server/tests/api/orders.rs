//! Orders: ownership, pay, cancel (stock returned), listings.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app};

async fn post(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client.post(app.url(path)).bearer_auth(token).json(&json!({})).send().await.expect("req")
}

async fn bought(app: &TestApp, user: u64, sale: &str) -> String {
    let accepted: Value = app.place(user, sale, None, &json!({})).await.json().await.expect("json");
    let id = accepted["order_id"].as_str().expect("id").to_owned();
    app.settled_order(&id).await;
    id
}

#[tokio::test]
async fn the_buyer_pays_once_and_a_paid_order_cannot_be_cancelled() {
    let app = spawn_app().await;
    let sale = app.active_sale(5, 1).await;
    let id = bought(&app, 1, &sale).await;

    assert_error(
        post(&app, &app.customer(2), &format!("/v1/orders/{id}/pay")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let paid = post(&app, &app.customer(1), &format!("/v1/orders/{id}/pay")).await;
    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(paid.json::<Value>().await.expect("json")["status"], "PAID");
    let again = post(&app, &app.customer(1), &format!("/v1/orders/{id}/pay")).await;
    assert_error(again, StatusCode::UNPROCESSABLE_ENTITY, "invalid_state").await;
    let cancel = post(&app, &app.customer(1), &format!("/v1/orders/{id}/cancel")).await;
    assert_error(cancel, StatusCode::UNPROCESSABLE_ENTITY, "invalid_state").await;
    assert_eq!(app.sale(&sale).await["stock_left"], 4);
}

#[tokio::test]
async fn cancelling_returns_the_stock_and_the_buyers_allowance() {
    let app = spawn_app().await;
    let sale = app.active_sale(1, 1).await;
    let id = bought(&app, 1, &sale).await;
    assert_eq!(app.sale(&sale).await["stock_left"], 0);

    assert_error(
        post(&app, &app.customer(2), &format!("/v1/orders/{id}/cancel")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let cancelled = post(&app, &app.customer(1), &format!("/v1/orders/{id}/cancel")).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(cancelled.json::<Value>().await.expect("json")["status"], "CANCELLED");
    assert_eq!(app.sale(&sale).await["stock_left"], 1);
    // The same buyer may buy again: the allowance came back with the unit.
    let again = app.place(1, &sale, None, &json!({})).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn who_sees_which_orders() {
    let app = spawn_app().await;
    let sale = app.active_sale(10, 1).await;
    let mine = bought(&app, 1, &sale).await;
    let theirs = bought(&app, 2, &sale).await;

    // Someone else's order answers exactly as a missing one: ids are
    // guessable, and a 403 would tell that the order exists.
    let (status, missing) = app.order(&app.customer(1), "424242").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app.order(&app.customer(2), &mine).await;
    assert_eq!((status, &body), (StatusCode::NOT_FOUND, &missing));
    let (status, _) = app.order(&app.merchant(1), &mine).await;
    assert_eq!(status, StatusCode::OK, "the product's merchant sees it");
    let (status, body) = app.order(&app.merchant(99), &mine).await;
    assert_eq!((status, &body), (StatusCode::NOT_FOUND, &missing));
    let (status, _) = app.order(&app.customer(1), &theirs).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Paying or cancelling it gives nothing more away.
    assert_error(
        post(&app, &app.customer(2), &format!("/v1/orders/{mine}/pay")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // The merchant may see the order, but only the buyer pays it.
    assert_error(
        post(&app, &app.merchant(1), &format!("/v1/orders/{mine}/pay")).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    let list = |token: String| {
        let app = &app;
        async move {
            let response = app.client.get(app.url("/v1/orders")).bearer_auth(token).send().await.expect("req");
            let page: Value = response.json().await.expect("json");
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|o| o["id"].as_str().expect("id").to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(app.customer(1)).await, vec![mine.clone()]);
    assert_eq!(list(app.merchant(1)).await, vec![theirs.clone(), mine.clone()], "newest first");
    assert!(list(app.merchant(99)).await.is_empty());
    assert_eq!(list(app.admin()).await.len(), 2);
    let anonymous = app.client.get(app.url("/v1/orders")).send().await.expect("req");
    assert_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
}
