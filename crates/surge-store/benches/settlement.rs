//! A settlement run over a million captured payments: how long closing
//! every merchant's daily statements takes, and paying them out, beside the
//! floor of reading every posted transfer once (one aggregate scan of the
//! same table) measured in the same run. On SQLite (the embedded store) and,
//! with `--pg URL`, on a fresh PostgreSQL database.
//!
//!     cargo bench -p surge-store --bench settlement -- [--payments 1000000] [--merchants 1000] [--days 30] [--pg URL]
//!
//! The rows are written in bulk by SQL, in the shapes the payment context
//! writes them (an order, its captured payment, the capture and commission
//! transfers, a refund of one payment in twenty and its transfer, the
//! accounts' totals); then the run goes through the store's own
//! `close_statements` and `pay_out`, and the figures are checked: the
//! statements add up to the transfers and the ledger still balances.

use std::time::{Duration, Instant};

use surge_domain::IdGenerator;
use surge_domain::settlement::{LedgerStore, StatementStore, TrialBalance};
use surge_store::postgres::{PgConfig, PgStore};
use surge_store::sqlite::{SqliteConfig, SqliteStore};
use time::OffsetDateTime;

const DAY_MS: i64 = 86_400_000;
/// 2024-10-03, midnight UTC: the first day of the seeded period.
const FIRST_DAY: i64 = 20_000;

struct Args {
    payments: i64,
    merchants: i64,
    days: i64,
    pg: Option<String>,
}

fn args() -> Args {
    let mut args = Args { payments: 1_000_000, merchants: 1_000, days: 30, pg: None };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().unwrap_or_else(|| panic!("{flag} takes a value"));
        match flag.as_str() {
            "--payments" => args.payments = value().parse().expect("--payments: a count"),
            "--merchants" => args.merchants = value().parse().expect("--merchants: a count"),
            "--days" => args.days = value().parse().expect("--days: a count"),
            "--pg" => args.pg = Some(value()),
            // cargo bench passes --bench; anything else is a mistake.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// The seed, as statements over a row source `n(i)` for i in 1..=payments:
/// `prefix` starts each statement (SQLite's recursive CTE) and `source`
/// names the rows (`n`, or PostgreSQL's `generate_series`).
fn seed(args: &Args, prefix: &str, source: &str) -> Vec<String> {
    let (m, days) = (args.merchants, args.days);
    // Days cycle over each merchant's payments: every merchant sells every day.
    let at = format!("({FIRST_DAY} + (i / {m}) % {days}) * {DAY_MS} + (i * 7919) % {DAY_MS}");
    let amount = "(1000 + (i * 37) % 9000)";
    let merchant = format!("(1 + i % {m})");
    vec![
        format!(
            "{prefix}INSERT INTO orders (id, user_id, merchant_id, product_id, quantity, amount_cents, status, \
             created_at_ms, updated_at_ms, kind) SELECT i, 1 + i % 100000, {merchant}, 1, 1, {amount}, 'PAID', \
             {at}, {at}, 'checkout' FROM {source}"
        ),
        format!(
            "{prefix}INSERT INTO payments (id, order_id, user_id, merchant_id, amount_cents, commission_cents, \
             refunded_cents, status, provider, provider_ref, pay_url, created_at_ms, updated_at_ms) \
             SELECT i, i, 1 + i % 100000, {merchant}, {amount}, {amount} * 5 / 100, \
             CASE WHEN i % 20 = 0 THEN 500 ELSE 0 END, 'succeeded', 'sandbox', 'sb_' || i, '', {at}, {at} \
             FROM {source}"
        ),
        format!(
            "{prefix}INSERT INTO refunds (id, payment_id, order_id, merchant_id, amount_cents, reason, status, \
             provider, provider_ref, created_at_ms, updated_at_ms) SELECT i, i, i, {merchant}, 500, 'damaged', \
             'succeeded', 'sandbox', 'sbr_' || i, {at}, {at} FROM {source} WHERE i % 20 = 0"
        ),
        format!(
            "INSERT INTO ledger_accounts (name, debits_posted, credits_posted) \
             SELECT 'merchant_payable:' || merchant_id, SUM(commission_cents + refunded_cents), SUM(amount_cents) \
             FROM payments GROUP BY merchant_id"
        ),
        "INSERT INTO ledger_accounts (name, debits_posted, credits_posted) \
         SELECT 'provider_clearing', SUM(amount_cents), SUM(refunded_cents) FROM payments"
            .to_owned(),
        "INSERT INTO ledger_accounts (name, credits_posted) \
         SELECT 'platform_commission', SUM(commission_cents) FROM payments"
            .to_owned(),
        format!(
            "{prefix}INSERT INTO ledger_transfers (payment_id, code, debit_account, credit_account, amount_cents, \
             status, created_at_ms, updated_at_ms) SELECT i, 'capture', 'provider_clearing', \
             'merchant_payable:' || {merchant}, {amount}, 'posted', {at}, {at} FROM {source}"
        ),
        format!(
            "{prefix}INSERT INTO ledger_transfers (payment_id, code, debit_account, credit_account, amount_cents, \
             status, created_at_ms, updated_at_ms) SELECT i, 'commission', 'merchant_payable:' || {merchant}, \
             'platform_commission', {amount} * 5 / 100, 'posted', {at}, {at} FROM {source}"
        ),
        format!(
            "{prefix}INSERT INTO ledger_transfers (payment_id, code, debit_account, credit_account, amount_cents, \
             status, created_at_ms, updated_at_ms) SELECT i, 'refund:' || i, 'merchant_payable:' || {merchant}, \
             'provider_clearing', 500, 'posted', {at}, {at} FROM {source} WHERE i % 20 = 0"
        ),
    ]
}

/// What one database measured.
struct Figures {
    seed: Duration,
    scan: Duration,
    close: Duration,
    statements: usize,
    pay_out: Duration,
    payouts: usize,
}

/// Seeds through `execute`, then times the scan (`scan_sql` through
/// `scan`), the close and the payout on `store`, and checks the books.
async fn measure<S, E, Q>(args: &Args, store: &S, statements: Vec<String>, execute: E, scan: Q) -> Figures
where
    S: StatementStore + LedgerStore,
    E: AsyncFn(String),
    Q: AsyncFn() -> (i64, i64),
{
    let started = Instant::now();
    for statement in statements {
        execute(statement).await;
    }
    let seed = started.elapsed();

    let started = Instant::now();
    let (transfers, _) = scan().await;
    let scan_time = started.elapsed();
    let expected = args.payments * 2 + args.payments / 20;
    assert_eq!(transfers, expected, "every transfer seeded");

    let ids = IdGenerator::new(1).expect("node id in range");
    let until = OffsetDateTime::from_unix_timestamp((FIRST_DAY + args.days) * DAY_MS / 1_000).expect("a date");
    let started = Instant::now();
    let closed = store.close_statements(until, &ids, OffsetDateTime::now_utc()).await.expect("close");
    let close = started.elapsed();
    let started = Instant::now();
    let paid = store.pay_out(&ids, OffsetDateTime::now_utc()).await.expect("pay out");
    let pay_out = started.elapsed();

    let gross: i64 = closed.iter().map(|s| s.gross_cents).sum();
    let net: i64 = closed.iter().map(|s| s.net_cents).sum();
    let captured: i64 = (1..=args.payments).map(|i| 1000 + (i * 37) % 9000).sum();
    assert_eq!(gross, captured, "the statements add up to the captures");
    assert_eq!(paid.iter().map(|p| p.amount_cents).sum::<i64>(), net, "the payouts pay the statements' net");
    let balance = TrialBalance::of(store.accounts().await.expect("accounts"));
    assert!(balance.balanced, "the ledger balances: {} vs {}", balance.debits_cents, balance.credits_cents);
    Figures { seed, scan: scan_time, close, statements: closed.len(), pay_out, payouts: paid.len() }
}

const SCAN: &str = "SELECT COUNT(*), CAST(SUM(amount_cents) AS BIGINT) FROM ledger_transfers WHERE status = 'posted'";

async fn sqlite(args: &Args) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&SqliteConfig::in_dir(dir.path())).await.expect("open sqlite");
    let url = format!("sqlite://{}", dir.path().join(surge_store::sqlite::DATABASE_FILE).display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
    let n = args.payments;
    let prefix = format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) ");
    let statements = seed(args, &prefix, "n");
    let execute = async |sql: String| {
        sqlx::query(&sql).execute(&pool).await.expect("seed");
    };
    let scan = async || sqlx::query_as::<_, (i64, i64)>(SCAN).fetch_one(&pool).await.expect("scan");
    measure(args, &store, statements, execute, scan).await
}

