//! `berth up --watch`: when files matching a component's `[component.<id>.build] watch`
//! globs change, rebuild that component alone with its build command and deploy the result
//! through the same pipeline as `berth deploy`. A failed build or a refused version is
//! printed and the serving version stays. An edit to the manifest reloads its routes.
//!
//! The OS reports changes (through `notify`) on a thread of its own, where [`Router`] maps
//! each changed path to the components whose globs match it and wakes the async side through
//! a bounded channel. Changes coalesce per component: a burst of saves is one rebuild, once
//! the component's files have been quiet for [`SETTLE`].

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use notify::{
    Config, EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher, WatcherKind,
};
use tokio::sync::mpsc;

use berth::config::App;
use berth::control::deployments::Deployments;
use berth::control::reload::Reloader;

/// How long a component's files must stay quiet before it is rebuilt: an editor's save is
/// several events, and "save all" touches several files.
const SETTLE: Duration = Duration::from_millis(100);
/// How often files are compared where the platform cannot report changes.
const POLL: Duration = Duration::from_millis(500);
/// Folders never watched: build output and state.
const SKIPPED: [&str; 4] = ["target", ".git", ".berth", "node_modules"];

/// A component's id, build workdir and `watch` globs.
type Spec = (String, PathBuf, Vec<String>);

/// Watches until the process ends, or says why it cannot.
pub async fn run(app: Arc<App>, control: Arc<Deployments>, reloader: Arc<Reloader>) {
    // Globs are relative to the component's build workdir, as in Spin.
    let specs: Vec<Spec> = app
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
    if specs.is_empty() {
        eprintln!(
            "berth: --watch: no component has `watch` globs under [component.<id>.build]; watching only {}",
            reloader.manifest().display()
        );
    }
    let manifest = reloader.manifest().to_owned();
    // Resolving paths, taking stock of the files and adding watches all touch the disk.
    let mut watch =
        match tokio::task::spawn_blocking(move || Watch::start(specs, &manifest, true)).await {
            Ok(Ok(watch)) => watch,
            Ok(Err(e)) => {
                eprintln!("berth: --watch is off: {e:#}");
                return;
            }
            Err(e) => {
                eprintln!("berth: --watch is off: starting it did not finish: {e}");
                return;
            }
        };
    eprintln!("berth: watching {} for changes", watch.ids.join(", "));
    // A change made while a component builds starts another build once this one is done;
    // build output belongs outside the watch globs (`target/` and the like are skipped).
    while let Some(target) = watch.changes.next().await {
        match watch.ids.get(target) {
            Some(id) => rebuild_and_deploy(&app, &control, id).await,
            None => reload(&reloader).await,
        }
    }
}

async fn reload(reloader: &Arc<Reloader>) {
    let blocking = reloader.clone();
    match tokio::task::spawn_blocking(move || blocking.reload()).await {
        Ok(Ok(summary)) => eprintln!("berth: {}: {summary}", reloader.manifest().display()),
        Ok(Err(reason)) => eprintln!("berth: the edit was not applied: {reason}"),
        Err(e) => eprintln!("berth: the reload did not finish: {e}"),
    }
}

async fn rebuild_and_deploy(app: &Arc<App>, control: &Deployments, id: &str) {
    eprintln!("berth: `{id}` changed; rebuilding");
    let Some(source) = app.components.get(id).map(|c| c.source.clone()) else {
        return;
    };
    let build_app = app.clone();
    let only = vec![id.to_owned()];
    let owned_id = id.to_owned();
    let built = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        super::build::run(&build_app, &only).map_err(|e| {
            format!("build failed, `{owned_id}` keeps serving its current version: {e:#}")
        })?;
        std::fs::read(&source).map_err(|e| format!("cannot read {}: {e}", source.display()))
    });
    let wasm = match built.await {
        Ok(Ok(wasm)) => wasm,
        Ok(Err(message)) => {
            eprintln!("berth: {message}");
            return;
        }
        Err(e) => {
            eprintln!("berth: the build of `{id}` did not finish: {e}");
            return;
        }
    };
    match control.deploy(id, wasm.into(), None).await {
        Ok(deployed) => eprintln!(
            "berth: `{id}` now serves {} (deployed in {} ms)",
            berth::registry::http::short(&deployed.digest),
            deployed.took_ms
        ),
        Err(e) => eprintln!("berth: {e}"),
    }
}

