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

/// `kill -9` while sandbox callbacks (each sent twice) and settlement runs
/// are in flight, then a restart and the provider's retries of every
/// callback: each payment is captured once and each order paid once (the
/// ledger balanced, holding each capture once, a reconciliation clean), and
/// the outbox delivered every event of every order: nothing is left
/// unpublished and the notification consumer applied each `OrderPlaced`.
#[tokio::test]
async fn callbacks_survive_kill_9_once_each_and_the_outbox_delivers_every_event() {
    use surge_domain::outbox::{Inbox, OutboxStore};
    use surge_store::sandbox::sign;
    use surge_store::sqlite::{SqliteConfig, SqliteStore};

    const ORDERS: i64 = 120;
    const PRICE: i64 = 250;
    const SECRET: &str = "a-sandbox-secret-for-the-crash-test";
    let dir = TempDir::new().expect("tempdir");
    let port = free_port();
    let client = reqwest::Client::new();
    let env = [("SURGE_PAYMENTS__SANDBOX__SECRET", SECRET)];
    let mut surge = ChildSurge::start(&dir, port, &env);
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
        .json(&json!({"sku": "PAYCRASH", "name": "Pay crash", "price_cents": PRICE, "stock": ORDERS}))
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");

    // Each buyer checks out one unit and opens its payment.
    let address = json!({"region": "north", "city": "Harbin", "line1": "1 Main St", "postcode": "150000",
                         "phone": "+86 1234"});
    let payments: Vec<(String, Value)> = stream::iter(1..=ORDERS)
        .map(|buyer| {
            let (client, base, product, address) = (&client, &base, &product, &address);
            let buyer = token(Role::Customer, &buyer.to_string());
            async move {
                let cart = json!({"items": [{"product_id": product["id"], "quantity": 1}], "address": address});
                let url = format!("{base}/v1/checkout");
                let placed: Value = client
                    .post(url)
                    .bearer_auth(&buyer)
                    .json(&cart)
                    .send()
                    .await
                    .expect("req")
                    .json()
                    .await
                    .expect("json");
                let order = placed["orders"][0]["id"].as_str().expect("order id").to_owned();
                let url = format!("{base}/v1/orders/{order}/payments");
                let response = client.post(url).bearer_auth(&buyer).json(&json!({})).send().await.expect("req");
                (order, response.json::<Value>().await.expect("payment"))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    // Every success twice, under one event id, as providers redeliver.
    let bodies: Vec<Vec<u8>> = payments
        .iter()
        .flat_map(|(_, payment)| {
            let body = json!({"event_id": format!("ok-{}", payment["id"].as_str().expect("id")),
                "type": "payment.succeeded", "provider_ref": payment["provider_ref"],
                "amount_cents": payment["amount_cents"]});
            let body = serde_json::to_vec(&body).expect("json");
            [body.clone(), body]
        })
        .collect();
    let sender = client.clone();
    let send = move |base: String, body: Vec<u8>| {
        let client = sender.clone();
        async move {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let url = format!("{base}/v1/payments/callbacks/sandbox");
            let sent = client.post(url).header("surge-signature", sign(SECRET.as_bytes(), now, &body)).body(body);
            sent.send().await.map(|response| response.status())
        }
    };
    let send = Arc::new(send);

    // Callbacks and settlement runs race; the node is killed once a good
    // share of the callbacks were answered.
    let answered = Arc::new(Mutex::new(0_usize));
    let in_flight = {
        let (answered, base, bodies, send) = (Arc::clone(&answered), base.clone(), bodies.clone(), Arc::clone(&send));
        tokio::spawn(async move {
            stream::iter(bodies)
                .map(|body| send(base.clone(), body))
                .buffer_unordered(8)
                .for_each(|status| {
                    if status.is_ok_and(|status| status == StatusCode::OK) {
                        *answered.lock().expect("lock") += 1;
                    }
                    async {}
                })
                .await;
        })
    };
    let settling = {
        let (client, base, admin) = (client.clone(), base.clone(), token(Role::Admin, "ops"));
        tokio::spawn(async move {
            for _ in 0..20 {
                let url = format!("{base}/v1/admin/settlements/run");
                let _ = client.post(url).bearer_auth(&admin).json(&json!({})).send().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for _ in 0..2_000 {
        if *answered.lock().expect("lock") >= bodies.len() / 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    surge.process.kill().expect("kill -9");
    surge.process.wait().expect("reaped");
    let _ = tokio::join!(in_flight, settling);
    let before = *answered.lock().expect("lock");
    eprintln!("kill -9 after {before} of {} callbacks answered", bodies.len());
    assert!(before > 0 && before < bodies.len(), "the kill came mid-way: {before}");

    // The provider retries every callback until it is answered.
    let surge = ChildSurge::start(&dir, port, &env);
    wait_ready(&client, &surge.base).await;
    for body in &bodies {
        let mut status = None;
        for _ in 0..50 {
            status = send(surge.base.clone(), body.clone()).await.ok();
            if status == Some(StatusCode::OK) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(status, Some(StatusCode::OK), "a retried callback is answered");
    }
    let admin = token(Role::Admin, "ops");
    let run = client.post(format!("{base}/v1/admin/settlements/run")).bearer_auth(&admin).json(&json!({}));
    assert_eq!(run.send().await.expect("req").status(), StatusCode::OK, "a settlement run after the restart");

    // Each payment captured once, each order paid once.
    for (order, payment) in &payments {
        let url = format!("{base}/v1/payments/{}", payment["id"].as_str().expect("id"));
        let read: Value = client.get(url).bearer_auth(&admin).send().await.expect("req").json().await.expect("json");
        assert_eq!(read["status"], "succeeded", "{read}");
        let url = format!("{base}/v1/orders/{order}");
        let read: Value = client.get(url).bearer_auth(&admin).send().await.expect("req").json().await.expect("json");
        assert_eq!(read["status"], "PAID", "{read}");
    }
    let url = format!("{base}/v1/admin/ledger/trial-balance");
    let ledger: Value = client.get(url).bearer_auth(&admin).send().await.expect("req").json().await.expect("json");
    assert_eq!(ledger["balanced"], true, "{ledger}");
    let clearing = ledger["accounts"].as_array().expect("accounts").iter().find(|a| a["name"] == "provider_clearing");
    assert_eq!(clearing.map(|a| a["debit_cents"].clone()), Some(json!(ORDERS * PRICE)), "each capture once: {ledger}");
    let url = format!("{base}/v1/admin/reconciliation/run");
    let pass: Value =
        client.post(url).bearer_auth(&admin).json(&json!({})).send().await.expect("req").json().await.expect("json");
    assert_eq!(pass["mismatches"], json!([]), "{pass}");

    // The relay publishes what the outbox holds, and the consumer applies
    // it; then the node stops and its store is read.
    let metrics = || async {
        let text = client.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
        text.lines().find_map(|line| line.strip_prefix("surge_outbox_backlog ")?.trim().parse::<f64>().ok())
    };
    let mut backlog = None;
    for _ in 0..100 {
        backlog = metrics().await;
        if backlog == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(backlog, Some(0.0), "the outbox was published");
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(surge);
    let store = SqliteStore::open(&SqliteConfig::in_dir(dir.path())).await.expect("open the store");
    assert_eq!(store.backlog().await.expect("backlog").unpublished, 0, "every event published");
    for (order, _) in &payments {
        let placed = format!("order_placed:{order}");
        assert!(store.seen("notifications", &placed).await.expect("inbox"), "{placed} applied");
    }
}
