//! The components the host serves: each id has a slot whose current version is swapped
//! atomically, so a request or message looks it up with one atomic load and in-flight work
//! keeps the version it started on.

pub mod grants;
pub mod invocation;
pub mod loader;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, Semaphore};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::SubscriberPre;
use crate::capabilities::http_outbound::{AllowedHosts, Chaining};
use crate::capabilities::messaging::Messaging;
use crate::capabilities::{key_value, sql};
use crate::config::Limits;
use crate::state::InvocationState;

pub use loader::LoadError;

/// One loaded version of a component: everything a request needs, built once at load.
pub struct Version {
    /// `sha256:<hex>` of the wasm.
    pub digest: String,
    pub loaded_at: SystemTime,
    /// Present when a route leads to the component.
    pub http: Option<ProxyPre<InvocationState>>,
    /// Present when the component subscribes to events.
    pub handler: Option<SubscriberPre<InvocationState>>,
    pub databases: sql::Grants,
    /// The label whose database holds the outbox and inbox.
    pub primary_database: Option<String>,
    pub publishes: Arc<[String]>,
    pub messaging: Option<Arc<Messaging>>,
    /// Calls to `http://<component>.spin.internal`, when its allow-list names any.
    pub chaining: Option<Arc<Chaining>>,
    pub stores: key_value::Grants,
    pub variables: Arc<HashMap<String, String>>,
    pub environment: Arc<[(String, String)]>,
    pub allowed_hosts: Arc<AllowedHosts>,
    pub limits: Limits,
}

/// Which versions of a component serve, swapped as one value so a request or message sees
/// either the old arrangement or the new one, never a mix.
pub struct Deployment {
    /// Takes all traffic, or all but the canary's share.
    pub stable: Arc<Version>,
    /// A new version on trial, with its share of traffic in percent (1–99).
    pub canary: Option<(Arc<Version>, u8)>,
    /// What `rollback` returns to once the stable version was replaced.
    pub previous: Option<Arc<Version>>,
}

impl Deployment {
    pub fn only(version: Version) -> Deployment {
        Deployment {
            stable: Arc::new(version),
            canary: None,
            previous: None,
        }
    }
}

/// A component id and the versions that serve it.
pub struct Slot {
    pub id: Arc<str>,
    deployment: ArcSwap<Deployment>,
    /// Bounds the invocations running at once (`max_concurrency`), across versions.
    pub permits: Arc<Semaphore>,
    /// Wakes the relay of the component's outbox after a commit that published.
    pub relay: Option<Arc<Notify>>,
}

impl Slot {
    pub fn new(id: &str, version: Version) -> Slot {
        Slot {
            id: id.into(),
            permits: Arc::new(Semaphore::new(version.limits.max_concurrency as usize)),
            relay: version
                .primary_database
                .as_ref()
                .map(|_| Arc::new(Notify::new())),
            deployment: ArcSwap::from_pointee(Deployment::only(version)),
        }
    }

    /// The version new work should run on: the canary for its share of picks, else stable.
    pub fn current(&self) -> Arc<Version> {
        let deployment = self.deployment.load();
        match &deployment.canary {
            Some((canary, percent)) if rand::random_range(0..100u8) < *percent => canary.clone(),
            _ => deployment.stable.clone(),
        }
    }

    /// The stable version, for what does not choose per request (status, load-time checks).
    pub fn stable(&self) -> Arc<Version> {
        self.deployment.load().stable.clone()
    }

    pub fn deployment(&self) -> Arc<Deployment> {
        self.deployment.load_full()
    }

    /// Publishes a new arrangement in one atomic swap; in-flight work keeps its version.
    pub fn publish(&self, deployment: Deployment) {
        self.deployment.store(Arc::new(deployment));
    }
}

/// Every component of the app, by id.
#[derive(Default)]
pub struct Registry {
    slots: HashMap<String, Arc<Slot>>,
}

impl Registry {
    pub fn new(slots: impl IntoIterator<Item = Slot>) -> Registry {
        Registry {
            slots: slots
                .into_iter()
                .map(|s| (s.id.to_string(), Arc::new(s)))
                .collect(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Slot>> {
        self.slots.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.slots.values()
    }
}
