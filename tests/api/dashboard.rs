//! The dashboard on the admin listener: its login and session rules over HTTP, its live
//! stream's bounds, and the whole page in real Chromium (tests/browser/dashboard.mjs).

use std::io::BufRead as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// A client that shows redirects instead of following them, and keeps no cookies.
fn browserless() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn login(app: &TestApp, client: &reqwest::Client, form: String) -> Reply {
    Reply::from(
        client
            .post(format!("{}/login", app.admin))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Logs in and returns the `Cookie` header of the session and its CSRF token (from the page).
async fn session(app: &TestApp, client: &reqwest::Client) -> (String, String) {
    let reply = login(app, client, format!("token={}", app.admin_token)).await;
    assert_eq!(reply.status, 303, "{}", reply.text);
    assert_eq!(reply.header("location"), "/");
    let set = reply.header("set-cookie").to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = Reply::from(
        client
            .get(format!("{}/", app.admin))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("/assets/dashboard.js"), "{}", page.text);
    assert!(!page.text.contains(&app.admin_token));
    let csrf = page
        .text
        .split("name=\"berth-csrf\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 64, "{}", page.text);
    (cookie, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_session_reads_the_admin_api_and_changes_it_only_with_its_csrf_token() {
    let app = spawn(SANDBOX).await;
    let client = browserless();

    let form = Reply::from(client.get(format!("{}/", app.admin)).send().await.unwrap()).await;
    assert_eq!(form.status, 200);
    assert!(form.text.contains("action=\"/login\""), "{}", form.text);
    assert_eq!(form.header("cache-control"), "no-store");
    assert_eq!(form.header("x-frame-options"), "DENY");
    assert!(
        form.header("content-security-policy")
            .starts_with("default-src 'self'")
    );

    let wrong = login(&app, &client, "token=wrong".into()).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.text.contains("not the admin token"), "{}", wrong.text);
    assert!(wrong.header("set-cookie").is_empty());

    let (cookie, csrf) = session(&app, &client).await;
    let send = |method: reqwest::Method, path: &str, csrf: Option<&str>| {
        let mut request = client
            .request(method, format!("{}{path}", app.admin))
            .header("cookie", &cookie);
        if let Some(csrf) = csrf {
            request = request.header("x-berth-csrf", csrf);
        }
        async move { Reply::from(request.send().await.unwrap()).await }
    };
    let components = send(reqwest::Method::GET, "/admin/v1/components", None).await;
    assert_eq!(components.status, 200, "{}", components.text);
    assert_eq!(components.header("cache-control"), "no-store");

    // A change needs the session's CSRF token, and refuses before it acts.
    let rollback = "/admin/v1/components/bystander/rollback";
    let without = send(reqwest::Method::POST, rollback, None).await;
    assert_eq!(without.status, 403, "{}", without.text);
    assert_eq!(without.error_code(), "CSRF_TOKEN_REQUIRED");
    let forged = send(reqwest::Method::POST, rollback, Some(&"0".repeat(64))).await;
    assert_eq!(forged.status, 403);
    let with = send(reqwest::Method::POST, rollback, Some(&csrf)).await;
    assert_eq!(with.status, 409, "past the checks: {}", with.text);
    assert_eq!(with.error_code(), "NOTHING_TO_DO");

    // Only the exact open paths are open; any other spelling needs a token or a session.
    for (method, path) in [
        ("POST", "/"),
        ("GET", "/login"),
        ("GET", "//"),
        ("GET", "/assets/dashboard.js/"),
        ("GET", "/%61ssets/dashboard.js"),
        ("GET", "/assets/../admin/v1/components"),
    ] {
        let raw = raw_request(
            &app.admin,
            &http_request(method, path, &[], b""),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(raw.status(), Some(401), "{method} {path}: {}", raw.text);
    }
    let script = Reply::from(
        client
            .get(format!("{}/assets/dashboard.js", app.admin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(script.status, 200);
    assert!(script.header("content-type").starts_with("text/javascript"));

    // Logging out ends the session on the host, not only in the browser.
    let logout = Reply::from(
        client
            .post(format!("{}/logout", app.admin))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(logout.status, 303, "{}", logout.text);
    assert!(logout.header("set-cookie").contains("Max-Age=0"));
    let after = send(reqwest::Method::GET, "/admin/v1/components", None).await;
    assert_eq!(after.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_login_form_is_refused() {
    let app = spawn(SANDBOX).await;
    let client = browserless();
    let huge = format!("token={}", "a".repeat(64 * 1024));
    let refused = login(&app, &client, huge).await;
    assert_eq!(refused.status, 413, "{}", refused.text);
    assert!(
        refused.text.contains("larger than 4096 bytes"),
        "{}",
        refused.text
    );
    // The listener is fine afterwards.
    assert_eq!(app.readyz().await, 200);
}

/// Opens `GET /admin/v1/stream` with the bearer token.
async fn open_stream(app: &TestApp) -> reqwest::Response {
    app.client
        .get(format!("{}/admin/v1/stream", app.admin))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap()
}

/// The first snapshot of a stream.
async fn first_snapshot(stream: &mut reqwest::Response) -> Value {
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream goes on");
        text.push_str(&String::from_utf8_lossy(&chunk));
        // Whole events only: the last piece may be cut short.
        let whole = text.rsplit_once("\n\n").map_or("", |(whole, _)| whole);
        if let Some(data) = whole
            .split("\n\n")
            .find_map(|event| event.strip_prefix("data: "))
        {
            return serde_json::from_str(data).unwrap();
        }
    }
    panic!("no snapshot in {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_snapshots_to_at_most_sixteen_clients_at_once() {
    let app = spawn(SANDBOX).await;
    assert_eq!(app.get("/bystander/ok", None).await.status, 200);
    let mut first = open_stream(&app).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let snapshot = first_snapshot(&mut first).await;
    let bystander = snapshot["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "bystander")
        .unwrap()
        .clone();
    let stable = &bystander["versions"][0];
    assert_eq!(stable["state"], "stable");
    assert_eq!(stable["trafficPercent"], 100);
    let seconds = stable["minute"]["seconds"].as_array().unwrap();
    assert_eq!(seconds.len(), 60);
    let requests: u64 = seconds
        .iter()
        .map(|s| s["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 1, "{stable}");
    assert!(stable["minute"]["p99Ms"].as_f64().unwrap() > 0.0);

    let mut open = vec![first];
    for _ in 1..16 {
        let stream = open_stream(&app).await;
        assert_eq!(stream.status(), 200);
        open.push(stream);
    }
    let refused = Reply::from(open_stream(&app).await).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.error_code(), "TOO_MANY_STREAMS");
    assert!(!refused.header("retry-after").is_empty());
    // A stream that ends (its client went away) frees its place.
    drop(open.pop());
    eventually(Duration::from_secs(5), "a freed place", || async {
        let stream = open_stream(&app).await;
        (stream.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_an_open_stream_still_stops_promptly() {
    let app = spawn(SANDBOX).await;
    let mut stream = open_stream(&app).await;
    first_snapshot(&mut stream).await;
    let started = Instant::now();
    // The drain waits up to 30 s for open responses; a stream must not be one of them.
    tokio::time::timeout(Duration::from_secs(15), app.stop())
        .await
        .expect("the host stops within 15 s with a stream open");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        started.elapsed()
    );
}

/// The shop's order component with a custom section appended: the same code, a new digest.
fn order_variant(dir: &std::path::Path) -> std::path::PathBuf {
    ensure_built();
    let mut wasm = std::fs::read(repo("target/wasm32-wasip2/release/order.wasm")).unwrap();
    let name = b"berth-dashboard-test";
    wasm.extend_from_slice(&[0, (1 + name.len() + 8) as u8, name.len() as u8]);
    wasm.extend_from_slice(name);
    wasm.extend_from_slice(&unix_now().to_le_bytes());
    let path = dir.join("order-canary.wasm");
    std::fs::write(&path, wasm).unwrap();
    path
}

/// The browser test's node process, killed if the test ends early, however it ends.
struct Node(std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Some traffic on the user, order and payment services, so the charts have lines.
fn traffic(app: Arc<TestApp>, user: User, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let paths = [
            "/api/v1/orders".to_owned(),
            format!("/api/v1/users/{}", user.id),
            "/api/v1/payments?orderId=none".to_owned(),
        ];
        while !stop.load(Ordering::Relaxed) {
            for path in &paths {
                let _ = app.get(path, Some(&user.token)).await;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    ensure_built();
    let script = repo("tests/browser/dashboard.mjs");
    assert!(
        repo("tests/browser/node_modules/playwright-core").exists(),
        "run `npm ci --prefix tests/browser` first (.ci/run does)"
    );
    let chromium = std::env::var("BERTH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install chromium (.ci/run does)"
    );

    // The real host, as `berth up` runs it: its traces are recorded while a dashboard watches.
    let data = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let _host = Process::new(
        berth_up(SHOP, data.path(), port, admin)
            .spawn()
            .expect("start berth up"),
    );
    wait_until_ready(admin).await;
    let app = Arc::new(TestApp::of_process(port, admin, data));

    // A dead letter: an order whose payment event is refused (a 4xx is dead-lettered at its
    // first attempt), by an injected fault; then the fault is cleared, so that the page's
    // redrive completes the saga.
    let fault = app
        .add_fault(serde_json::json!({
            "component": "payment",
            "route": "/api/v1/payments/events",
            "abortStatus": 422,
        }))
        .await;
    let shopper = app.user().await;
    let stuck = app.create_order(&shopper, 1).await;
    assert_eq!(stuck.status, 201, "{}", stuck.text);
    let stuck_order = stuck.json["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead_id = loop {
        let reply = app.admin_get("/admin/v1/dead-letters").await;
        let letters = reply.json["deadLetters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(letter) = letters.iter().find(|l| {
            l["body"]
                .as_str()
                .unwrap_or_default()
                .contains(&stuck_order)
        }) {
            break letter["id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "order {stuck_order}'s payment was not dead-lettered within 30 s: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    app.clear_faults(Some(&fault)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(app.clone(), app.user().await, stop.clone());
    let canary = order_variant(app.data_dir.path());
    // The README's picture is refreshed on purpose, with
    // BERTH_DASHBOARD_SCREENSHOT=docs/dashboard.png; an ordinary run leaves the repository alone.
    let screenshot = std::env::var("BERTH_DASHBOARD_SCREENSHOT")
        .map(|path| repo(&path))
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png")
        });
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();

    let mut node = std::process::Command::new("node")
        .arg(&script)
        .env("BERTH_ADMIN_URL", &app.admin)
        .env("BERTH_PUBLIC_URL", &app.base)
        .env("BERTH_ADMIN_TOKEN", &app.admin_token)
        .env("BERTH_DEAD_LETTER_ID", &dead_id)
        .env("BERTH_DEAD_LETTER_ORDER", &stuck_order)
        .env("BERTH_SCREENSHOT", &screenshot)
        .env("BERTH_CHROMIUM", &chromium)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node is installed (apt-get install nodejs)");
    let (lines, mut from_node) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = node.stdout.take().unwrap();
    let stderr = node.stderr.take().unwrap();
    for pipe in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
    }
    drop(lines);
    let mut node = Node(node);

    let mut output = Vec::new();
    let mut deployed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let line = tokio::time::timeout_at(deadline, from_node.recv())
            .await
            .unwrap_or_else(|_| panic!("the browser test ran past 300 s:\n{}", output.join("\n")));
        let Some(line) = line else { break };
        println!("browser: {line}");
        if line == "@berth deploy-canary" {
            let cli = berth_command()
                .args(["deploy", "order"])
                .arg(&canary)
                .args([
                    "--canary",
                    "30",
                    "--admin",
                    &app.admin,
                    "--token",
                    &app.admin_token,
                ])
                .output()
                .unwrap();
            assert!(
                cli.status.success(),
                "berth deploy --canary 30 failed:\n{}{}",
                String::from_utf8_lossy(&cli.stdout),
                String::from_utf8_lossy(&cli.stderr)
            );
            deployed = true;
        }
        output.push(line);
    }
    // Its pipes are closed: it has ended, or is ending.
    let status = tokio::task::spawn_blocking(move || node.0.wait())
        .await
        .unwrap()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let output = output.join("\n");
    assert!(status.success(), "the browser test failed:\n{output}");
    assert!(deployed, "the script never asked for the canary:\n{output}");
    assert!(output.contains(", 0 failed"), "{output}");
    assert!(screenshot.exists());
    // The redrive from the page, its cause fixed, completed the saga.
    app.order_reaches(&shopper, &stuck_order, "confirmed").await;
}