/// A running watch; dropping it stops the notifications.
struct Watch {
    _watcher: Box<dyn Watcher + Send>,
    /// Component ids by target index; the index past the end is the manifest.
    ids: Vec<String>,
    changes: Changes,
}

impl Watch {
    /// Resolves the globs, takes stock of the matching files and starts watching, through the
    /// platform's notifications when `notifications` and they work, else by polling.
    /// Blocking: it reads folders, and a recursive watch walks them.
    fn start(specs: Vec<Spec>, manifest: &Path, notifications: bool) -> anyhow::Result<Watch> {
        let components: Vec<Watched> = specs
            .into_iter()
            .filter_map(
                |(id, base, patterns)| match Watched::new(id, &base, &patterns) {
                    Ok(watched) => Some(watched),
                    Err(e) => {
                        eprintln!("berth: --watch: {e:#}");
                        None
                    }
                },
            )
            .collect();
        let manifest = canonical_file(manifest)
            .with_context(|| format!("cannot watch {}", manifest.display()))?;
        let roots = plan(
            components
                .iter()
                .flat_map(|c| c.roots.iter().cloned())
                .chain(manifest.parent().map(|dir| (dir.to_owned(), false))),
        );
        let present = components
            .iter()
            .map(|c| {
                c.roots
                    .iter()
                    .flat_map(|(dir, recursive)| files(dir, *recursive))
                    .filter(|file| c.matches(file))
                    .collect()
            })
            .collect();
        let targets = components.len() + 1;
        let (wake, woken) = mpsc::channel(targets);
        let pending = Arc::new(Pending {
            latest: Mutex::new(vec![None; targets]),
            wake,
        });
        let ids = components.iter().map(|c| c.id.clone()).collect();
        let router = Arc::new(Mutex::new(Router {
            components,
            present,
            manifest,
            pending: pending.clone(),
        }));
        let handler = |router: Arc<Mutex<Router>>| {
            move |event: notify::Result<notify::Event>| {
                router
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .handle(event);
            }
        };
        let config = Config::default().with_poll_interval(POLL);
        let notified = if notifications {
            notified(&roots, handler(router.clone()), config)
        } else {
            Err(notify::Error::generic("turned off"))
        };
        let watcher: Box<dyn Watcher + Send> = match notified {
            Ok(watcher) => watcher,
            Err(e) => {
                eprintln!(
                    "berth: --watch: file notifications are unavailable ({e}); polling every {} ms instead",
                    POLL.as_millis()
                );
                let mut watcher = PollWatcher::new(handler(router), config)?;
                for (dir, recursive) in &roots {
                    watcher.watch(dir, mode(*recursive))?;
                }
                Box::new(watcher)
            }
        };
        Ok(Watch {
            _watcher: watcher,
            ids,
            changes: Changes { woken, pending },
        })
    }
}

