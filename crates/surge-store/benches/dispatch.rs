//! Dispatch of a burst of parcels: 10,000 parcels waiting over 500
//! on-shift couriers in 20 zones, assigned greedily (one transaction per
//! parcel, as packing does in `greedy` mode) and by the batch planner (one
//! plan, written a few hundred assignments per transaction), in the same
//! run on the same data. Reports each time, their ratio, and the load
//! spread (largest courier load over the mean). On SQLite and, with
//! `--pg URL`, on a fresh PostgreSQL database.
//!
//!     cargo bench -p surge-store --bench dispatch -- [--parcels 10000] [--couriers 500] [--zones 20] [--pg URL]
//!
//! Couriers and parcels are seeded by SQL in the shapes the fulfilment
//! context writes (couriers on shift with capacity for 1.5x the parcels of
//! their zone; parcels `awaiting_courier`); both runs go through the
//! store's own `assign` and `assign_many` (and the domain's planner), and
//! the figures are checked: every parcel assigned once, no courier over
//! capacity.

use std::sync::Arc;
use std::time::{Duration, Instant};

use surge_domain::SystemClock;
use surge_domain::fulfilment::{DispatchMode, Fulfilment, FulfilmentStore, ZoneMap};
use surge_store::postgres::{PgConfig, PgStore};
use surge_store::sqlite::{SqliteConfig, SqliteStore};

struct Args {
    parcels: i64,
    couriers: i64,
    zones: i64,
    pg: Option<String>,
}

fn args() -> Args {
    let mut args = Args { parcels: 10_000, couriers: 500, zones: 20, pg: None };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().unwrap_or_else(|| panic!("{flag} takes a value"));
        match flag.as_str() {
            "--parcels" => args.parcels = value().parse().expect("--parcels: a count"),
            "--couriers" => args.couriers = value().parse().expect("--couriers: a count"),
            "--zones" => args.zones = value().parse().expect("--zones: a count"),
            "--pg" => args.pg = Some(value()),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// The seed (`prefix` opens each statement over the rows `source`, as in
/// the settlement benchmark), and the reset between the two runs.
fn seed(args: &Args, prefix: &str, couriers: &str, parcels: &str) -> Vec<String> {
    let zones = args.zones;
    // Room for half as many parcels again as each zone gets.
    let capacity = (args.parcels * 3 / 2 + args.couriers - 1) / args.couriers;
    vec![
        format!(
            "{prefix}INSERT INTO couriers (id, name, region, zone, capacity, on_shift, assigned, updated_at_ms) \
             SELECT i, 'C' || i, 'north', 'z' || (i % {zones}), {capacity}, TRUE, 0, 0 FROM {couriers}"
        ),
        format!(
            "{prefix}INSERT INTO shipments (waybill, order_id, user_id, merchant_id, direction, status, region, \
             zone, created_at_ms, updated_at_ms) SELECT 'W' || i, i, 1, 1, 'forward', 'awaiting_courier', 'north', \
             'z' || (i % {zones}), i, i FROM {parcels}"
        ),
    ]
}

const RESET: [&str; 2] = [
    "UPDATE shipments SET status = 'awaiting_courier', courier_id = NULL, assigned_at_ms = NULL, updated_at_ms = 0",
    "UPDATE couriers SET assigned = 0",
];

const SPREAD: &str = "SELECT CAST(MAX(assigned) AS BIGINT), CAST(SUM(assigned) AS BIGINT), COUNT(*), \
                      CAST(SUM(CASE WHEN assigned > capacity THEN 1 ELSE 0 END) AS BIGINT) FROM couriers";
const PARCELS: &str = "SELECT COUNT(*), COUNT(DISTINCT courier_id) FROM shipments WHERE status = 'packed'";

struct Run {
    time: Duration,
    /// Largest load over the mean load.
    spread: f64,
}

/// What the run left: checked, and its spread.
fn checked(args: &Args, (max, sum, couriers, over): (i64, i64, i64, i64), (packed, _): (i64, i64)) -> f64 {
    assert_eq!(over, 0, "no courier over capacity");
    assert_eq!(packed, args.parcels, "every parcel assigned");
    assert_eq!(sum, args.parcels, "each parcel counted once in the loads");
    max as f64 / (sum as f64 / couriers as f64)
}

async fn greedy(args: &Args, store: &dyn FulfilmentStore) -> Duration {
    let started = Instant::now();
    let waiting = store.awaiting(args.parcels as u32).await.expect("awaiting");
    let now = time::OffsetDateTime::now_utc();
    for parcel in &waiting {
        store.assign(&parcel.waybill, std::slice::from_ref(&parcel.zone), now).await.expect("assign");
    }
    started.elapsed()
}

async fn batch(args: &Args, store: Arc<dyn FulfilmentStore>) -> Duration {
    let fulfilment = Fulfilment::new(store, ZoneMap::default(), Arc::new(SystemClock)).with_mode(DispatchMode::Batch);
    let started = Instant::now();
    let assigned = fulfilment.dispatch_batch(args.parcels as u32).await.expect("batch");
    assert_eq!(assigned as i64, args.parcels, "one pass assigns them all");
    started.elapsed()
}

/// Runs greedy then batch on `store`, resetting in between with `execute`
/// and reading the outcome with `outcome`.
async fn both<E, O>(args: &Args, store: Arc<dyn FulfilmentStore>, execute: E, outcome: O) -> (Run, Run)
where
    E: AsyncFn(&str),
    O: AsyncFn() -> ((i64, i64, i64, i64), (i64, i64)),
{
    let time = greedy(args, store.as_ref()).await;
    let (loads, parcels) = outcome().await;
    let greedy = Run { time, spread: checked(args, loads, parcels) };
    for sql in RESET {
        execute(sql).await;
    }
    let time = batch(args, store).await;
    let (loads, parcels) = outcome().await;
    (greedy, Run { time, spread: checked(args, loads, parcels) })
}

async fn sqlite(args: &Args) -> (Run, Run) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&SqliteConfig::in_dir(dir.path())).await.expect("open sqlite");
    let url = format!("sqlite://{}", dir.path().join(surge_store::sqlite::DATABASE_FILE).display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
    let series = |n: i64| format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) ");
    for (prefix, sql) in [series(args.couriers), series(args.parcels)].into_iter().zip(seed(args, "", "n", "n")) {
        sqlx::query(&format!("{prefix}{sql}")).execute(&pool).await.expect("seed");
    }
    let execute = async |sql: &str| {
        sqlx::query(sql).execute(&pool).await.expect("reset");
    };
    let outcome = async || {
        let loads = sqlx::query_as(SPREAD).fetch_one(&pool).await.expect("loads");
        (loads, sqlx::query_as(PARCELS).fetch_one(&pool).await.expect("parcels"))
    };
    both(args, Arc::new(store), execute, outcome).await
}

