//! `kill -9` in the middle of a sale: every 202 is an order after restart,
//! nothing is oversold, and stock left + orders = stock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream;
use reqwest::StatusCode;
use serde_json::{Value, json};
use surge_server::auth::{Keys, Role, load_or_create_secret};
use surge_server::config::AuthSettings;
use tempfile::TempDir;

use crate::helpers::{ChildSurge, free_port, rfc3339, wait_ready};

fn start(dir: &TempDir, port: u16) -> ChildSurge {
    ChildSurge::start(dir, port, &[("SURGE_FLASH_SALE__PER_USER_RATE", "1000")])
}

#[tokio::test]
async fn every_202_survives_kill_9_mid_sale_and_nothing_is_oversold() {
    const STOCK: i64 = 400;
    let dir = TempDir::new().expect("tempdir");
    let port = free_port();
    let client = reqwest::Client::new();
    let mut surge = start(&dir, port);
    wait_ready(&client, &surge.base).await;
    let keys = Keys::new(
        &load_or_create_secret(&AuthSettings::default(), dir.path()).expect("secret"),
        &AuthSettings::default(),
    );
    let token = |role, sub: &str| keys.mint(role, sub, Duration::from_secs(600)).expect("mint");

    let base = surge.base.clone();
    let product: Value = client
        .post(format!("{base}/v1/products"))
        .bearer_auth(token(Role::Merchant, "1"))
        .json(&json!({"sku": "CRASH", "name": "Crash test", "price_cents": 100, "stock": STOCK}))
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    let now = time::OffsetDateTime::now_utc();
    let sale: Value = client
        .post(format!("{base}/v1/flash-sales"))
        .bearer_auth(token(Role::Admin, "ops"))
        .json(&json!({"product_id": product["id"], "stock": STOCK, "price_cents": 50, "starts_at": rfc3339(now),
                      "ends_at": rfc3339(now + time::Duration::hours(1)), "per_user_limit": 1}))
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    let sale = sale["id"].as_str().expect("sale id").to_owned();

    // Customers race; the process is killed once a good share has a 202.
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let tokens: Vec<String> = (1..=1_500u64).map(|user| token(Role::Customer, &user.to_string())).collect();
    let load = {
        let (client, accepted, url) =
            (client.clone(), Arc::clone(&accepted), format!("{base}/v1/flash-sales/{sale}/orders"));
        tokio::spawn(async move {
            stream::iter(tokens)
                .for_each_concurrent(32, |token| {
                    let (client, accepted, url) = (client.clone(), Arc::clone(&accepted), url.clone());
                    async move {
                        let Ok(response) = client.post(&url).bearer_auth(token).json(&json!({})).send().await else {
                            return;
                        };
                        if response.status() == StatusCode::ACCEPTED
                            && let Ok(body) = response.json::<Value>().await
                        {
                            accepted.lock().expect("lock").push(body["order_id"].as_str().expect("id").to_owned());
                        }
                    }
                })
                .await;
        })
    };
    for _ in 0..600 {
        if accepted.lock().expect("lock").len() >= 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    surge.process.kill().expect("kill -9");
    let _ = surge.process.wait();
    load.await.expect("load task");
    let acknowledged = accepted.lock().expect("lock").clone();
    eprintln!("kill -9 after {} acknowledged intakes", acknowledged.len());
    assert!(acknowledged.len() >= 150, "the kill came before enough 202s: {}", acknowledged.len());

    let mut surge = start(&dir, port);
    wait_ready(&client, &surge.base).await;
    let admin = token(Role::Admin, "ops");
    for id in &acknowledged {
        let response =
            client.get(format!("{}/v1/orders/{id}", surge.base)).bearer_auth(&admin).send().await.expect("req");
        assert_eq!(response.status(), StatusCode::OK, "order {id} acknowledged with 202 is lost");
        let order: Value = response.json().await.expect("json");
        assert_eq!(order["status"], "CREATED", "{order}");
    }
    let orders: Value = client
        .get(format!("{}/v1/orders?limit=500", surge.base))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    let orders = orders["items"].as_array().expect("items");
    let view: Value = client
        .get(format!("{}/v1/flash-sales/{sale}", surge.base))
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    let stock_left = view["stock_left"].as_i64().expect("stock_left");
    assert!(orders.len() as i64 <= STOCK, "oversold: {} orders", orders.len());
    assert!(orders.len() >= acknowledged.len());
    assert_eq!(stock_left + orders.len() as i64, STOCK, "stock left + orders must equal stock");
    eprintln!("after restart: {} orders, {stock_left} left", orders.len());

    // The sale goes on after the restart.
    if stock_left > 0 {
        let late = client
            .post(format!("{}/v1/flash-sales/{sale}/orders", surge.base))
            .bearer_auth(token(Role::Customer, "999999"))
            .json(&json!({}))
            .send()
            .await
            .expect("req");
        assert_eq!(late.status(), StatusCode::ACCEPTED);
    }
    surge.process.kill().expect("stop");
    let _ = surge.process.wait();
}
