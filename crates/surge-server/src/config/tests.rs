//! Loading and validating settings, layer by layer.

use super::*;

/// A test's own layers: a directory for its files and its own variables,
/// so tests run side by side without touching the process's environment.
struct Layers {
    dir: tempfile::TempDir,
    variables: Vec<(String, String)>,
}

impl Layers {
    fn run(test: impl FnOnce(&mut Layers) -> Result<(), String>) {
        let mut layers = Layers { dir: tempfile::tempdir().expect("tempdir"), variables: Vec::new() };
        test(&mut layers).expect("the test's settings load");
    }

    fn set_env(&mut self, name: &str, value: impl Into<String>) {
        self.variables.retain(|(set, _)| set != name);
        self.variables.push((name.to_owned(), value.into()));
    }

    fn create_file(&self, name: &str, text: &str) -> Result<(), String> {
        std::fs::write(self.dir.path().join(name), text).map_err(|error| error.to_string())
    }

    fn load(&self, file: Option<&str>) -> Result<Settings, ConfigError> {
        self.load_with(file, &Overrides::default())
    }

    fn load_with(&self, file: Option<&str>, flags: &Overrides) -> Result<Settings, ConfigError> {
        Settings::load_from(self.dir.path(), file.map(Path::new), self.variables.clone(), flags)
    }
}

fn postgres(layers: &mut Layers) {
    layers.set_env("SURGE_STORE__KIND", "postgres");
    layers.set_env("SURGE_STORE__URL", "postgres://127.0.0.1/surge");
}

/// PostgreSQL and the shared secret every distributed node needs.
fn distributed(layers: &mut Layers) {
    postgres(layers);
    layers.set_env("SURGE_AUTH__JWT_SECRET", "s".repeat(32));
}

#[test]
fn the_example_distributed_deployment_config_is_valid() {
    Layers::run(|layers| {
        let example = include_str!("../../../../deploy/surge.toml");
        layers.create_file("surge.toml", example)?;
        layers.set_env("SURGE_NODE_ID", "3");
        // The deployment passes the secret from a secret store.
        layers.set_env("SURGE_AUTH__JWT_SECRET", "s".repeat(32));
        let settings = layers.load(Some("surge.toml")).map_err(|e| e.to_string())?;
        assert_eq!(settings.node_id, 3);
        let redis = settings.shared.redis().expect("redis");
        assert!(redis.cluster);
        assert_eq!(redis.urls.len(), 3);
        assert!(matches!(settings.queue, QueueSettings::Nats(_)));
        assert!(settings.store.is_postgres());
        Ok(())
    });
}

#[test]
fn defaults_apply_without_any_file_or_variable() {
    Layers::run(|layers| {
        let settings = layers.load(None).map_err(|e| e.to_string())?;
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.data_dir, PathBuf::from("./data"));
        Ok(())
    });
}

#[test]
fn layers_apply_in_order_file_then_env_then_flags() {
    Layers::run(|layers| {
        layers.create_file(
            "surge.toml",
            "listen = \"127.0.0.1:9000\"\nnode_id = 3\n[cache]\nttl = \"30s\"\nttl_jitter = \"1s\"\n",
        )?;
        layers.set_env("SURGE_NODE_ID", "4");
        layers.set_env("SURGE_CACHE__TTL", "20s");
        layers.set_env("SURGE_LISTEN", "127.0.0.1:9001");
        let flags = Overrides { listen: Some("127.0.0.1:9002".parse().expect("addr")), data_dir: None };
        let settings = layers.load_with(None, &flags).map_err(|e| e.to_string())?;
        assert_eq!(settings.node_id, 4);
        assert_eq!(settings.cache.ttl, Duration::from_secs(20));
        assert_eq!(settings.cache.ttl_jitter, Duration::from_secs(1));
        assert_eq!(settings.listen.to_string(), "127.0.0.1:9002");
        Ok(())
    });
}

#[test]
fn an_unknown_setting_is_named_in_the_error() {
    Layers::run(|layers| {
        layers.create_file("surge.toml", "[cache]\nttll = \"30s\"\n")?;
        let error = layers.load(None).expect_err("typo must fail").to_string();
        assert!(error.contains("ttll"), "{error}");
        Ok(())
    });
    Layers::run(|layers| {
        layers.set_env("SURGE_LISTN", "127.0.0.1:1");
        let error = layers.load(None).expect_err("typo must fail").to_string();
        assert!(error.contains("listn"), "{error}");
        Ok(())
    });
}