/// The platform's watcher on every root; an error means it cannot serve and polling should.
fn notified(
    roots: &[(PathBuf, bool)],
    handler: impl notify::EventHandler,
    config: Config,
) -> notify::Result<Box<dyn Watcher + Send>> {
    let mut watcher = RecommendedWatcher::new(handler, config)?;
    if RecommendedWatcher::kind() == WatcherKind::PollWatcher {
        eprintln!(
            "berth: --watch: this platform has no file notifications; polling every {} ms",
            POLL.as_millis()
        );
    }
    for (dir, recursive) in roots {
        match watcher.watch(dir, mode(*recursive)) {
            Ok(()) => {}
            // Removed since it was found; nothing to fall back for.
            Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {
                eprintln!("berth: --watch: {} is gone: {e}", dir.display());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Box::new(watcher))
}

/// One component's `watch` globs, resolved once.
struct Watched {
    id: String,
    /// The build workdir, canonical so that it is spelled as the OS reports paths.
    base: PathBuf,
    globs: GlobSet,
    /// Folders that hold everything the globs can match, and whether beneath them too.
    roots: Vec<(PathBuf, bool)>,
}

impl Watched {
    fn new(id: String, base: &Path, patterns: &[String]) -> anyhow::Result<Watched> {
        let base = std::fs::canonicalize(base)
            .with_context(|| format!("cannot watch `{id}`: {}", base.display()))?;
        let mut globs = GlobSetBuilder::new();
        let mut roots = Vec::new();
        for pattern in patterns {
            match glob(pattern) {
                Ok(glob) => globs.add(glob),
                Err(e) => {
                    eprintln!("berth: --watch: `{id}`: {e}");
                    continue;
                }
            };
            match literal_root(pattern) {
                Some((dir, recursive)) => roots.push(existing(base.join(dir), recursive)),
                None => eprintln!(
                    "berth: --watch: `{id}`: `{pattern}` points outside {}, where nothing is watched",
                    base.display()
                ),
            }
        }
        let globs = globs
            .build()
            .with_context(|| format!("`{id}`'s watch globs"))?;
        Ok(Watched {
            id,
            base,
            globs,
            roots,
        })
    }

    /// `path` relative to the workdir, unless it lies outside it or in a skipped folder.
    fn relative<'p>(&self, path: &'p Path) -> Option<&'p Path> {
        let relative = path.strip_prefix(&self.base).ok()?;
        let folders = relative.parent()?;
        (!folders.iter().any(skipped)).then_some(relative)
    }

    fn matches(&self, path: &Path) -> bool {
        self.relative(path)
            .is_some_and(|relative| self.globs.is_match(relative))
    }
}

/// A watch glob on `/`-separated paths: `**` spans any number of folders, `*` and `?` stay
/// within one name, a leading `./` is dropped.
fn glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(pattern.trim_start_matches("./"))
        .literal_separator(true)
        .build()
}

/// The folder, relative to the workdir, under which everything `pattern` matches lies (its
/// leading names free of wildcards), and whether matches can lie deeper than its entries.
/// `None` when that folder is outside the workdir, which the globs are relative to.
fn literal_root(pattern: &str) -> Option<(PathBuf, bool)> {
    if pattern.starts_with('/') {
        return None;
    }
    let names: Vec<&str> = pattern.trim_start_matches("./").split('/').collect();
    let literal = names[..names.len().saturating_sub(1)]
        .iter()
        .take_while(|name| !name.contains(['*', '?', '[', '{', '\\']))
        .count();
    let mut dir = PathBuf::new();
    for name in &names[..literal] {
        match *name {
            "" | "." => {}
            ".." => return None,
            name => dir.push(name),
        }
    }
    let rest = &names[literal..];
    let deep = rest.len() > 1 || rest.iter().any(|name| name.contains("**"));
    Some((dir, deep))
}

/// `dir`, or when it does not exist yet its nearest existing ancestor, watched beneath so
/// that `dir` is seen when it appears.
fn existing(dir: PathBuf, recursive: bool) -> (PathBuf, bool) {
    if dir.is_dir() {
        return (dir, recursive);
    }
    match dir.ancestors().skip(1).find(|up| up.is_dir()) {
        Some(up) => (up.to_owned(), true),
        None => (dir, recursive),
    }
}

fn mode(recursive: bool) -> RecursiveMode {
    if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    }
}

/// `file` with its folder canonical; the name is kept, so a symlinked manifest is still seen
/// when an editor replaces the link.
fn canonical_file(file: &Path) -> anyhow::Result<PathBuf> {
    let name = file.file_name().context("not a file")?;
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok(std::fs::canonicalize(dir)?.join(name))
}

/// The watches to add: one per folder, recursive if any root asks it, none inside a
/// folder already watched recursively (the OS would report those changes twice).
fn plan(roots: impl IntoIterator<Item = (PathBuf, bool)>) -> Vec<(PathBuf, bool)> {
    let mut merged: BTreeMap<PathBuf, bool> = BTreeMap::new();
    for (dir, recursive) in roots {
        *merged.entry(dir).or_default() |= recursive;
    }
    merged
        .iter()
        .filter(|(dir, _)| {
            !merged
                .iter()
                .any(|(up, recursive)| *recursive && up != *dir && dir.starts_with(up))
        })
        .map(|(dir, recursive)| (dir.clone(), *recursive))
        .collect()
}

