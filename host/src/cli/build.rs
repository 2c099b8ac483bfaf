//! `berth build`: runs each component's `[component.<id>.build] command` from its workdir,
//! as `spin build` does, with a progress line per component.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use berth::config::{App, ComponentConfig};

pub fn run(app: &App, only: &[String]) -> anyhow::Result<()> {
    for id in only {
        if !app.components.contains_key(id) {
            bail!(
                "no component `{id}` in {}; it has: {}",
                app.manifest_path.display(),
                app.components
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let selected: Vec<&ComponentConfig> = app
        .components
        .values()
        .filter(|c| only.is_empty() || only.contains(&c.id))
        .collect();
    let buildable: Vec<_> = selected
        .iter()
        .filter_map(|c| Some((*c, c.build.as_ref()?)))
        .collect();
    for c in &selected {
        if c.build.is_none() {
            eprintln!(
                "berth: `{}` has no [component.{}.build]; using {} as it is",
                c.id,
                c.id,
                c.source.display()
            );
        }
    }
    let needs_wasm_target = buildable.iter().any(|(_, b)| {
        b.command
            .as_slice()
            .iter()
            .any(|c| c.contains("wasm32-wasip2"))
    });
    if needs_wasm_target {
        ensure_wasm_target(&app.dir)?;
    }
    let total = buildable.len();
    for (i, (component, build)) in buildable.into_iter().enumerate() {
        let started = Instant::now();
        let workdir = app
            .dir
            .join(build.workdir.as_deref().unwrap_or(Path::new(".")));
        for command in build.command.as_slice() {
            eprintln!("[{}/{total}] building {}: {command}", i + 1, component.id);
            let status = Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(&workdir)
                .status()
                .with_context(|| format!("cannot run `{command}` in {}", workdir.display()))?;
            if !status.success() {
                bail!(
                    "building `{}` failed: `{command}` exited with {status}",
                    component.id
                );
            }
        }
        let size = std::fs::metadata(&component.source).map(|m| m.len()).with_context(|| {
            format!(
                "`{}` built, but its source {} does not exist: check `source` in [component.{}]",
                component.id,
                component.source.display(),
                component.id
            )
        })?;
        eprintln!(
            "[{}/{total}] built {} in {:.1}s ({} KiB)",
            i + 1,
            component.id,
            started.elapsed().as_secs_f64(),
            size / 1024
        );
    }
    Ok(())
}

/// Installs the wasm32-wasip2 target with rustup when the toolchain lacks it, or says exactly
/// what to run.
fn ensure_wasm_target(dir: &Path) -> anyhow::Result<()> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(dir)
        .output()
        .context("cannot run `rustc`: install Rust from https://rustup.rs")?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    if Path::new(&sysroot)
        .join("lib/rustlib/wasm32-wasip2")
        .is_dir()
    {
        return Ok(());
    }
    if Command::new("rustup").arg("--version").output().is_err() {
        bail!(
            "the wasm32-wasip2 Rust target is missing and rustup is not available: install that target for the toolchain in {sysroot}"
        );
    }
    eprintln!(
        "berth: the wasm32-wasip2 Rust target is missing; installing it with `rustup target add wasm32-wasip2`"
    );
    let status = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .current_dir(dir)
        .status()
        .context("cannot run rustup")?;
    if !status.success() {
        bail!(
            "`rustup target add wasm32-wasip2` failed ({status}); run it yourself and build again"
        );
    }
    Ok(())
}
