//! Scan ingestion: `--couriers` couriers (100) each posting `--scans` scans
//! (50) of its picked-up parcel at once, written through (the store's
//! `scan`: one transaction, one fsync, per scan) and written behind the
//! cache (`WriteBehind` over the embedded log's scan journal, with group
//! commit, and its flusher running beside), each on a fresh SQLite store
//! in the same run, `--rounds` times alternately. Reports scans/s of each
//! and their ratio, the write-behind run's time until the store holds
//! every scan, and its flush lag: from a scan's 202 to the commit of the
//! flush that wrote it (TP50, TP99, max; scans are matched to flushes in
//! the order they were acknowledged). Checked: the store holds every scan
//! once in both runs.
//!
//! With `--distributed`, the store is PostgreSQL (a fresh database per run
//! on `SURGE_BENCH_PG_URL`'s server, 127.0.0.1:5432 by default) and the
//! documents and journal are in Redis (`RedisTracking`, on
//! `SURGE_BENCH_REDIS_URL`, 127.0.0.1:6379 by default).
//!
//!     cargo bench -p surge-store --bench scans -- [--couriers 100] [--scans 50] [--rounds 3] [--distributed]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Connection;
use surge_domain::CourierId;
use surge_domain::fulfilment::{FulfilmentStore, Scan, ScanKind, ScanOutcome, TrackingDocs};
use surge_store::behind::{BehindConfig, TrackingFlusher, WriteBehind};
use surge_store::postgres::{PgConfig, PgStore};
use surge_store::queue::log::{LogQueue, LogQueueConfig};
use surge_store::redis::{Durability, RedisConfig, RedisConn, RedisTracking};
use surge_store::sqlite::{SqliteConfig, SqliteStore};
use tempfile::TempDir;

struct Args {
    couriers: i64,
    scans: usize,
    rounds: usize,
    /// PostgreSQL and Redis instead of SQLite and the embedded log.
    distributed: bool,
}