fn skipped(name: &OsStr) -> bool {
    SKIPPED.iter().any(|s| name == *s)
}

/// The files in `dir` (and beneath it when `recursive`, past [`SKIPPED`] folders). Blocking.
fn files(dir: &Path, recursive: bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !kind.is_dir() {
                found.push(entry.path());
            } else if recursive && !skipped(&entry.file_name()) {
                pending.push(entry.path());
            }
        }
    }
    found
}

/// Runs on notify's thread (where blocking is fine): turns changed paths into wake-ups for
/// the targets they concern.
struct Router {
    components: Vec<Watched>,
    /// Per component, the files that match its globs: a folder moved away is reported alone,
    /// and this tells whether it held any.
    present: Vec<BTreeSet<PathBuf>>,
    manifest: PathBuf,
    pending: Arc<Pending>,
}

impl Router {
    fn handle(&mut self, event: notify::Result<notify::Event>) {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                eprintln!("berth: --watch: {e}");
                return;
            }
        };
        let now = Instant::now();
        if event.need_rescan() {
            // The OS dropped events: anything may have changed.
            for (present, c) in self.present.iter_mut().zip(&self.components) {
                *present = c
                    .roots
                    .iter()
                    .flat_map(|(dir, recursive)| files(dir, *recursive))
                    .filter(|file| c.matches(file))
                    .collect();
            }
            for target in 0..=self.components.len() {
                self.pending.mark(target, now);
            }
            return;
        }
        // Reads, including the build's and our own, are not changes.
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for path in &event.paths {
            if *path == self.manifest {
                self.pending.mark(self.components.len(), now);
            }
            // Whether it is a folder; `None` once gone. Looked up only if a component cares.
            let mut folder: Option<Option<bool>> = None;
            for (target, (c, present)) in self.components.iter().zip(&mut self.present).enumerate()
            {
                let Some(relative) = c.relative(path) else {
                    continue;
                };
                let is_folder = *folder.get_or_insert_with(|| {
                    std::fs::symlink_metadata(path)
                        .ok()
                        .map(|meta| meta.is_dir())
                });
                let changed = match is_folder {
                    // Appeared or moved in: any matching file in it is new.
                    Some(true) if path.file_name().is_some_and(skipped) => false,
                    Some(true) => {
                        let mut new = false;
                        for file in files(path, true) {
                            if c.matches(&file) {
                                new |= present.insert(file);
                            }
                        }
                        new
                    }
                    Some(false) => {
                        let matched = c.globs.is_match(relative);
                        if matched {
                            present.insert(path.clone());
                        }
                        matched
                    }
                    // Gone: a matching file, or a folder that held some.
                    None => {
                        let held: Vec<PathBuf> = present
                            .range(path.clone()..)
                            .take_while(|file| file.starts_with(path))
                            .cloned()
                            .collect();
                        for file in &held {
                            present.remove(file);
                        }
                        !held.is_empty() || c.globs.is_match(relative)
                    }
                };
                if changed {
                    self.pending.mark(target, now);
                }
            }
        }
    }
}

/// When each target last changed, shared by notify's thread and the async side.
struct Pending {
    latest: Mutex<Vec<Option<Instant>>>,
    wake: mpsc::Sender<usize>,
}

impl Pending {
    /// Records a change. Only the first since the target was last taken sends a wake-up, so
    /// at most one per target is queued and the channel, one slot per target, never fills.
    fn mark(&self, target: usize, at: Instant) {
        let first = {
            let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(slot) = latest.get_mut(target) else {
                return;
            };
            let first = slot.is_none();
            *slot = Some(slot.map_or(at, |before| before.max(at)));
            first
        };
        if first {
            // On notify's thread, outside the runtime: blocking is allowed, and never lasts.
            // An error means the watch is being dropped.
            let _ = self.wake.blocking_send(target);
        }
    }

