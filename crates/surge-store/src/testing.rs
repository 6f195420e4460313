//! Builders shared by this crate's unit tests.

use surge_domain::catalog::{CatalogStore, NewProduct, Product, ProductName, ProductPage, ProductPatch, Sku, Stock};
use surge_domain::flashsale::{OrderRequested, Quantity};
use surge_domain::{Cents, MerchantId, OrderId, ProductId, SaleId, StoreError, UserId};
use time::OffsetDateTime;

/// One unit of product 1 (merchant 1) in `sale`, for `user`, without a key.
pub(crate) fn order_requested(id: i64, sale: i64, user: i64) -> OrderRequested {
    OrderRequested {
        order_id: OrderId::new(id),
        sale_id: SaleId::new(sale),
        user_id: UserId::new(user),
        product_id: ProductId::new(1),
        merchant_id: MerchantId::new(1),
        quantity: Quantity::from_trusted(1),
        amount_cents: Cents::from_trusted(1),
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

/// The real SQLite adapter behind a delay, so that concurrent reads surely
/// overlap one load; counts the reads that reach it.
pub(crate) struct SlowStore {
    inner: crate::sqlite::SqliteStore,
    delay: std::time::Duration,
    loads: std::sync::atomic::AtomicUsize,
}

impl SlowStore {
    /// A store in a fresh directory (kept alive by the returned guard).
    pub(crate) async fn open(delay: std::time::Duration) -> (std::sync::Arc<Self>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = crate::sqlite::SqliteStore::open(&crate::sqlite::SqliteConfig::in_dir(dir.path())).await;
        let store = Self { inner: sqlite.expect("sqlite opens"), delay, loads: Default::default() };
        (std::sync::Arc::new(store), dir)
    }

    /// Reads that reached the store so far.
    pub(crate) fn loads(&self) -> usize {
        self.loads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl CatalogStore for SlowStore {
    async fn insert(
        &self,
        id: ProductId,
        new: &NewProduct,
        key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Product, StoreError> {
        self.inner.insert(id, new, key, now).await
    }
    async fn find_by_idempotency_key(&self, merchant: MerchantId, key: &str) -> Result<Option<Product>, StoreError> {
        self.inner.find_by_idempotency_key(merchant, key).await
    }
    async fn get(&self, id: ProductId) -> Result<Option<std::sync::Arc<Product>>, StoreError> {
        self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.get(id).await
    }
    async fn update(
        &self,
        id: ProductId,
        patch: &ProductPatch,
        now: OffsetDateTime,
    ) -> Result<Option<Product>, StoreError> {
        self.inner.update(id, patch, now).await
    }
    async fn set_stock(&self, id: ProductId, stock: Stock, now: OffsetDateTime) -> Result<Option<Product>, StoreError> {
        self.inner.set_stock(id, stock, now).await
    }
    async fn list(
        &self,
        merchant: Option<MerchantId>,
        after: Option<ProductId>,
        limit: u32,
    ) -> Result<ProductPage, StoreError> {
        self.inner.list(merchant, after, limit).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// Product `id` of merchant 2 (sku `S<id>`, one unit).
pub(crate) fn sample_product(id: i64) -> Product {
    Product {
        id: ProductId::new(id),
        merchant_id: MerchantId::new(2),
        sku: Sku::from_trusted(format!("S{id}")),
        name: ProductName::from_trusted("N".into()),
        price_cents: Cents::from_trusted(1),
        stock: Stock::from_trusted(1),
        reserved: Stock::from_trusted(0),
        updated_at: OffsetDateTime::UNIX_EPOCH,
    }
}

/// What `product` was made of.
pub(crate) fn new_product(product: &Product) -> NewProduct {
    NewProduct {
        merchant_id: product.merchant_id,
        sku: product.sku.clone(),
        name: product.name.clone(),
        price_cents: product.price_cents,
        stock: product.stock,
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made by
/// `openssl` in `dir`: returns the paths of the CA's PEM, the server's
/// certificate and its key.
pub(crate) fn tls_certificates(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let script = "set -e
        openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=surge-test-ca -keyout ca.key -out ca.pem
        openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out server.csr
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile server.ext -out cert.pem";
    let made = std::process::Command::new("sh").args(["-c", script]).current_dir(dir).output().expect("openssl runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"))
}

/// A TLS server side with the certificate and key of [`tls_certificates`].
pub(crate) fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_file_iter(cert).expect("cert").collect::<Result<Vec<_>, _>>().expect("certs");
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

/// A TLS front on `front` for the plaintext server on `behind`: every
/// connection's handshake is made with `acceptor`, then its bytes pass
/// through both ways, until the returned task is aborted.
pub(crate) async fn tls_front(
    acceptor: tokio_rustls::TlsAcceptor,
    front: &str,
    behind: &str,
) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(front).await.expect("the TLS front's port is free");
    let behind = behind.to_owned();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, behind) = (acceptor.clone(), behind.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate hangs up in
                // the handshake: nothing to pass on.
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&behind).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    })
}

/// A port nothing listens on, for a server process the test starts: taken
/// below Linux's ephemeral range (from 32768), where neither `bind(0)` nor
/// an outgoing connection can take it while the server starts, each once
/// per run (the API tests hand out 20000-24999 the same way).
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u16 = 26_000;
    const COUNT: u16 = 5_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id();
    for _ in 0..COUNT {
        let step = offset.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % u32::from(COUNT);
        let port = FIRST + u16::try_from(step).expect("below COUNT");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}
