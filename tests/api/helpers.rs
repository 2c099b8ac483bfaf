//! Starting real hosts for tests: built components, a fresh data dir, port 0, and an HTTP
//! client that talks to them the way any client would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use berth::host::{Host, Options};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpListener;

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

pub const SHOP: &str = "spin.toml";
pub const SANDBOX: &str = "tests/apps/sandbox.toml";
pub const EVENTS: &str = "tests/apps/events.toml";
pub const LIMITS: &str = "tests/apps/limits.toml";
pub const SPIN_APPS: &str = "tests/apps/spin-apps.toml";

/// Builds the components of both test apps once per test run, through `berth build`.
pub fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        for manifest in [SHOP, SANDBOX, EVENTS, LIMITS, SPIN_APPS] {
            let output = berth_command()
                .args(["build", "--manifest"])
                .arg(repo(manifest))
                .output()
                .expect("run berth build");
            assert!(
                output.status.success(),
                "berth build --manifest {manifest} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    });
}

pub fn berth_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .env("BERTH_CACHE_DIR", cache_dir())
        .env_remove("BERTH_ADMIN_TOKEN");
    command
}

/// `berth up` on `manifest` and `data_dir`, on 127.0.0.1 at the given ports, logging
/// warnings and errors to a pipe on stderr for the test to read.
pub fn berth_up(manifest: &str, data_dir: &Path, port: u16, admin: u16) -> Command {
    let mut command = berth_command();
    command
        .args(["up", "--manifest"])
        .arg(repo(manifest))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .env("BERTH_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    command
}

/// A process a test started, killed when the test ends however it ends. A piped stderr is
/// read as it comes, so a chatty process never blocks on a full pipe.
pub struct Process {
    child: std::process::Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Process {
    pub fn new(mut child: std::process::Child) -> Process {
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                use std::io::Read as _;
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        });
        Process { child, stderr }
    }

    /// Sends it SIGKILL and waits until it is gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the process");
        self.child.wait().expect("wait for the killed process");
    }

    /// Kills it and returns what it wrote to a piped stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Compiled components are shared by every test, as a long-lived host would keep them.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("berth-cache")
}

pub struct TestApp {
    pub base: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub data_dir: TempDir,
    pub admin_token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Stops the host, waits until it has, and hands back its data dir.
    pub async fn stop(mut self) -> TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap())
    }
}

impl TestApp {
    /// A `berth up` process (see [`berth_up`]) already answering `/readyz`, driven like a
    /// host in this process. It stops with the [`Process`], not with this.
    pub fn of_process(port: u16, admin: u16, data_dir: TempDir) -> TestApp {
        let admin_token = std::fs::read_to_string(data_dir.path().join("admin-token"))
            .expect("berth up wrote the admin token")
            .trim()
            .to_owned();
        TestApp {
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            data_dir,
            admin_token,
            stop: None,
            done: None,
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The shop (`spin.toml`) on port 0 with a fresh data dir.
/// The shop, on the database the running test asks for ([`on_every_database!`]).
pub async fn spawn_shop() -> TestApp {
    match SHOP_DATABASE.try_with(|database| *database) {
        Ok(ShopDatabase::Postgres) => spawn_on_postgres(SHOP, &SHOP_DATABASES, None).await,
        Ok(ShopDatabase::Sqlite) | Err(_) => spawn(SHOP).await,
    }
}

/// Where [`spawn_shop`] keeps the shop's data.
#[derive(Debug, Clone, Copy)]
pub enum ShopDatabase {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    /// Set around a test body by [`on_every_database!`].
    pub static SHOP_DATABASE: ShopDatabase;
}

/// Runs each named test body (an `async fn` of the module calling [`spawn_shop`]) twice:
/// as `on_sqlite::<name>` and as `on_postgres::<name>`, with the shop's databases as
/// schemas of the tests' PostgreSQL server.
macro_rules! on_every_database {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::helpers::SHOP_DATABASE
                        .scope($crate::helpers::ShopDatabase::Sqlite, super::$name())
                        .await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::helpers::SHOP_DATABASE
                        .scope($crate::helpers::ShopDatabase::Postgres, super::$name())
                        .await
                }
            )*
        }
    };
}
pub(crate) use on_every_database;

pub async fn spawn(manifest: &str) -> TestApp {
    spawn_with(manifest, None, tempfile::tempdir().expect("temp dir")).await
}

