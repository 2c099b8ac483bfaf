//! The components the host serves: each id has a slot whose current version is swapped
//! atomically, so a request or message looks it up with one atomic load and in-flight work
//! keeps the version it started on.
//!
//! The registry also owns invocation: [`http::invoke`] and [`invocation::handle_message`]
//! are the one way to run a component, for the gateway, event delivery, service chaining
//! ([`LocalService`](crate::capabilities::http_outbound::LocalService)) and request-reply
//! ([`Responder`](crate::capabilities::messaging::Responder)) alike. The last two are
//! handed to each invocation's Store, so a guest can reach the other components without
//! the registry being wired into anything after it is built.

pub mod grants;
pub mod http;
pub mod invocation;
pub mod loader;
pub mod portability;
pub mod reuse;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, Semaphore};
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

use crate::bindings::SubscriberPre;
use crate::capabilities::http_outbound::AllowedHosts;
use crate::capabilities::messaging::Messaging;
use crate::capabilities::{key_value, sql};
use crate::config::{self, Limits};
use crate::engine::Engine;
use crate::mesh::Faults;
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
    pub stores: key_value::Grants,
    pub variables: Arc<HashMap<String, String>>,
    pub environment: Arc<[(String, String)]>,
    pub allowed_hosts: Arc<AllowedHosts>,
    pub limits: Limits,
    /// Its kept HTTP instances, when the component opted in to reuse (`limits.reuse`).
    pub instances: Option<reuse::Pool<Proxy>>,
}

/// Which versions of a component serve, swapped as one value so a request or message sees
/// either the old arrangement or the new one, never a mix. Generic so the same transitions
/// hold for the loaded versions ([`Deployment`]) and for the digests kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Arrangement<V> {
    /// Takes all traffic, or all but the canary's share.
    pub stable: V,
    /// A new version on trial, with its share of traffic in percent (1–99).
    #[serde(default)]
    pub canary: Option<(V, u8)>,
    /// What `rollback` returns to once the stable version was replaced.
    #[serde(default)]
    pub previous: Option<V>,
}

/// The loaded versions of a component.
pub type Deployment = Arrangement<Arc<Version>>;

impl<V: Clone> Arrangement<V> {
    pub fn only(version: V) -> Arrangement<V> {
        Arrangement {
            stable: version,
            canary: None,
            previous: None,
        }
    }

    /// With `new` deployed: as a canary taking `canary` percent (replacing any canary), or
    /// taking all traffic, the stable version kept as the previous one.
    pub fn deploy(&self, new: V, canary: Option<u8>) -> Arrangement<V> {
        match canary {
            Some(percent) => Arrangement {
                stable: self.stable.clone(),
                canary: Some((new, percent)),
                previous: self.previous.clone(),
            },
            None => Arrangement {
                stable: new,
                canary: None,
                previous: Some(self.stable.clone()),
            },
        }
    }

    /// The canary taking all traffic; `None` without a canary.
    pub fn promote(&self) -> Option<Arrangement<V>> {
        let (canary, _) = self.canary.as_ref()?;
        Some(Arrangement {
            stable: canary.clone(),
            canary: None,
            previous: Some(self.stable.clone()),
        })
    }

    /// The canary dropped, or else the previous version back to all traffic (the stable one
    /// becoming the previous, so a rollback can be undone); `None` when there is neither.
    pub fn rollback(&self) -> Option<Arrangement<V>> {
        match (&self.canary, &self.previous) {
            (Some(_), _) => Some(Arrangement {
                stable: self.stable.clone(),
                canary: None,
                previous: self.previous.clone(),
            }),
            (None, Some(previous)) => Some(Arrangement {
                stable: previous.clone(),
                canary: None,
                previous: Some(self.stable.clone()),
            }),
            (None, None) => None,
        }
    }

    /// Every version it holds: the stable one, the canary, the previous one.
    pub fn versions(&self) -> impl Iterator<Item = &V> {
        std::iter::once(&self.stable)
            .chain(self.canary.as_ref().map(|(v, _)| v))
            .chain(self.previous.as_ref())
    }

