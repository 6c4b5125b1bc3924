//! Test harness: isolated databases and in-process servers against the real stores.
#![allow(dead_code)] // shared by many test modules; not every one uses every helper
//!
//! Environment: `BOXOFFICE_TEST_PG` (server URL without database, default
//! `postgres://postgres@127.0.0.1:5432`); Redis and Pulsar come from the usual settings
//! (defaults or `BOXOFFICE__REDIS__URL`, `BOXOFFICE__PULSAR__URL`).

use boxoffice::config::Settings;
use boxoffice::store::{PgPool, postgres};
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn pg_server_url() -> String {
    std::env::var("BOXOFFICE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Settings from defaults and environment (no config file), with per-test isolation applied.
pub fn test_settings(db_name: &str) -> Settings {
    let mut settings =
        Settings::from_figment(Settings::figment(Path::new("/nonexistent/boxoffice.toml")))
            .expect("test settings load");
    let suffix = unique_suffix();
    settings.database.url = SecretString::from(format!("{}/{db_name}", pg_server_url()));
    settings.database.pool_size = 4;
    settings.redis.key_prefix = format!("test:{suffix}:");
    settings.pulsar.topic_prefix = format!("test-{suffix}-");
    settings.server.port = 0;
    settings
}

/// A database of its own, created empty, dropped (forcefully) when the value is dropped.
pub struct TestDb {
    /// Database name, `bo_test_<uuid>`.
    pub name: String,
}

impl TestDb {
    /// Creates an empty database.
    pub async fn create() -> TestDb {
        let name = format!("bo_test_{}", unique_suffix());
        admin_query(&format!("CREATE DATABASE {name}")).await;
        TestDb { name }
    }

    /// Creates a database and applies all migrations; returns it with a pool on it.
    pub async fn migrated() -> (TestDb, PgPool, Settings) {
        let db = TestDb::create().await;
        let settings = test_settings(&db.name);
        let pool = postgres::connect(&settings.database)
            .await
            .expect("connect test db");
        postgres::migrate(&pool).await.expect("migrate test db");
        (db, pool, settings)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime, which cannot be blocked: use a thread of our own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(admin_query(&sql))
        })
        .join();
    }
}

async fn admin_query(sql: &str) {
    let (client, conn) = tokio_postgres::connect(
        &format!("{}/postgres", pg_server_url()),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect to the postgres maintenance database");
    let conn = tokio::spawn(conn);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = conn.await;
}

/// A running server with its own database and prefixes; shuts down when dropped.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// HTTP client for the server.
    pub http: reqwest::Client,
    /// Pool on the test database.
    pub pg: PgPool,
    /// The settings the server runs with.
    pub settings: Settings,
    /// The mock payment provider this server talks to, on a port of its own (a sibling shares
    /// its first node's).
    provider: Option<TestProvider>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _db: Option<TestDb>,
}

impl TestApp {
    /// `GET address + path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }

