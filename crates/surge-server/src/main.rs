//! `surge`: serve (the default), mint a token, or run migrations.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use surge_server::auth::{Keys, Role, load_or_create_secret};
use surge_server::backend::migrate;
use surge_server::config::Overrides;
use surge_server::sandbox_service::SandboxConfig;
use surge_server::startup::shutdown_signal;
use surge_server::{Application, Settings, telemetry};

/// Surge: a high-concurrency order platform.
/// mimalloc: fewer cycles per allocation than glibc's malloc under
/// many-threaded load. `surge-bench` (and so its baseline server) uses it too,
/// so comparisons stay like for like.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(version, about = "Surge: a high-concurrency order platform for retail logistics")]
struct Cli {
    /// Settings file (TOML). Without it, ./surge.toml is read if present.
    #[arg(long, global = true, env = "SURGE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the HTTP API (setting `listen`).
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Data directory of the embedded mode (setting `data_dir`).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print a bearer token signed with the configured secret.
    Token {
        #[arg(long, value_enum)]
        role: Role,
        /// User id (customer), tenant id (merchant) or operator name (admin).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. 15m, 1h, 7d (default: setting auth.token_ttl).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Run the sandbox payment provider as its own process (see
    /// `payments.sandbox.url`): it opens intents and refunds, decides them
    /// on command or by itself, and posts signed callbacks to Surge, some
    /// twice and some followed by a stale one, as real providers do.
    PaymentsSandbox {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// Surge's callback route, e.g.
        /// http://127.0.0.1:8080/v1/payments/callbacks/sandbox.
        #[arg(long)]
        callback: String,
        /// The signing secret (Surge's payments.sandbox.secret).
        #[arg(long, env = "SURGE_SANDBOX_SECRET")]
        secret: String,
        /// Where buyers pay: <pay-url>/<provider_ref>.
        #[arg(long, default_value = "http://127.0.0.1:8090/pay")]
        pay_url: String,
        /// Decide every intent and refund by itself this long after it
        /// opened (e.g. 500ms); without it, only on command.
        #[arg(long, value_parser = humantime::parse_duration)]
        auto_after: Option<Duration>,
        /// Of those decided by themselves, the share that fail (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        fail_ratio: f64,
        /// The share of callbacks sent twice (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        duplicate_ratio: f64,
        /// The share of decisions followed by a stale event (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        reorder_ratio: f64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides { listen: cli.listen, data_dir: cli.data_dir.clone() };
    let settings = match Settings::load(cli.config.as_deref(), &overrides) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("surge: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log);
    match run(cli.command.unwrap_or(Command::Serve), settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("surge: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => Application::build(&settings).await?.run_until(shutdown_signal()).await,
        Command::Token { role, sub, ttl } => {
            let secret = load_or_create_secret(&settings.auth, &settings.data_dir)?;
            let keys = Keys::new(&secret, &settings.auth);
            let token = keys.mint(role, &sub, ttl.unwrap_or(settings.auth.token_ttl)).map_err(anyhow::Error::msg)?;
            println!("{token}");
            Ok(())
        }
        Command::PaymentsSandbox {
            listen,
            callback,
            secret,
            pay_url,
            auto_after,
            fail_ratio,
            duplicate_ratio,
            reorder_ratio,
        } => {
            let ratios = [
                ("--fail-ratio", fail_ratio),
                ("--duplicate-ratio", duplicate_ratio),
                ("--reorder-ratio", reorder_ratio),
            ];
            if let Some((flag, _)) = ratios.iter().find(|(_, ratio)| !(0.0..=1.0).contains(ratio)) {
                anyhow::bail!("{flag} must be between 0 and 1");
            }
            anyhow::ensure!(secret.len() >= 16, "--secret must be at least 16 bytes, as payments.sandbox.secret");
            let config = SandboxConfig {
                listen,
                callback,
                secret,
                pay_url,
                auto_after,
                fail_ratio,
                duplicate_ratio,
                reorder_ratio,
            };
            surge_server::sandbox_service::run(config).await
        }
        Command::Migrate => {
            std::fs::create_dir_all(&settings.data_dir)?;
            migrate(&settings).await?;
            tracing::info!(data_dir = %settings.data_dir.display(), "schema is up to date");
            Ok(())
        }
    }
}
