//! `surge-bench`: drives HTTP load at a Surge deployment and reports
//! throughput and latency percentiles (HdrHistogram).
//!
//! Speed is only ever reported as a ratio to a baseline measured in the same
//! run, because the machines it runs on are shared and noisy: `compare`
//! alternates rounds between a target and a baseline URL and reports both and
//! their ratio.

mod callbacks;
mod checkout;
mod flashsale;
mod load;
mod minimal;
mod naive;
mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::load::{LoadPlan, Summary};

/// mimalloc: fewer cycles per allocation than glibc's malloc under
/// many-threaded load. `surge-bench` (and so its baseline server) uses it too,
/// so comparisons stay like for like.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(version, about = "Load generator and invariant checker for Surge")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Closed-loop GET load against one URL.
    Get {
        url: String,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Alternate rounds of the same load against a target and a baseline,
    /// then print both and the target/baseline ratios.
    Compare {
        /// The URL under test.
        #[arg(long)]
        target: String,
        /// The URL to compare against (e.g. `surge-bench minimal-server`).
        #[arg(long)]
        baseline: String,
        /// Rounds per side; the median round of each side is compared.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// The flash-sale scenario against a target, with its invariant check;
    /// optionally the same against the naive baseline and the bare intake
    /// against the minimal handler, in the same run, with the ratios.
    FlashSale {
        /// Base URL of the Surge deployment; several nodes comma-separated
        /// (attempts are spread over them).
        #[arg(long)]
        target: String,
        /// The deployment's JWT secret, as a file (embedded: <data_dir>/jwt-secret).
        #[arg(long)]
        secret_file: PathBuf,
        /// Base URL of `surge-bench naive-server`, to compare against.
        #[arg(long)]
        naive: Option<String>,
        /// Base URL of `surge-bench minimal-server`, to compare against.
        #[arg(long)]
        minimal: Option<String>,
        #[command(flatten)]
        scenario: flashsale::Scenario,
    },
    /// The checkout scenario (carts of hot products) against a target, with
    /// its invariant; optionally the same against the naive baseline in the
    /// same run, with the ratio.
    Checkout {
        /// Base URL of the Surge deployment.
        #[arg(long)]
        target: String,
        /// The deployment's JWT secret, as a file.
        #[arg(long)]
        secret_file: PathBuf,
        /// Base URL of `surge-bench naive-server`, to compare against.
        #[arg(long)]
        naive: Option<String>,
        #[command(flatten)]
        scenario: checkout::Scenario,
    },
    /// The callback-ingestion scenario: payments opened on a target, then
    /// their signed sandbox callbacks with duplicates and stale events,
    /// with the ledger check; optionally the same requests against the
    /// minimal handler, with the ratio.
    Callbacks {
        /// Base URL of the Surge deployment.
        #[arg(long)]
        target: String,
        /// The deployment's JWT secret, as a file.
        #[arg(long)]
        secret_file: PathBuf,
        /// The sandbox's callback secret (`payments.sandbox.secret`).
        #[arg(long)]
        callback_secret: String,
        /// Base URL of `surge-bench minimal-server`, to compare against.
        #[arg(long)]
        minimal: Option<String>,
        #[command(flatten)]
        scenario: callbacks::Scenario,
    },
    /// Serve the naive baselines (one SQL transaction per request): intake
    /// and checkout.
    NaiveServer {
        #[arg(long, default_value = "127.0.0.1:9181")]
        listen: SocketAddr,
        #[arg(long)]
        data_dir: PathBuf,
        /// The secret tokens are checked with.
        #[arg(long)]
        secret_file: PathBuf,
    },
    /// Serve a minimal axum handler that returns a constant product JSON on
    /// `GET /v1/products/{id}`: the ceiling a cached read is measured against.
    MinimalServer {
        #[arg(long, default_value = "127.0.0.1:9180")]
        listen: SocketAddr,
        /// The secret its callback route checks signatures with.
        #[arg(long, default_value = "bench-callback-secret")]
        callback_secret: String,
    },
}

#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// Concurrent connections, each sending one request at a time.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured time per round.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time before each round (connections warm up).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
}

