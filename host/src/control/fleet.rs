//! Deployments shared by a fleet. With `[messaging] type = "nats"`, what each component
//! serves (stable, canary and its share, previous, by digest) lives in a JetStream key-value
//! bucket, one key per component, and the wasm of every version in an object store keyed by
//! digest. A deploy, promote or rollback on any host writes the bucket, compare-and-set on
//! the revision it started from; every host watches the bucket and loads what it names.
//!
//! Each host also reports what it serves, and any version it could not load, to a second
//! bucket every [`HEARTBEAT`]; a report older than [`HOST_TTL`] expires with its host, so
//! `berth status` lists the hosts alive now.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, object_store};
use futures::StreamExt as _;
use sha2::Digest as _;
use tokio::io::AsyncReadExt as _;

use crate::registry::Arrangement;

/// One component's versions by digest, as the bucket holds them.
pub type Saved = Arrangement<String>;

/// How long a host waits for NATS before it serves what it has and follows later.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a host reports to the fleet, besides after every change.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// A host that has not reported for this long has left the fleet.
pub const HOST_TTL: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct FleetStore {
    kv: kv::Store,
    hosts: kv::Store,
    objects: object_store::ObjectStore,
}

/// A change to one component, seen in the bucket.
pub struct Change {
    pub component: String,
    pub saved: Saved,
    pub revision: u64,
}

/// What one host serves, as it last reported it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostReport {
    pub id: String,
    /// The berth release the host runs: a fleet upgraded host by host mixes two.
    pub berth_version: String,
    pub started_at: String,
    pub reported_at: String,
    pub components: BTreeMap<String, Served>,
}

/// One component on one host.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    pub serving: Saved,
    /// The fleet's arrangement this host could not load, while it keeps serving its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failed>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failed {
    pub wanted: Saved,
    pub error: String,
    pub since: String,
}

impl FleetStore {
    /// The bucket and object store of app `name`, created when missing.
    pub async fn open(url: &str, name: &str) -> anyhow::Result<FleetStore> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(url)
            .await
            .with_context(|| format!("cannot reach NATS at {url}"))?;
        let jetstream = jetstream::new(client);
        let bucket = bucket_name(name);
        let kv = key_value(
            &jetstream,
            &format!("{bucket}_deployments"),
            jetstream::stream::Config {
                description: Some(format!("what each component of {name} serves, fleet-wide")),
                max_messages_per_subject: 10,
                discard: jetstream::stream::DiscardPolicy::New,
                ..Default::default()
            },
        )
        .await?;
        let hosts = key_value(
            &jetstream,
            &format!("{bucket}_hosts"),
            jetstream::stream::Config {
                description: Some(format!("each host of {name} and what it serves")),
                max_messages_per_subject: 1,
                max_age: HOST_TTL,
                ..Default::default()
            },
        )
        .await?;
        let objects = jetstream
            .create_object_store(object_store::Config {
                bucket: format!("{bucket}_wasm"),
                description: Some(format!("the wasm of every deployed version of {name}")),
                ..Default::default()
            })
            .await
            .context("cannot open the wasm object store in JetStream")?;
        Ok(FleetStore { kv, hosts, objects })
    }

    /// What the bucket says `component` serves, with the revision to update it from.
    pub async fn get(&self, component: &str) -> anyhow::Result<Option<(Saved, u64)>> {
        let Some(entry) = self
            .kv
            .entry(component)
            .await
            .context("cannot read the deployments bucket")?
        else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let saved = serde_json::from_slice(&entry.value)
            .with_context(|| format!("the deployments bucket's `{component}` is not valid"))?;
        Ok(Some((saved, entry.revision)))
    }

    /// Writes `saved` for `component`, unless the key changed since `revision` (`None`: it
    /// must not exist yet), and returns the new revision. `Ok(None)` when another host got
    /// there first.
    pub async fn put(
        &self,
        component: &str,
        saved: &Saved,
        revision: Option<u64>,
    ) -> anyhow::Result<Option<u64>> {
        let value = bytes::Bytes::from(serde_json::to_vec(saved)?);
        let written = match revision {
            Some(revision) => self
                .kv
                .update(component, value, revision)
                .await
                .map_err(|e| (e.kind() == kv::UpdateErrorKind::WrongLastRevision, e.into())),
            None => self
                .kv
                .create(component, value)
                .await
                .map_err(|e| (e.kind() == kv::CreateErrorKind::AlreadyExists, e.into())),
        };
        match written {
            Ok(revision) => Ok(Some(revision)),
            Err((true, _)) => Ok(None),
            Err((false, e)) => {
                Err::<_, anyhow::Error>(e).context("cannot write the deployments bucket")
            }
        }
    }

    /// Keeps `wasm` under `digest`, once.
    pub async fn put_wasm(&self, digest: &str, wasm: &[u8]) -> anyhow::Result<()> {
        if self.objects.info(digest).await.is_ok() {
            return Ok(());
        }
        self.objects
            .put(digest, &mut &wasm[..])
            .await
            .with_context(|| format!("cannot store the wasm of {digest} in JetStream"))?;
        Ok(())
    }

    /// The wasm of `digest`.
    pub async fn wasm(&self, digest: &str) -> anyhow::Result<bytes::Bytes> {
        let mut object = self
            .objects
            .get(digest)
            .await
            .with_context(|| format!("cannot fetch the wasm of {digest} from JetStream"))?;
        let mut wasm = Vec::new();
        object
            .read_to_end(&mut wasm)
            .await
            .with_context(|| format!("cannot read the wasm of {digest} from JetStream"))?;
        Ok(wasm.into())
    }

    /// Every component's latest arrangement, then each change as it is written.
    pub async fn watch(
        &self,
    ) -> anyhow::Result<impl futures::Stream<Item = anyhow::Result<Change>> + use<>> {
        let watch = self
            .kv
            .watch_with_history(">")
            .await
            .context("cannot watch the deployments bucket")?;
        Ok(watch.filter_map(|entry| async move {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => return Some(Err(anyhow::Error::from(e))),
            };
            if entry.operation != kv::Operation::Put {
                return None;
            }
            Some(
                serde_json::from_slice(&entry.value)
                    .map(|saved| Change {
                        component: entry.key.clone(),
                        saved,
                        revision: entry.revision,
                    })
                    .with_context(|| {
                        format!("the deployments bucket's `{}` is not valid", entry.key)
                    }),
            )
        }))
    }
}

