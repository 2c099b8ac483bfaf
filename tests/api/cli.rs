//! The `berth` binary as a user runs it: help, check, build and up, and the errors each
//! gives for a broken app.

use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::helpers::*;

fn run(args: &[&str]) -> Output {
    berth_command().args(args).output().expect("run berth")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn wasm(name: &str) -> PathBuf {
    repo(&format!("target/wasm32-wasip2/release/{name}.wasm"))
}

/// An app in a temp dir: `spin.toml` with `manifest`, `{misbehave}` replaced by the built
/// component's path.
fn app_dir(manifest: &str) -> tempfile::TempDir {
    ensure_built();
    let dir = tempfile::tempdir().unwrap();
    let text = manifest.replace("{misbehave}", &wasm("misbehave").display().to_string());
    std::fs::write(dir.path().join("spin.toml"), text).unwrap();
    dir
}

fn check(dir: &Path) -> Output {
    let manifest = dir.join("spin.toml");
    let data = dir.join(".data");
    run(&[
        "check",
        "--manifest",
        manifest.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ])
}

const HEADER: &str = "spin_manifest_version = 2\n[application]\nname = \"broken\"\n";

#[test]
fn every_command_has_help_with_an_example() {
    for args in [
        &["--help"][..],
        &["up", "--help"],
        &["build", "--help"],
        &["check", "--help"],
    ] {
        let output = run(args);
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("Example"), "{args:?} has no example:\n{text}");
    }
}

#[test]
fn check_accepts_the_shop_and_lists_its_components() {
    ensure_built();
    let data = tempfile::tempdir().unwrap();
    let output = run(&[
        "check",
        "--manifest",
        repo(SHOP).to_str().unwrap(),
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for component in ["order", "payment", "payment-provider", "user"] {
        assert!(stdout.contains(&format!("ok  {component}")), "{stdout}");
    }
    assert!(stdout.contains("fermyon:spin/sqlite@2.0.0"));
    assert!(!stdout.contains("wasmcloud:"), "{stdout}");
    assert!(stdout.contains("4 components checked"));
    assert!(
        !data.path().join("secrets").exists(),
        "a check must not write the generated secret"
    );
}

#[test]
fn a_database_shared_by_two_components_is_refused() {
    let dir = app_dir(&format!(
        "{HEADER}[component.a]\nsource = \"{{misbehave}}\"\nsqlite_databases = [\"shared\"]\n\
         [component.b]\nsource = \"{{misbehave}}\"\nsqlite_databases = [\"shared\"]\n"
    ));
    let output = check(dir.path());
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("sqlite_databases label `shared` is granted to both `a` and `b`"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_is_named_with_its_file() {
    let dir = app_dir(&format!(
        "{HEADER}[component.a]\nsource = \"{{misbehave}}\"\nsqlite_database = [\"typo\"]\n"
    ));
    let output = check(dir.path());
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("sqlite_database"), "{err}");
    assert!(err.contains("spin.toml"), "{err}");
    assert!(err.contains("unknown field"), "{err}");

    let tool = app_dir(&format!(
        "{HEADER}[component.a]\nsource = \"{{misbehave}}\"\n[component.a.tool.berth]\ntimeout = 5\n"
    ));
    let err = stderr(&check(tool.path()));
    assert!(
        err.contains("tool.berth") && err.contains("timeout"),
        "{err}"
    );
}

/// As in Spin, an ungranted import loads with every call denied; `berth check` warns of
/// each, and `refuse_ungranted_imports` makes them errors again.
#[test]
fn berth_check_warns_of_ungranted_imports_and_an_app_setting_refuses_them() {
    let manifest = |setting: &str| {
        format!(
            "{HEADER}{setting}[[trigger.http]]\nroute = \"/...\"\ncomponent = \"bare\"\n\
             [component.bare]\nsource = \"{{misbehave}}\"\nkey_value_stores = [\"cache\"]\n"
        )
    };
    let warned = check(app_dir(&manifest("")).path());
    let stdout = String::from_utf8_lossy(&warned.stdout);
    assert!(warned.status.success(), "{stdout}{}", stderr(&warned));
    for key in ["sqlite_databases", "allowed_outbound_hosts"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("warning: it imports") && l.contains(key)),
            "no warning names {key}:\n{stdout}"
        );
    }
    assert!(!stdout.contains("key_value_stores"), "{stdout}");
    assert!(
        stdout.contains("2 ungranted imports loaded with every call denied"),
        "{stdout}"
    );

    let refused = check(
        app_dir(&manifest(
            "[application.tool.berth]\nrefuse_ungranted_imports = true\n",
        ))
        .path(),
    );
    let err = stderr(&refused);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("imports `fermyon:spin/sqlite@2.0.0`, which [component.bare] does not grant: add `sqlite_databases"),
        "{err}"
    );
    assert!(err.contains("add `allowed_outbound_hosts"), "{err}");
}

