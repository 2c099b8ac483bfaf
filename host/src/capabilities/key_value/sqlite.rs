//! The SQLite backend: one WAL-mode file per label, the layout Spin's own store uses.

use std::path::Path;

use anyhow::Context as _;
use sqlx::sqlite::SqlitePool;

use super::{Store, StoreError};

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn open(path: &Path) -> anyhow::Result<SqliteStore> {
        let pool = crate::capabilities::sql::sqlite::open_pool(path, 8).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS spin_key_value (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
        )
        .execute(&pool)
        .await
        .with_context(|| format!("cannot prepare key-value store {}", path.display()))?;
        Ok(SqliteStore { pool })
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError(e.to_string())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        sqlx::query_scalar("SELECT value FROM spin_key_value WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO spin_key_value (key, value) VALUES (?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM spin_key_value WHERE key = ?")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM spin_key_value WHERE key = ?)")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn keys(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT key FROM spin_key_value")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)
    }
}