fn args() -> Args {
    let mut args = Args { couriers: 100, scans: 50, rounds: 3, distributed: false };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().unwrap_or_else(|| panic!("{flag} takes a value"));
        match flag.as_str() {
            "--couriers" => args.couriers = value().parse().expect("--couriers: a count"),
            "--scans" => args.scans = value().parse().expect("--scans: a count"),
            "--rounds" => args.rounds = value().parse().expect("--rounds: a count"),
            "--distributed" => args.distributed = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// The seed: one courier per parcel, each parcel picked up (both dialects).
fn seed_statements(couriers: i64) -> [String; 2] {
    let series = format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {couriers}) ");
    [
        "INSERT INTO couriers (id, name, region, zone, capacity, on_shift, assigned, updated_at_ms) \
         SELECT i, 'C' || i, 'north', 'north', 1, TRUE, 1, 0 FROM n",
        "INSERT INTO shipments (waybill, order_id, user_id, merchant_id, direction, status, courier_id, region, \
         zone, assigned_at_ms, created_at_ms, updated_at_ms) \
         SELECT 'SF' || i, i, i, 1, 'forward', 'picked_up', i, 'north', 'north', 0, 0, 0 FROM n",
    ]
    .map(|sql| format!("{series}{sql}"))
}

/// A fresh, seeded store and what the write-behind run needs beside it.
enum Seeded {
    Sqlite { store: Arc<SqliteStore>, dir: TempDir },
    Postgres { store: Arc<PgStore>, redis: RedisConn, namespace: String, database: String, admin_url: String },
}

impl Seeded {
    async fn new(args: &Args) -> Self {
        if !args.distributed {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqliteStore::open(&SqliteConfig::in_dir(dir.path())).await.expect("open sqlite");
            let url = format!("sqlite://{}", dir.path().join(surge_store::sqlite::DATABASE_FILE).display());
            let mut seed = sqlx::SqliteConnection::connect(&url).await.expect("connect");
            for sql in seed_statements(args.couriers) {
                sqlx::query(&sql).execute(&mut seed).await.expect("seed");
            }
            return Seeded::Sqlite { store: Arc::new(store), dir };
        }
        let admin_url = std::env::var("SURGE_BENCH_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let database = format!("surge_bench_scans_{:016x}", rand::random::<u64>());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.expect("PostgreSQL answers");
        sqlx::query(&format!("CREATE DATABASE {database}")).execute(&mut admin).await.expect("create database");
        let url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{database}"),
            None => panic!("SURGE_BENCH_PG_URL names a database"),
        };
        let config = PgConfig { url: url.clone(), max_connections: 16, acquire_timeout: Duration::from_secs(30) };
        let store = PgStore::open(&config).await.expect("open postgres");
        let mut seed = sqlx::PgConnection::connect(&url).await.expect("connect");
        for sql in seed_statements(args.couriers) {
            sqlx::query(&sql).execute(&mut seed).await.expect("seed");
        }
        let namespace = format!("surge-bench-{database}");
        let redis_url = std::env::var("SURGE_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let config = RedisConfig { urls: vec![redis_url], namespace: namespace.clone(), ..RedisConfig::default() };
        let redis = RedisConn::connect(&config).await.expect("redis answers");
        Seeded::Postgres { store: Arc::new(store), redis, namespace, database, admin_url }
    }

    fn store(&self) -> Arc<dyn FulfilmentStore> {
        match self {
            Seeded::Sqlite { store, .. } => Arc::clone(store) as Arc<dyn FulfilmentStore>,
            Seeded::Postgres { store, .. } => Arc::clone(store) as Arc<dyn FulfilmentStore>,
        }
    }

    /// The write-behind of this mode: the embedded log's journal, or Redis.
    async fn behind(&self, config: BehindConfig) -> Behind {
        match self {
            Seeded::Sqlite { dir, .. } => {
                let log = LogQueue::open(dir.path(), LogQueueConfig::default()).await.expect("open log");
                let behind = Arc::new(WriteBehind::new(Arc::new(log.journal()), self.store(), config));
                (Arc::clone(&behind) as Arc<dyn TrackingDocs>, behind as Arc<dyn TrackingFlusher>)
            }
            Seeded::Postgres { redis, namespace, .. } => {
                let behind =
                    Arc::new(RedisTracking::new(redis.clone(), namespace, self.store(), config, Durability::default()));
                (Arc::clone(&behind) as Arc<dyn TrackingDocs>, behind as Arc<dyn TrackingFlusher>)
            }
        }
    }

    /// Checks that the store holds every scan once, then drops the data.
    async fn finish(self, args: &Args) {
        let store = self.store();
        for courier in 1..=args.couriers {
            let scans = store.scans(&format!("SF{courier}")).await.expect("scans");
            let notes: Vec<String> = scans.into_iter().map(|scan| scan.note).collect();
            let expected: Vec<String> = (0..args.scans).map(|i| i.to_string()).collect();
            assert_eq!(notes, expected, "the store holds every scan of SF{courier} once, in order");
        }
        if let Seeded::Postgres { store, database, admin_url, .. } = self {
            drop(store);
            let mut admin = sqlx::PgConnection::connect(&admin_url).await.expect("PostgreSQL answers");
            let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
            sqlx::query(&drop).execute(&mut admin).await.expect("drop database");
        }
    }
}

type Behind = (Arc<dyn TrackingDocs>, Arc<dyn TrackingFlusher>);

fn scan(i: usize) -> Scan {
    Scan {
        kind: ScanKind::ArrivedHub,
        at: time::OffsetDateTime::now_utc(),
        location: "hub".into(),
        note: format!("{i}"),
    }
}

/// Every courier posts its scans at once through `post`: the time taken.
async fn ingest<F, Fut>(args: &Args, post: F) -> Duration
where
    F: Fn(String, CourierId, Scan) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ScanOutcome> + Send,
{
    let started = Instant::now();
    let mut couriers = tokio::task::JoinSet::new();
    for courier in 1..=args.couriers {
        let (post, scans) = (post.clone(), args.scans);
        couriers.spawn(async move {
            for i in 0..scans {
                let outcome = post(format!("SF{courier}"), CourierId::new(courier), scan(i)).await;
                assert!(matches!(outcome, ScanOutcome::Applied(_)), "{outcome:?}");
            }
        });
    }
    while let Some(done) = couriers.join_next().await {
        done.expect("courier");
    }
    started.elapsed()
}

async fn through(args: &Args) -> Duration {
    let seeded = Seeded::new(args).await;
    let store = seeded.store();
    let time = ingest(args, move |waybill, courier, scan| {
        let store = Arc::clone(&store);
        async move { store.scan(&waybill, courier, &scan, time::OffsetDateTime::now_utc()).await.expect("scan") }
    })
    .await;
    seeded.finish(args).await;
    time
}

/// The write-behind run: (ingestion time, time until the store holds
/// every scan, flush lags).
async fn behind(args: &Args) -> (Duration, Duration, Vec<Duration>) {
    let seeded = Seeded::new(args).await;
    let config = BehindConfig { delay: Duration::from_millis(100), batch: 1_000, max_pending: 1_000_000 };
    let (docs, flusher) = seeded.behind(config).await;
    let acked: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let total = args.couriers as usize * args.scans;
    let flusher = {
        let (behind, acked) = (flusher, Arc::clone(&acked));
        tokio::spawn(async move {
            let (mut flushed, mut lags) = (0, Vec::with_capacity(total));
            while flushed < total {
                let done = behind.flush_once(time::OffsetDateTime::now_utc()).await.expect("flush");
                let at = Instant::now();
                {
                    let mut acked = acked.lock().expect("acked");
                    let matched = done.min(acked.len());
                    lags.extend(acked.drain(..matched).map(|then| at.saturating_duration_since(then)));
                }
                flushed += done;
                if done < behind.batch() {
                    tokio::time::sleep(behind.delay()).await;
                }
            }
            (Instant::now(), lags)
        })
    };
    let started = Instant::now();
    let posting = docs;
    let time = ingest(args, move |waybill, courier, scan| {
        let (behind, acked) = (Arc::clone(&posting), Arc::clone(&acked));
        async move {
            let outcome = behind.scan(&waybill, courier, &scan, time::OffsetDateTime::now_utc()).await;
            let outcome = outcome.unwrap_or_else(|refused| panic!("{refused:?}"));
            acked.lock().expect("acked").push_back(Instant::now());
            outcome
        }
    })
    .await;
    let (drained_at, lags) = flusher.await.expect("flusher");
    seeded.finish(args).await;
    (time, drained_at - started, lags)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let total = args.couriers as f64 * args.scans as f64;
    let on = if args.distributed {
        "on PostgreSQL, written behind Redis"
    } else {
        "on SQLite (synchronous = FULL), written behind the embedded log"
    };
    println!("{} couriers x {} scans each, at once, {on}", args.couriers, args.scans);
    let mut ratios = Vec::new();
    for round in 1..=args.rounds {
        let through = runtime.block_on(through(&args));
        let (behind, drained, mut lags) = runtime.block_on(behind(&args));
        lags.sort_unstable();
        let ratio = through.as_secs_f64() / behind.as_secs_f64();
        ratios.push(ratio);
        println!(
            "round {round}: write-through {:.0} scans/s ({through:.2?}); write-behind {:.0} scans/s ({behind:.2?}), \
             all in the store after {drained:.2?}; ratio {ratio:.1}x; flush lag TP50 {:.0?} TP99 {:.0?} max {:.0?}",
            total / through.as_secs_f64(),
            total / behind.as_secs_f64(),
            percentile(&lags, 0.50),
            percentile(&lags, 0.99),
            lags.last().copied().unwrap_or_default(),
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!("median ratio write-behind / write-through: {:.1}x", ratios[ratios.len() / 2]);
}
