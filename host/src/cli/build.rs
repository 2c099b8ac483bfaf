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
    let targets: std::collections::BTreeSet<&str> = buildable
        .iter()
        .flat_map(|(_, b)| b.command.as_slice())
        .flat_map(|command| wasm_targets(command))
        .collect();
    for target in targets {
        ensure_wasm_target(&app.dir, target)?;
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

/// The wasm targets a build command names (`--target wasm32-…`): the ones rustup may need
/// to add before it runs.
fn wasm_targets(command: &str) -> impl Iterator<Item = &str> {
    let mut words = command.split_whitespace();
    std::iter::from_fn(move || {
        loop {
            let word = words.next()?;
            let target = match word.strip_prefix("--target=") {
                Some(target) => target,
                None if word == "--target" => words.next()?,
                None => continue,
            };
            if target.starts_with("wasm32-") {
                return Some(target);
            }
        }
    })
}

/// Installs `target` with rustup when the toolchain lacks it, or says exactly what to run.
fn ensure_wasm_target(dir: &Path, target: &str) -> anyhow::Result<()> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(dir)
        .output()
        .context("cannot run `rustc`: install Rust from https://rustup.rs")?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target)
        .is_dir()
    {
        return Ok(());
    }
    if Command::new("rustup").arg("--version").output().is_err() {
        bail!(
            "the {target} Rust target is missing and rustup is not available: install that target for the toolchain in {sysroot}"
        );
    }
    eprintln!(
        "berth: the {target} Rust target is missing; installing it with `rustup target add {target}`"
    );
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .current_dir(dir)
        .status()
        .context("cannot run rustup")?;
    if !status.success() {
        bail!("`rustup target add {target}` failed ({status}); run it yourself and build again");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::wasm_targets;

    #[test]
    fn the_wasm_targets_a_command_names_are_found() {
        let found: Vec<&str> = wasm_targets(
            "cargo build -p a --target wasm32-wasip1 --target-dir target && cargo build --target=wasm32-unknown-unknown --target x86_64-unknown-linux-gnu",
        )
        .collect();
        assert_eq!(found, ["wasm32-wasip1", "wasm32-unknown-unknown"]);
        assert_eq!(wasm_targets("cargo build --target").count(), 0);
    }
}
