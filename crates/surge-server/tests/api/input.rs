//! Hostile and malformed input: always a clear 4xx, never a write.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn malformed_json_wrong_types_unknown_fields_and_bad_values_are_400_and_write_nothing() {
    let app = spawn_app().await;
    let token = app.merchant(42);
    let bodies = [
        r#"{"sku": "A", "name": "#,
        r#"{"sku": "A", "name": "N", "price_cents": "ten", "stock": 1}"#,
        r#"{"sku": "A", "name": "N", "price_cents": 1.5, "stock": 1}"#,
        r#"{"sku": "A", "name": "N", "price_cents": 1, "stock": 1, "colour": "red"}"#,
        r#"{"sku": "A", "name": "N", "price_cents": 1}"#,
        r#"{"sku": "A", "name": "N", "price_cents": -1, "stock": 1}"#,
        r#"{"sku": "A", "name": "N", "price_cents": 1, "stock": -1}"#,
        r#"{"sku": "A", "name": "N", "price_cents": 99999999999999999999999, "stock": 1}"#,
        r#"{"sku": "A", "name": "N", "price_cents": 1, "stock": 1000000001}"#,
        r#"{"sku": "has space", "name": "N", "price_cents": 1, "stock": 1}"#,
        r#"{"sku": "A", "name": "   ", "price_cents": 1, "stock": 1}"#,
        r#"{"sku": "A", "name": "N", "price_cents": 1, "stock": 1, "merchant_id": 42}"#,
        r#"[]"#,
        r#"null"#,
    ];
    for body in bodies {
        let response = app
            .client
            .post(app.url("/v1/products"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    assert!(app.all_products().await.is_empty());
}

#[tokio::test]
async fn a_bad_patch_or_stock_change_is_400_and_changes_nothing() {
    let app = spawn_app().await;
    let product = app.create_product(42, "P").await;
    let id = product["id"].as_str().expect("id");
    let token = app.merchant(42);
    let bad_patches = [
        json!({}),
        json!({"name": ""}),
        json!({"price_cents": -3}),
        json!({"sku": "NEW"}),
        json!({"stock": 5}),
        // null is not "absent": the document types these fields without it.
        json!({"price_cents": null}),
        json!({"name": "N", "price_cents": null}),
        json!({"name": null, "price_cents": 5}),
    ];
    for body in bad_patches {
        let response = app.send_json(Method::PATCH, &format!("/v1/products/{id}"), &token, &body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    for body in [
        json!({}),
        json!({"stock": -1}),
        json!({"stock": "many"}),
        json!({"stock": 1.5}),
        json!({"stock": 1, "extra": true}),
    ] {
        let response = app.send_json(Method::PUT, &format!("/v1/products/{id}/stock"), &token, &body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    assert_eq!(app.product(id).await, product);

    // Integers are written as integers: 7.0 is a wrong type here.
    let response =
        app.send_json(Method::PUT, &format!("/v1/products/{id}/stock"), &token, &json!({"stock": 7.0})).await;
    assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_eq!(app.product(id).await, product);
}

#[tokio::test]
async fn an_oversize_body_is_413_and_writes_nothing() {
    let app = spawn_app_with(|s| s.http.body_limit_bytes = 1024).await;
    let body = json!({"sku": "BIG", "name": "x".repeat(4096), "price_cents": 1, "stock": 1});
    let response = app.post_json("/v1/products", Some(&app.merchant(1)), &body).await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(app.all_products().await.is_empty());
}

#[tokio::test]
async fn a_body_without_json_content_type_is_415() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/v1/products"))
        .bearer_auth(app.merchant(1))
        .header("content-type", "text/plain")
        .body(r#"{"sku": "A", "name": "N", "price_cents": 1, "stock": 1}"#)
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    assert!(app.all_products().await.is_empty());
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_format() {
    let app = spawn_app().await;
    assert_error(app.get("/v1/nothing-here").await, StatusCode::NOT_FOUND, "not_found").await;
    let delete = app.client.delete(app.url("/v1/products")).send().await.expect("request");
    assert_error(delete, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn a_deadline_header_that_is_unreadable_or_already_spent_is_400_and_does_no_work() {
    let app = spawn_app().await;
    let body = json!({"sku": "D", "name": "N", "price_cents": 1, "stock": 1});
    let send = |deadline: &'static str| {
        app.client
            .post(app.url("/v1/products"))
            .bearer_auth(app.merchant(1))
            .header("x-request-deadline-ms", deadline)
            .json(&body)
            .send()
    };
    assert_error(send("soon").await.expect("request"), StatusCode::BAD_REQUEST, "bad_request").await;
    assert_error(send("0").await.expect("request"), StatusCode::BAD_REQUEST, "bad_request").await;
    assert!(app.all_products().await.is_empty());
    assert_eq!(send("5000").await.expect("request").status(), StatusCode::CREATED);
}
