//! What the benchmark runs: release (or, for --smoke, debug) builds of berth and the native
//! baselines, the wasm components, and the outside tools (wrk, wasmtime-cli, Node.js),
//! installed or reported missing with the command that installs them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::Settings;

/// The wasmtime-cli release `wasmtime serve` is measured with: the one berth links.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// A source tree and the berth built from it, with its components built in place.
pub struct Checkout {
    pub root: PathBuf,
    pub berth: PathBuf,
}

/// Everything built and found, ready to start.
pub struct Kit {
    /// This repository.
    pub checkout: Checkout,
    /// An earlier checkout (`--against`), measured side by side where a scenario supports it.
    pub before: Option<Checkout>,
    pub native_hello: PathBuf,
    /// `bench/baselines/rust-user-service`: the user service as a native axum server.
    pub native_user_service: PathBuf,
    pub wrk: PathBuf,
    pub hello_wasm: PathBuf,
    pub misbehave_wasm: PathBuf,
    /// `wasmtime` 48.0.8, or why it is not there.
    pub wasmtime: Result<PathBuf, String>,
    /// The Node.js baseline's directory with its dependencies installed, or why not.
    pub node_service: Result<PathBuf, String>,
}

pub fn repo_root() -> PathBuf {
    // bench/harness → the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub async fn prepare(
    root: &Path,
    against: Option<&Path>,
    settings: &Settings,
    selected: impl Fn(&str) -> bool,
) -> anyhow::Result<Kit> {
    let wrk = which("wrk").context(
        "wrk is not installed: `apt-get install -y wrk` (the load generator for every scenario)",
    )?;
    // First, and copied out: both trees may build into one CARGO_TARGET_DIR, where this
    // repository's build would overwrite the earlier binary.
    let before = match against {
        Some(dir) => Some(earlier(dir, settings).await?),
        None => None,
    };
    step("building berth and the native baselines");
    let bins = cargo_build(
        root,
        None,
        !settings.smoke,
        &["berth", "native-hello", "rust-user-service"],
    )
    .await?;
    let berth = bins
        .get("berth")
        .cloned()
        .context("cargo built no `berth` binary")?;
    let native_hello = bins
        .get("native-hello")
        .cloned()
        .context("cargo built no `native-hello` binary")?;
    let native_user_service = bins
        .get("rust-user-service")
        .cloned()
        .context("cargo built no `rust-user-service` binary")?;
    for manifest in [
        "bench/hello.toml",
        "bench/chain.toml",
        "spin.toml",
        "tests/apps/sandbox.toml",
    ] {
        build_components(&berth, root, manifest).await?;
    }
    let wasm = root.join("target/wasm32-wasip2/release");
    Ok(Kit {
        checkout: Checkout {
            root: root.to_owned(),
            berth,
        },
        before,
        native_hello,
        native_user_service,
        wrk,
        hello_wasm: wasm.join("bench_hello.wasm"),
        misbehave_wasm: wasm.join("misbehave.wasm"),
        // Installed only for the scenarios that run them: wasmtime-cli takes ten minutes.
        wasmtime: if selected("hello") {
            wasmtime(root, settings.smoke).await
        } else {
            Err("not needed by the selected scenarios".into())
        },
        node_service: if selected("real") {
            node_service(root).await
        } else {
            Err("not needed by the selected scenarios".into())
        },
    })
}

/// Builds berth and the shop in the checkout at `dir` (an earlier commit, for instance from
/// `git worktree add`), and keeps the binary under `<dir>/target/berth-bench/`.
async fn earlier(dir: &Path, settings: &Settings) -> anyhow::Result<Checkout> {
    let root =
        std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    anyhow::ensure!(
        root.join("host/Cargo.toml").is_file() && root.join("spin.toml").is_file(),
        "--against {}: not a berth checkout (no host/Cargo.toml or spin.toml there)",
        root.display()
    );
    step(&format!("building berth in {}", root.display()));
    // In its own target dir: both checkouts' `berth` have the same package id, so in a
    // shared CARGO_TARGET_DIR cargo may take one's binary as the other's, up to date.
    let target = root.join("target");
    let built = cargo_build(&root, Some(&target), !settings.smoke, &["berth"])
        .await?
        .remove("berth")
        .context("cargo built no `berth` binary in the --against checkout")?;
    let kept = root.join("target/berth-bench/berth");
    std::fs::create_dir_all(kept.parent().unwrap_or(&root))
        .with_context(|| format!("cannot create {}", kept.display()))?;
    std::fs::copy(&built, &kept)
        .with_context(|| format!("cannot copy {} to {}", built.display(), kept.display()))?;
    build_components(&kept, &root, "spin.toml").await?;
    Ok(Checkout { root, berth: kept })
}

async fn build_components(berth: &Path, root: &Path, manifest: &str) -> anyhow::Result<()> {
    step(&format!(
        "building the components of {}",
        root.join(manifest).display()
    ));
    let status = Command::new(berth)
        .current_dir(root)
        .args(["build", "--manifest", manifest])
        .status()
        .await
        .context("cannot run `berth build`")?;
    anyhow::ensure!(
        status.success(),
        "`berth build --manifest {manifest}` failed in {}",
        root.display()
    );
    Ok(())
}

