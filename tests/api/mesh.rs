//! Call policies on a component's outbound calls, against a real upstream on 127.0.0.1:
//! retries of an idempotent call until the upstream answers, a timeout that answers 504 on
//! time, and a breaker that answers 503 at once while the upstream is ejected.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;

use crate::helpers::*;

/// An upstream that answers each request by its number: `answer(n)` gives the status, or
/// `None` to hold the request without answering.
struct Upstream {
    port: u16,
    requests: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start(answer: fn(u32) -> Option<u16>) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicU32::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counted = counted.clone();
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper::service::service_fn(move |_request| {
                        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            let Some(status) = answer(n) else {
                                std::future::pending::<()>().await;
                                unreachable!("a pending future never ends");
                            };
                            let mut response =
                                hyper::Response::new(Full::new(Bytes::from(format!("try {n}"))));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    }),
                ));
            }
        });
        Upstream {
            port,
            requests,
            task,
        }
    }

    fn requests(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The misbehaving component, allowed to call 127.0.0.1 under `policy`.
async fn app_with_policy(policy: &str) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spin.toml"),
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"mesh\"\n\
             [[trigger.http]]\nroute = \"/misbehave/...\"\ncomponent = \"misbehave\"\n\
             [component.misbehave]\nsource = \"{}\"\nsqlite_databases = [\"m\"]\n\
             key_value_stores = [\"k\"]\nallowed_outbound_hosts = [\"http://127.0.0.1:*\"]\n\
             [component.misbehave.tool.berth.calls.\"127.0.0.1\"]\n{policy}\n",
            repo("target/wasm32-wasip2/release/misbehave.wasm").display()
        ),
    )
    .unwrap();
    let app = spawn(dir.path().join("spin.toml").to_str().unwrap()).await;
    (app, dir)
}

async fn metric(app: &TestApp, name: &str) -> String {
    let text = app
        .client
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name}{{component=\"misbehave\",destination=\"127.0.0.1\"");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_is_retried_until_the_upstream_answers() {
    let upstream = Upstream::start(|n| Some(if n <= 2 { 503 } else { 200 })).await;
    let (app, _dir) =
        app_with_policy("retries = 3\nbackoff_base_ms = 5\nbackoff_max_ms = 20").await;
    let reply = app
        .get(
            &format!(
                "/misbehave/outbound?url=http://127.0.0.1:{}/",
                upstream.port
            ),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.text, "try 3");
    assert_eq!(upstream.requests(), 3);
    let retries = metric(&app, "berth_mesh_retries_total").await;
    assert!(retries.ends_with(" 2"), "{retries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_is_answered_504_on_time_and_then_503_at_once_while_ejected() {
    let upstream = Upstream::start(|_| None).await;
    let (app, _dir) = app_with_policy(
        "timeout_ms = 800\nper_try_timeout_ms = 300\nretries = 1\nbackoff_base_ms = 5\n\
         consecutive_failures = 2\nbase_ejection_ms = 60000",
    )
    .await;
    let url = format!(
        "/misbehave/outbound?url=http://127.0.0.1:{}/",
        upstream.port
    );

    // Two tries of 300 ms, both held: 504 well within the component's own deadline.
    let started = Instant::now();
    let timed_out = app.get(&url, None).await;
    let took = started.elapsed();
    assert_eq!(timed_out.status, 504, "{}", timed_out.text);
    assert!(
        timed_out.text.contains("did not answer"),
        "{}",
        timed_out.text
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(upstream.requests(), 2);

    // Two failures in a row ejected it: the next call never leaves the host.
    let started = Instant::now();
    let refused = app.get(&url, None).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(refused.text.contains("circuit-open"), "{}", refused.text);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(upstream.requests(), 2);

    // The admin API (and so `berth status`) shows the circuit.
    let components = app.admin_get("/admin/v1/components").await;
    assert_eq!(components.status, 200, "{}", components.text);
    let listed: serde_json::Value = serde_json::from_str(&components.text).unwrap();
    let calls = &listed[0]["calls"][0];
    assert_eq!(calls["destination"], "127.0.0.1", "{listed}");
    assert_eq!(calls["circuit"], "open", "{listed}");
    assert_eq!(calls["shortCircuited"], 1, "{listed}");

    let state = metric(&app, "berth_mesh_circuit_state").await;
    assert!(state.contains("state=\"open\"} 1"), "{state}");
    assert!(state.contains("state=\"closed\"} 0"), "{state}");
    for (name, value) in [
        ("berth_mesh_short_circuited_total", " 1"),
        ("berth_mesh_timeouts_total", " 1"),
        ("berth_mesh_ejections_total", " 1"),
    ] {
        let line = metric(&app, name).await;
        assert!(line.ends_with(value), "{name}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_is_refused_at_load_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spin.toml"),
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"mesh\"\n\
             [[trigger.http]]\nroute = \"/m/...\"\ncomponent = \"m\"\n\
             [component.m]\nsource = \"{}\"\n\
             [component.m.tool.berth.calls.\"http://api.example.com\"]\nretries = 1\n\
             [component.m.tool.berth.calls.\"api.example.com\"]\nretries = 99\n",
            repo("target/wasm32-wasip2/release/misbehave.wasm").display()
        ),
    )
    .unwrap();
    let output = berth_command()
        .args(["check", "--manifest"])
        .arg(dir.path().join("spin.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("tool.berth.calls.\"http://api.example.com\": name a host alone"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tool.berth.calls.\"api.example.com\" retries = 99: use 0 to 10"),
        "{stderr}"
    );
}