impl PlanArgs {
    fn plan(&self) -> LoadPlan {
        LoadPlan { connections: self.connections.clamp(1, 10_000), duration: self.duration, warmup: self.warmup }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Get { url, plan } => {
                let summary = load::run_get(&url, &plan.plan()).await?;
                println!("{}", summary.line("get"));
                Ok(())
            }
            Command::Compare { target, baseline, rounds, plan } => {
                compare(&target, &baseline, rounds, &plan.plan()).await
            }
            Command::MinimalServer { listen, callback_secret } => minimal::serve(listen, callback_secret).await,
            Command::Callbacks { target, secret_file, callback_secret, minimal, scenario } => {
                callback_ingestion(&target, &secret_file, &callback_secret, minimal.as_deref(), &scenario).await
            }
            Command::NaiveServer { listen, data_dir, secret_file } => {
                naive::serve(listen, data_dir, tokens::Tokens::from_file(&secret_file)?).await
            }
            Command::Checkout { target, secret_file, naive, scenario } => {
                let tokens = tokens::Tokens::from_file(&secret_file)?;
                let surge = checkout::run(&target, &tokens, &scenario, "surge", true).await?;
                surge.print();
                println!("surge: {:.0} checkouts placed/s (201)", checkout::placed_per_second(&surge));
                if let Some(naive) = naive {
                    let textbook = checkout::run(&naive, &tokens, &scenario, "naive", false).await?;
                    textbook.print();
                    println!("naive: {:.0} checkouts placed/s (201)", checkout::placed_per_second(&textbook));
                    let ratio = checkout::placed_per_second(&surge) / checkout::placed_per_second(&textbook);
                    println!("ratio surge/naive: checkouts placed {ratio:.2}");
                }
                if !surge.violations.is_empty() {
                    anyhow::bail!("invariants violated");
                }
                Ok(())
            }
            Command::FlashSale { target, secret_file, naive, minimal, scenario } => {
                flash_sale(&target, &secret_file, naive.as_deref(), minimal.as_deref(), &scenario).await
            }
        }
    })
}

async fn flash_sale(
    target: &str,
    secret_file: &std::path::Path,
    naive: Option<&str>,
    minimal: Option<&str>,
    scenario: &flashsale::Scenario,
) -> anyhow::Result<()> {
    let tokens = tokens::Tokens::from_file(secret_file)?;
    let surge = flashsale::run(target, &tokens, scenario, "surge", true).await?;
    surge.print();
    let mut failed = !surge.violations.is_empty();
    if let Some(minimal) = minimal {
        let bare = flashsale::run(minimal, &tokens, scenario, "minimal", false).await?;
        bare.print();
        println!("ratio surge/minimal: throughput {:.2}", surge.throughput() / bare.throughput());
    }
    if let Some(naive) = naive {
        let textbook = flashsale::run(naive, &tokens, scenario, "naive", true).await?;
        textbook.print();
        failed |= !textbook.violations.is_empty();
        println!("ratio surge/naive: throughput {:.2}", surge.throughput() / textbook.throughput());
    }
    println!("{}", if failed { "FAIL" } else { "PASS" });
    if failed {
        anyhow::bail!("invariants violated");
    }
    Ok(())
}

async fn callback_ingestion(
    target: &str,
    secret_file: &std::path::Path,
    callback_secret: &str,
    minimal: Option<&str>,
    scenario: &callbacks::Scenario,
) -> anyhow::Result<()> {
    let tokens = tokens::Tokens::from_file(secret_file)?;
    let opened = callbacks::open_payments(target, &tokens, scenario).await?;
    let bodies = std::sync::Arc::new(callbacks::plan(&opened, scenario));
    println!("{} payments opened; {} callbacks to post", opened.len(), bodies.len());
    let admin = tokens.mint("admin", "bench")?;
    let books = Some((admin.as_str(), callbacks::total(&opened)));
    let secret = callback_secret.as_bytes();
    let connections = scenario.connections;
    let surge = callbacks::run(target, secret, std::sync::Arc::clone(&bodies), connections, "surge", books).await?;
    surge.print();
    if let Some(minimal) = minimal {
        let bare = callbacks::run(minimal, secret, bodies, connections, "minimal", None).await?;
        bare.print();
        println!("ratio surge/minimal: throughput {:.2}", surge.throughput() / bare.throughput());
    }
    if !surge.violations.is_empty() {
        anyhow::bail!("invariants violated");
    }
    Ok(())
}

async fn compare(target: &str, baseline: &str, rounds: usize, plan: &LoadPlan) -> anyhow::Result<()> {
    let mut targets = Vec::new();
    let mut baselines = Vec::new();
    for round in 1..=rounds.max(1) {
        let b = load::run_get(baseline, plan).await?;
        println!("round {round} {}", b.line("baseline"));
        let t = load::run_get(target, plan).await?;
        println!("round {round} {}", t.line("target"));
        baselines.push(b);
        targets.push(t);
    }
    let target = Summary::median(&mut targets);
    let baseline = Summary::median(&mut baselines);
    println!("median {}", baseline.line("baseline"));
    println!("median {}", target.line("target"));
    println!(
        "ratio target/baseline: throughput {:.2}, tp99 {:.2}, errors {} vs {}",
        target.throughput() / baseline.throughput(),
        target.p99_us() / baseline.p99_us(),
        target.errors,
        baseline.errors,
    );
    Ok(())
}
