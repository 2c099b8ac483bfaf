//! `fermyon:spin/key-value@2.0.0`: a component's own key-value stores.
//!
//! | runtime config | backend |
//! |---|---|
//! | (none) | SQLite file `<data-dir>/kv/<label>.db` |
//! | `[key_value_store.<label>] type = "spin"`, `path = "…"` | SQLite file at `path` |
//! | `[key_value_store.<label>] type = "memory"` | process memory, gone on restart (tests, caches) |
//!
//! Like databases, a store label is granted to one component only.

mod memory;
mod sqlite;
mod wit;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

pub use wit::{KeyValue, KeyValueView, KvSession, StoreHandle};

#[derive(Debug, thiserror::Error)]
#[error("key-value store unavailable: {0}")]
pub struct StoreError(pub String);

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    async fn keys(&self) -> Result<Vec<String>, StoreError>;
}

/// `[key_value_store.<label>]` in the runtime config.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Config {
    Spin {
        #[serde(default)]
        path: Option<PathBuf>,
    },
    Memory,
}

/// Opens the store for `label`: the only place that names concrete backends.
pub async fn build(
    label: &str,
    config: Option<&Config>,
    config_dir: &Path,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match config {
        Some(Config::Memory) => Arc::new(memory::MemoryStore::default()),
        Some(Config::Spin { path: Some(path) }) => {
            Arc::new(sqlite::SqliteStore::open(&config_dir.join(path)).await?)
        }
        Some(Config::Spin { path: None }) | None => {
            let path = data_dir.join("kv").join(format!("{label}.db"));
            Arc::new(sqlite::SqliteStore::open(&path).await?)
        }
    })
}

/// The stores one component version may open, by label.
pub type Grants = Arc<HashMap<String, Arc<dyn Store>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_backend_behaves_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let backends = [
            (
                "sqlite",
                build("s", None, dir.path(), dir.path()).await.unwrap(),
            ),
            (
                "memory",
                build("m", Some(&Config::Memory), dir.path(), dir.path())
                    .await
                    .unwrap(),
            ),
        ];
        for (name, store) in backends {
            assert_eq!(store.get("a").await.unwrap(), None, "{name}");
            assert!(!store.exists("a").await.unwrap(), "{name}");
            store.set("a", b"1").await.unwrap();
            store.set("b", b"").await.unwrap();
            store.set("a", b"2").await.unwrap();
            assert_eq!(
                store.get("a").await.unwrap().as_deref(),
                Some(&b"2"[..]),
                "{name}"
            );
            assert_eq!(
                store.get("b").await.unwrap().as_deref(),
                Some(&b""[..]),
                "{name}"
            );
            assert!(store.exists("b").await.unwrap(), "{name}");
            let mut keys = store.keys().await.unwrap();
            keys.sort();
            assert_eq!(keys, ["a", "b"], "{name}");
            store.delete("a").await.unwrap();
            store.delete("never-there").await.unwrap();
            assert_eq!(store.get("a").await.unwrap(), None, "{name}");
            assert_eq!(store.keys().await.unwrap(), ["b"], "{name}");
        }
    }

    #[tokio::test]
    async fn sqlite_store_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        build("s", None, dir.path(), dir.path())
            .await
            .unwrap()
            .set("k", b"v")
            .await
            .unwrap();
        let again = build("s", None, dir.path(), dir.path()).await.unwrap();
        assert_eq!(again.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    }
}
