//! Hot upgrade: deploy, canary, promote and roll back one component while clients keep
//! calling it, and every refusal leaving the serving version untouched.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::helpers::*;

fn misbehave() -> Vec<u8> {
    ensure_built();
    std::fs::read(repo("target/wasm32-wasip2/release/misbehave.wasm")).unwrap()
}

impl TestApp {
    pub(crate) async fn deploy(&self, component: &str, wasm: Vec<u8>, query: &str) -> Reply {
        Reply::from(
            self.client
                .post(format!(
                    "{}/admin/v1/components/{component}/versions{query}",
                    self.admin
                ))
                .bearer_auth(&self.admin_token)
                .body(wasm)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// One component's entry of `GET /admin/v1/components`.
    async fn component_status(&self, id: &str) -> serde_json::Value {
        let status = self.admin_get("/admin/v1/components").await;
        let all = status.json.as_array().unwrap().clone();
        all.into_iter().find(|c| c["id"] == id).unwrap()
    }

    pub(crate) async fn admin_post(&self, path: &str) -> Reply {
        Reply::from(
            self.client
                .post(format!("{}{path}", self.admin))
                .bearer_auth(&self.admin_token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The short digest of the version that answers `/bystander/ok`.
    pub(crate) async fn serving(&self) -> String {
        let reply = self.get("/bystander/ok", None).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.header("x-berth-version").to_owned()
    }
}

pub(crate) fn short(digest: &str) -> String {
    digest.trim_start_matches("sha256:")[..12].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_deploys_under_steady_load_fail_no_request() {
    let app = Arc::new(spawn(SANDBOX).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (app, stop, served, failed) =
                (app.clone(), stop.clone(), served.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let ok = app
                        .client
                        .get(app.url("/bystander/ok"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    let counter = if ok { &served } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut last = String::new();
    for n in 0..10 {
        let deployed = app.deploy("bystander", misbehave_variant(n), "").await;
        assert_eq!(deployed.status, 201, "{}", deployed.text);
        last = deployed.json["digest"].as_str().unwrap().to_owned();
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(served.load(Ordering::Relaxed) > 10);
    assert_eq!(app.serving().await, short(&last));

    // /metrics is open, like /healthz, and says the same.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("berth_deploys_total{component=\"bystander\",outcome=\"deployed\"} 10"),
        "{text}"
    );
    let ok_line = format!(
        "berth_requests_total{{component=\"bystander\",version=\"{}\",route=\"/bystander/...\",status_class=\"2xx\"}}",
        short(&last)
    );
    assert!(text.contains(&ok_line), "{text}");
    assert!(!text.contains("status_class=\"5xx\""), "{text}");
    assert!(text.contains("berth_request_duration_seconds_bucket{component=\"bystander\""));
    assert!(text.contains("berth_concurrency_limit{component=\"bystander\"} 100"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_finishes_on_the_version_it_started_on() {
    let app = spawn(SANDBOX).await;
    let before = app.serving().await;
    let slow = app.get("/bystander/sleep?ms=1500", None);
    let swap = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.deploy("bystander", misbehave_variant(1), "").await
    };
    let (slow, deployed) = tokio::join!(slow, swap);
    assert_eq!(deployed.status, 201, "{}", deployed.text);
    assert_eq!(slow.status, 200);
    assert_eq!(slow.header("x-berth-version"), before);
    assert_eq!(
        app.serving().await,
        short(deployed.json["digest"].as_str().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_takes_its_share_then_promote_and_rollback_move_all_traffic() {
    let app = spawn(SANDBOX).await;
    let stable = app.serving().await;
    let canary = app
        .deploy("bystander", misbehave_variant(7), "?canary=30")
        .await;
    assert_eq!(canary.status, 201, "{}", canary.text);
    let canary = short(canary.json["digest"].as_str().unwrap());
    let mut on_canary = 0;
    for _ in 0..400 {
        let v = app.serving().await;
        assert!(v == stable || v == canary, "{v}");
        on_canary += usize::from(v == canary);
    }
    // 30 % of 400 is 120, with a standard deviation of about 9: allow five of them.
    assert!(
        (75..=165).contains(&on_canary),
        "{on_canary} of 400 on the canary"
    );
    let bystander = app.component_status("bystander").await;
    assert_eq!(bystander["versions"][0]["trafficPercent"], 70);
    assert_eq!(bystander["versions"][1]["state"], "canary");
    // 401 requests in the last minute (one learned the stable version), none failed.
    let rate = |i: usize| {
        bystander["versions"][i]["requestsPerSecond"]
            .as_f64()
            .unwrap()
    };
    assert!(
        ((rate(0) + rate(1)) * 60.0 - 401.0).abs() < 0.5,
        "{bystander}"
    );
    assert!(
        (rate(1) * 60.0 - on_canary as f64).abs() < 0.5,
        "{bystander}"
    );
    assert_eq!(bystander["versions"][1]["errorsPerSecond"], 0.0);

    assert_eq!(
        app.admin_post("/admin/v1/components/bystander/promote")
            .await
            .status,
        200
    );
    for _ in 0..20 {
        assert_eq!(app.serving().await, canary);
    }
    assert_eq!(
        app.admin_post("/admin/v1/components/bystander/rollback")
            .await
            .status,
        200
    );
    for _ in 0..20 {
        assert_eq!(app.serving().await, stable);
    }
    let nothing = app
        .admin_post("/admin/v1/components/bystander/promote")
        .await;
    assert_eq!(nothing.status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_upload_is_refused_with_the_reason_and_the_current_version_keeps_serving() {
    let app = spawn(SANDBOX).await;
    let serving = app.serving().await;
    let not_wasm = app.deploy("bystander", b"not wasm".to_vec(), "").await;
    assert_eq!(not_wasm.status, 400);
    assert!(
        not_wasm
            .text
            .contains("neither a WebAssembly component nor a core module"),
        "{}",
        not_wasm.text
    );
    let core = app
        .deploy("bystander", b"\0asm\x01\0\0\0".to_vec(), "")
        .await;
    assert_eq!(core.status, 400);
    assert!(
        core.text.contains("no component type section"),
        "{}",
        core.text
    );
    let unserved = app
        .deploy(
            "bystander",
            component_importing("fermyon:spin/redis@2.0.0"),
            "",
        )
        .await;
    assert_eq!(unserved.status, 422, "{}", unserved.text);
    assert!(
        unserved
            .text
            .contains("imports `fermyon:spin/redis@2.0.0`: berth does not provide it"),
        "{}",
        unserved.text
    );
    // An empty component: valid, but it exports no HTTP handler for the routes to reach.
    let wrong_world = app
        .deploy("bystander", b"\0asm\x0d\0\x01\0".to_vec(), "")
        .await;
    assert_eq!(wrong_world.status, 422, "{}", wrong_world.text);
    assert!(
        wrong_world.text.contains("wasi:http/incoming-handler"),
        "{}",
        wrong_world.text
    );
    let unknown = app.deploy("nobody", misbehave(), "").await;
    assert_eq!(unknown.status, 404);
    let bad_share = app.deploy("bystander", misbehave(), "?canary=150").await;
    assert_eq!(bad_share.status, 400);
    assert_eq!(app.serving().await, serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_migration_refuses_the_deploy() {
    ensure_built();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("migrations/bystander")).unwrap();
    std::fs::write(
        dir.path().join("migrations/bystander/0001_init.sql"),
        "CREATE TABLE notes (id INTEGER PRIMARY KEY);",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("spin.toml"),
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"m\"\n\
             [[trigger.http]]\nroute = \"/bystander/...\"\ncomponent = \"bystander\"\n\
             [component.bystander]\nsource = \"{}\"\nsqlite_databases = [\"m\"]\n\
             key_value_stores = [\"k\"]\nallowed_outbound_hosts = [\"http://127.0.0.1:*\"]\n",
            repo("target/wasm32-wasip2/release/misbehave.wasm").display()
        ),
    )
    .unwrap();
    let manifest = dir.path().join("spin.toml");
    let app = spawn_with(
        manifest.to_str().unwrap(),
        None,
        tempfile::tempdir().unwrap(),
    )
    .await;
    let serving = app.serving().await;
    std::fs::write(
        dir.path().join("migrations/bystander/0002_broken.sql"),
        "ALTER TABLE missing ADD COLUMN x TEXT;",
    )
    .unwrap();
    let refused = app.deploy("bystander", misbehave_variant(2), "").await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.text.contains("0002_broken.sql"), "{}", refused.text);
    assert_eq!(app.serving().await, serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_versions_survive_a_restart() {
    let app = spawn(SANDBOX).await;
    let deployed = app.deploy("bystander", misbehave_variant(3), "").await;
    assert_eq!(deployed.status, 201);
    let digest = short(deployed.json["digest"].as_str().unwrap());
    let canary = app
        .deploy("bystander", misbehave_variant(4), "?canary=20")
        .await;
    assert_eq!(canary.status, 201);
    let kept = std::fs::read_dir(app.data_dir.path().join("deployments"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "wasm")
        })
        .count();
    assert_eq!(
        kept, 2,
        "only the wasm of deployed versions still in use is kept"
    );
    let data_dir = app.stop().await;
    let app = spawn_with(SANDBOX, None, data_dir).await;
    let bystander = app.component_status("bystander").await;
    assert_eq!(bystander["source"], "deployed", "{bystander}");
    assert_eq!(
        short(bystander["versions"][0]["digest"].as_str().unwrap()),
        digest
    );
    assert_eq!(bystander["versions"][1]["state"], "canary");
    assert_eq!(bystander["versions"][1]["trafficPercent"], 20);
    assert_eq!(bystander["versions"][2]["state"], "previous");
    // Rolling back twice lands on the manifest's file again.
    assert_eq!(
        app.admin_post("/admin/v1/components/bystander/rollback")
            .await
            .status,
        200
    );
    assert_eq!(
        app.admin_post("/admin/v1/components/bystander/rollback")
            .await
            .status,
        200
    );
    let bystander = app.component_status("bystander").await;
    assert_eq!(bystander["source"], "manifest", "{bystander}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_deploys_promotes_and_rolls_back() {
    let app = spawn(SANDBOX).await;
    let file = app.data_dir.path().join("v9.wasm");
    std::fs::write(&file, misbehave_variant(9)).unwrap();
    let run = |args: &[&str]| {
        let output = berth_command()
            .args(args)
            .args(["--admin", &app.admin, "--token", &app.admin_token])
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, out) = run(&[
        "deploy",
        "bystander",
        file.to_str().unwrap(),
        "--canary",
        "10",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("to 10 % of its traffic"), "{out}");
    let (ok, out) = run(&["promote", "bystander"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["status"]);
    assert!(ok && out.contains("previous"), "{out}");
    let (ok, out) = run(&["rollback", "bystander"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["promote", "bystander"]);
    assert!(!ok && out.contains("no canary"), "{out}");
    let (ok, out) = run(&["deploy", "bystander", "/nonexistent.wasm"]);
    assert!(!ok && out.contains("cannot read"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_shares_outside_1_to_99_are_refused_by_the_api_and_the_cli() {
    let app = spawn(SANDBOX).await;
    let serving = app.serving().await;
    for share in ["0", "100", "101", "-1", "10.5", "ten", ""] {
        let reply = app
            .deploy("bystander", misbehave(), &format!("?canary={share}"))
            .await;
        assert_eq!(reply.status, 400, "canary={share}: {}", reply.text);
        assert_eq!(reply.error_code(), "BAD_CANARY");
        assert!(reply.text.contains("from 1 to 99"), "{}", reply.text);
    }
    assert_eq!(app.serving().await, serving);
    let file = app.data_dir.path().join("v.wasm");
    std::fs::write(&file, misbehave()).unwrap();
    for share in ["0", "100"] {
        let output = berth_command()
            .args([
                "deploy",
                "bystander",
                file.to_str().unwrap(),
                "--canary",
                share,
            ])
            .args(["--admin", &app.admin, "--token", &app.admin_token])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "--canary {share} was accepted");
        assert!(err.contains("from 1 to 99"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_limit_is_413_declared_or_streamed_and_nothing_changes() {
    let app = spawn(LIMITS).await;
    let before = app.admin_get("/admin/v1/components").await;
    // max_upload_bytes = 2 MiB in tests/apps/limits.toml.
    let big = vec![0u8; 3 * 1024 * 1024];
    let declared = app.deploy("worker", big.clone(), "").await;
    assert_eq!(declared.status, 413, "{}", declared.text);
    assert_eq!(declared.error_code(), "UPLOAD_TOO_LARGE");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
    let streamed = Reply::from(
        app.client
            .post(format!("{}/admin/v1/components/worker/versions", app.admin))
            .bearer_auth(&app.admin_token)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(streamed.status, 413, "{}", streamed.text);
    assert_eq!(
        before.json,
        app.admin_get("/admin/v1/components").await.json
    );
    let uploads = app.data_dir.path().join("deployments/uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "refused uploads left files behind: {left:?}"
    );
    let fits = app.deploy("worker", misbehave_variant(11), "").await;
    assert_eq!(fits.status, 201, "{}", fits.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_stalls_is_408_after_the_upload_timeout() {
    let app = spawn(LIMITS).await;
    let token = format!("authorization: Bearer {}", app.admin_token);
    let mut request = http_request(
        "POST",
        "/admin/v1/components/worker/versions",
        &[&token],
        b"",
    );
    // Declare a megabyte, send a few bytes, then nothing.
    let text = String::from_utf8(request.clone()).unwrap();
    request = text
        .replace("content-length: 0", "content-length: 1000000")
        .into_bytes();
    request.extend_from_slice(b"\0asm");
    let reply = raw_request(&app.admin, &request, Duration::from_secs(15)).await;
    assert_eq!(reply.status(), Some(408), "{}", reply.text);
    assert!(reply.text.contains("UPLOAD_TIMEOUT"), "{}", reply.text);
}

/// A host on the embedded bus keeps its deployments to itself: there is no fleet to show.
#[tokio::test]
async fn a_host_on_its_own_reports_no_fleet() {
    let app = spawn(SANDBOX).await;
    let reply = app.admin_get("/admin/v1/fleet").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json, serde_json::json!({ "fleet": null }));
}