    /// `GET` with a bearer token.
    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// `POST` a JSON body, with a bearer token when given.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        let mut req = self.http.post(format!("{}{path}", self.address)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request sent")
    }

    /// `DELETE` with a bearer token.
    pub async fn delete_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .delete(format!("{}{path}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// `http://127.0.0.1:<port>` of the mock payment provider.
    pub fn provider_url(&self) -> String {
        self.settings.mockpay_url()
    }

    /// A merchant call to the mock provider signed as our server signs it: `body` is sent as
    /// JSON when given (a POST), none makes it a GET.
    pub async fn provider_call(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> reqwest::Response {
        let timestamp = chrono::Utc::now().timestamp();
        self.provider_call_with(
            path,
            body,
            timestamp,
            &self.settings.secrets.payment_signing_key,
        )
        .await
    }

    /// [`TestApp::provider_call`] with the timestamp and key chosen by the test.
    pub async fn provider_call_with(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
        timestamp: i64,
        key: &SecretString,
    ) -> reqwest::Response {
        use boxoffice::payments::mockpay::{
            MERCHANT_HEADER, SIGNATURE_HEADER, SignedCall, TIMESTAMP_HEADER, sign_request,
        };
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let method = if body.is_some() { "POST" } else { "GET" };
        let call = SignedCall {
            method,
            path,
            timestamp,
            body: &bytes,
        };
        let url = format!("{}{path}", self.provider_url());
        let request = if body.is_some() {
            self.http
                .post(url)
                .header("content-type", "application/json")
                .body(bytes.clone())
        } else {
            self.http.get(url)
        };
        request
            .header(MERCHANT_HEADER, &self.settings.payments.mockpay.merchant_id)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, sign_request(key, &call))
            .send()
            .await
            .expect("request sent")
    }

    /// Registers `email` with `password`; returns the user id.
    pub async fn register(&self, email: &str, password: &str) -> i64 {
        let body = serde_json::json!({ "email": email, "password": password });
        let r = self.post("/api/v1/users", None, &body).await;
        assert_eq!(
            r.status(),
            201,
            "register {email}: {}",
            r.text().await.unwrap()
        );
        r.json::<serde_json::Value>().await.unwrap()["user_id"]
            .as_i64()
            .unwrap()
    }

    /// Logs in; returns the token.
    pub async fn login(&self, login: &str, password: &str) -> String {
        let body = serde_json::json!({ "login": login, "password": password });
        let r = self.post("/api/v1/sessions", None, &body).await;
        assert_eq!(
            r.status(),
            201,
            "login {login}: {}",
            r.text().await.unwrap()
        );
        r.json::<serde_json::Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A new buyer account, signed in: (user id, token).
    pub async fn signed_in_buyer(&self) -> (i64, String) {
        let email = format!("{}@example.com", unique_suffix());
        let id = self.register(&email, "correct horse battery").await;
        (id, self.login(&email, "correct horse battery").await)
    }

    /// Stops this server as a crash would, keeping its database (a sibling may still use it):
    /// the server task and every background task it started end.
    pub fn kill(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Stops this server as an operator would (SIGTERM): in-flight requests finish and open
    /// sockets are closed; returns once it has stopped.
    pub async fn stop_gracefully(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let stopped = tokio::time::timeout(Duration::from_secs(30), server).await;
            assert!(stopped.is_ok(), "the server did not stop within 30 s");
        }
    }

    /// Another server on the same database, Redis prefix and topics: a second node.
    pub async fn spawn_sibling(&self) -> TestApp {
        start(self.settings.clone(), None).await
    }
}

/// A mock payment provider running in the test's runtime on its own port, stopped when dropped.
pub struct TestProvider {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

/// Starts the provider on port 0 and points `settings` at it; its callbacks go to
/// `settings.server.public_url`, so that must be set first.
async fn spawn_provider(settings: &mut Settings, http: &reqwest::Client) -> TestProvider {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let address = format!("http://{}", listener.local_addr().unwrap());
    settings.payments.mockpay.base_url = address.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(boxoffice::mockpay::run(settings.clone(), listener, async {
        let _ = rx.await;
    }));
    wait_until_healthy(http, &address, &task).await;
    TestProvider {
        shutdown: Some(tx),
        task,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Starts a server on port 0 with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server whose PostgreSQL connections all go through `proxy`, after `customize`.
pub async fn spawn_app_behind(proxy: &TcpCut, customize: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        let url = s
            .database
            .url
            .expose_secret()
            .replace(&pg_addr().to_string(), &proxy.addr.to_string());
        s.database.url = SecretString::from(url);
        customize(s);
    })
    .await
}

/// Starts a server on port 0 after `customize` adjusted its settings.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::create().await;
    let mut settings = test_settings(&db.name);
    customize(&mut settings);
    start(settings, Some(db)).await
}

async fn start(mut settings: Settings, db: Option<TestDb>) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let address = format!("http://{}", listener.local_addr().unwrap());
    // Known only now: the payment provider's callbacks point here.
    settings.server.public_url = address.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // A sibling node inherits its first node's provider (and the callbacks' address).
    let mockpay = &settings.payments.mockpay;
    let provider = if mockpay.enabled && mockpay.base_url.is_empty() {
        Some(spawn_provider(&mut settings, &http).await)
    } else {
        None
    };
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(boxoffice::serve(settings.clone(), listener, async {
        let _ = rx.await;
    }));
    wait_until_healthy(&http, &address, &server).await;
    let pg = postgres::connect(&settings.database)
        .await
        .expect("test pool");
    TestApp {
        address,
        http,
        pg,
        settings,
        provider,
        shutdown: Some(tx),
        server: Some(server),
        _db: db,
    }
}

async fn wait_until_healthy(
    http: &reqwest::Client,
    address: &str,
    server: &JoinHandle<anyhow::Result<()>>,
) {
    for _ in 0..400 {
        assert!(!server.is_finished(), "server exited during startup");
        if let Ok(r) = http.get(format!("{address}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server at {address} did not become healthy");
}

/// Starts a server whose Redis connections all go through `proxy`, after `customize`.
pub async fn spawn_app_behind_redis(
    proxy: &TcpCut,
    customize: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn_app_with(|s| {
        s.redis.url = SecretString::from(format!("redis://{}", proxy.addr));
        customize(s);
    })
    .await
}

/// `host:port` of the test Redis server (from the default settings' `redis.url`).
pub fn redis_addr() -> SocketAddr {
    let url = test_settings("unused").redis.url;
    let host_port = url.expose_secret().trim_start_matches("redis://");
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .expect("redis.url names host:port")
        .next()
        .expect("redis.url resolves")
}

/// `host:port` of the test Postgres server.
pub fn pg_addr() -> SocketAddr {
    let url = pg_server_url();
    let host_port = url
        .rsplit('@')
        .next()
        .unwrap_or(&url)
        .split('/')
        .next()
        .unwrap_or("");
    host_port
        .parse()
        .expect("BOXOFFICE_TEST_PG names host:port as an IP address")
}

/// A TCP forwarder in front of a real service, which a test can cut to simulate the service
/// going away (the real one is shared by all tests and must stay up). It also counts the bytes
/// clients send, so a test can prove that some requests did not talk to the service at all.
pub struct TcpCut {
    /// Address clients should use instead of the real service.
    pub addr: SocketAddr,
    target: SocketAddr,
    task: JoinHandle<()>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    trap: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TcpCut {
    /// Forwards connections on a fresh local port to `target`.
    pub async fn start(target: SocketAddr) -> TcpCut {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A std mutex: held only to push or drain handles, never across an await.
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let trap = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut cut = TcpCut {
            addr,
            target,
            task: tokio::spawn(async {}),
            conns,
            sent,
            trap,
            stalled,
        };
        cut.task = cut.accept(listener);
        cut
    }

    /// Accepts on `listener` and forwards each connection until cut.
    fn accept(&self, listener: TcpListener) -> JoinHandle<()> {
        let (tracked, counter, armed) = (self.conns.clone(), self.sent.clone(), self.trap.clone());
        let (target, stalled) = (self.target, self.stalled.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (counter, armed, stalled) = (counter.clone(), armed.clone(), stalled.clone());
                let conn = tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        pump(inbound, outbound, counter, armed, stalled).await;
                    }
                });
                tracked.lock().unwrap().push(conn);
            }
        })
    }

    /// The next connection that sends a `COMMIT` has it delivered and is then severed before
    /// the answer comes back: the client cannot know that Postgres committed.
    pub fn sever_after_next_commit(&self) {
        self.trap.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Holds what clients send (nothing reaches the service) until [`TcpCut::unstall`]: the
    /// service hangs as seen from its clients, as on a network partition. Held bytes are then
    /// delivered, even for a client that died meanwhile.
    pub fn stall(&self) {
        self.stalled
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Delivers what was held and forwards again.
    pub fn unstall(&self) {
        self.stalled
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bytes clients have sent to the service so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Accepts and forwards again on the same address after [`TcpCut::cut`]: the service is back.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the cut address");
        self.task = self.accept(listener);
    }

    /// Stops accepting and severs every forwarded connection.
    pub fn cut(&self) {
        self.task.abort();
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

/// Copies both ways until either side closes, counting client → service bytes; severs the
/// connection right after forwarding a `COMMIT` if the trap is armed; holds client bytes while
/// stalled.
async fn pump(
    inbound: TcpStream,
    outbound: TcpStream,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    trap: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_rx, mut client_tx) = inbound.into_split();
    let (mut service_rx, mut service_tx) = outbound.into_split();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = client_rx.read(&mut buf).await {
            while stalled.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if n == 0 || service_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
            sent.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
            if buf[..n].windows(6).any(|w| w == b"COMMIT")
                && trap.swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                break;
            }
        }
    };
    let down = tokio::io::copy(&mut service_rx, &mut client_tx);
    tokio::select! {
        _ = up => {},
        _ = down => {},
    }
}

