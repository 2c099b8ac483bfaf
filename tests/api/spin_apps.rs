//! Spin apps as users bring them run on berth as they run on Spin: core modules are made
//! components when they load (and only once: the artifact is cached under the module's
//! digest), and a component whose manifest grants nothing loads, with each ungranted call
//! denied with Spin's error and the log naming the key that would grant it.

use sha2::Digest as _;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_module_and_a_wasi_preview1_module_answer_over_http() {
    let app = spawn(SPIN_APPS).await;
    for (route, kind) in [
        ("core-module", "a core module"),
        ("preview1", "a WASI preview 1 module"),
    ] {
        let hello = app.get(&format!("/{route}/hello"), None).await;
        assert_eq!(hello.status, 200, "{route}: {}", hello.text);
        assert_eq!(hello.text, format!("hello from {kind}"));
        let variable = app.get(&format!("/{route}/variable"), None).await;
        assert_eq!(variable.text, "variables reach modules too", "{route}");
        // The module's grants hold as a component's do: its own store, kept between calls.
        for count in ["1", "2"] {
            let kv = app.get(&format!("/{route}/kv?store={route}"), None).await;
            assert_eq!((kv.status, kv.text.as_str()), (200, count), "{route}");
        }
        let other = app.get(&format!("/{route}/kv?store=elsewhere"), None).await;
        assert_eq!(
            (other.status, other.text.as_str()),
            (403, "Error::AccessDenied")
        );
    }
    // Environment, clocks and stdout through wasmtime's preview 1 adapter.
    let wasi = app.get("/preview1/wasi", None).await;
    assert_eq!(wasi.status, 200, "{}", wasi.text);
    let (greeting, seconds) = wasi.text.split_once("; ").unwrap();
    assert_eq!(greeting, "hello through the preview 1 adapter");
    let seconds: u64 = seconds.trim_end_matches(" s since 1970").parse().unwrap();
    assert!(seconds > 1_700_000_000, "{}", wasi.text);
    app.stop().await;

    // Made a component once: the compiled artifact is cached under each module's digest.
    for file in [
        "wasm32-unknown-unknown/release/core_module.wasm",
        "wasm32-wasip1/release/preview1_module.wasm",
    ] {
        let module = std::fs::read(repo(&format!("target/{file}"))).unwrap();
        assert!(
            wasmtime::wasmparser::Parser::is_core_wasm(&module),
            "{file} is not a core module"
        );
        let digest = hex::encode(sha2::Sha256::digest(&module));
        let cached = std::fs::read_dir(cache_dir())
            .unwrap()
            .filter_map(Result::ok)
            .any(|f| f.file_name().to_string_lossy().starts_with(&digest));
        assert!(cached, "no artifact for {file} ({digest})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_the_manifest_does_not_grant_are_denied_with_spins_errors_and_logged() {
    ensure_built();
    let data = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let host = Process::new(
        berth_up(SPIN_APPS, data.path(), port, admin)
            .spawn()
            .expect("start berth up"),
    );
    wait_until_ready(admin).await;
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let request = client.get(format!("http://127.0.0.1:{port}/no-grants/{path}"));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(
        get("other-database").await,
        (403, "Error::AccessDenied".into())
    );
    assert_eq!(
        get("kv?store=cache").await,
        (403, "Error::AccessDenied".into())
    );
    let (status, text) = get("outbound?url=http://127.0.0.1:9/").await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("HttpRequestDenied"), "{text}");
    // What needs no grant still works beside them.
    assert_eq!(get("ok").await, (200, "ok".into()));

    let log = host.stop();
    for expected in [
        // When it loads: each ungranted import and the key that opens it.
        "imports `fermyon:spin/sqlite@2.0.0`, which [component.no-grants] does not grant: add `sqlite_databases",
        "imports `fermyon:spin/key-value@2.0.0`, which [component.no-grants] does not grant: add `key_value_stores",
        "which [component.no-grants] does not grant: add `allowed_outbound_hosts",
        // When it calls: what was asked for and how to allow it.
        r#"sqlite_databases = ["users"]"#,
        r#"key_value_stores = ["cache"]"#,
        r#"add "http://127.0.0.1:9" to allowed_outbound_hosts of [component.no-grants]"#,
    ] {
        assert!(log.contains(expected), "missing `{expected}` in:\n{log}");
    }
}