    pub fn map<W>(&self, f: impl Fn(&V) -> W) -> Arrangement<W> {
        Arrangement {
            stable: f(&self.stable),
            canary: self.canary.as_ref().map(|(v, p)| (f(v), *p)),
            previous: self.previous.as_ref().map(f),
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
    /// Subject patterns delivered to its `wasmcloud:messaging/handler`: where a request is
    /// answered.
    pub subscriptions: Arc<[String]>,
    /// `/<app>/<component>`: the `source` of the CloudEvents it publishes.
    pub source: Arc<str>,
    /// Where it receives events, by path segment: only the host may send there.
    event_routes: Vec<Vec<String>>,
    /// The policies of its calls and what each destination has seen; kept across versions.
    pub calls: Arc<crate::mesh::Calls>,
}

impl Slot {
    pub fn new(id: &str, version: Version, component: &config::ComponentConfig, app: &str) -> Slot {
        let messaging = &component.messaging;
        Slot {
            calls: Arc::new(crate::mesh::Calls::new(id.into(), component.calls.clone())),
            id: id.into(),
            source: format!("/{app}/{id}").into(),
            subscriptions: messaging.handler_patterns().into(),
            event_routes: messaging
                .event_routes()
                .map(|route| segments(route).map(str::to_owned).collect())
                .collect(),
            permits: Arc::new(Semaphore::new(version.limits.max_concurrency as usize)),
            relay: version
                .primary_database
                .as_ref()
                .map(|_| Arc::new(Notify::new())),
            deployment: ArcSwap::from_pointee(Deployment::only(Arc::new(version))),
        }
    }

    /// Whether a request for `path` would reach one of its event routes, or a path beneath
    /// one: compared by segments, skipping empty and `.` ones, the most any router of the
    /// component could read into a path.
    pub fn receives_events_at(&self, path: &str) -> bool {
        self.event_routes.iter().any(|route| {
            let mut path = segments(path);
            route.iter().all(|r| path.next() == Some(r.as_str()))
        })
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
    /// Instances kept by the versions of the old arrangement are dropped, so none serves
    /// after a swap, even when its version serves again (a rollback).
    pub fn publish(&self, deployment: Deployment) {
        let old = self.deployment.swap(Arc::new(deployment));
        for version in old.versions() {
            if let Some(pool) = &version.instances {
                pool.clear();
            }
        }
    }

    /// Drops every instance kept by its versions. They hold the registry (a guest reaches
    /// the other components through it), so this is what lets a stopped host's registry go.
    pub fn drop_kept_instances(&self) {
        for version in self.deployment.load().versions() {
            if let Some(pool) = &version.instances {
                pool.clear();
            }
        }
    }
}

/// Every component of the app, by id, and the engine that runs them.
pub struct Registry {
    slots: HashMap<String, Arc<Slot>>,
    engine: Engine,
    /// The largest body a chained request may carry (`max_request_bytes`).
    max_request_bytes: u64,
    /// Faults injected at run time, for every component of this host.
    faults: Arc<Faults>,
}

impl Registry {
    pub fn new(
        engine: Engine,
        slots: impl IntoIterator<Item = Slot>,
        max_request_bytes: u64,
    ) -> Registry {
        Registry {
            slots: slots
                .into_iter()
                .map(|s| (s.id.to_string(), Arc::new(s)))
                .collect(),
            engine,
            max_request_bytes,
            faults: Arc::default(),
        }
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Slot>> {
        self.slots.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Slot>> {
        self.slots.values()
    }
}

/// A path's segments, without the empty and `.` ones.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty() && *s != ".")
}

#[cfg(test)]
mod tests {
    use super::Arrangement;

    #[test]
    fn a_deploy_keeps_the_stable_version_to_roll_back_to() {
        let v1 = Arrangement::only("v1");
        let v2 = v1.deploy("v2", None);
        assert_eq!(
            v2,
            Arrangement {
                stable: "v2",
                canary: None,
                previous: Some("v1")
            }
        );
        let back = v2.rollback().unwrap();
        assert_eq!(
            back,
            Arrangement {
                stable: "v1",
                canary: None,
                previous: Some("v2")
            }
        );
        assert_eq!(back.rollback().unwrap(), v2, "a rollback can be undone");
        assert_eq!(v1.rollback(), None, "nothing to roll back to");
        assert_eq!(v1.promote(), None, "nothing to promote");
    }

    #[test]
    fn a_canary_is_promoted_replaced_or_dropped() {
        let stable = Arrangement::only("v1").deploy("v2", None);
        let canary = stable.deploy("v3", Some(10));
        assert_eq!(canary.stable, "v2");
        assert_eq!(canary.canary, Some(("v3", 10)));
        assert_eq!(
            canary.previous,
            Some("v1"),
            "a canary leaves the previous alone"
        );
        let replaced = canary.deploy("v4", Some(20));
        assert_eq!(replaced.canary, Some(("v4", 20)));
        assert_eq!(
            canary.rollback().unwrap(),
            stable,
            "rolling back drops the canary"
        );
        let promoted = canary.promote().unwrap();
        assert_eq!(
            promoted,
            Arrangement {
                stable: "v3",
                canary: None,
                previous: Some("v2")
            }
        );
        assert_eq!(canary.map(|v| v.len()).canary, Some((2, 10)));
    }
}