impl Drop for TcpCut {
    fn drop(&mut self) {
        self.cut();
    }
}

/// An account with the admin role, signed in: (user id, token).
pub async fn signed_in_admin(app: &TestApp) -> (i64, String) {
    let email = format!("admin-{}@example.com", unique_suffix());
    let user = boxoffice::store::users::EnsureUser {
        email: &email,
        password: "admin password",
        display_name: "Admin",
        roles: &["buyer", "admin"],
    };
    let id = boxoffice::store::users::ensure_user(&app.pg, user)
        .await
        .unwrap();
    (id, app.login(&email, "admin password").await)
}

/// Creates a program with the given tiers (name, price, layout); returns its id and category ids
/// in the given order.
pub async fn create_program(
    pool: &PgPool,
    slug: &str,
    tiers: &[(&str, i64, boxoffice::store::catalog::Layout)],
) -> (i64, Vec<i64>) {
    use boxoffice::store::catalog::{self, NewProgram, NewTicketCategory};
    let area = catalog::ensure_area(pool, "Test City").await.unwrap();
    let genre = catalog::ensure_program_category(pool, None, "Concert")
        .await
        .unwrap();
    let program = NewProgram {
        slug: slug.into(),
        title: format!("Test {slug}"),
        area_id: area,
        category_id: genre,
        venue: "Hall".into(),
        description: String::new(),
        choose_seats: true,
        per_order_limit: 4,
        per_account_limit: 4,
        on_sale_at: chrono::Utc::now(),
        // On sale now, the show a month away (a show that has begun is no longer sold).
        show_times: vec![chrono::Utc::now() + chrono::Duration::days(30)],
        categories: tiers
            .iter()
            .map(|(name, price, layout)| NewTicketCategory {
                name: name.to_string(),
                price_cents: *price,
                layout: *layout,
            })
            .collect(),
    };
    let id = catalog::create_program(pool, &program).await.unwrap();
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT id FROM ticket_categories WHERE program_id = $1 ORDER BY sort_order",
            &[&id],
        )
        .await
        .unwrap();
    (id, rows.iter().map(|r| r.get(0)).collect())
}

