//! `berth up --watch`: when files matching a component's `[component.<id>.build] watch`
//! globs change, rebuild that component alone with its build command and deploy the result
//! through the same pipeline as `berth deploy`. A failed build or a refused version is
//! printed and the serving version stays.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth::config::App;
use berth::control::deploy::Control;
use berth::control::reload::Reloader;

const POLL: Duration = Duration::from_millis(500);
/// Folders never watched: build output and state.
const SKIPPED: [&str; 4] = ["target", ".git", ".berth", "node_modules"];

/// Every file under `dir` (relative, `/`-separated) matching one of `patterns`, with its
/// modification time.
fn snapshot(dir: &Path, patterns: &[String]) -> Vec<(PathBuf, SystemTime)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !SKIPPED.contains(&entry.file_name().to_string_lossy().as_ref()) {
                    pending.push(path);
                }
                continue;
            }
            let Ok(relative) = path.strip_prefix(dir) else {
                continue;
            };
            let relative = relative.to_string_lossy().replace('\\', "/");
            if patterns.iter().any(|p| glob_match(p, &relative)) {
                let modified = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((path, modified));
            }
        }
    }
    found.sort();
    found
}

/// Glob matching on `/`-separated paths: `**` spans any number of folders, `*` and `?`
/// stay within one name.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.trim_start_matches("./").split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    match_segments(&pattern, &path)
}

fn match_segments(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            match_segments(&pattern[1..], path)
                || (!path.is_empty() && match_segments(pattern, &path[1..]))
        }
        (Some(p), Some(name)) => {
            match_name(p.as_bytes(), name.as_bytes()) && match_segments(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

fn match_name(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            match_name(&pattern[1..], name) || (!name.is_empty() && match_name(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => match_name(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) => p == n && match_name(&pattern[1..], &name[1..]),
        _ => false,
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Watches until the process ends.
pub async fn run(app: Arc<App>, control: Arc<Control>, reloader: Arc<Reloader>) {
    // Globs are relative to the component's build workdir, as in Spin.
    let watched: Vec<(String, PathBuf, Vec<String>)> = app
        .components
        .values()
        .filter_map(|c| {
            let build = c.build.as_ref()?;
            let base = app
                .dir
                .join(build.workdir.as_deref().unwrap_or(Path::new(".")));
            (!build.watch.is_empty()).then(|| (c.id.clone(), base, build.watch.clone()))
        })
        .collect();
    if watched.is_empty() {
        eprintln!(
            "berth: --watch: no component has `watch` globs under [component.<id>.build]; watching only {}",
            reloader.manifest().display()
        );
    }
    let mut manifest_modified = modified(reloader.manifest());
    let mut seen: HashMap<String, Vec<(PathBuf, SystemTime)>> = watched
        .iter()
        .map(|(id, base, patterns)| (id.clone(), snapshot(base, patterns)))
        .collect();
    eprintln!(
        "berth: watching {} for changes",
        watched
            .iter()
            .map(|(id, _, _)| id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    loop {
        tokio::time::sleep(POLL).await;
        let now = modified(reloader.manifest());
        if now != manifest_modified {
            manifest_modified = now;
            match reloader.reload() {
                Ok(summary) => eprintln!("berth: {}: {summary}", reloader.manifest().display()),
                Err(reason) => eprintln!("berth: the edit was not applied: {reason}"),
            }
        }
        for (id, base, patterns) in &watched {
            let now = snapshot(base, patterns);
            if seen.get(id) == Some(&now) {
                continue;
            }
            seen.insert(id.clone(), now);
            rebuild_and_deploy(&app, &control, id).await;
            // What the build itself touched is not a change to react to.
            seen.insert(id.clone(), snapshot(base, patterns));
        }
    }
}

async fn rebuild_and_deploy(app: &Arc<App>, control: &Control, id: &str) {
    eprintln!("berth: `{id}` changed; rebuilding");
    let build_app = app.clone();
    let only = vec![id.to_owned()];
    match tokio::task::spawn_blocking(move || super::build::run(&build_app, &only)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("berth: build failed, `{id}` keeps serving its current version: {e:#}");
            return;
        }
        Err(e) => {
            eprintln!("berth: the build of `{id}` did not finish: {e}");
            return;
        }
    }
    let source = &app.components[id].source;
    let wasm = match std::fs::read(source) {
        Ok(wasm) => wasm,
        Err(e) => {
            eprintln!("berth: cannot read {}: {e}", source.display());
            return;
        }
    };
    match control.deploy(id, wasm.into(), None).await {
        Ok(deployed) => eprintln!(
            "berth: `{id}` now serves {} (deployed in {} ms)",
            berth::capabilities::http_inbound::short_digest(&deployed.digest),
            deployed.took_ms
        ),
        Err(e) => eprintln!("berth: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_spin_watch_patterns() {
        assert!(glob_match("src/**/*.rs", "src/lib.rs"));
        assert!(glob_match("src/**/*.rs", "src/a/b/c.rs"));
        assert!(glob_match(
            "components/order/src/**/*.rs",
            "components/order/src/lib.rs"
        ));
        assert!(!glob_match("src/**/*.rs", "tests/lib.rs"));
        assert!(!glob_match("src/*.rs", "src/a/lib.rs"));
        assert!(glob_match("Cargo.tom?", "Cargo.toml"));
        assert!(glob_match("./src/*.txt", "src/a.txt"));
    }
}