async fn postgres(args: &Args, url: &str) -> Figures {
    let admin = sqlx::PgPool::connect(url).await.expect("connect to postgres");
    let name = format!("surge_bench_settlement_{}", std::process::id());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create database");
    let (base, _) = url.rsplit_once('/').expect("a database in the url");
    let db_url = format!("{base}/{name}");
    let figures = {
        let store = PgStore::open(&PgConfig::with_url(db_url.clone())).await.expect("open postgres");
        let pool = sqlx::PgPool::connect(&db_url).await.expect("connect");
        let statements = seed(args, "", &format!("generate_series(CAST(1 AS BIGINT), {}) AS n(i)", args.payments));
        let execute = async |sql: String| {
            sqlx::query(&sql).execute(&pool).await.expect("seed");
        };
        let scan = async || sqlx::query_as::<_, (i64, i64)>(SCAN).fetch_one(&pool).await.expect("scan");
        sqlx::query("ANALYZE").execute(&pool).await.expect("analyze");
        let figures = measure(args, &store, statements, execute, scan).await;
        pool.close().await;
        figures
    };
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&admin).await.expect("drop database");
    figures
}

fn report(engine: &str, args: &Args, f: &Figures) {
    let ratio = f.close.as_secs_f64() / f.scan.as_secs_f64().max(1e-9);
    println!(
        "{engine}: {} payments, {} merchants, {} days (seeded in {:.1} s)\n  \
         close: {:.2} s for {} statements ({:.1}x the {:.2} s scan of every posted transfer)\n  \
         pay out: {:.2} s for {} payouts; statements add up, ledger balanced",
        args.payments,
        args.merchants,
        args.days,
        f.seed.as_secs_f64(),
        f.close.as_secs_f64(),
        f.statements,
        ratio,
        f.scan.as_secs_f64(),
        f.pay_out.as_secs_f64(),
        f.payouts,
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