#[test]
fn a_wrong_value_is_named_in_the_error() {
    Layers::run(|layers| {
        layers.set_env("SURGE_NODE_ID", "5000");
        let error = layers.load(None).expect_err("out of range").to_string();
        assert!(error.contains("node_id"), "{error}");
        layers.set_env("SURGE_NODE_ID", "1");
        layers.set_env("SURGE_HTTP__REQUEST_BUDGET", "soon");
        let error = layers.load(None).expect_err("not a duration").to_string().to_lowercase();
        assert!(error.contains("request_budget"), "{error}");
        Ok(())
    });
}

#[test]
fn payouts_run_on_a_schedule_only_when_one_is_set_and_it_is_sane() {
    Layers::run(|layers| {
        assert_eq!(layers.load(None).map_err(|e| e.to_string())?.payments.payout_interval, None);
        layers.set_env("SURGE_PAYMENTS__PAYOUT_INTERVAL", "1h");
        let settings = layers.load(None).map_err(|e| e.to_string())?;
        assert_eq!(settings.payments.payout_interval, Some(std::time::Duration::from_secs(3_600)));
        for bad in ["0s", "50ms", "32days"] {
            layers.set_env("SURGE_PAYMENTS__PAYOUT_INTERVAL", bad);
            let error = layers.load(None).expect_err(bad).to_string();
            assert!(error.contains("payments.payout_interval"), "{bad}: {error}");
        }
        Ok(())
    });
}

#[test]
fn a_named_config_file_must_exist() {
    Layers::run(|layers| {
        assert!(matches!(layers.load(Some("nope.toml")), Err(ConfigError::MissingFile(_))));
        Ok(())
    });
}

#[test]
fn a_distributed_node_needs_a_shared_secret_of_32_bytes() {
    Layers::run(|layers| {
        postgres(layers);
        let error = layers.load(None).expect_err("no secret").to_string();
        assert!(error.contains("auth.jwt_secret"), "{error}");
        layers.set_env("SURGE_AUTH__JWT_SECRET", "s".repeat(31));
        let error = layers.load(None).expect_err("short secret").to_string();
        assert!(error.contains("at least 32 bytes"), "{error}");
        layers.set_env("SURGE_AUTH__JWT_SECRET", "s".repeat(32));
        layers.load(None).map_err(|e| e.to_string())?;
        Ok(())
    });
}

#[test]
fn kafka_tls_settings_need_the_setting_they_refine() {
    Layers::run(|layers| {
        distributed(layers);
        layers.set_env("SURGE_QUEUE__KIND", "kafka");
        layers.set_env("SURGE_QUEUE__TLS", "true");
        let error = layers.load(None).expect_err("TLS to no brokers").to_string();
        assert!(error.contains("queue.brokers must name at least one broker"), "{error}");
        layers.set_env("SURGE_QUEUE__BROKERS", "127.0.0.1:9093, 127.0.0.1:9094");
        let settings = layers.load(None).map_err(|e| e.to_string())?;
        let QueueSettings::Kafka(kafka) = &settings.queue else { panic!("{:?}", settings.queue) };
        assert!(kafka.tls);
        assert_eq!(kafka.brokers, ["127.0.0.1:9093", "127.0.0.1:9094"]);
        layers.set_env("SURGE_QUEUE__TLS", "false");
        layers.set_env("SURGE_QUEUE__TLS_CA_FILE", "/etc/surge/kafka-ca.pem");
        let error = layers.load(None).expect_err("a CA without TLS").to_string();
        assert!(error.contains("queue.tls_ca_file needs queue.tls = true"), "{error}");
        Ok(())
    });
}

