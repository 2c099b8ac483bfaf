//! Deploy, canary, promote and roll back one component while everything keeps serving.
//!
//! A deploy runs the whole load pipeline on the new bytes (component check, compile off the
//! async workers or from the artifact cache, grants, pre-instantiation, migrations) before
//! anything changes; only then is the component's [`Deployment`] replaced in one atomic
//! swap. A refused deploy leaves the serving versions untouched. Migrations are applied
//! before the swap, so they must suit the version still serving: forward-only and additive.
//!
//! What serves is kept in `<data-dir>/deployments/` (the state and the wasm of every
//! version it names), so a restart brings back the deployed versions rather than the files
//! the manifest names. On NATS the fleet's bucket is where a change is made ([`super::fleet`]):
//! a change made elsewhere is followed here, and this host's changes reach every other.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;
use wasmtime::component::Linker;

use futures::StreamExt as _;

use super::fleet::{self, FleetStore, HostReport};
use crate::config::App;
use crate::engine::Engine;
use crate::registry::loader::{self, Backends, LoadError};
use crate::registry::{Arrangement, Deployment, Registry, Slot, Version};
use crate::state::InvocationState;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("there is no component `{0}` in this app")]
    UnknownComponent(String),
    #[error(
        "component `{component}` was not deployed, and its serving versions are untouched: {reason}"
    )]
    Rejected {
        component: String,
        #[source]
        reason: LoadError,
    },
    #[error(
        "canary={0}: the canary share is a whole percentage from {min} to {max}; to send all traffic to the new version, deploy it without a canary",
        min = CANARY_PERCENT.start(),
        max = CANARY_PERCENT.end()
    )]
    BadCanary(u32),
    #[error("component `{0}` has no canary to promote")]
    NoCanary(String),
    #[error("component `{0}` has no previous version to roll back to")]
    NothingToRollBack(String),
    #[error("the deployment could not be saved: {0:#}")]
    Persist(anyhow::Error),
    #[error(
        "component `{0}` was changed on another host of the fleet meanwhile, or this host does not serve what the fleet does; see `berth status` and try again"
    )]
    ChangedElsewhere(String),
    #[error("the fleet's deployments in NATS cannot be reached, so nothing changed: {0:#}")]
    Fleet(anyhow::Error),
}

/// What a deploy did, for the caller and the logs.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployed {
    pub digest: String,
    /// The compiled artifact came from the cache.
    pub cached: bool,
    /// From receiving the bytes to serving them.
    pub took_ms: u64,
}

/// One version as the status shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    pub digest: String,
    pub loaded_at: String,
    pub traffic_percent: u8,
    /// `stable`, `canary` or `previous` (loaded, serving nothing, ready for rollback).
    pub state: &'static str,
    /// Over the last minute.
    pub requests_per_second: f64,
    /// Server errors (5xx) per second over the last minute.
    pub errors_per_second: f64,
}

/// `{stable, canary, previous}` of one component, by digest: what `deployments/state.json`
/// holds.
type Saved = Arrangement<String>;

/// Where the fleet keeps its deployments: NATS, and the app's name there.
pub struct FleetConfig {
    pub url: String,
    pub name: String,
}

pub struct Deployments {
    app: Arc<App>,
    registry: Arc<Registry>,
    engine: Engine,
    linker: Linker<InvocationState>,
    backends: Backends,
    dir: PathBuf,
    /// The digest of the file the manifest names, per component.
    manifest_digests: HashMap<String, String>,
    /// One change at a time per component: a deploy and a rollback must not interleave.
    locks: HashMap<String, tokio::sync::Mutex<()>>,
    /// One write of `deployments/` at a time, across components: the state file is read,
    /// changed and written whole, and unreferenced wasm is deleted after it.
    persist: std::sync::Mutex<()>,
    pub metrics: Arc<crate::telemetry::Metrics>,
    fleet: Option<FleetConfig>,
    /// Opened on first need: a host starts, and serves, while NATS is still away.
    store: tokio::sync::OnceCell<FleetStore>,
    /// Per component, the bucket revision this host serves: an older one seen late (a
    /// watch that lags a retry or this host's own write) is not applied over it.
    followed: std::sync::Mutex<HashMap<String, u64>>,
    /// The fleet's arrangements this host could not load, retried with a growing wait.
    failures: std::sync::Mutex<BTreeMap<String, FollowFailure>>,
    /// Wakes the report to the fleet after a change.
    changed: tokio::sync::Notify,
    started_at: std::time::SystemTime,
    /// How this host names itself to the fleet, once it serves.
    host_id: std::sync::OnceLock<String>,
}

