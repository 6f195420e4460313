//! Builders shared by this crate's unit tests.

use surge_domain::flashsale::OrderRequested;
use surge_domain::{MerchantId, OrderId, ProductId, SaleId, UserId};

/// One unit of product 1 (merchant 1) in `sale`, for `user`, without a key.
pub(crate) fn order_requested(id: i64, sale: i64, user: i64) -> OrderRequested {
    OrderRequested {
        order_id: OrderId::new(id),
        sale_id: SaleId::new(sale),
        user_id: UserId::new(user),
        product_id: ProductId::new(1),
        merchant_id: MerchantId::new(1),
        quantity: 1,
        amount_cents: 1,
        idempotency_key: None,
        requested_at_ms: 0,
    }
}

/// A fresh PostgreSQL database for one test, named `surge_test_<random>`,
/// made through the admin URL (`SURGE_TEST_PG_URL`, by default the local
/// server's `postgres` database) and dropped, best effort, when this value
/// is, even if the test panicked.
pub(crate) struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    pub(crate) async fn create() -> Self {
        use sqlx::Connection as _;

        let admin_url = std::env::var("SURGE_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("surge_test_{:016x}", rand::random::<u64>());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.expect("PostgreSQL answers at the admin URL");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create the test database");
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        Self { admin_url, name, url }
    }

    /// A small pool on this database: a test is a few tasks at most.
    pub(crate) fn config(&self) -> crate::postgres::PgConfig {
        crate::postgres::PgConfig {
            url: self.url.clone(),
            max_connections: 4,
            acquire_timeout: std::time::Duration::from_secs(10),
        }
    }
}

impl Drop for TestDatabase {
    /// `Drop` can't await, and the test's runtime may be shutting down: the
    /// drop runs on a thread of its own with a runtime of its own. `FORCE`
    /// ends the connections a store still holds.
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            use sqlx::Connection as _;

            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&sql).execute(&mut admin).await.ok()?;
                admin.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// The admin URL with its database replaced by `name` (query kept).
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |at| at + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{server}/{name}{query}")
}

#[test]
fn a_test_database_url_keeps_the_server_and_options_of_the_admin_url() {
    assert_eq!(with_database("postgres://u@h:5432/postgres", "t"), "postgres://u@h:5432/t");
    assert_eq!(with_database("postgres://u@h/postgres?sslmode=disable", "t"), "postgres://u@h/t?sslmode=disable");
    assert_eq!(with_database("postgres://u@h", "t"), "postgres://u@h/t");
}
