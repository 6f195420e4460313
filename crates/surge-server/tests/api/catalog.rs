//! Catalog and inventory: the happy paths and their read-after-write.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn create_read_update_read_after_write_returns_the_new_value() {
    let app = spawn_app().await;
    let created = app.create_product(42, "TEA-1").await;
    let id = created["id"].as_str().expect("id is a string");
    assert!(id.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(created["merchant_id"], "42");
    assert_eq!(created["sku"], "TEA-1");
    assert_eq!(created["price_cents"], 1999);
    assert_eq!(created["stock"], 10);

    // The first read fills the cache; the write must not leave it stale.
    assert_eq!(app.product(id).await, created);
    let patched = app
        .send_json(
            Method::PATCH,
            &format!("/v1/products/{id}"),
            &app.merchant(42),
            &json!({"name": "Green tea", "price_cents": 2500}),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let read = app.product(id).await;
    assert_eq!(read["name"], "Green tea");
    assert_eq!(read["price_cents"], 2500);
    assert_eq!(read["sku"], "TEA-1");

    let restocked =
        app.send_json(Method::PUT, &format!("/v1/products/{id}/stock"), &app.merchant(42), &json!({"stock": 77})).await;
    assert_eq!(restocked.status(), StatusCode::OK);
    assert_eq!(app.product(id).await["stock"], 77);
}

#[tokio::test]
async fn an_admin_creates_products_for_a_named_merchant_only() {
    let app = spawn_app().await;
    let body = json!({"sku": "A", "name": "Apple", "price_cents": 5, "stock": 1, "merchant_id": "7"});
    let response = app.post_json("/v1/products", Some(&app.admin()), &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let product: serde_json::Value = response.json().await.expect("json");
    assert_eq!(product["merchant_id"], "7");

    let without = json!({"sku": "B", "name": "Banana", "price_cents": 5, "stock": 1});
    assert_error(
        app.post_json("/v1/products", Some(&app.admin()), &without).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    assert_eq!(app.all_products().await.len(), 1);
}

#[tokio::test]
async fn a_duplicate_sku_is_a_conflict_and_writes_nothing() {
    let app = spawn_app().await;
    app.create_product(42, "DUP").await;
    let again = json!({"sku": "DUP", "name": "Other", "price_cents": 1, "stock": 1});
    let response = app.post_json("/v1/products", Some(&app.merchant(42)), &again).await;
    assert_error(response, StatusCode::CONFLICT, "duplicate_sku").await;
    assert_eq!(app.all_products().await.len(), 1);
    // Another merchant may use the same sku.
    app.create_product(43, "DUP").await;
}

#[tokio::test]
async fn listing_pages_through_a_merchants_products_in_creation_order() {
    let app = spawn_app().await;
    let mut mine = Vec::new();
    for n in 0..5 {
        mine.push(app.create_product(1, &format!("M1-{n}")).await["id"].as_str().expect("id").to_owned());
        app.create_product(2, &format!("M2-{n}")).await;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/products?merchant_id=1&limit=2".to_owned();
    loop {
        let page: serde_json::Value = app.get(&path).await.json().await.expect("json");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        assert!(items.iter().all(|p| p["merchant_id"] == "1"));
        seen.extend(items.iter().map(|p| p["id"].as_str().expect("id").to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/products?merchant_id=1&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, mine);
    assert_eq!(app.all_products().await.len(), 10);
}

#[tokio::test]
async fn listing_rejects_bad_paging_parameters() {
    let app = spawn_app().await;
    for query in ["limit=0", "limit=501", "limit=ten", "cursor=abc", "merchant_id=-1", "colour=red"] {
        let response = app.get(&format!("/v1/products?{query}")).await;
        assert_error(response, StatusCode::BAD_REQUEST, "bad_request").await;
    }
}

#[tokio::test]
async fn unknown_and_malformed_product_ids() {
    let app = spawn_app().await;
    assert_error(app.get("/v1/products/123456").await, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(app.get("/v1/products/abc").await, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_error(app.get("/v1/products/-5").await, StatusCode::BAD_REQUEST, "bad_request").await;
    let patch = app.send_json(Method::PATCH, "/v1/products/999", &app.admin(), &json!({"name": "x"})).await;
    assert_error(patch, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_create_repeated_with_its_idempotency_key_returns_the_first_product() {
    let app = spawn_app().await;
    let body = json!({"sku": "IDEM", "name": "Once", "price_cents": 100, "stock": 1});
    let create = |merchant: u64, key: String| {
        let app = &app;
        let body = body.clone();
        async move {
            let response = app
                .client
                .post(app.url("/v1/products"))
                .bearer_auth(app.merchant(merchant))
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .expect("request");
            (response.status(), response.json::<serde_json::Value>().await.expect("json"))
        }
    };
    let (status, first) = create(1, "p-1".into()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, again) = create(1, "p-1".into()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again, first);

    let twins = futures::future::join_all((0..10).map(|_| create(2, "p-2".into()))).await;
    let ids: std::collections::HashSet<String> = twins
        .iter()
        .map(|(status, product)| {
            assert_eq!(*status, StatusCode::CREATED, "{product}");
            product["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "concurrent repeats create one product");

    let (status, _) = create(1, "k".repeat(129)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(app.all_products().await.len(), 2);
}

#[tokio::test]
async fn a_hot_product_is_limited_on_its_own_and_others_stay_readable() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.rate.product_read_per_sec = 1;
        s.rate.product_read_burst = 3;
    })
    .await;
    let hot = app.create_product(1, "HOT").await["id"].as_str().expect("id").to_owned();
    let cold = app.create_product(1, "COLD").await["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/products/{hot}");
    let reads = futures::future::join_all((0..8).map(|_| app.get(&path))).await;
    let limited: Vec<_> = reads.iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).collect();
    assert!(limited.len() >= 4, "a burst of 3 at 1/s: {} limited of 8", limited.len());
    assert!(limited.iter().all(|r| r.headers().contains_key("retry-after")));
    assert_eq!(app.get(&format!("/v1/products/{cold}")).await.status(), StatusCode::OK, "the limit is per product");
}