async fn postgres(args: &Args, url: &str) -> (Run, Run) {
    let admin = sqlx::PgPool::connect(url).await.expect("connect to postgres");
    let name = format!("surge_bench_dispatch_{}", std::process::id());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create database");
    let (base, _) = url.rsplit_once('/').expect("a database in the url");
    let db_url = format!("{base}/{name}");
    let runs = {
        let store = PgStore::open(&PgConfig::with_url(db_url.clone())).await.expect("open postgres");
        let pool = sqlx::PgPool::connect(&db_url).await.expect("connect");
        let series = |n: i64| format!("generate_series(1, {n}) AS n(i)");
        for sql in seed(args, "", &series(args.couriers), &series(args.parcels)) {
            sqlx::query(&sql).execute(&pool).await.expect("seed");
        }
        let execute = async |sql: &str| {
            sqlx::query(sql).execute(&pool).await.expect("reset");
        };
        let outcome = async || {
            let loads = sqlx::query_as(SPREAD).fetch_one(&pool).await.expect("loads");
            (loads, sqlx::query_as(PARCELS).fetch_one(&pool).await.expect("parcels"))
        };
        let runs = both(args, Arc::new(store), execute, outcome).await;
        pool.close().await;
        runs
    };
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&admin).await.expect("drop database");
    runs
}

fn report(engine: &str, args: &Args, (greedy, batch): &(Run, Run)) {
    println!(
        "{engine}: {} parcels, {} couriers, {} zones\n  \
         batch: {:.3} s, load spread (max/mean) {:.2}\n  \
         greedy: {:.3} s, load spread {:.2}\n  \
         batch is {:.1}x faster; every parcel assigned once, no courier over capacity",
        args.parcels,
        args.couriers,
        args.zones,
        batch.time.as_secs_f64(),
        batch.spread,
        greedy.time.as_secs_f64(),
        greedy.spread,
        greedy.time.as_secs_f64() / batch.time.as_secs_f64(),
    );
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        report("sqlite", &args, &sqlite(&args).await);
        if let Some(url) = &args.pg {
            report("postgres", &args, &postgres(&args, url).await);
        }
    });
}