impl FleetStore {
    /// Records what this host serves, for [`HOST_TTL`].
    pub async fn report(&self, report: &HostReport) -> anyhow::Result<()> {
        let value = bytes::Bytes::from(serde_json::to_vec(report)?);
        self.hosts
            .put(host_key(&report.id), value)
            .await
            .context("cannot report to the hosts bucket")?;
        Ok(())
    }

    /// Takes this host off the list, as it stops.
    pub async fn leave(&self, id: &str) -> anyhow::Result<()> {
        self.hosts
            .delete(host_key(id))
            .await
            .context("cannot leave the hosts bucket")
    }

    /// Every host that reported within [`HOST_TTL`], by id.
    pub async fn hosts(&self) -> anyhow::Result<Vec<HostReport>> {
        let keys = keys(&self.hosts)
            .await
            .context("cannot list the hosts bucket")?;
        let mut hosts = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(entry) = self
                .hosts
                .entry(&key)
                .await
                .context("cannot read the hosts bucket")?
            else {
                continue;
            };
            // A report this release cannot read (another berth release's) is left out
            // rather than failing the whole list.
            if entry.operation == kv::Operation::Put
                && let Ok(report) = serde_json::from_slice::<HostReport>(&entry.value)
            {
                hosts.push(report);
            }
        }
        hosts.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(hosts)
    }

    /// Every component's arrangement in the deployments bucket.
    pub async fn deployments(&self) -> anyhow::Result<BTreeMap<String, Saved>> {
        let keys = keys(&self.kv)
            .await
            .context("cannot list the deployments bucket")?;
        let mut all = BTreeMap::new();
        for key in keys {
            if let Some((saved, _)) = self.get(&key).await? {
                all.insert(key, saved);
            }
        }
        Ok(all)
    }
}

/// Opens key-value bucket `bucket` on a stream made with `limits`, creating it when missing,
/// as `create_key_value` would: that call first asks for the account's API level, which NATS
/// servers before 2.11 do not answer.
async fn key_value(
    jetstream: &jetstream::Context,
    bucket: &str,
    limits: jetstream::stream::Config,
) -> anyhow::Result<kv::Store> {
    jetstream
        .get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: 1,
            ..limits
        })
        .await
        .with_context(|| format!("cannot create the bucket {bucket} in JetStream"))?;
    jetstream
        .get_key_value(bucket)
        .await
        .with_context(|| format!("cannot open the bucket {bucket} in JetStream"))
}

/// The keys `store` holds now; one that cannot be read is skipped.
async fn keys(store: &kv::Store) -> anyhow::Result<Vec<String>> {
    Ok(store
        .keys()
        .await?
        .filter_map(|key| async move { key.ok() })
        .collect()
        .await)
}

/// A host id as a bucket key, which takes letters, digits and `-_=./` only.
fn host_key(id: &str) -> String {
    let key: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // A hash keeps two ids that clean up alike (`a:1`, `a_1`) apart.
    let hash = sha2::Sha256::digest(id.as_bytes());
    format!("{key}_{}", hex::encode(&hash[..4]))
}

/// A bucket name from the app's name: letters, digits, `-` and `_` only.
fn bucket_name(app: &str) -> String {
    let cleaned: String = app
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("berth_{cleaned}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn bucket_names_keep_only_what_jetstream_takes() {
        assert_eq!(super::bucket_name("berth-shop"), "berth_berth-shop");
        assert_eq!(super::bucket_name("my shop.v2"), "berth_my_shop_v2");
    }

    #[test]
    fn host_keys_are_valid_and_distinct() {
        let (a, b) = (
            super::host_key("node-1:3000"),
            super::host_key("node-1_3000"),
        );
        assert!(a.starts_with("node-1_3000_"), "{a}");
        assert_ne!(a, b);
        assert!(
            super::host_key("ä .x")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=/".contains(c))
        );
    }
}