/// Holds tickets the way the ordering service does — reserve, write, settle with the write's
/// outcome — with `store` standing in for the order's transaction (actor tests have no order
/// rows). Answers like the write: `CommitFailed` if the store refused.
pub async fn hold_via(
    supervisor: &boxoffice::actors::Supervisor,
    store: &dyn boxoffice::store::inventory::InventoryStore,
    category: i64,
    hold: boxoffice::actors::Hold,
) -> Result<boxoffice::actors::Held, boxoffice::actors::ActorError> {
    use boxoffice::actors::{ActorError, Outcome, Reserve, Settle};
    let order_no = hold.order_no;
    let reserved = supervisor.call(category, Reserve(hold)).await??;
    let written = store.apply(reserved.change.clone()).await;
    let outcome = match written {
        Ok(()) => Outcome::Committed,
        Err(_) => Outcome::NotCommitted,
    };
    let change = Some(reserved.change.clone());
    let settle = Settle {
        order_no,
        outcome,
        change,
    };
    supervisor.settle(category, settle).await?;
    written.map_err(|e| ActorError::CommitFailed(e.to_string()))?;
    Ok(reserved.held)
}

/// Actor settings for tests: small limits, quick snapshots and retries.
pub fn actor_settings() -> boxoffice::config::ActorSettings {
    boxoffice::config::ActorSettings {
        mailbox_capacity: 64,
        arbiters: 2,
        idle_passivate_secs: 3600,
        snapshot_interval_ms: 5,
        expiry_retry_ms: 20,
        reservation_timeout_ms: 30_000,
        live_holds_sweep_secs: 0,
    }
}

/// A buyer account made straight in the database, with a token minted by the server's key.
pub struct Buyer {
    /// Bearer token.
    pub token: String,
    /// Its ticket buyers' ids.
    pub buyers: Vec<i64>,
}

/// `n` accounts, each with `holders` ticket buyers: fast enough for races of hundreds (the
/// accounts API has its own tests).
pub async fn mint_buyers(pg: &PgPool, settings: &Settings, n: usize, holders: usize) -> Vec<Buyer> {
    use boxoffice::store::users::{NewTicketBuyer, ensure_ticket_buyer};
    let keys = boxoffice::auth::TokenKeys::new(&settings.secrets.jwt_key, 3600);
    let cipher =
        boxoffice::crypto::IdNumberCipher::new(settings.secrets.id_number_key_bytes().unwrap());
    let client = pg.get().await.unwrap();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id: i64 = client
            .query_one(
                "INSERT INTO users (password_hash) VALUES ('x') RETURNING id",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        client
            .execute("INSERT INTO user_roles VALUES ($1, 'buyer')", &[&id])
            .await
            .unwrap();
        let mut ids = Vec::new();
        for h in 0..holders {
            let number = format!("P{id:07}{h}");
            let holder = NewTicketBuyer {
                name: "Holder",
                id_type: "passport",
                id_number: &number,
            };
            ids.push(ensure_ticket_buyer(pg, &cipher, id, holder).await.unwrap());
        }
        let (token, _) = keys
            .issue(id, vec!["buyer".into()], chrono::Utc::now())
            .unwrap();
        out.push(Buyer { token, buyers: ids });
    }
    out
}

