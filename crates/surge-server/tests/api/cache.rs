//! Cache-aside reads: single flight and negative caching, observed through
//! the app's own metrics.

use futures::future::join_all;
use reqwest::StatusCode;

use crate::helpers::spawn_app;

const LOADS: &str = "surge_cache_loads_total{cache=\"product\"}";

#[tokio::test]
async fn a_hundred_concurrent_reads_of_a_cold_key_load_the_store_once() {
    let app = spawn_app().await;
    let id = app.create_product(1, "HOT").await["id"].as_str().expect("id").to_owned();
    let before = app.metric(LOADS).await;

    let path = format!("/v1/products/{id}");
    let reads = (0..100).map(|_| app.get(&path));
    let responses = join_all(reads).await;
    assert!(responses.iter().all(|r| r.status() == StatusCode::OK));

    assert_eq!(app.metric(LOADS).await - before, 1.0);
    assert_eq!(app.metric("surge_cache_requests_total{cache=\"product\",result=\"miss\"}").await, 1.0);
    assert_eq!(app.metric("surge_cache_requests_total{cache=\"product\",result=\"hit\"}").await, 99.0);
}

#[tokio::test]
async fn a_missing_id_is_remembered_and_not_looked_up_again() {
    let app = spawn_app().await;
    let before = app.metric(LOADS).await;
    for _ in 0..5 {
        assert_eq!(app.get("/v1/products/4242").await.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(app.metric(LOADS).await - before, 1.0);
}

#[tokio::test]
async fn a_write_evicts_the_cached_entry_so_the_next_read_loads_again() {
    let app = spawn_app().await;
    let id = app.create_product(1, "W").await["id"].as_str().expect("id").to_owned();
    app.product(&id).await;
    app.product(&id).await;
    let before = app.metric(LOADS).await;
    let response = app
        .send_json(
            reqwest::Method::PATCH,
            &format!("/v1/products/{id}"),
            &app.merchant(1),
            &serde_json::json!({"name": "New"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.product(&id).await["name"], "New");
    assert_eq!(app.metric(LOADS).await - before, 1.0);
}