/// Prints where the harness is, on stderr, so long builds and runs show progress.
pub fn step(what: &str) {
    eprintln!("==> {what}");
}

/// Builds `packages` and returns their executables by name, in `target_dir` or else
/// wherever CARGO_TARGET_DIR is.
async fn cargo_build(
    root: &Path,
    target_dir: Option<&Path>,
    release: bool,
    packages: &[&str],
) -> anyhow::Result<HashMap<String, PathBuf>> {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(root)
        .args(["build", "--message-format=json-render-diagnostics"]);
    if let Some(dir) = target_dir {
        command.env("CARGO_TARGET_DIR", dir);
    }
    if release {
        command.arg("--release");
    }
    for package in packages {
        command.args(["-p", package]);
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!("cargo build of {} failed (see above)", packages.join(", "));
    }
    let mut bins = HashMap::new();
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact"
            && let (Some(name), Some(path)) = (
                message["target"]["name"].as_str(),
                message["executable"].as_str(),
            )
        {
            bins.insert(name.to_owned(), PathBuf::from(path));
        }
    }
    Ok(bins)
}

/// `wasmtime` 48.0.8 from PATH or cargo's bin dir; installed with `cargo install` in a full
/// run (about ten minutes), skipped in a smoke run.
async fn wasmtime(root: &Path, smoke: bool) -> Result<PathBuf, String> {
    let installed = cargo_home().map(|home| home.join("bin/wasmtime"));
    let candidates = which("wasmtime").into_iter().chain(installed.clone());
    for candidate in candidates {
        if version_of(&candidate)
            .await
            .is_some_and(|v| v.contains(WASMTIME_VERSION))
        {
            return Ok(candidate);
        }
    }
    let install = format!("cargo install --locked wasmtime-cli@{WASMTIME_VERSION}");
    if smoke {
        return Err(format!(
            "wasmtime {WASMTIME_VERSION} is not installed (`{install}`)"
        ));
    }
    step(&format!(
        "installing wasmtime-cli {WASMTIME_VERSION} (takes about ten minutes)"
    ));
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root)
        .args([
            "install",
            "--locked",
            &format!("wasmtime-cli@{WASMTIME_VERSION}"),
        ])
        .status()
        .await
        .map_err(|e| format!("cannot run `{install}`: {e}"))?;
    if !status.success() {
        return Err(format!("`{install}` failed"));
    }
    installed.ok_or_else(|| "cargo's bin directory is unknown (set CARGO_HOME)".to_owned())
}

/// Where `cargo install` puts binaries, under `bin/`.
fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// The Node.js baseline with `npm ci` done (again when package-lock.json changed).
async fn node_service(root: &Path) -> Result<PathBuf, String> {
    let dir = root.join("bench/baselines/node-user-service");
    if which("node").is_none() || which("npm").is_none() {
        return Err("Node.js is not installed (`apt-get install -y nodejs npm`)".to_owned());
    }
    let lock = dir.join("package-lock.json");
    let installed = dir.join("node_modules/.package-lock.json");
    let fresh = match (std::fs::metadata(&lock), std::fs::metadata(&installed)) {
        (Ok(lock), Ok(installed)) => lock.modified().ok() <= installed.modified().ok(),
        _ => false,
    };
    if !fresh {
        step("installing the Node.js baseline's dependencies (npm ci)");
        let status = Command::new("npm")
            .current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"])
            .status()
            .await
            .map_err(|e| format!("cannot run npm: {e}"))?;
        if !status.success() {
            return Err(format!("`npm ci` failed in {}", dir.display()));
        }
    }
    Ok(dir)
}

async fn version_of(program: &Path) -> Option<String> {
    let output = Command::new(program).arg("--version").output().await.ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// `wasm` with a custom section appended: a distinct digest for the same code, so berth
/// compiles and caches it as a version of its own.
pub fn variant(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"berth-bench";
    let mut payload = Vec::new();
    leb128(&mut payload, name.len() as u64);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    leb128(&mut out, payload.len() as u64);
    out.extend_from_slice(&payload);
    out
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_matches_the_spec_examples() {
        let mut out = Vec::new();
        leb128(&mut out, 624_485);
        assert_eq!(out, [0xe5, 0x8e, 0x26]);
        out.clear();
        leb128(&mut out, 0);
        assert_eq!(out, [0]);
    }

    #[test]
    fn a_variant_appends_one_custom_section() {
        let base = b"\0asm\x0d\x00\x01\x00".to_vec();
        let v = variant(&base, "7");
        assert_eq!(&v[..base.len()], &base[..]);
        // id 0, size 13 = 1 (name length) + 11 ("berth-bench") + 1 ("7").
        assert_eq!(&v[base.len()..base.len() + 2], &[0, 13]);
        assert!(v.ends_with(b"berth-bench7"));
    }
}
