//! Operations endpoints, request ids and per-route latency histograms.

use reqwest::StatusCode;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_readiness_answer_when_the_store_is_up() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["checks"]["store"], "ok");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_echoes_the_clients() {
    let app = spawn_app().await;
    let generated = app.get("/healthz").await;
    let id = generated.headers().get("x-request-id").expect("generated id").to_str().expect("ascii");
    assert_eq!(id.len(), 36, "a uuid: {id}");
    let echoed = app.client.get(app.url("/v1/products/1")).header("x-request-id", "abc-123").send().await.expect("req");
    assert_eq!(echoed.headers().get("x-request-id").map(|v| v.to_str().ok()), Some(Some("abc-123")));
}

#[tokio::test]
async fn metrics_expose_a_latency_histogram_per_route() {
    let app = spawn_app().await;
    let id = app.create_product(1, "M").await["id"].as_str().expect("id").to_owned();
    app.product(&id).await;
    let text = app.get("/metrics").await.text().await.expect("text");
    let get_route = "method=\"GET\",route=\"/v1/products/{id}\",status=\"200\"";
    assert!(
        text.contains(&format!("surge_http_request_duration_seconds_bucket{{{get_route},le=\"0.001\"}}")),
        "{text}"
    );
    assert!(text.contains(&format!("surge_http_request_duration_seconds_count{{{get_route}}} 1")), "{text}");
    assert!(text.contains("surge_http_requests_total{method=\"POST\",route=\"/v1/products\",status=\"201\"} 1"));
}

#[tokio::test]
async fn with_ops_listen_the_operations_endpoints_move_off_the_api_port() {
    let app = spawn_app_with(|s| s.ops_listen = Some("127.0.0.1:0".parse().expect("addr"))).await;
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::NOT_FOUND);
    let ops = app.ops_address.clone().expect("ops listener");
    for path in ["/metrics", "/healthz", "/readyz"] {
        let response = app.client.get(format!("{ops}{path}")).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let api_on_ops = app.client.get(format!("{ops}/v1/products")).send().await.expect("request");
    assert_eq!(api_on_ops.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_operation_in_the_openapi_document_exists() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let document: serde_json::Value = response.json().await.expect("json");
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 17, "{} paths", paths.len());
    let admin = app.admin();
    for (path, operations) in paths {
        let concrete = path.replace("{id}", "1").replace("{name}", "notification");
        for method in operations.as_object().expect("operations").keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let mut request = app.client.request(method.clone(), app.url(&concrete)).bearer_auth(&admin);
            if method != reqwest::Method::GET {
                request = request.json(&serde_json::json!({}));
            }
            let response = request.send().await.expect("request");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(!body.contains("no such route"), "{method} {path} is documented but not served");
        }
    }
}
