//! Degradation switches: flipped by hand (persisted), or by a breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use axum::routing::post;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app, spawn_app_in, spawn_app_with};

async fn switches(app: &TestApp) -> Vec<Value> {
    let response = app.client.get(app.url("/v1/admin/switches")).bearer_auth(app.admin()).send().await.expect("req");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    body["items"].as_array().expect("items").clone()
}

async fn switch(app: &TestApp, name: &str) -> Value {
    switches(app).await.into_iter().find(|s| s["name"] == name).expect("switch listed")
}

async fn set(app: &TestApp, token: &str, name: &str, body: Value) -> reqwest::Response {
    app.client
        .put(app.url(&format!("/v1/admin/switches/{name}")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("req")
}

#[tokio::test]
async fn switching_intake_off_degrades_it_at_once_and_survives_a_restart() {
    let app = spawn_app().await;
    let sale = app.active_sale(10, 1).await;
    let initial = switch(&app, "flash_sale_intake").await;
    assert_eq!((initial["enabled"].clone(), initial["mode"].clone()), (json!(true), json!("auto")));

    assert_error(
        set(&app, &app.merchant(1), "flash_sale_intake", json!({"enabled": false, "reason": "x"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_error(
        set(&app, &app.admin(), "no_such_switch", json!({"enabled": false, "reason": "x"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        set(&app, &app.admin(), "flash_sale_intake", json!({"enabled": "no", "reason": "x"})).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;

    let off = set(&app, &app.admin(), "flash_sale_intake", json!({"enabled": false, "reason": "db maintenance"})).await;
    assert_eq!(off.status(), StatusCode::OK);
    let off: Value = off.json().await.expect("json");
    assert_eq!(
        (off["enabled"].clone(), off["mode"].clone(), off["reason"].clone()),
        (json!(false), json!("manual"), json!("db maintenance"))
    );

    let refused = app.place(1, &sale, None, &json!({})).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_error(refused, StatusCode::SERVICE_UNAVAILABLE, "degraded").await;
    assert_eq!(app.sale(&sale).await["stock_left"], 10, "nothing deducted");

    let again = spawn_app_in(app.stop().await, |_| {}).await;
    assert_eq!(switch(&again, "flash_sale_intake").await["enabled"], false, "persisted");
    let back =
        set(&again, &again.admin(), "flash_sale_intake", json!({"enabled": true, "reason": "", "mode": "auto"})).await;
    assert_eq!(back.status(), StatusCode::OK);
    assert_eq!(again.place(1, &sale, None, &json!({})).await.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_failing_notification_sink_opens_its_breaker_without_touching_intake_and_recovers() {
    // A webhook that answers whatever status the test sets.
    let status = Arc::new(AtomicU16::new(500));
    let delivered = Arc::new(AtomicUsize::new(0));
    let (answer, count) = (Arc::clone(&status), Arc::clone(&delivered));
    let hook = axum::Router::new().route(
        "/hook",
        post(move || {
            let (answer, count) = (Arc::clone(&answer), Arc::clone(&count));
            async move {
                let code = answer.load(Ordering::SeqCst);
                if code == 200 {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, hook).await });

    let app = spawn_app_with(|s| {
        s.notify.webhook_url = Some(url.parse().expect("a webhook URL"));
        s.notify.breaker.consecutive_failures = 3;
        s.notify.breaker.open_for = Duration::from_secs(1);
        s.flash_sale.per_user_rate = 1_000;
    })
    .await;
    let sale = app.active_sale(100, 1).await;
    for user in 1..=10 {
        let accepted = app.place(user, &sale, None, &json!({})).await;
        assert_eq!(accepted.status(), StatusCode::ACCEPTED, "intake is unaffected by the sink");
        let id = accepted.json::<Value>().await.expect("json")["order_id"].as_str().expect("id").to_owned();
        assert_eq!(app.settled_order(&id).await["status"], "CREATED");
    }

    let mut degraded = Value::Null;
    for _ in 0..200 {
        degraded = switch(&app, "notification").await;
        if degraded["enabled"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!((degraded["enabled"].clone(), degraded["mode"].clone()), (json!(false), json!("auto")), "{degraded}");
    // Open (1), or already probing (2, half-open) on a slow machine; not closed.
    let state = app.metric("surge_breaker_state{breaker=\"notification\"}").await;
    assert!(state == 1.0 || state == 2.0, "breaker state gauge {state}");
    let failed = app.metric("surge_notifications_total{result=\"failed\"}").await;
    assert!((3.0..=5.0).contains(&failed), "the breaker opened within the configured calls: {failed} failed");

    status.store(200, Ordering::SeqCst);
    let mut recovered = Value::Null;
    for _ in 0..400 {
        recovered = switch(&app, "notification").await;
        if recovered["enabled"] == true && delivered.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!((recovered["enabled"].clone(), recovered["mode"].clone()), (json!(true), json!("auto")), "{recovered}");
    assert_eq!(app.metric("surge_breaker_state{breaker=\"notification\"}").await, 0.0);
    assert!(delivered.load(Ordering::SeqCst) > 0, "queued notifications go out after recovery");
}

#[tokio::test]
async fn with_live_product_details_off_reads_come_from_the_cache_only() {
    let app = spawn_app().await;
    let warm = app.create_product(1, "WARM").await["id"].as_str().expect("id").to_owned();
    let cold = app.create_product(1, "COLD").await["id"].as_str().expect("id").to_owned();
    let served = app.product(&warm).await;
    let off =
        set(&app, &app.admin(), "product_detail_live", json!({"enabled": false, "reason": "db overloaded"})).await;
    assert_eq!(off.status(), StatusCode::OK);
    let loads = app.metric("surge_cache_loads_total{cache=\"product\"}").await;

    assert_eq!(app.product(&warm).await, served, "a cached product is still served");
    let cold_read = app.get(&format!("/v1/products/{cold}")).await;
    assert!(cold_read.headers().contains_key("retry-after"));
    assert_error(cold_read, StatusCode::SERVICE_UNAVAILABLE, "degraded").await;
    assert_eq!(app.metric("surge_cache_loads_total{cache=\"product\"}").await, loads, "the store is not read");

    set(&app, &app.admin(), "product_detail_live", json!({"enabled": true, "reason": "", "mode": "auto"})).await;
    assert_eq!(app.product(&cold).await["sku"], "COLD");
}

async fn config(app: &TestApp) -> Value {
    let response = app.client.get(app.url("/v1/admin/config")).bearer_auth(app.admin()).send().await.expect("req");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

async fn put_config(app: &TestApp, token: &str, body: &str) -> reqwest::Response {
    app.client
        .put(app.url("/v1/admin/config"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("req")
}

#[tokio::test]
async fn limits_change_at_run_time_are_validated_and_survive_a_restart() {
    let app = spawn_app_with(|s| s.flash_sale.per_user_rate = 1_000).await;
    let before = config(&app).await;
    assert_eq!(before["flash_sale"]["per_user_rate"], 1_000);
    assert_error(
        put_config(&app, &app.merchant(1), r#"{"flash_sale": {"per_user_rate": 2}}"#).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    for bad in [
        r#"{"overload": {"adaptive_min": 0}}"#,
        r#"{"flash_sale": {"per_user_rat": 2}}"#,
        r#"{"flash_sale": {"per_user_rate": -1}}"#,
        r#"{"notify_breaker": {"error_ratio": 7}}"#,
        r#"[1, 2]"#,
        // Past the upper bounds: sizes a pool or a timer must never see.
        r#"{"overload": {"core_concurrency": 2305843009213693951}}"#,
        r#"{"overload": {"adaptive_max": 99999999}}"#,
        r#"{"flash_sale": {"per_sale_rate": 4000000000}}"#,
        r#"{"notify_breaker": {"open_for": "1000years"}}"#,
    ] {
        assert_error(put_config(&app, &app.admin(), bad).await, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    assert_eq!(config(&app).await, before, "rejected changes change nothing");

    let changed =
        put_config(&app, &app.admin(), r#"{"flash_sale": {"per_user_rate": 2}, "notify_breaker": {"open_for": "2s"}}"#)
            .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await.expect("json");
    assert_eq!(changed["flash_sale"]["per_user_rate"], 2);
    assert_eq!(changed["flash_sale"]["per_sale_rate"], before["flash_sale"]["per_sale_rate"], "untouched keys stay");
    assert_eq!(changed["notify_breaker"]["open_for"], "2s");

    // The new rate holds at once: one customer, ten attempts at once.
    let sale = app.active_sale(100, 100).await;
    let body = json!({});
    let attempts = futures::future::join_all((0..10).map(|_| app.place(5, &sale, None, &body))).await;
    let limited = attempts.iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).count();
    assert!(limited >= 7, "a burst of 2 lets at most 2 or 3 through: {limited} limited");

    let again = spawn_app_in(app.stop().await, |s| s.flash_sale.per_user_rate = 1_000).await;
    assert_eq!(config(&again).await["flash_sale"]["per_user_rate"], 2, "stored changes win over the file");
}

#[tokio::test]
async fn a_hanging_notification_sink_is_cut_by_its_timeout_and_opens_its_breaker() {
    let hook = axum::Router::new().route(
        "/hook",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, hook).await });

    let app = spawn_app_with(|s| {
        s.notify.webhook_url = Some(url.parse().expect("a webhook URL"));
        s.notify.timeout = Duration::from_millis(100);
        s.notify.breaker.consecutive_failures = 2;
        s.notify.breaker.open_for = Duration::from_secs(60);
    })
    .await;
    let sale = app.active_sale(10, 1).await;
    for user in 1..=3 {
        let accepted = app.place(user, &sale, None, &json!({})).await;
        assert_eq!(accepted.status(), StatusCode::ACCEPTED, "a hanging sink never holds up intake");
        let id = accepted.json::<Value>().await.expect("json")["order_id"].as_str().expect("id").to_owned();
        assert_eq!(app.settled_order(&id).await["status"], "CREATED");
    }
    let (mut degraded, mut failed) = (Value::Null, 0.0);
    for _ in 0..200 {
        degraded = switch(&app, "notification").await;
        failed = app.metric("surge_notifications_total{result=\"failed\"}").await;
        if degraded["enabled"] == false && failed >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!((degraded["enabled"].clone(), degraded["mode"].clone()), (json!(false), json!("auto")), "{degraded}");
    assert_eq!(failed, 2.0, "two timeouts opened it, and no call went out since");
}