/// A fleet arrangement that did not load here.
struct FollowFailure {
    wanted: Saved,
    revision: u64,
    error: String,
    since: std::time::SystemTime,
    attempts: u32,
    next_try: Instant,
}

/// Everything the fleet's buckets say, for `berth status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    pub name: String,
    /// The host that answered.
    pub host: Option<String>,
    pub hosts: Vec<HostReport>,
    /// What the fleet serves, per component: what every host follows.
    pub deployments: BTreeMap<String, Saved>,
}

/// The longest wait before a version that did not load is tried again.
const MAX_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

impl Deployments {
    pub fn new(
        app: Arc<App>,
        registry: Arc<Registry>,
        engine: Engine,
        linker: Linker<InvocationState>,
        backends: Backends,
        data_dir: &std::path::Path,
        metrics: Arc<crate::telemetry::Metrics>,
    ) -> Deployments {
        let manifest_digests = registry
            .iter()
            .map(|slot| (slot.id.to_string(), slot.stable().digest.clone()))
            .collect();
        let locks = app
            .components
            .keys()
            .map(|id| (id.clone(), tokio::sync::Mutex::new(())))
            .collect();
        Deployments {
            app,
            registry,
            engine,
            linker,
            backends,
            dir: data_dir.join("deployments"),
            manifest_digests,
            locks,
            persist: std::sync::Mutex::new(()),
            metrics,
            fleet: None,
            store: tokio::sync::OnceCell::new(),
            followed: std::sync::Mutex::default(),
            failures: std::sync::Mutex::default(),
            changed: tokio::sync::Notify::new(),
            started_at: std::time::SystemTime::now(),
            host_id: std::sync::OnceLock::new(),
        }
    }

    /// Shares deployments with every host on the same NATS.
    pub fn with_fleet(mut self, fleet: Option<FleetConfig>) -> Deployments {
        self.fleet = fleet;
        self
    }

