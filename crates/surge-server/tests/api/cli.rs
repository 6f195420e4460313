//! The `surge` binary: its subcommands honour the same settings as the
//! server, wrong settings stop it with their name, SIGTERM stops it cleanly.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tempfile::TempDir;

use crate::helpers::{spawn_app_in, surge_bin};

fn surge(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(surge_bin());
    command.args(args).env_remove("SURGE_CONFIG").env("NO_COLOR", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("surge runs")
}

#[tokio::test]
async fn a_token_from_the_cli_is_accepted_by_a_server_on_the_same_data_dir() {
    let dir = TempDir::new().expect("tempdir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let output = surge(&["--data-dir", data_dir, "token", "--role", "merchant", "--sub", "77", "--ttl", "5m"], &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).expect("utf-8").trim().to_owned();

    let app = spawn_app_in(dir, |_| {}).await;
    let body = json!({"sku": "CLI", "name": "From the CLI", "price_cents": 1, "stock": 1});
    let response = app.post_json("/v1/products", Some(&token), &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[test]
fn the_data_dir_also_comes_from_the_environment() {
    let dir = TempDir::new().expect("tempdir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let output = surge(&["token", "--role", "admin", "--sub", "ops"], &[("SURGE_DATA_DIR", data_dir)]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(dir.path().join("jwt-secret").exists());
}

#[test]
fn an_unknown_or_wrong_setting_stops_it_with_the_settings_name() {
    let dir = TempDir::new().expect("tempdir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let cases =
        [("SURGE_BOGUS", "1", "bogus"), ("SURGE_NODE_ID", "99999", "node_id"), ("SURGE_CACHE__TTL", "forever", "ttl")];
    for (key, value, named) in cases {
        let output = surge(&["--data-dir", data_dir, "token", "--role", "admin", "--sub", "ops"], &[(key, value)]);
        assert_eq!(output.status.code(), Some(2), "{key}");
        let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
        assert!(stderr.contains(named), "{key}: {stderr}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn a_missing_config_file_is_named() {
    let output = surge(&["--config", "/nonexistent/surge.toml", "migrate"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/surge.toml"));
}

#[test]
fn a_customer_token_needs_an_id_subject() {
    let dir = TempDir::new().expect("tempdir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let output = surge(&["--data-dir", data_dir, "token", "--role", "customer", "--sub", "alice"], &[]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let dir = TempDir::new().expect("tempdir");
    let port = crate::helpers::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(surge_bin())
        .args(["--data-dir", dir.path().to_str().expect("utf-8"), "--listen", &listen])
        .env_remove("SURGE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("surge starts");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if client.get(format!("http://{listen}/readyz")).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "surge never became ready");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// The reproduced attack: an empty `jwt-secret` (a crash mid-creation) let
/// a token signed with an empty key act as admin. Now nothing starts.
#[test]
fn an_empty_secret_file_stops_the_server_and_the_cli() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = TempDir::new().expect("tempdir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.path().join("jwt-secret"))
        .expect("empty secret file");
    for args in [
        &["--data-dir", data_dir, "--listen", "127.0.0.1:0", "serve"][..],
        &["--data-dir", data_dir, "token", "--role", "admin", "--sub", "ops"],
    ] {
        let output = surge(args, &[]);
        assert!(!output.status.success(), "{args:?} must refuse an empty secret");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("at least 32"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_distributed_node_needs_a_configured_secret() {
    let dir = TempDir::new().expect("tempdir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let store =
        [("SURGE_STORE__KIND", "postgres"), ("SURGE_STORE__URL", "postgres://postgres@127.0.0.1:5432/postgres")];
    let output = surge(&["--data-dir", data_dir, "token", "--role", "admin", "--sub", "ops"], &store);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("auth.jwt_secret"));
    assert!(!dir.path().join("jwt-secret").exists(), "a distributed node never mints its own secret");
}

/// Every change an admin makes is in the node's log with the admin's
/// subject (an audit trail).
#[tokio::test]
async fn admin_changes_are_logged_with_the_admins_subject() {
    let dir = TempDir::new().expect("tempdir");
    let port = crate::helpers::free_port();
    let log_path = std::env::temp_dir().join("surge-test-logs").join(format!("{port}.log"));
    // An earlier run's node on this port is not this one.
    let _ = std::fs::remove_file(&log_path);
    let surge = crate::helpers::ChildSurge::start(&dir, port, &[]);
    let client = reqwest::Client::new();
    crate::helpers::wait_ready(&client, &surge.base).await;
    let secret = surge_server::auth::load_or_create_secret(&Default::default(), dir.path()).expect("secret");
    let keys = surge_server::auth::Keys::new(&secret, &Default::default());
    let admin = keys.mint(surge_server::auth::Role::Admin, "carol-ops", Duration::from_secs(60)).expect("mint");
    let switch = client
        .put(format!("{}/v1/admin/switches/notification", surge.base))
        .bearer_auth(&admin)
        .json(&json!({"enabled": false, "reason": "audit test"}))
        .send()
        .await
        .expect("req");
    assert_eq!(switch.status(), StatusCode::OK);
    let config = client
        .put(format!("{}/v1/admin/config", surge.base))
        .bearer_auth(&admin)
        .json(&json!({"flash_sale": {"per_user_rate": 7}}))
        .send()
        .await
        .expect("req");
    assert_eq!(config.status(), StatusCode::OK);
    let mut audit = Vec::new();
    for _ in 0..50 {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        audit = log.lines().filter(|line| line.contains("carol-ops")).map(str::to_owned).collect();
        if audit.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(audit.iter().any(|line| line.contains("switch set by hand")), "{audit:?}");
    assert!(audit.iter().any(|line| line.contains("run-time settings changed by hand")), "{audit:?}");
}

/// A node that cannot reach a dependency stops with an error that names
/// it, and never with the password of its URL (PostgreSQL refusing the
/// login, Redis refusing the password, NATS not there).
#[test]
fn a_dependency_that_refuses_a_node_never_shows_its_password() {
    const PASSWORD: &str = "hunter2-not-for-logs";
    let dir = TempDir::new().expect("tempdir");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let database = crate::helpers::Database::create();
    let secret = ("SURGE_AUTH__JWT_SECRET", "a-test-secret-of-at-least-32-bytes-long");
    let store = database.url();
    let bad_store = format!("postgres://nobody:{PASSWORD}@127.0.0.1:5432/nowhere");
    let redis = format!("[redis://:{PASSWORD}@127.0.0.1:6379]");
    let nats = format!("nats://surge:{PASSWORD}@127.0.0.1:1");
    let cases: [(&str, Vec<(&str, &str)>); 3] = [
        ("postgresql", vec![("SURGE_STORE__URL", &bad_store)]),
        ("redis", vec![("SURGE_STORE__URL", &store), ("SURGE_SHARED__KIND", "redis"), ("SURGE_SHARED__URLS", &redis)]),
        ("nats", vec![("SURGE_STORE__URL", &store), ("SURGE_QUEUE__KIND", "nats"), ("SURGE_QUEUE__URL", &nats)]),
    ];
    for (dependency, mut env) in cases {
        env.extend([secret, ("SURGE_STORE__KIND", "postgres")]);
        let output = surge(&["--data-dir", data_dir, "--listen", "127.0.0.1:0"], &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{dependency}: the node started");
        assert!(stderr.to_lowercase().contains(dependency), "{dependency}: {stderr}");
        assert!(!stderr.contains(PASSWORD), "{dependency}: the password was printed: {stderr}");
    }
}