#[test]
fn files_that_are_not_http_components_are_refused_with_the_reason() {
    let dir = app_dir(&format!(
        "{HEADER}[[trigger.http]]\nroute = \"/t/...\"\ncomponent = \"text\"\n\
         [[trigger.http]]\nroute = \"/c/...\"\ncomponent = \"core\"\n\
         [[trigger.http]]\nroute = \"/e/...\"\ncomponent = \"empty\"\n\
         [[trigger.http]]\nroute = \"/a/...\"\ncomponent = \"absent\"\n\
         [component.text]\nsource = \"text.wasm\"\n\
         [component.core]\nsource = \"core.wasm\"\n\
         [component.empty]\nsource = \"empty.wasm\"\n\
         [component.absent]\nsource = \"absent.wasm\"\n"
    ));
    std::fs::write(dir.path().join("text.wasm"), "not wasm at all").unwrap();
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.path().join("empty.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    let output = check(dir.path());
    assert!(!output.status.success());
    let err = stderr(&output);
    for expected in [
        "component `text`",
        "is neither a WebAssembly component nor a core module",
        "component `core`",
        "is a core module that cannot be made a component: it has no component type section",
        "component `empty`",
        "not wasi:http/incoming-handler@0.2.x",
        "component `absent`",
        "berth build",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
}

#[test]
fn a_failing_migration_stops_the_load_naming_its_file_and_the_sql_error() {
    let dir = app_dir(&format!(
        "{HEADER}[[trigger.http]]\nroute = \"/...\"\ncomponent = \"misbehave\"\n\
         [component.misbehave]\nsource = \"{{misbehave}}\"\nsqlite_databases = [\"db\"]\n\
         key_value_stores = [\"kv\"]\nallowed_outbound_hosts = [\"http://127.0.0.1:*\"]\n"
    ));
    let migrations = dir.path().join("migrations/misbehave");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(
        migrations.join("0001_ok.sql"),
        "CREATE TABLE t (a INTEGER);",
    )
    .unwrap();
    std::fs::write(
        migrations.join("0002_broken.sql"),
        "INSERT INTO nowhere VALUES (1);",
    )
    .unwrap();
    let output = run(&[
        "up",
        "--manifest",
        dir.path().join("spin.toml").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("0002_broken.sql"), "{err}");
    assert!(err.contains("no such table: nowhere"), "{err}");
}

#[test]
fn build_refuses_an_unknown_component_and_lists_the_known_ones() {
    let output = run(&[
        "build",
        "--manifest",
        repo(SHOP).to_str().unwrap(),
        "shipping",
    ]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("no component `shipping`")
            && err.contains("order, payment, payment-provider, user"),
        "{err}"
    );
}

#[test]
fn up_serves_logs_guest_output_and_stops_cleanly_on_sigterm() {
    ensure_built();
    let data = tempfile::tempdir().unwrap();
    let mut child = berth_command()
        .args(["up", "--manifest"])
        .arg(repo(SANDBOX))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut addresses = Vec::new();
    let mut line = String::new();
    while addresses.len() < 2 && stdout.read_line(&mut line).unwrap() > 0 {
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
            addresses.push(url.to_owned());
        }
        line.clear();
    }
    let [public, admin] = &addresses[..] else {
        panic!("berth up did not print its addresses");
    };

    assert_eq!(status_of(&format!("{admin}/healthz")), 200);
    assert_eq!(status_of(&format!("{public}/misbehave/trap")), 500);
    assert_eq!(status_of(&format!("{public}/misbehave/ok")), 200);
    let token = data.path().join("admin-token");
    let mode = std::fs::metadata(&token).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the admin token is private");

    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(
        status.success(),
        "berth up exits 0 on SIGTERM, got {status}"
    );
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let panic_line = log
        .lines()
        .find(|l| l.contains("asked to trap"))
        .unwrap_or_else(|| panic!("the guest's panic message is not in the log:\n{log}"));
    assert!(panic_line.contains("component=misbehave"), "{panic_line}");
    assert!(panic_line.contains("trace_id="), "{panic_line}");
    assert!(
        !log.contains('\u{1b}'),
        "no terminal colours when the log is not a terminal"
    );
}

fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth up did not stop within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status of a GET, from a test that drives a child process rather than a runtime.
fn status_of(url: &str) -> u16 {
    let url = url.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                reqwest::get(&url)
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            })
    })
    .join()
    .unwrap()
}