    /// The fleet's store, once NATS answers; `None` for a host on its own.
    async fn fleet_store(&self) -> Option<anyhow::Result<&FleetStore>> {
        let fleet = self.fleet.as_ref()?;
        Some(
            self.store
                .get_or_try_init(|| FleetStore::open(&fleet.url, &fleet.name))
                .await,
        )
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn slot(&self, id: &str) -> Result<(&Arc<Slot>, &tokio::sync::Mutex<()>), DeployError> {
        match (self.registry.get(id), self.locks.get(id)) {
            (Some(slot), Some(lock)) => Ok((slot, lock)),
            _ => Err(DeployError::UnknownComponent(id.to_owned())),
        }
    }

    fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}.wasm"))
    }

    /// Checks, compiles, links, migrates and then publishes `wasm` as component `id`.
    pub async fn deploy(
        &self,
        id: &str,
        wasm: bytes::Bytes,
        canary: Option<u32>,
    ) -> Result<Deployed, DeployError> {
        let started = Instant::now();
        let canary = match canary {
            None => None,
            Some(p) if CANARY_PERCENT.contains(&p) => Some(p as u8),
            Some(p) => return Err(DeployError::BadCanary(p)),
        };
        let (slot, lock) = self.slot(id)?;
        let config = &self.app.components[id];
        let rejected = |reason| DeployError::Rejected {
            component: id.to_owned(),
            reason,
        };
        let count_rejected = |e| {
            self.metrics.deploy(id, "rejected");
            rejected(e)
        };
        let prepared = loader::prepare(&self.engine, &self.linker, config, wasm.clone())
            .await
            .map_err(count_rejected)?;
        let cached = prepared.from_cache;
        let _guard = lock.lock().await;
        let version = Arc::new(
            loader::activate(prepared, config, &self.backends)
                .await
                .map_err(count_rejected)?,
        );
        let digest = version.digest.clone();
        let next = slot.deployment().deploy(version, canary);
        self.switch(slot, next, Some((&digest, &wasm))).await?;
        self.metrics.deploy(id, "deployed");
        let took_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            component = id,
            digest = crate::registry::http::short(&digest),
            canary = ?canary,
            cached,
            took_ms,
            "deployed"
        );
        Ok(Deployed {
            digest,
            cached,
            took_ms,
        })
    }

    /// Makes the canary the stable version, at 100 %.
    pub async fn promote(&self, id: &str) -> Result<(), DeployError> {
        let (slot, lock) = self.slot(id)?;
        let _guard = lock.lock().await;
        let next = slot
            .deployment()
            .promote()
            .ok_or_else(|| DeployError::NoCanary(id.to_owned()))?;
        self.switch(slot, next, None).await?;
        tracing::info!(component = id, "promoted the canary");
        Ok(())
    }

    /// Drops the canary if there is one; otherwise returns to the previous stable version.
    pub async fn rollback(&self, id: &str) -> Result<(), DeployError> {
        let (slot, lock) = self.slot(id)?;
        let _guard = lock.lock().await;
        let next = slot
            .deployment()
            .rollback()
            .ok_or_else(|| DeployError::NothingToRollBack(id.to_owned()))?;
        self.switch(slot, next, None).await?;
        tracing::info!(component = id, "rolled back");
        Ok(())
    }

    /// Saves the arrangement (in the fleet's bucket first, on NATS), then publishes it: a
    /// restart never brings back less than what served.
    async fn switch(
        &self,
        slot: &Slot,
        next: Deployment,
        new_wasm: Option<(&str, &[u8])>,
    ) -> Result<(), DeployError> {
        let shared = match self.fleet_store().await {
            Some(store) => {
                let store = store.map_err(DeployError::Fleet)?;
                Some(self.share(store, slot, &next, new_wasm).await?)
            }
            None => None,
        };
        self.save_locally(&slot.id, &next, new_wasm)?;
        slot.publish(next);
        if let Some(revision) = shared {
            self.now_serving(&slot.id, revision);
        }
        Ok(())
    }

    /// Writes `next` to the fleet's bucket, from the arrangement this host serves: a change
    /// made elsewhere meanwhile wins, and this one is refused. An arrangement this host
    /// could not load is the exception: a change made here replaces it, which is how a
    /// fleet is brought back from a version none of its hosts can run. Returns the bucket
    /// revision written.
    async fn share(
        &self,
        store: &FleetStore,
        slot: &Slot,
        next: &Deployment,
        new_wasm: Option<(&str, &[u8])>,
    ) -> Result<u64, DeployError> {
        if let Some((digest, wasm)) = new_wasm {
            store
                .put_wasm(digest, wasm)
                .await
                .map_err(DeployError::Fleet)?;
        }
        let here = slot.deployment().map(|v| v.digest.clone());
        let failed_here = self.failed_revision(&slot.id);
        let revision = match store.get(&slot.id).await.map_err(DeployError::Fleet)? {
            Some((saved, revision)) if saved == here || failed_here == Some(revision) => {
                Some(revision)
            }
            Some(_) => return Err(DeployError::ChangedElsewhere(slot.id.to_string())),
            None => None,
        };
        let saved = next.map(|v| v.digest.clone());
        match store.put(&slot.id, &saved, revision).await {
            Ok(Some(revision)) => Ok(revision),
            Ok(None) => Err(DeployError::ChangedElsewhere(slot.id.to_string())),
            Err(e) => Err(DeployError::Fleet(e)),
        }
    }

    /// Component `id` serves the bucket's `revision`: nothing older is applied over it, and
    /// no failure to load is left to report.
    fn now_serving(&self, id: &str, revision: u64) {
        if let Ok(mut followed) = self.followed.lock() {
            followed.insert(id.to_owned(), revision);
        }
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(id);
        }
        self.changed.notify_one();
    }

    /// The bucket revision of `id` this host last failed to load, if it still stands.
    fn failed_revision(&self, id: &str) -> Option<u64> {
        self.failures.lock().ok()?.get(id).map(|f| f.revision)
    }

    fn failed_to_follow(&self, id: &str, wanted: Saved, revision: u64, error: String) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        let (since, attempts) = match failures.get(id) {
            Some(f) if f.revision == revision => (f.since, f.attempts + 1),
            _ => (std::time::SystemTime::now(), 1),
        };
        let wait = (fleet::HEARTBEAT * 2u32.saturating_pow(attempts - 1)).min(MAX_RETRY_WAIT);
        failures.insert(
            id.to_owned(),
            FollowFailure {
                wanted,
                revision,
                error,
                since,
                attempts,
                next_try: Instant::now() + wait,
            },
        );
        drop(failures);
        self.changed.notify_one();
    }

    /// The components whose failed arrangement is due to be tried again.
    fn due_retries(&self) -> Vec<String> {
        let now = Instant::now();
        self.failures
            .lock()
            .map(|failures| {
                failures
                    .iter()
                    .filter(|(_, f)| f.next_try <= now)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Keeps `next` and the wasm of its new versions in `deployments/`.
    fn save_locally<'w>(
        &self,
        id: &str,
        next: &Deployment,
        new_wasm: impl IntoIterator<Item = (&'w str, &'w [u8])>,
    ) -> Result<(), DeployError> {
        let _persisting = self.persist.lock().map_err(|_| {
            DeployError::Persist(anyhow::anyhow!("the deployments lock is poisoned"))
        })?;
        for (digest, wasm) in new_wasm {
            let blob = self.blob(digest);
            if !blob.exists() {
                std::fs::create_dir_all(&self.dir)
                    .and_then(|()| crate::files::write_atomic(&blob, wasm))
                    .with_context(|| format!("cannot keep the wasm in {}", blob.display()))
                    .map_err(DeployError::Persist)?;
            }
        }
        let mut saved = self.saved().map_err(DeployError::Persist)?;
        saved.insert(id.to_owned(), next.map(|v| v.digest.clone()));
        let json = serde_json::to_vec_pretty(&saved).map_err(|e| DeployError::Persist(e.into()))?;
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| crate::files::write_atomic(&self.dir.join("state.json"), &json))
            .context("cannot write deployments/state.json")
            .map_err(DeployError::Persist)?;
        self.forget_unreferenced(&saved);
        Ok(())
    }

    /// Serves what the fleet's bucket names for each component now, then follows every
    /// change to it until `stop`. While NATS is away the host serves what it has, and
    /// catches up once it is back.
    pub async fn follow_fleet(&self, stop: tokio_util::sync::CancellationToken) {
        if self.fleet.is_none() {
            return;
        }
        loop {
            let followed = async {
                let store = match self.fleet_store().await {
                    Some(store) => store?,
                    None => return Ok(()),
                };
                let mut changes = std::pin::pin!(store.watch().await?);
                let mut retries = tokio::time::interval(fleet::HEARTBEAT);
                loop {
                    tokio::select! {
                        change = changes.next() => {
                            let Some(change) = change else { break };
                            let change = change?;
                            self.follow(store, &change.component, change.saved, change.revision)
                                .await;
                        }
                        _ = retries.tick() => {
                            for id in self.due_retries() {
                                if let Some((saved, revision)) = store.get(&id).await? {
                                    self.follow(store, &id, saved, revision).await;
                                }
                            }
                        }
                    }
                }
                anyhow::Ok(())
            };
            tokio::select! {
                () = stop.cancelled() => return,
                result = followed => if let Err(e) = result {
                    tracing::warn!("cannot follow the fleet's deployments: {e:#}; trying again");
                },
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }

    /// Before serving: each component as the fleet's bucket has it, if NATS answers within
    /// a few seconds. Otherwise the host serves what it has, and [`Self::follow_fleet`]
    /// catches up later.
    pub async fn catch_up(&self) {
        let Some(store) = self.fleet_store().await else {
            return;
        };
        let caught_up = async {
            let store = store?;
            for id in self.app.components.keys() {
                if let Some((saved, revision)) = store.get(id).await? {
                    self.follow(store, id, saved, revision).await;
                }
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout(super::fleet::CONNECT_TIMEOUT * 2, caught_up).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                "cannot read the fleet's deployments yet: {e:#}; serving what this host has until NATS answers"
            ),
            Err(_) => tracing::warn!(
                "the fleet's deployments did not answer in time; serving what this host has until NATS answers"
            ),
        }
    }

    /// Makes component `id` serve `saved`, revision `revision` of the bucket, loading what
    /// it does not hold yet. A version that does not load leaves the component as it was,
    /// and is reported to the fleet and tried again later.
    pub async fn follow(&self, store: &FleetStore, id: &str, saved: Saved, revision: u64) {
        let Ok((slot, lock)) = self.slot(id) else {
            tracing::warn!(component = %id, "the fleet deploys a component this app does not have; ignoring it");
            return;
        };
        let _guard = lock.lock().await;
        let seen = self
            .followed
            .lock()
            .ok()
            .and_then(|followed| followed.get(id).copied());
        if seen.is_some_and(|seen| seen >= revision) {
            return;
        }
        let current = slot.deployment();
        if current.map(|v| v.digest.clone()) == saved {
            self.now_serving(id, revision);
            return;
        }
        let mut fetched: Vec<(String, bytes::Bytes)> = Vec::new();
        let mut load = async |digest: String| -> anyhow::Result<Arc<Version>> {
            let held = current.versions().find(|v| v.digest == digest);
            if let Some(version) = held {
                return Ok(version.clone());
            }
            let blob = self.blob(&digest);
            let wasm = match std::fs::read(&blob) {
                Ok(wasm) => bytes::Bytes::from(wasm),
                Err(_) => {
                    let wasm = store.wasm(&digest).await?;
                    fetched.push((digest.clone(), wasm.clone()));
                    wasm
                }
            };
            let config = &self.app.components[id];
            let prepared = loader::prepare(&self.engine, &self.linker, config, wasm).await?;
            anyhow::ensure!(
                prepared.digest == digest,
                "the fleet's wasm for {digest} has digest {}",
                prepared.digest
            );
            Ok(Arc::new(
                loader::activate(prepared, config, &self.backends).await?,
            ))
        };
        let next = async {
            let stable = load(saved.stable.clone()).await?;
            let canary = match &saved.canary {
                Some((digest, share)) => Some((load(digest.clone()).await?, *share)),
                None => None,
            };
            let previous = match &saved.previous {
                Some(digest) => Some(load(digest.clone()).await?),
                None => None,
            };
            anyhow::Ok(Deployment {
                stable,
                canary,
                previous,
            })
        }
        .await;
        let next = match next {
            Ok(next) => next,
            Err(e) => {
                self.metrics.deploy(id, "rejected");
                tracing::error!(component = %id, "cannot serve what the fleet deployed, so this host keeps serving what it did: {e:#}");
                self.failed_to_follow(id, saved, revision, format!("{e:#}"));
                return;
            }
        };
        let fetched = fetched
            .iter()
            .map(|(digest, wasm)| (digest.as_str(), &wasm[..]));
        if let Err(e) = self.save_locally(id, &next, fetched) {
            tracing::warn!(component = %id, "{e}");
        }
        tracing::info!(
            component = %id,
            stable = crate::registry::http::short(&next.stable.digest),
            canary = ?next.canary.as_ref().map(|(v, share)| (crate::registry::http::short(&v.digest).to_owned(), *share)),
            "following the fleet's deployment"
        );
        slot.publish(next);
        self.now_serving(id, revision);
    }

    /// Reports what this host serves to the fleet as `host_id`, every
    /// [`fleet::HEARTBEAT`] and after each change, until `stop`; then leaves the list.
    pub async fn report_to_fleet(
        &self,
        host_id: String,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if self.fleet.is_none() {
            return;
        }
        let host_id = self.host_id.get_or_init(|| host_id);
        let mut failing = false;
        loop {
            let reported = async {
                let store = match self.fleet_store().await {
                    Some(store) => store?,
                    None => return Ok(()),
                };
                store.report(&self.report(host_id)).await
            };
            tokio::select! {
                () = stop.cancelled() => break,
                result = reported => match result {
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!("cannot report this host to the fleet: {e:#}; trying again");
                    }
                    Err(_) => {}
                    Ok(()) => failing = false,
                },
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(fleet::HEARTBEAT) => {}
                () = self.changed.notified() => {}
            }
        }
        if let Some(store) = self.store.get() {
            let left =
                tokio::time::timeout(std::time::Duration::from_secs(2), store.leave(host_id));
            if let Ok(Err(e)) = left.await {
                tracing::warn!("{e:#}; the fleet lists this host until its report expires");
            }
        }
    }

    /// What this host serves now, and what it could not load.
    fn report(&self, host_id: &str) -> HostReport {
        let failures = self.failures.lock();
        let components = self
            .registry
            .iter()
            .map(|slot| {
                let failed = failures
                    .as_ref()
                    .ok()
                    .and_then(|f| f.get(&*slot.id))
                    .map(|f| fleet::Failed {
                        wanted: f.wanted.clone(),
                        error: f.error.clone(),
                        since: crate::telemetry::rfc3339(f.since),
                    });
                let served = fleet::Served {
                    serving: slot.deployment().map(|v| v.digest.clone()),
                    failed,
                };
                (slot.id.to_string(), served)
            })
            .collect();
        HostReport {
            id: host_id.to_owned(),
            berth_version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: crate::telemetry::rfc3339(self.started_at),
            reported_at: crate::telemetry::rfc3339(std::time::SystemTime::now()),
            components,
        }
    }

    /// Every host of the fleet and what each serves, beside what the fleet deploys;
    /// `None` for a host on its own.
    pub async fn fleet_status(&self) -> Option<anyhow::Result<FleetStatus>> {
        let name = self.fleet.as_ref()?.name.clone();
        let store = match self.fleet_store().await? {
            Ok(store) => store,
            Err(e) => return Some(Err(e)),
        };
        Some(
            async {
                Ok(FleetStatus {
                    name,
                    host: self.host_id.get().cloned(),
                    hosts: store.hosts().await?,
                    deployments: store.deployments().await?,
                })
            }
            .await,
        )
    }

    /// Deletes the wasm of versions no component can return to any more.
    fn forget_unreferenced(&self, saved: &BTreeMap<String, Saved>) {
        let kept: std::collections::HashSet<PathBuf> = saved
            .values()
            .flat_map(|s| s.versions())
            .map(|digest| self.blob(digest))
            .collect();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().is_some_and(|e| e == "wasm")
                && !kept.contains(&path)
                && let Err(e) = std::fs::remove_file(&path)
            {
                tracing::warn!("cannot delete {}: {e}", path.display());
            }
        }
    }

    /// What `state.json` holds; nothing when it does not exist yet. A file that cannot be
    /// read is an error, never an empty state that would forget the other components.
    fn saved(&self) -> anyhow::Result<BTreeMap<String, Saved>> {
        let path = self.dir.join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not valid; fix or remove it", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Brings back what served before the host stopped. A version whose wasm is gone or no
    /// longer loads is skipped with a warning, and the manifest's file serves instead.
    pub async fn restore(&self) {
        let saved = match self.saved() {
            Ok(saved) => saved,
            Err(e) => {
                tracing::warn!(
                    "cannot restore deployed versions: {e:#}; serving the manifest's files"
                );
                return;
            }
        };
        for (id, saved) in saved {
            let Ok((slot, _)) = self.slot(&id) else {
                tracing::warn!(component = %id, "a saved deployment names a component the manifest no longer has; ignoring it");
                continue;
            };
            let manifest = slot.stable();
            let manifest = &manifest;
            let id = &id;
            let load = |digest: String| async move {
                if digest == manifest.digest {
                    return Some(manifest.clone());
                }
                match self.load_saved(id, &digest).await {
                    Ok(version) => Some(Arc::new(version)),
                    Err(e) => {
                        tracing::warn!(component = %id, digest = %digest, "cannot restore a deployed version: {e:#}");
                        None
                    }
                }
            };
            let Some(stable) = load(saved.stable).await else {
                continue;
            };
            let canary = match saved.canary {
                Some((digest, percent)) => load(digest).await.map(|v| (v, percent)),
                None => None,
            };
            let previous = match saved.previous {
                Some(digest) => load(digest).await,
                None => None,
            };
            if stable.digest != manifest.digest {
                tracing::info!(component = %id, digest = crate::registry::http::short(&stable.digest), "serving the deployed version, not the manifest's file");
            }
            slot.publish(Deployment {
                stable,
                canary,
                previous,
            });
        }
    }

    async fn load_saved(&self, id: &str, digest: &str) -> anyhow::Result<Version> {
        let path = self.blob(digest);
        let wasm = bytes::Bytes::from(
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
        );
        let config = &self.app.components[id];
        let prepared = loader::prepare(&self.engine, &self.linker, config, wasm).await?;
        Ok(loader::activate(prepared, config, &self.backends).await?)
    }

    /// The versions of a component with their traffic, and whether the stable one is the
    /// manifest's file.
    /// The component's call policies with what each destination has seen, for the status.
    pub fn calls(&self, id: &str) -> Vec<serde_json::Value> {
        self.registry
            .get(id)
            .map(|slot| slot.calls.status())
            .unwrap_or_default()
    }

    pub fn versions(&self, id: &str) -> Option<(Vec<VersionStatus>, bool)> {
        let slot = self.registry.get(id)?;
        let d = slot.deployment();
        let at = |v: &Version| crate::telemetry::rfc3339(v.loaded_at);
        let rates = |v: &Version| {
            self.metrics
                .rates(id, crate::registry::http::short(&v.digest))
        };
        let canary_share = d.canary.as_ref().map_or(0, |(_, p)| *p);
        let mut versions = vec![VersionStatus {
            digest: d.stable.digest.clone(),
            loaded_at: at(&d.stable),
            traffic_percent: 100 - canary_share,
            state: "stable",
            requests_per_second: rates(&d.stable).0,
            errors_per_second: rates(&d.stable).1,
        }];
        if let Some((canary, percent)) = &d.canary {
            versions.push(VersionStatus {
                digest: canary.digest.clone(),
                loaded_at: at(canary),
                traffic_percent: *percent,
                state: "canary",
                requests_per_second: rates(canary).0,
                errors_per_second: rates(canary).1,
            });
        }
        if let Some(previous) = &d.previous {
            versions.push(VersionStatus {
                digest: previous.digest.clone(),
                loaded_at: at(previous),
                traffic_percent: 0,
                state: "previous",
                requests_per_second: rates(previous).0,
                errors_per_second: rates(previous).1,
            });
        }
        let from_manifest = self.manifest_digests.get(id) == Some(&d.stable.digest);
        Some((versions, from_manifest))
    }
}

/// The share of traffic a canary may take: the one rule the admin API, the CLI and the
/// docs follow. A whole deploy is the way to 100 %; 0 % would be no canary at all.
pub const CANARY_PERCENT: std::ops::RangeInclusive<u32> = 1..=99;