#[test]
fn each_kind_takes_its_own_settings_and_no_other() {
    Layers::run(|layers| {
        distributed(layers);
        layers.set_env("SURGE_QUEUE__KIND", "nats");
        layers.set_env("SURGE_QUEUE__URL", "nats://127.0.0.1:4222");
        let settings = layers.load(None).map_err(|e| e.to_string())?;
        let QueueSettings::Nats(nats) = &settings.queue else { panic!("{:?}", settings.queue) };
        assert_eq!(nats.url.expose(), "nats://127.0.0.1:4222");
        assert_eq!(nats.stream, "SURGE_ORDERS");
        // A Kafka setting on a NATS queue is a typo, named as one.
        layers.set_env("SURGE_QUEUE__PARTITIONS", "3");
        let error = layers.load(None).expect_err("partitions on NATS").to_string();
        assert!(error.contains("partitions"), "{error}");
        Ok(())
    });
    Layers::run(|layers| {
        layers.set_env("SURGE_QUEUE__KIND", "rabbit");
        let error = layers.load(None).expect_err("no such queue").to_string();
        assert!(error.contains("rabbit") && error.contains("kafka"), "{error}");
        Ok(())
    });
    Layers::run(|layers| {
        layers.set_env("SURGE_STORE__URL", "postgres://127.0.0.1/surge");
        let error = layers.load(None).expect_err("a URL for SQLite").to_string();
        assert!(error.contains("url"), "{error}");
        Ok(())
    });
}

#[test]
fn urls_are_parsed_and_checked_when_read() {
    Layers::run(|layers| {
        distributed(layers);
        layers.set_env("SURGE_STORE__URL", "mysql://127.0.0.1/surge");
        let error = layers.load(None).expect_err("not PostgreSQL").to_string();
        assert!(error.contains("store.url must be a postgres:// URL"), "{error}");
        layers.set_env("SURGE_STORE__URL", "not a url");
        let error = layers.load(None).expect_err("not a URL").to_string();
        // The section, not the field: serde reads a tagged enum as a whole.
        assert!(error.to_lowercase().contains("store") && error.contains("not a URL"), "{error}");
        Ok(())
    });
    Layers::run(|layers| {
        distributed(layers);
        layers.set_env("SURGE_SHARED__KIND", "redis");
        layers.set_env("SURGE_SHARED__URLS", "redis://127.0.0.1:6379,http://127.0.0.1:6380");
        let error = layers.load(None).expect_err("not Redis").to_string();
        assert!(error.contains("shared.urls must be redis://"), "{error}");
        layers.set_env("SURGE_SHARED__URLS", "[]");
        let error = layers.load(None).expect_err("no server").to_string();
        assert!(error.contains("shared.urls must name at least one"), "{error}");
        Ok(())
    });
}

#[test]
fn a_shared_ledger_or_queue_needs_postgres_and_a_shared_secret() {
    Layers::run(|layers| {
        layers.set_env("SURGE_AUTH__JWT_SECRET", "s".repeat(32));
        layers.set_env("SURGE_QUEUE__KIND", "nats");
        let error = layers.load(None).expect_err("NATS in front of SQLite").to_string();
        assert!(error.contains("store.kind must be \"postgres\""), "{error}");
        layers.set_env("SURGE_QUEUE__KIND", "log");
        layers.set_env("SURGE_FLASH_SALE__CLUSTER_PER_USER_RATE", "5");
        let error = layers.load(None).expect_err("a cluster-wide rate without Redis").to_string();
        assert!(error.contains("flash_sale.cluster_per_user_rate needs shared.kind"), "{error}");
        Ok(())
    });
}

#[test]
fn scans_written_behind_need_one_node_or_redis_to_hold_their_documents() {
    Layers::run(|layers| {
        layers.set_env("SURGE_FULFILMENT__TRACKING__MODE", "write_behind");
        layers.load(None).map_err(|e| e.to_string())?;
        postgres(layers);
        layers.set_env("SURGE_AUTH__JWT_SECRET", "s".repeat(32));
        layers.set_env("SURGE_QUEUE__KIND", "nats");
        let error = layers.load(None).expect_err("nodes sharing PostgreSQL, each with its documents").to_string();
        assert!(error.contains("fulfilment.tracking.mode"), "{error}");
        layers.set_env("SURGE_SHARED__KIND", "redis");
        layers.set_env("SURGE_SHARED__URLS", "[redis://127.0.0.1:6379]");
        layers.load(None).map_err(|e| e.to_string())?;
        Ok(())
    });
}

