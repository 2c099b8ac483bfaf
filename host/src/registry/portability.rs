//! Whether a component would run on Spin 3.x and SpinKube: it imports only what Spin serves
//! and exports only the HTTP handler Spin's trigger calls. The Spin worlds are vendored in
//! `wit/targets/spin` and built into the binary.
//!
//! [`spin_problems`] compares names the way wasmtime links them, semver-compatibly (`@0.2.6`
//! stands for any `@0.2.x`), so every offending import and export is named at once.
//! [`spin_type_check`] also checks the types, with wit-component's target check, against the
//! WIT sources (the built-in copy loses what that check needs), as the portability test does.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context as _, bail};
use wit_component::DecodedWasm;
use wit_parser::{Resolve, WorldId, WorldItem};

/// `wit/targets/spin` as a binary WIT package, written by `build.rs`.
static SPIN_WORLDS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/spin-target.wasm"));
/// The worlds of `wit/targets/spin/world.wit`, one per WASI 0.2 release.
const WORLDS: [&str; 2] = ["http-trigger", "http-trigger-wasi-0-2-12"];
/// The one export Spin's HTTP trigger calls, semver-compatibly.
const HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// Every import and export of the component `wasm` that stands in the way of running it on
/// Spin, worded for the person who has to change it; empty when it would run.
pub fn spin_problems(wasm: &[u8]) -> anyhow::Result<Vec<String>> {
    // Spin makes a core module a component as berth does: judge the component.
    let component;
    let wasm = if wasmtime::wasmparser::Parser::is_core_wasm(wasm) {
        component = crate::componentize::componentize(wasm)?;
        &component[..]
    } else {
        wasm
    };
    if !wasmtime::wasmparser::Parser::is_component(wasm) {
        bail!("it is not a WebAssembly component");
    }
    let DecodedWasm::Component(resolve, world) =
        wit_component::decode(wasm).context("cannot read the component's interfaces")?
    else {
        bail!("it is a WIT package, not a component");
    };
    let (target, worlds) = spin_worlds()?;
    let served: BTreeSet<String> = worlds
        .iter()
        .flat_map(|w| names(&target, *w, Side::Imports))
        .map(|name| compatible(&name))
        .collect();
    let mut problems = Vec::new();
    for import in names(&resolve, world, Side::Imports) {
        if !served.contains(&compatible(&import)) {
            problems.push(format!("imports {import}, which Spin does not serve"));
        }
    }
    let exports = names(&resolve, world, Side::Exports);
    if !exports.iter().any(|e| compatible(e) == HANDLER) {
        problems.push(
            "does not export wasi:http/incoming-handler@0.2.x, the handler Spin's HTTP trigger calls"
                .to_owned(),
        );
    }
    for export in exports.iter().filter(|e| compatible(e) != HANDLER) {
        problems.push(format!("exports {export}, which no Spin trigger calls"));
    }
    Ok(problems)
}

/// Whether the component `wasm` type-checks against one of the Spin worlds read from their
/// WIT sources in `dir` (`wit/targets/spin`), with the older WASI imports merged into the
/// newer ones as wasmtime links them; the error is the first world's.
pub fn spin_type_check(dir: &Path, wasm: &[u8]) -> anyhow::Result<()> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(dir)?;
    let mut first_error = None;
    for name in WORLDS {
        let world = resolve.select_world(&[package], Some(name))?;
        resolve.merge_world_imports_based_on_semver(world)?;
        match wit_component::targets(&resolve, world, wasm) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert(e.context(format!("against Spin's world `{name}`")));
            }
        }
    }
    Err(first_error.unwrap_or_else(|| anyhow::anyhow!("no Spin world to check against")))
}

/// The vendored Spin worlds, as built into the binary.
fn spin_worlds() -> anyhow::Result<(Resolve, Vec<WorldId>)> {
    let DecodedWasm::WitPackage(resolve, package) =
        wit_component::decode(SPIN_WORLDS).context("the built-in Spin worlds")?
    else {
        bail!("the built-in Spin worlds are not a WIT package");
    };
    let mut worlds = Vec::new();
    for name in WORLDS {
        worlds.push(resolve.select_world(&[package], Some(name))?);
    }
    Ok((resolve, worlds))
}

#[derive(Clone, Copy)]
enum Side {
    Imports,
    Exports,
}

/// The names of a world's imported or exported interfaces and functions.
fn names(resolve: &Resolve, world: WorldId, side: Side) -> Vec<String> {
    let world = &resolve.worlds[world];
    let items = match side {
        Side::Imports => &world.imports,
        Side::Exports => &world.exports,
    };
    items
        .iter()
        .filter(|(_, item)| !matches!(item, WorldItem::Type { .. }))
        .map(|(key, _)| resolve.name_world_key(key))
        .collect()
}

/// `name` with its version cut to what semver keeps compatible: `wasi:io/poll@0.2.6` is
/// `wasi:io/poll@0.2`, `fermyon:spin/sqlite@2.0.0` is `fermyon:spin/sqlite@2`.
fn compatible(name: &str) -> String {
    let Some((interface, version)) = name.split_once('@') else {
        return name.to_owned();
    };
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some("0"), Some(minor)) => format!("{interface}@0.{minor}"),
        (Some(major), _) => format!("{interface}@{major}"),
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_semver_keeps_them_compatible() {
        assert_eq!(compatible("wasi:io/poll@0.2.6"), "wasi:io/poll@0.2");
        assert_eq!(compatible("wasi:io/poll@0.2.12"), "wasi:io/poll@0.2");
        assert_eq!(
            compatible("fermyon:spin/sqlite@2.0.0"),
            "fermyon:spin/sqlite@2"
        );
        assert_eq!(
            compatible("wasi:http/handler@0.3.0-rc-2026-01-06"),
            "wasi:http/handler@0.3"
        );
        assert_eq!(compatible("plain"), "plain");
    }

    #[test]
    fn the_built_in_worlds_serve_wasi_http_and_spin_and_not_wasmcloud() {
        let (resolve, worlds) = spin_worlds().unwrap();
        let imports: BTreeSet<String> = worlds
            .iter()
            .flat_map(|w| names(&resolve, *w, Side::Imports))
            .map(|n| compatible(&n))
            .collect();
        for served in [
            "wasi:http/outgoing-handler@0.2",
            "wasi:cli/environment@0.2",
            "fermyon:spin/sqlite@2",
            "fermyon:spin/key-value@2",
            "fermyon:spin/variables@2",
        ] {
            assert!(
                imports.contains(served),
                "{served} missing from {imports:?}"
            );
        }
        assert!(!imports.iter().any(|i| i.starts_with("wasmcloud:")));
    }

    #[test]
    fn a_core_module_without_a_component_type_cannot_be_judged() {
        // The smallest core module: the magic number and version.
        let error = spin_problems(b"\0asm\x01\0\0\0").unwrap_err();
        assert!(
            error.to_string().contains("no component type section"),
            "{error}"
        );
        let error = spin_problems(b"not wasm").unwrap_err();
        assert!(
            error.to_string().contains("not a WebAssembly component"),
            "{error}"
        );
    }
}