/// A host on `manifest` with a runtime config and a data dir of the test's choosing.
pub async fn spawn_with(
    manifest: &str,
    runtime_config: Option<PathBuf>,
    data_dir: TempDir,
) -> TestApp {
    spawn_as(manifest, runtime_config, data_dir, None).await
}

/// [`spawn_with`], the host named `host_id` in its fleet.
pub async fn spawn_as(
    manifest: &str,
    runtime_config: Option<PathBuf>,
    data_dir: TempDir,
    host_id: Option<&str>,
) -> TestApp {
    ensure_built();
    let options = Options {
        manifest: repo(manifest),
        runtime_config,
        data_dir: Some(data_dir.path().to_owned()),
        cache_dir: Some(cache_dir()),
        fresh_databases: Vec::new(),
    };
    let host = Host::load(&options)
        .await
        .expect("the host loads")
        .with_host_id(host_id.map(str::to_owned));
    serve_loaded(host, data_dir).await
}

/// Serves a loaded host on port 0 until the returned app is stopped or dropped.
pub async fn serve_loaded(host: Host, data_dir: TempDir) -> TestApp {
    let admin_token = host.admin_token.clone();
    let public = TcpListener::bind("127.0.0.1:0").await.expect("bind public");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let base = format!("http://{}", public.local_addr().unwrap());
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(host.serve(public, admin, async move {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        admin: admin_url,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        data_dir,
        admin_token,
        stop: Some(stop),
        done: Some(done),
    }
}

/// A response read whole: status, headers and body (JSON when it parses).
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The fields a `VALIDATION_FAILED` error names, in order.
    pub fn error_fields(&self) -> Vec<&str> {
        self.json["error"]["details"]
            .as_array()
            .map(|details| details.iter().filter_map(|d| d["field"].as_str()).collect())
            .unwrap_or_default()
    }

    /// Asserts the API's JSON error shape and returns its code.
    pub fn error_code(&self) -> &str {
        let trace_id = self.json["traceId"].as_str().unwrap_or_default();
        assert_eq!(trace_id.len(), 32, "error without a traceId: {}", self.text);
        assert!(
            self.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error without a message: {}",
            self.text
        );
        self.json["error"]["code"].as_str().unwrap_or_default()
    }
}

/// A registered, logged-in user.
pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Reply::from(request.send().await.expect("GET")).await
    }

    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Reply::from(request.send().await.expect("request")).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send_json(reqwest::Method::POST, path, token, body)
            .await
    }

    pub async fn register(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/api/v1/users/register",
            None,
            &json!({"email": email, "password": password, "firstName": "Ada", "lastName": "Lovelace"}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/api/v1/users/login",
            None,
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// A new user with a unique email, logged in.
    pub async fn user(&self) -> User {
        user_across(self, self).await
    }

    pub async fn create_order(&self, user: &User, quantity: i64) -> Reply {
        self.post("/api/v1/orders", Some(&user.token), &order_body(quantity))
            .await
    }

    pub async fn create_order_with_key(&self, user: &User, key: &str, quantity: i64) -> Reply {
        Reply::from(
            self.client
                .post(self.url("/api/v1/orders"))
                .bearer_auth(&user.token)
                .header("idempotency-key", key)
                .json(&order_body(quantity))
                .send()
                .await
                .expect("POST /api/v1/orders"),
        )
        .await
    }

    /// The HS256 key the host generated for this data dir.
    pub fn jwt_secret(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("secrets/jwt_secret"))
            .expect("the generated jwt secret")
    }
}

pub fn order_body(quantity: i64) -> Value {
    json!({
        "items": [
            {"productId": "book-1", "quantity": quantity, "unitPriceCents": 1999},
            {"productId": "pen-2", "quantity": 1, "unitPriceCents": 250}
        ],
        "currency": "USD",
        "paymentMethodId": "pm_card_visa",
        "shippingAddress": {"street": "1 Main St", "city": "Springfield", "state": "IL", "zipCode": "62701", "country": "US"}
    })
}

/// The `iss` the shop's tokens carry (`jwt_issuer` in spin.toml).
pub const SHOP_ISSUER: &str = "berth-user";