#[test]
fn a_redis_cluster_needs_deductions_held_by_a_replica() {
    Layers::run(|layers| {
        postgres(layers);
        layers.set_env("SURGE_AUTH__JWT_SECRET", "s".repeat(32));
        layers.set_env("SURGE_SHARED__KIND", "redis");
        layers.set_env("SURGE_SHARED__URLS", "[redis://127.0.0.1:7000]");
        layers.set_env("SURGE_SHARED__CLUSTER", "true");
        let error = layers.load(None).expect_err("no replica asked for").to_string();
        assert!(error.contains("shared.wait_replicas"), "{error}");
        layers.set_env("SURGE_SHARED__WAIT_REPLICAS", "1");
        layers.load(None).map_err(|e| e.to_string())?;
        Ok(())
    });
}

#[test]
fn every_size_and_duration_has_an_upper_bound_named_in_its_error() {
    let cases = [
        ("SURGE_HTTP__REQUEST_BUDGET", "11m", "http.request_budget"),
        ("SURGE_HTTP__SHUTDOWN_GRACE", "1h", "http.shutdown_grace"),
        ("SURGE_AUTH__TOKEN_TTL", "400days", "auth.token_ttl"),
        ("SURGE_CACHE__CAPACITY", "100000001", "cache.capacity"),
        ("SURGE_CACHE__TTL", "2days", "cache.ttl"),
        ("SURGE_STORE__MAX_CONNECTIONS", "1001", "store.max_connections"),
        ("SURGE_SHARED__KEY_TTL", "100days", "shared.key_ttl"),
        ("SURGE_QUEUE__ACK_WAIT", "2h", "queue.ack_wait"),
        ("SURGE_QUEUE__MAX_AGE", "400days", "queue.max_age"),
        ("SURGE_QUEUE__STREAM", "S".repeat(65).leak(), "queue.stream"),
        ("SURGE_FLASH_SALE__PAYMENT_TIMEOUT", "8days", "flash_sale.payment_timeout"),
        ("SURGE_FLASH_SALE__PER_USER_RATE", "1000001", "flash_sale.per_user_rate"),
        ("SURGE_NOTIFY__QUEUE_CAPACITY", "1000001", "notify.queue_capacity"),
        ("SURGE_NOTIFY__BREAKER__OPEN_FOR", "2h", "notify.breaker.open_for"),
        ("SURGE_RATE__PRODUCT_READ_BURST", "100000001", "rate.product_read_burst"),
        ("SURGE_OVERLOAD__CORE_CONCURRENCY", "1000001", "overload.core_concurrency"),
        ("SURGE_OVERLOAD__ADAPTIVE_INITIAL", "5000", "overload.adaptive_initial"),
        ("SURGE_OVERLOAD__ADAPTIVE_TARGET_LATENCY", "2m", "overload.adaptive_target_latency"),
    ];
    for (variable, value, setting) in cases {
        Layers::run(|layers| {
            if variable.starts_with("SURGE_SHARED__") || variable.starts_with("SURGE_QUEUE__") {
                distributed(layers);
                layers.set_env("SURGE_SHARED__KIND", "redis");
                layers.set_env("SURGE_SHARED__URLS", "redis://127.0.0.1:6379");
                layers.set_env("SURGE_QUEUE__KIND", "nats");
            }
            layers.set_env(variable, value);
            let error = layers.load(None).expect_err(variable).to_string();
            assert!(error.contains(setting), "{variable}={value}: {error}");
            Ok(())
        });
    }
}

