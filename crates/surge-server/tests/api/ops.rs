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
    assert_eq!(body["checks"]["queue"], "ok");
    // On the distributed backends the shared Redis is asked too.
    let redis = if crate::helpers::distributed() { serde_json::json!("ok") } else { serde_json::Value::Null };
    assert_eq!(body["checks"]["redis"], redis);
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

/// Every documented operation is served, and every JSON answer matches the
/// schema the document gives for its status (or its `default`). Real ids
/// are used, so the success bodies are checked too, not only errors.
#[tokio::test]
async fn every_operation_in_the_openapi_document_exists_and_answers_its_schema() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let document: serde_json::Value = response.json().await.expect("json");
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 17, "{} paths", paths.len());

    let sale = app.active_sale(5, 1).await;
    let sale_view = app.sale(&sale).await;
    let product = sale_view["product_id"].as_str().expect("product").to_owned();
    let accepted: serde_json::Value =
        app.place(1, &sale, None, &serde_json::json!({})).await.json().await.expect("json");
    let order = accepted["order_id"].as_str().expect("order").to_owned();
    app.settled_order(&order).await;

    let admin = app.admin();
    let mut checked = std::collections::BTreeMap::<u16, usize>::new();
    for (path, operations) in paths {
        let id = if path.starts_with("/v1/products") {
            &product
        } else if path.starts_with("/v1/flash-sales") {
            &sale
        } else {
            &order
        };
        let concrete = path.replace("{id}", id).replace("{name}", "notification");
        for (method, operation) in operations.as_object().expect("operations") {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let mut request = app.client.request(method.clone(), app.url(&concrete)).bearer_auth(&admin);
            if method != reqwest::Method::GET {
                request = request.json(&serde_json::json!({}));
            }
            let response = request.send().await.expect("request");
            let status = response.status();
            let is_json = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("application/json"));
            let body = response.text().await.unwrap_or_default();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(!body.contains("no such route"), "{method} {path} is documented but not served");
            let documented = &operation["responses"];
            let answer = documented
                .get(status.as_str())
                .or_else(|| documented.get("default"))
                .unwrap_or_else(|| panic!("{method} {path} answered {status}, which it does not document"));
            let Some(schema) = answer.pointer("/content/application~1json/schema") else {
                continue;
            };
            assert!(is_json, "{method} {path} answered {status} without a JSON body: {body}");
            let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
            // The schema with the document's components beside it, so its
            // `$ref`s resolve.
            let mut root = schema.clone();
            root["components"] = document["components"].clone();
            let validator = jsonschema::validator_for(&root).expect("a valid schema");
            let errors: Vec<String> = validator.iter_errors(&body).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{method} {path} answered {status} off its schema: {errors:?}\n{body}");
            *checked.entry(status.as_u16()).or_default() += 1;
        }
    }
    println!("answers checked against their schemas, by status: {checked:?}");
    let successes: usize = checked.iter().filter(|(status, _)| **status < 300).map(|(_, n)| n).sum();
    assert!(successes >= 8, "success bodies checked: {checked:?}");
}

/// The other direction, over HTTP: on every documented path, each method the
/// document does not list answers 405, so a path serves exactly its
/// documented operations. (A path the document leaves out entirely is caught
/// by `routes::tests::the_document_lists_exactly_the_operations_the_routers_serve`,
/// which reads the router's own route table.)
#[tokio::test]
async fn every_documented_path_refuses_the_methods_it_does_not_document() {
    use reqwest::Method;
    let app = spawn_app().await;
    let document: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");
    let paths = document["paths"].as_object().expect("paths");
    let admin = app.admin();
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
    ];
    let mut refused = 0;
    for (path, operations) in paths {
        let concrete = path.replace("{id}", "1").replace("{name}", "notification");
        let documented = |method: &Method| operations.get(method.as_str().to_lowercase()).is_some();
        for method in &methods {
            // axum answers HEAD wherever GET is served.
            let head_of_get = *method == Method::HEAD && documented(&Method::GET);
            if documented(method) || head_of_get {
                continue;
            }
            let response = app
                .client
                .request(method.clone(), app.url(&concrete))
                .bearer_auth(&admin)
                .send()
                .await
                .expect("request");
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is served but not documented"
            );
            refused += 1;
        }
    }
    assert!(refused >= 100, "{refused} undocumented methods tried");
}

/// Slowloris: connections that send half a request line and stall hold
/// nothing a normal request needs, and are closed after the header-read
/// timeout.
#[tokio::test]
async fn stalled_connections_neither_block_requests_nor_stay_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const STALLED: usize = 500;
    let app = spawn_app_with(|s| s.http.header_read_timeout = std::time::Duration::from_secs(1)).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
        stream.write_all(b"GET /healthz HT").await.expect("half a request line");
        stalled.push(stream);
    }
    let started = std::time::Instant::now();
    let normal = app.get("/healthz").await;
    let took = started.elapsed();
    assert_eq!(normal.status(), StatusCode::OK);
    println!("a normal request with {STALLED} stalled connections open: {took:?}");

    // Each stalled connection is closed by the server: the read ends (EOF,
    // or a reset), well within the timeout plus slack.
    let closed = futures::future::join_all(stalled.into_iter().map(|mut stream| async move {
        let mut buffer = [0u8; 1024];
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buffer)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                // A 408 or similar may come first; the close follows.
                Ok(Ok(_)) => continue,
            }
        }
    }))
    .await;
    assert_eq!(closed.iter().filter(|c| **c).count(), STALLED, "every stalled connection was closed");
}

/// `http.max_connections`: past the cap a connection is not served until
/// another one closes.
#[tokio::test]
async fn connections_past_the_cap_wait_for_one_to_close() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|s| {
        s.http.max_connections = 4;
        s.http.header_read_timeout = std::time::Duration::from_secs(3);
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
        stream.write_all(b"GET /healthz HT").await.expect("half a request line");
        held.push(stream);
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let refused = client.get(app.url("/healthz")).timeout(std::time::Duration::from_millis(700)).send().await;
    assert!(refused.is_err(), "a fifth connection is not served while four are open: {refused:?}");
    // The held ones time out; then the next connection is served.
    let served = client.get(app.url("/healthz")).timeout(std::time::Duration::from_secs(15)).send().await;
    assert_eq!(served.expect("served once a slot freed").status(), StatusCode::OK);
    drop(held);
}