/// Signs a JWT as the shop's user service with `secret` would: `claims` with the shop's `iss`
/// unless they name one (`"iss": null` leaves it out).
pub fn sign_jwt(secret: &[u8], claims: &Value) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::Mac as _;
    let mut claims = claims.clone();
    match claims.get("iss") {
        None => claims["iss"] = json!(SHOP_ISSUER),
        Some(Value::Null) => {
            claims.as_object_mut().map(|c| c.remove("iss"));
        }
        Some(_) => {}
    }
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(signed.as_bytes());
    format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Polls `check` every 50 ms until it gives a value, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` every 50 ms until it gives `Ok(value)`. `Err(done)` reports how much of the
/// work is done so far; the wait fails once `stall` passes with `done` not growing, or after
/// `limit` in all. For a backlog that a loaded machine drains slowly but must never stop
/// draining: a lost item shows as a stall, a slow machine does not.
pub async fn eventually_progressing<T, F, Fut>(
    stall: Duration,
    limit: Duration,
    what: &str,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, usize>>,
{
    let start = tokio::time::Instant::now();
    let (mut best, mut last_progress) = (0, start);
    loop {
        match check().await {
            Ok(value) => return value,
            Err(done) if done > best => (best, last_progress) = (done, tokio::time::Instant::now()),
            Err(_) => {}
        }
        let now = tokio::time::Instant::now();
        assert!(
            now - last_progress < stall,
            "{what}: stuck at {best} done for {stall:?}"
        );
        assert!(
            now - start < limit,
            "{what}: {best} done, not all within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl TestApp {
    /// Waits for the order to reach `status` (the saga runs after the response).
    pub async fn order_reaches(&self, user: &User, order_id: &str, status: &str) -> Value {
        let path = format!("/api/v1/orders/{order_id}");
        eventually(
            Duration::from_secs(20),
            &format!("order {order_id} {status}"),
            || async {
                let reply = self.get(&path, Some(&user.token)).await;
                (reply.json["status"] == status).then_some(reply.json)
            },
        )
        .await
    }

    /// The payments of one order.
    pub async fn payments_of(&self, user: &User, order_id: &str) -> Vec<Value> {
        let reply = self
            .get(
                &format!("/api/v1/payments?orderId={order_id}"),
                Some(&user.token),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json["payments"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        Reply::from(
            self.client
                .get(format!("{}{path}", self.admin))
                .bearer_auth(&self.admin_token)
                .send()
                .await
                .expect("admin GET"),
        )
        .await
    }
}

/// The app of `manifest` on a real NATS JetStream, kept running as long as the app.
pub async fn spawn_on_nats(manifest: &str) -> (TestApp, NatsServer) {
    let nats = NatsServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = nats.runtime_config(data.path());
    (spawn_with(manifest, Some(config), data).await, nats)
}

/// A new user, registered on `a` and logged in on `b` (hosts of one fleet, or one host).
pub async fn user_across(a: &TestApp, b: &TestApp) -> User {
    let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
    let registered = a.register(&email, "correct horse battery").await;
    assert_eq!(registered.status, 201, "{}", registered.text);
    let login = b.login(&email, "correct horse battery").await;
    assert_eq!(login.status, 200, "{}", login.text);
    User {
        id: login.json["user"]["id"].as_str().unwrap().to_owned(),
        email,
        token: login.json["token"].as_str().unwrap().to_owned(),
    }
}

/// The shop's databases (`sqlite_databases` of its four components).
pub const SHOP_DATABASES: [&str; 4] = ["users", "orders", "payments", "provider"];

/// The app of `manifest` with each of `labels` a schema of one fresh database of the tests'
/// PostgreSQL server, on NATS JetStream when `nats` is given.
pub async fn spawn_on_postgres(
    manifest: &str,
    labels: &[&str],
    nats: Option<&NatsServer>,
) -> TestApp {
    let url = crate::postgres_server::postgres().fresh_database().await;
    spawn_on_postgres_at(&url, manifest, labels, nats).await
}

/// [`spawn_on_postgres`] on the database at `url`.
pub async fn spawn_on_postgres_at(
    url: &str,
    manifest: &str,
    labels: &[&str],
    nats: Option<&NatsServer>,
) -> TestApp {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("runtime-config.toml");
    std::fs::write(&path, postgres_runtime_config(url, labels, nats)).unwrap();
    spawn_with(manifest, Some(path), data).await
}

/// A runtime config with each of `labels` a schema of the database at `url`, on NATS
/// JetStream when `nats` is given.
pub fn postgres_runtime_config(url: &str, labels: &[&str], nats: Option<&NatsServer>) -> String {
    let mut config = String::new();
    for label in labels {
        config += &format!("[sqlite_database.{label}]\ntype = \"postgres\"\nurl = \"{url}\"\n");
    }
    if let Some(nats) = nats {
        config += &format!("[messaging]\ntype = \"nats\"\nurl = \"{}\"\n", nats.url());
    }
    config
}

/// A real `nats-server -js` on a free port of 127.0.0.1, stopped when dropped.
pub struct NatsServer {
    pub port: u16,
    store: TempDir,
    process: Option<std::process::Child>,
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        let port = free_port();
        let mut server = NatsServer {
            port,
            store: tempfile::tempdir().unwrap(),
            process: None,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port and store, after [`NatsServer::stop`].
    pub async fn restart(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server is installed (apt-get install nats-server)");
        self.process = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(10),
            "nats-server listens",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A runtime config selecting this server, written into `dir`.
    pub fn runtime_config(&self, dir: &Path) -> PathBuf {
        let path = dir.join("runtime-config.toml");
        std::fs::write(
            &path,
            format!("[messaging]\ntype = \"nats\"\nurl = \"{}\"\n", self.url()),
        )
        .unwrap();
        path
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The id of the payment the saga makes for an order.
pub async fn saga_payment(app: &TestApp, user: &User, order_id: &str) -> String {
    eventually(Duration::from_secs(20), "the saga's payment", || async {
        let payments = app.payments_of(user, order_id).await;
        payments.first()?["id"].as_str().map(str::to_owned)
    })
    .await
}

/// Waits until a `berth up` process answers `/readyz` on its admin port with 200.
pub async fn wait_until_ready(admin: u16) {
    readyz_answer(admin, true).await;
}

/// The first answer of a `berth up` process's `/readyz` (the first 200 if `until_ready`).
pub async fn readyz_answer(admin: u16, until_ready: bool) -> Reply {
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(60), "berth up answers /readyz", || {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://127.0.0.1:{admin}/readyz"))
                .send()
                .await
                .ok()?;
            let reply = Reply::from(r).await;
            (!until_ready || reply.status == 200).then_some(reply)
        }
    })
    .await
}

/// A port on 127.0.0.1 that was free a moment ago, for servers started as processes.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The misbehave component with a custom section appended: behaves the same, another digest.
pub fn misbehave_variant(n: u32) -> Vec<u8> {
    ensure_built();
    let mut wasm = std::fs::read(repo("target/wasm32-wasip2/release/misbehave.wasm")).unwrap();
    let name = b"berth-test-variant";
    wasm.extend_from_slice(&[0, (1 + name.len() + 4) as u8, name.len() as u8]);
    wasm.extend_from_slice(name);
    wasm.extend_from_slice(&n.to_le_bytes());
    wasm
}

/// What came back on a raw connection: everything the server sent, and whether it closed.
pub struct Raw {
    pub text: String,
    pub closed: bool,
}

impl Raw {
    /// The status of the first response, if one arrived.
    pub fn status(&self) -> Option<u16> {
        self.text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }
}

/// Reads what a server sends on `stream` until it closes it or `wait` passes.
pub async fn read_raw(stream: &mut tokio::net::TcpStream, wait: Duration) -> Raw {
    use tokio::io::AsyncReadExt as _;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + wait;
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    Raw {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        closed,
    }
}

/// Sends `request` as written, byte for byte (no client library normalises the path), on a
/// new connection to `base` (`http://host:port`), and reads until the server closes or `wait`
/// passes.
pub async fn raw_request(base: &str, request: &[u8], wait: Duration) -> Raw {
    use tokio::io::AsyncWriteExt as _;
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    // A server that answers early and closes may refuse the rest; the answer still counts.
    let _ = stream.write_all(request).await;
    read_raw(&mut stream, wait).await
}