/// Held by the tests that drive an external program at full speed against their server (the
/// browser, schemathesis): on two cores, the two at once starved each other's servers for tens
/// of seconds. Every other test still runs beside either.
pub async fn one_heavy_test_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

/// `wait`'s output, or a failed test naming `what` once `limit` has passed: a wait that could
/// hang (a call into a stuck actor, a message that never comes) must fail, not hang the suite.
pub async fn within<T>(limit: Duration, what: &str, wait: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing after {limit:?}"))
}

/// Asks `probe` every 20 ms until `done` holds or `within` has passed, and returns the last
/// answer: the caller asserts on it, so a timeout fails showing the value actually seen.
/// For states that settle asynchronously (coalesced seat maps, timers, other nodes).
pub async fn poll_until<T>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    let mut value = probe().await;
    while !done(&value) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        value = probe().await;
    }
    value
}

// ---- ordering kit: programs on sale, orders, seat maps (orders and payments tests) ----

/// `n` accounts with `holders` ticket buyers each, for this app.
pub async fn buyers(app: &TestApp, n: usize, holders: usize) -> Vec<Buyer> {
    mint_buyers(&app.pg, &app.settings, n, holders).await
}

/// A program on sale (show in 9 days): "Front" 4×5 seats at 500.00, "Floor" 30 GA at 200.00.
pub async fn on_sale(app: &TestApp, per_order: i32, per_account: i32) -> (i64, i64, i64) {
    let (_, admin) = signed_in_admin(app).await;
    let body = serde_json::json!({
        "title": "Order Test", "area": "Beijing", "category": "Pop", "venue": "Hall",
        "per_order_limit": per_order, "per_account_limit": per_account,
        "on_sale_at": chrono::Utc::now() - chrono::Duration::hours(1), "show_times": [chrono::Utc::now() + chrono::Duration::days(9)],
        "ticket_categories": [
            {"name": "Front", "price_cents": 50_000, "rows": 4, "seats_per_row": 5},
            {"name": "Floor", "price_cents": 20_000, "capacity": 30}
        ]
    });
    let r = app
        .post("/api/v1/admin/programs", Some(&admin), &body)
        .await;
    assert_eq!(r.status(), 201);
    let p: serde_json::Value = r.json().await.unwrap();
    let tiers = p["ticket_categories"].as_array().unwrap();
    (
        p["id"].as_i64().unwrap(),
        tiers[0]["id"].as_i64().unwrap(),
        tiers[1]["id"].as_i64().unwrap(),
    )
}

pub async fn order(
    app: &TestApp,
    token: &str,
    key: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    app.http
        .post(format!("{}/api/v1/orders", app.address))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// `POST /api/v1/orders/{no}/cancel` as the order's owner (`token`).
pub async fn cancel(app: &TestApp, token: &str, no: &str) -> reqwest::Response {
    app.post(
        &format!("/api/v1/orders/{no}/cancel"),
        Some(token),
        &serde_json::json!({}),
    )
    .await
}

/// The program's seat map as the API answers it.
pub async fn seat_map(app: &TestApp, program: i64) -> serde_json::Value {
    app.get(&format!("/api/v1/programs/{program}/seats"))
        .await
        .json()
        .await
        .unwrap()
}

pub async fn seat_ids(app: &TestApp, program: i64) -> Vec<(i64, String)> {
    let map = seat_map(app, program).await;
    map["categories"][0]["seats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_i64().unwrap(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Seat statuses once `done` holds for them. Seat maps are published coalesced (every
/// `actors.snapshot_interval_ms`), so a read right after a change may still be the one before.
pub async fn seats_once(
    app: &TestApp,
    program: i64,
    done: impl Fn(&[(i64, String)]) -> bool,
) -> Vec<(i64, String)> {
    poll_until(
        std::time::Duration::from_secs(5),
        async || seat_ids(app, program).await,
        |s| done(s),
    )
    .await
}

pub async fn code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or(serde_json::json!({}));
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

/// The one number `sql` (a `count(*)` without parameters) answers on the test's database.
pub async fn count(app: &TestApp, sql: &str) -> i64 {
    app.pg
        .get()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

/// One value Postgres answers about an order (`$1` is its number, given as the API shows it).
pub async fn order_fact<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    app: &TestApp,
    sql: &str,
    order_no: &str,
) -> T {
    let order_no: i64 = order_no.parse().expect("an order number");
    app.pg
        .get()
        .await
        .unwrap()
        .query_one(sql, &[&order_no])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}
