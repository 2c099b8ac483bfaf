//! `berth up` as a process: `--watch` rebuilding and swapping one component, and SIGTERM
//! letting open requests finish before a clean exit.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use sha2::Digest as _;

use crate::helpers::*;

fn short_digest(wasm: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(wasm))[..12].to_owned()
}

/// An app whose one component is "built" by copying `next.wasm` over `app.wasm`, unless
/// `src/broken` exists.
fn watched_app(dir: &Path) {
    ensure_built();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/a.txt"), "one").unwrap();
    std::fs::write(dir.join("app.wasm"), misbehave_variant(0)).unwrap();
    std::fs::write(dir.join("next.wasm"), misbehave_variant(1)).unwrap();
    std::fs::write(
        dir.join("spin.toml"),
        "spin_manifest_version = 2\n[application]\nname = \"watched\"\n\
         [[trigger.http]]\nroute = \"/bystander/...\"\ncomponent = \"bystander\"\n\
         [component.bystander]\nsource = \"app.wasm\"\nsqlite_databases = [\"b\"]\n\
         key_value_stores = [\"k\"]\nallowed_outbound_hosts = [\"http://127.0.0.1:*\"]\n\
         [component.bystander.build]\n\
         command = \"test ! -e src/broken && cp next.wasm app.wasm\"\nwatch = [\"src/*.txt\"]\n",
    )
    .unwrap();
}

struct Up {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn up(dir: &Path, extra: &[&str]) -> Up {
    let (port, admin) = (free_port(), free_port());
    let log = dir.join("berth.log");
    let child = berth_command()
        .args(["up", "--manifest"])
        .arg(dir.join("spin.toml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until_ready(admin).await;
    Up {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
    }
}

async fn serving(base: &str) -> String {
    let r = reqwest::get(format!("{base}/bystander/ok")).await.unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["x-berth-version"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_rebuilds_and_swaps_only_the_changed_component_and_survives_a_failed_build() {
    let dir = tempfile::tempdir().unwrap();
    watched_app(dir.path());
    let host = up(dir.path(), &["--watch"]).await;
    let first = short_digest(&misbehave_variant(0));
    assert_eq!(serving(&host.base).await, first);

    std::fs::write(dir.path().join("src/broken"), "").unwrap();
    std::fs::write(dir.path().join("src/a.txt"), "two").unwrap();
    eventually(
        Duration::from_secs(20),
        "the failed build reported",
        || async {
            let log = std::fs::read_to_string(&host.log).unwrap_or_default();
            log.contains("build failed").then_some(())
        },
    )
    .await;
    assert_eq!(
        serving(&host.base).await,
        first,
        "a failed build keeps the old version"
    );

    std::fs::remove_file(dir.path().join("src/broken")).unwrap();
    std::fs::write(dir.path().join("src/a.txt"), "three").unwrap();
    let next = short_digest(&misbehave_variant(1));
    eventually(
        Duration::from_secs(20),
        "the rebuilt version serving",
        || async { (serving(&host.base).await == next).then_some(()) },
    )
    .await;

    // A manifest edit beyond routes is refused with what changed; the routes keep serving.
    let manifest = dir.path().join("spin.toml");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let grant = original.replace(
        "key_value_stores = [\"k\"]",
        "key_value_stores = [\"k\", \"k2\"]",
    );
    std::fs::write(&manifest, grant).unwrap();
    eventually(
        Duration::from_secs(20),
        "the refused edit reported",
        || async {
            let log = std::fs::read_to_string(&host.log).unwrap_or_default();
            log.contains("changed beyond routes").then_some(())
        },
    )
    .await;
    let log = std::fs::read_to_string(&host.log).unwrap();
    assert!(log.contains("[component.bystander]"), "{log}");
    assert_eq!(serving(&host.base).await, next);
    // A route edit applies in place.
    let renamed = original.replace("route = \"/bystander/...\"", "route = \"/renamed/...\"");
    std::fs::write(&manifest, renamed).unwrap();
    let status = |path: &'static str| {
        let base = host.base.clone();
        async move {
            reqwest::get(format!("{base}{path}"))
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    eventually(Duration::from_secs(20), "the renamed route", || async {
        (status("/renamed/ok").await == 200).then_some(())
    })
    .await;
    assert_eq!(status("/bystander/ok").await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_requests_finish_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    watched_app(dir.path());
    let mut host = up(dir.path(), &[]).await;
    let slow = tokio::spawn(reqwest::get(format!(
        "{}/bystander/sleep?ms=1500",
        host.base
    )));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &host.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let response = slow.await.unwrap().expect("the open request is answered");
    assert_eq!(response.status(), 200);
    let status = tokio::task::spawn_blocking(move || {
        let status = host.child.wait().unwrap();
        (status, host)
    })
    .await
    .unwrap()
    .0;
    assert_eq!(status.code(), Some(0));
}
