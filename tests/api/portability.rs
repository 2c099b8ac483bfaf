//! The shop's components run unchanged on Spin and SpinKube: they import only WASI, wasi:http
//! and fermyon:spin@2.0.0, and export only wasi:http/incoming-handler, checked against the
//! Spin worlds vendored in `wit/targets/spin`. A component written for wasmCloud is named
//! with what stands in its way.

use std::process::Output;

use crate::helpers::*;

fn wasm(name: &str) -> Vec<u8> {
    ensure_built();
    std::fs::read(repo(&format!("target/wasm32-wasip2/release/{name}.wasm"))).unwrap()
}

fn check_for_spin(manifest: &str) -> (Output, String) {
    ensure_built();
    let data = tempfile::tempdir().unwrap();
    let output = berth_command()
        .args(["check", "--target", "spin", "--manifest"])
        .arg(repo(manifest))
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

#[test]
fn every_shop_component_imports_only_what_spin_serves() {
    let spin = repo("wit/targets/spin");
    for name in ["user", "order", "payment", "payment_provider"] {
        let wasm = wasm(name);
        let problems = berth::registry::portability::spin_problems(&wasm).unwrap();
        assert!(
            problems.is_empty(),
            "{name} would not run on Spin: {problems:#?}"
        );
        // And the types of what it imports and exports are Spin's.
        if let Err(e) = berth::registry::portability::spin_type_check(&spin, &wasm) {
            panic!("{name} does not type-check for Spin: {e:#}");
        }
    }
    // The check can fail: a wasmCloud component does not type-check for Spin.
    assert!(berth::registry::portability::spin_type_check(&spin, &wasm("events")).is_err());
}

#[test]
fn a_wasmcloud_component_is_named_with_every_import_and_export_in_the_way() {
    let problems = berth::registry::portability::spin_problems(&wasm("events")).unwrap();
    let all = problems.join("\n");
    assert!(
        all.contains("imports wasmcloud:messaging/consumer@0.2.0, which Spin does not serve"),
        "{all}"
    );
    assert!(
        all.contains("exports wasmcloud:messaging/handler@0.2.0, which no Spin trigger calls"),
        "{all}"
    );
}

#[test]
fn check_target_spin_says_yes_for_the_shop_and_no_with_reasons_for_wasmcloud() {
    let (shop, stdout) = check_for_spin(SHOP);
    assert!(
        shop.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&shop.stderr)
    );
    assert_eq!(stdout.matches("runs on Spin: yes").count(), 4, "{stdout}");

    let (events, stdout) = check_for_spin(EVENTS);
    assert!(!events.status.success(), "{stdout}");
    assert!(stdout.contains("runs on Spin: no"), "{stdout}");
    assert!(
        stdout.contains("wasmcloud:messaging/handler@0.2.0"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&events.stderr).contains("would not run on Spin"),
        "{}",
        String::from_utf8_lossy(&events.stderr)
    );
}