/// A complete HTTP/1.1 request closing its connection: `method path`, extra header lines,
/// and a body.
pub fn http_request(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

impl TestApp {
    /// The status of the admin listener's `/readyz`, which must answer within 5 s.
    pub async fn readyz(&self) -> u16 {
        self.client
            .get(format!("{}/readyz", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("the admin listener answers /readyz within 5 s")
            .status()
            .as_u16()
    }

    /// One metric's value from `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// A component that only imports `name`, as an empty instance: for what berth serves or
/// refuses by name alone.
pub fn component_importing(name: &str) -> Vec<u8> {
    let mut component = wasm_encoder::Component::new();
    let mut types = wasm_encoder::ComponentTypeSection::new();
    types.instance(&wasm_encoder::InstanceType::new());
    component.section(&types);
    let mut imports = wasm_encoder::ComponentImportSection::new();
    imports.import(name, wasm_encoder::ComponentTypeRef::Instance(0));
    component.section(&imports);
    component.finish()
}

/// A runtime config for a host of a fleet: each of the shop's databases a schema of the
/// database at `url`, messaging on `nats`, and one signing key for the whole fleet, so that
/// any host accepts any host's tokens.
pub fn fleet_runtime_config(url: &str, nats: &NatsServer) -> String {
    postgres_runtime_config(url, &SHOP_DATABASES, Some(nats))
        + "[[variables_provider]]\ntype = \"static\"\n\
           values = { jwt_secret = \"a fleet-wide key of enough bytes\" }\n"
}

/// Every order of `user`, as `GET /api/v1/orders` lists them, page after page.
pub async fn all_orders(app: &TestApp, user: &User) -> Vec<Value> {
    let mut all = Vec::new();
    let mut path = "/api/v1/orders?limit=100".to_owned();
    loop {
        let page = app.get(&path, Some(&user.token)).await;
        assert_eq!(page.status, 200, "{}", page.text);
        all.extend(page.json["orders"].as_array().unwrap().iter().cloned());
        let Some(cursor) = page.json["nextCursor"].as_str() else {
            return all;
        };
        path = format!("/api/v1/orders?limit=100&cursor={cursor}");
    }
}

/// One payment intent in the provider simulator's books (its own tables, which no API
/// shows), read from the PostgreSQL database at `url` the shop keeps its schemas in.
#[derive(Debug, Clone)]
pub struct ProviderIntent {
    pub id: String,
    pub order_id: String,
    pub status: String,
    pub amount: i64,
    /// The sum of its refunds.
    pub refunded: i64,
}

pub async fn provider_intents(url: &str) -> Vec<ProviderIntent> {
    use sqlx::{ConnectOptions as _, Row as _};
    let mut conn = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .connect()
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT i.id, i.status, i.metadata, i.amount::int8 AS amount,
                (SELECT coalesce(sum(r.amount), 0)::int8 FROM provider.refunds r
                 WHERE r.payment_intent = i.id) AS refunded
         FROM provider.payment_intents i",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.iter()
        .map(|row| {
            let metadata: Value = serde_json::from_str(row.get::<&str, _>("metadata")).unwrap();
            ProviderIntent {
                id: row.get("id"),
                order_id: metadata["order_id"].as_str().unwrap().to_owned(),
                status: row.get("status"),
                amount: row.get("amount"),
                refunded: row.get("refunded"),
            }
        })
        .collect()
}

/// Publishes a `test.trace` message through the events app (tests/apps/events.toml) in the
/// trace `trace_id`.
pub async fn publish_traced(app: &TestApp, trace_id: &str) {
    let sent = app
        .client
        .post(app.url("/events/publish?subject=test.trace"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
}

impl TestApp {
    /// Puts a fault in force through the admin API, as `berth fault add` does; its id.
    pub async fn add_fault(&self, spec: Value) -> String {
        let added = self
            .client
            .post(format!("{}/admin/v1/faults", self.admin))
            .bearer_auth(&self.admin_token)
            .json(&spec)
            .send()
            .await
            .unwrap();
        let status = added.status();
        let added: Value = added.json().await.unwrap();
        assert_eq!(status, 201, "{added}");
        added["fault"]["id"].as_str().unwrap().to_owned()
    }

    /// Clears fault `id`, or every fault.
    pub async fn clear_faults(&self, id: Option<&str>) {
        let path = match id {
            Some(id) => format!("/admin/v1/faults/{id}"),
            None => "/admin/v1/faults".to_owned(),
        };
        let cleared = self
            .client
            .delete(format!("{}{path}", self.admin))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(cleared.status(), 200);
    }

    /// Runs the berth CLI against this host's admin API: whether it succeeded, and what it
    /// printed (stdout, then stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let output = berth_command()
            .args(args)
            .args(["--admin", &self.admin, "--token", &self.admin_token])
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    }
}

/// `clients` clients placing orders at `base` back to back until the host stops answering;
/// each task gives the ids of the orders it saw acknowledged.
pub fn orders_until_the_host_dies(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    clients: usize,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..clients)
        .map(|_| {
            let (client, base, token) = (client.clone(), base.to_owned(), token.to_owned());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for _ in 0..1000 {
                    let sent = client
                        .post(format!("{base}/api/v1/orders"))
                        .bearer_auth(&token)
                        .json(&order_body(1))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 201 => {
                            let order: Value = r.json().await.unwrap();
                            acknowledged.push(order["id"].as_str().unwrap().to_owned());
                        }
                        Ok(r) => panic!("an order failed before the host died: {}", r.status()),
                        Err(_) => break,
                    }
                }
                acknowledged
            })
        })
        .collect()
}
