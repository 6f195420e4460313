//! Roles and tenants: who may do what, and that refusals change nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn a_merchant_patching_another_tenants_product_gets_403_and_nothing_changes() {
    let app = spawn_app().await;
    let product = app.create_product(1, "OWNED").await;
    let id = product["id"].as_str().expect("id");
    let intruder = app.merchant(2);

    let patch =
        app.send_json(Method::PATCH, &format!("/v1/products/{id}"), &intruder, &json!({"price_cents": 1})).await;
    assert_error(patch, StatusCode::FORBIDDEN, "forbidden").await;
    let stock = app.send_json(Method::PUT, &format!("/v1/products/{id}/stock"), &intruder, &json!({"stock": 0})).await;
    assert_error(stock, StatusCode::FORBIDDEN, "forbidden").await;

    assert_eq!(app.product(id).await, product);
}

#[tokio::test]
async fn an_admin_may_change_any_tenants_product() {
    let app = spawn_app().await;
    let id = app.create_product(1, "ANY").await["id"].as_str().expect("id").to_owned();
    let response =
        app.send_json(Method::PATCH, &format!("/v1/products/{id}"), &app.admin(), &json!({"name": "Ops"})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.product(&id).await["name"], "Ops");
}

#[tokio::test]
async fn customers_cannot_create_or_change_products() {
    let app = spawn_app().await;
    let product = app.create_product(1, "C").await;
    let id = product["id"].as_str().expect("id");
    let customer = app.customer(9);
    let body = json!({"sku": "X", "name": "X", "price_cents": 1, "stock": 1});
    assert_error(app.post_json("/v1/products", Some(&customer), &body).await, StatusCode::FORBIDDEN, "forbidden").await;
    let patch = app.send_json(Method::PATCH, &format!("/v1/products/{id}"), &customer, &json!({"name": "Y"})).await;
    assert_error(patch, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(app.all_products().await, vec![product]);
}

#[tokio::test]
async fn a_merchant_cannot_create_for_another_tenant() {
    let app = spawn_app().await;
    let body = json!({"sku": "X", "name": "X", "price_cents": 1, "stock": 1, "merchant_id": "2"});
    let response = app.post_json("/v1/products", Some(&app.merchant(1)), &body).await;
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(app.all_products().await.is_empty());
}

#[tokio::test]
async fn missing_expired_forged_and_malformed_tokens_get_401_and_write_nothing() {
    let app = spawn_app().await;
    let forged = {
        let other = crate::helpers::spawn_app().await;
        other.merchant(42)
    };
    let body = json!({"sku": "X", "name": "X", "price_cents": 1, "stock": 1});
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("expired", Some(format!("Bearer {}", app.expired_token()))),
        ("forged", Some(format!("Bearer {forged}"))),
        ("garbage", Some("Bearer not.a.jwt".to_owned())),
        ("wrong scheme", Some(format!("Basic {}", app.merchant(42)))),
    ];
    for (case, header) in cases {
        let mut request = app.client.post(app.url("/v1/products")).json(&body);
        if let Some(value) = header {
            request = request.header("authorization", value);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    assert!(app.all_products().await.is_empty());
}