    fn peek(&self, target: usize) -> Option<Instant> {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest.get(target).copied().flatten()
    }

    /// Takes the target's changes; false when another call took them first.
    fn take(&self, target: usize) -> bool {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        latest.get_mut(target).and_then(Option::take).is_some()
    }
}

/// The async end of the watch.
struct Changes {
    woken: mpsc::Receiver<usize>,
    pending: Arc<Pending>,
}

impl Changes {
    /// The next target to act on, once its changes have settled.
    async fn next(&mut self) -> Option<usize> {
        loop {
            let target = self.woken.recv().await?;
            while let Some(latest) = self.pending.peek(target) {
                let due = latest + SETTLE;
                if Instant::now() >= due {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
            }
            if self.pending.take(target) {
                return Some(target);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        glob(pattern).unwrap().compile_matcher().is_match(path)
    }

    #[test]
    fn globs_match_like_spin_watch_patterns() {
        assert!(matches("src/**/*.rs", "src/lib.rs"));
        assert!(matches("src/**/*.rs", "src/a/b/c.rs"));
        assert!(matches(
            "components/order/src/**/*.rs",
            "components/order/src/lib.rs"
        ));
        assert!(!matches("src/**/*.rs", "tests/lib.rs"));
        assert!(!matches("src/*.rs", "src/a/lib.rs"));
        assert!(matches("Cargo.tom?", "Cargo.toml"));
        assert!(matches("./src/*.txt", "src/a.txt"));
        // `*` and `?` stay within one name; `**` spans any depth, none included.
        assert!(matches("*.rs", "lib.rs"));
        assert!(!matches("*.rs", "src/lib.rs"));
        assert!(!matches("src/?", "src/a/b"));
        assert!(matches("**/*.rs", "lib.rs"));
        assert!(matches("**/*.rs", "a/b/c/lib.rs"));
        assert!(matches("src/**", "src/a/b.txt"));
        assert!(matches("*", ".hidden"));
        // Many `**` and `*` stay fast; the old matcher was exponential here.
        let deep = format!("{}x.txt", "a/".repeat(200));
        assert!(!matches("**/**/**/**/**/**/**/**/*.rs", &deep));
    }

    #[test]
    fn matching_is_relative_to_the_workdir_and_skips_build_folders() {
        let dir = tempfile::tempdir().unwrap();
        let watched = Watched::new(
            "a".into(),
            dir.path(),
            &["**/*.rs".into(), "Cargo.toml".into()],
        )
        .unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        assert!(watched.matches(&base.join("src/lib.rs")));
        assert!(watched.matches(&base.join("Cargo.toml")));
        assert!(!watched.matches(&base.join("target/debug/build/out.rs")));
        assert!(!watched.matches(&base.join("src/node_modules/x.rs")));
        assert!(!watched.matches(Path::new("/elsewhere/lib.rs")));
    }

    #[test]
    fn each_glob_is_watched_from_its_literal_folder() {
        let (deep, flat) = (true, false);
        let root = |p| literal_root(p).unwrap();
        assert_eq!(root("src/**/*.rs"), (PathBuf::from("src"), deep));
        assert_eq!(root("src/*.txt"), (PathBuf::from("src"), flat));
        assert_eq!(root("./Cargo.toml"), (PathBuf::new(), flat));
        assert_eq!(root("src/*/mod.rs"), (PathBuf::from("src"), deep));
        assert_eq!(root("{a,b}/x.rs"), (PathBuf::new(), deep));
        assert_eq!(
            root("components/order/src/**/*.rs"),
            (PathBuf::from("components/order/src"), deep)
        );
        assert_eq!(literal_root("../common/src/**/*.rs"), None);
        assert_eq!(literal_root("/abs/*.rs"), None);

        let planned = plan([
            (PathBuf::from("/app"), flat),
            (PathBuf::from("/app/a/src"), deep),
            (PathBuf::from("/app/a/src/deep"), flat),
            (PathBuf::from("/app/a/src/deeper"), deep),
            (PathBuf::from("/app/b"), flat),
            (PathBuf::from("/app/b"), deep),
        ]);
        assert_eq!(
            planned,
            vec![
                (PathBuf::from("/app"), flat),
                (PathBuf::from("/app/a/src"), deep),
                (PathBuf::from("/app/b"), deep),
            ]
        );
    }

    /// An app in a temp dir: `a` builds from `a/` and watches `src/**/*.rs` there, `b` watches
    /// `b/*.txt` from the manifest's folder.
    fn app() -> (tempfile::TempDir, Vec<Spec>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/src/nested")).unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("a/src/nested/old.rs"), "").unwrap();
        let manifest = dir.path().join("spin.toml");
        std::fs::write(&manifest, "").unwrap();
        let specs = vec![
            (
                "a".to_owned(),
                dir.path().join("a"),
                vec!["src/**/*.rs".to_owned()],
            ),
            (
                "b".to_owned(),
                dir.path().to_owned(),
                vec!["b/*.txt".to_owned()],
            ),
        ];
        (dir, specs, manifest)
    }

    const WITHIN: Duration = Duration::from_secs(10);
    /// Long enough past [`SETTLE`] that a second trigger would have arrived.
    const QUIET: Duration = Duration::from_millis(400);

    /// The id of the next target to act on, `manifest` for the manifest.
    async fn next(watch: &mut Watch) -> String {
        let target = tokio::time::timeout(WITHIN, watch.changes.next())
            .await
            .expect("a change within the time")
            .unwrap();
        watch
            .ids
            .get(target)
            .map_or("manifest", String::as_str)
            .to_owned()
    }

    async fn nothing_more(watch: &mut Watch) {
        let more = tokio::time::timeout(QUIET, watch.changes.next()).await;
        assert!(more.is_err(), "one trigger only, then {more:?}");
    }

    #[tokio::test]
    async fn a_write_triggers_one_rebuild_of_the_matching_component() {
        let (dir, specs, manifest) = app();
        let mut watch = Watch::start(specs, &manifest, true).unwrap();
        std::fs::write(dir.path().join("a/src/nested/lib.rs"), "fn main() {}").unwrap();
        std::fs::write(dir.path().join("a/src/nested/lib.rs"), "fn main() {} //").unwrap();
        assert_eq!(next(&mut watch).await, "a");
        nothing_more(&mut watch).await;

        std::fs::write(dir.path().join("b/notes.md"), "").unwrap();
        std::fs::write(dir.path().join("b/x.txt"), "").unwrap();
        assert_eq!(next(&mut watch).await, "b");
        nothing_more(&mut watch).await;
    }

    #[tokio::test]
    async fn the_manifest_and_a_folder_moved_away_are_changes_too() {
        let (dir, specs, manifest) = app();
        let mut watch = Watch::start(specs, &manifest, true).unwrap();
        std::fs::write(&manifest, "spin_manifest_version = 2").unwrap();
        assert_eq!(next(&mut watch).await, "manifest");
        nothing_more(&mut watch).await;

        // Only the folder is reported; it held `old.rs`.
        std::fs::rename(
            dir.path().join("a/src/nested"),
            dir.path().join("elsewhere"),
        )
        .unwrap();
        assert_eq!(next(&mut watch).await, "a");
        nothing_more(&mut watch).await;
        // And moved back in, it brings `old.rs` back.
        std::fs::rename(dir.path().join("elsewhere"), dir.path().join("a/src/back")).unwrap();
        assert_eq!(next(&mut watch).await, "a");
        nothing_more(&mut watch).await;
    }

    #[tokio::test]
    async fn polling_sees_the_same_changes() {
        let (dir, specs, manifest) = app();
        let mut watch = Watch::start(specs, &manifest, false).unwrap();
        std::fs::write(dir.path().join("a/src/lib.rs"), "").unwrap();
        std::fs::write(dir.path().join("b/notes.md"), "").unwrap();
        assert_eq!(next(&mut watch).await, "a");
        let more = tokio::time::timeout(POLL * 2, watch.changes.next()).await;
        assert!(more.is_err(), "one trigger only, then {more:?}");
    }
}