/// The timeout funnel's start-up check: every downstream wait is
/// shorter than the request budget that contains it.
#[test]
fn a_downstream_timeout_as_long_as_the_request_budget_is_refused() {
    let everything_shared = |layers: &mut Layers| {
        distributed(layers);
        layers.set_env("SURGE_SHARED__KIND", "redis");
        layers.set_env("SURGE_SHARED__URLS", "redis://127.0.0.1:6379");
        layers.set_env("SURGE_QUEUE__KIND", "nats");
        layers.set_env("SURGE_HTTP__REQUEST_BUDGET", "4s");
    };
    for (variable, setting) in [
        ("SURGE_SHARED__RESPONSE_TIMEOUT", "shared.response_timeout"),
        ("SURGE_QUEUE__PUBLISH_TIMEOUT", "queue.publish_timeout"),
        ("SURGE_STORE__ACQUIRE_TIMEOUT", "store.acquire_timeout"),
        ("SURGE_NOTIFY__TIMEOUT", "notify.timeout"),
        ("SURGE_OVERLOAD__BULKHEAD_MAX_WAIT", "overload.bulkhead_max_wait"),
    ] {
        Layers::run(|layers| {
            everything_shared(layers);
            layers.load(None).map_err(|e| e.to_string())?;
            layers.set_env(variable, "4s");
            let error = layers.load(None).expect_err(variable).to_string();
            assert!(error.contains(setting) && error.contains("http.request_budget"), "{variable}: {error}");
            Ok(())
        });
    }
    Layers::run(|layers| {
        layers.set_env("SURGE_HTTP__REQUEST_BUDGET", "4s");
        layers.set_env("SURGE_STORE__BUSY_TIMEOUT", "4s");
        let error = layers.load(None).expect_err("sqlite busy timeout").to_string();
        assert!(error.contains("store.busy_timeout"), "{error}");
        Ok(())
    });
}

#[test]
fn the_zone_map_reads_from_the_file_and_bad_entries_are_named() {
    Layers::run(|layers| {
        layers.create_file(
            "surge.toml",
            "[fulfilment]\nzones = { \"1500\" = \"harbin-centre\" }\nadjacent = { \"harbin-centre\" = [\"harbin-east\"] }\n",
        )?;
        let settings = layers.load(Some("surge.toml")).map_err(|e| e.to_string())?;
        let zones = surge_domain::fulfilment::ZoneMap::from(&settings.fulfilment);
        assert_eq!(zones.serving("harbin-centre"), vec!["harbin-centre", "harbin-east"]);
        layers.create_file("bad.toml", "[fulfilment]\nzones = { \"15 00\" = \"harbin-centre\" }\n")?;
        let error = layers.load(Some("bad.toml")).expect_err("a prefix with a space").to_string();
        assert!(error.contains("fulfilment.zones"), "{error}");
        layers.create_file("bad.toml", "[fulfilment]\ndispatch_interval = \"1ms\"\n")?;
        let error = layers.load(Some("bad.toml")).expect_err("too often").to_string();
        assert!(error.contains("fulfilment.dispatch_interval"), "{error}");
        Ok(())
    });
}

/// A value of another type is refused with its setting's name, never
/// rounded or converted: 0.4 is no rate, `yes` no bool, a number no text.
#[test]
fn a_value_of_another_type_is_refused_by_name_never_converted() {
    for (variable, value, setting) in [
        ("SURGE_RATE__PRODUCT_READ_PER_SEC", "0.4", "rate.product_read_per_sec"),
        ("SURGE_NODE_ID", "2.5", "node_id"),
        ("SURGE_CACHE__CAPACITY", "nan", "cache.capacity"),
        ("SURGE_CACHE__CAPACITY", "-1", "cache.capacity"),
        ("SURGE_OVERLOAD__ENABLED", "yes", "overload.enabled"),
        ("SURGE_LOG__LEVEL", "5", "log"),
    ] {
        Layers::run(|layers| {
            layers.set_env(variable, value);
            let error = layers.load(None).expect_err(variable).to_string();
            assert!(error.contains(setting), "{variable}={value}: {error}");
            Ok(())
        });
    }
    Layers::run(|layers| {
        layers.create_file("surge.toml", "[overload]\nenabled = \"true\"\n")?;
        let error = layers.load(Some("surge.toml")).expect_err("text for a bool").to_string();
        assert!(error.contains("overload.enabled"), "{error}");
        Ok(())
    });
}

/// An empty list in a variable empties the file's list.
#[test]
fn an_empty_list_overrides_a_longer_one() {
    Layers::run(|layers| {
        layers.create_file("surge.toml", "[fulfilment.adjacent]\nnorth = [\"east\", \"west\"]\n")?;
        assert_eq!(layers.load(Some("surge.toml")).map_err(|e| e.to_string())?.fulfilment.adjacent["north"].len(), 2);
        layers.set_env("SURGE_FULFILMENT__ADJACENT__NORTH", "[]");
        let settings = layers.load(Some("surge.toml")).map_err(|e| e.to_string())?;
        assert!(settings.fulfilment.adjacent["north"].is_empty(), "{:?}", settings.fulfilment.adjacent);
        Ok(())
    });
}
