//! The in-memory backend: for tests and throwaway caches.

use std::collections::HashMap;
use std::sync::RwLock;

use super::{Store, StoreError};

#[derive(Default)]
pub struct MemoryStore {
    entries: RwLock<HashMap<String, Vec<u8>>>,
}

impl MemoryStore {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Vec<u8>>> {
        // A panic while holding the lock cannot leave a map half-written, so a poisoned
        // lock is still sound to use.
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Vec<u8>>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read().get(key).cloned())
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write().insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.write().remove(key);
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.read().contains_key(key))
    }

    async fn keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.read().keys().cloned().collect())
    }
}
