//! Overload: non-core work is shed first and fast; core routes keep
//! answering.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn under_a_flood_of_listings_core_reads_are_served_and_listings_are_shed_fast() {
    let app = spawn_app_with(|s| {
        s.overload.non_core_concurrency = 1;
        s.overload.bulkhead_max_wait = Duration::ZERO;
    })
    .await;
    let id = app.create_product(1, "CORE").await["id"].as_str().expect("id").to_owned();
    for n in 0..50 {
        app.create_product(2, &format!("FILL-{n}")).await;
    }

    let listing = |_| {
        let app = &app;
        async move {
            let started = Instant::now();
            let response = app.get("/v1/products?limit=500").await;
            let status = response.status();
            let retry_after = response.headers().contains_key("retry-after");
            let body: Value = response.json().await.expect("json");
            (status, retry_after, body, started.elapsed())
        }
    };
    let path = format!("/v1/products/{id}");
    let core = |_| app.get(&path);
    let (listings, reads) = tokio::join!(join_all((0..200).map(listing)), join_all((0..100).map(core)));

    let mut shed_latencies: Vec<Duration> = Vec::new();
    for (status, retry_after, body, took) in &listings {
        match *status {
            StatusCode::OK => assert!(body["items"].is_array()),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["error"]["code"], "overloaded");
                assert!(retry_after, "a shed call says when to retry");
                shed_latencies.push(*took);
            }
            other => panic!("a listing answered {other}: {body}"),
        }
    }
    assert!(!shed_latencies.is_empty(), "a one-slot non-core pool sheds some of 200 concurrent listings");
    let read_statuses: Vec<StatusCode> = reads.iter().map(|r| r.status()).collect();
    assert!(read_statuses.iter().all(|s| *s == StatusCode::OK), "core reads are all served: {read_statuses:?}");
    shed_latencies.sort();
    println!(
        "shed {} of {} listings; shed latency median {:?}, max {:?}",
        shed_latencies.len(),
        listings.len(),
        shed_latencies[shed_latencies.len() / 2],
        shed_latencies[shed_latencies.len() - 1]
    );
}
