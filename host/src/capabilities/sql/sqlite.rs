//! The SQLite backend: one WAL-mode file per label, a sqlx pool, prepared statements cached
//! per connection.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::Either;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{
    AssertSqlSafe, Column, Decode, Executor, Row, SqlSafeStr, Sqlite, Statement, TypeInfo, ValueRef,
};

use super::migrate::{self, Applied, MigrationError};
use super::{Connection, Database, Rows, SqlError, Value};

pub struct SqliteDatabase {
    pool: SqlitePool,
    /// Held from `BEGIN IMMEDIATE` to its end. SQLite has one writer per file, and a writer
    /// that finds the lock taken sleeps in SQLite's busy handler (1 ms, then 2, 5, 10…)
    /// long after the lock is free; queueing here first hands the lock over in order, as
    /// soon as it is released. This process is the file's only writer.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteDatabase {
    pub async fn open(path: &Path) -> anyhow::Result<SqliteDatabase> {
        Ok(SqliteDatabase {
            pool: open_pool(path, 16).await?,
            writer: Default::default(),
        })
    }
}

/// A pool on a SQLite file, created if missing: WAL, so readers never wait for the writer;
/// NORMAL sync, durable against process crashes (an OS crash can lose the last commits);
/// a busy timeout, so writers queue instead of failing; prepared statements cached.
pub(crate) async fn open_pool(path: &Path, max_connections: u32) -> anyhow::Result<SqlitePool> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
        .statement_cache_capacity(256);
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open SQLite database {}", path.display()))
}

#[async_trait::async_trait]
impl Database for SqliteDatabase {
    async fn connect(&self) -> Result<Box<dyn Connection>, SqlError> {
        let conn = self.pool.acquire().await.map_err(unavailable)?;
        Ok(Box::new(SqliteConnection {
            conn,
            in_transaction: false,
            writer: self.writer.clone(),
            writing: None,
        }))
    }

    async fn migrate(&self, dir: &Path) -> Result<Applied, MigrationError> {
        migrate::run(dir, &self.pool).await
    }

    async fn ping(&self) -> Result<(), SqlError> {
        self.pool.execute("SELECT 1").await.map_err(unavailable)?;
        Ok(())
    }
}

struct SqliteConnection {
    conn: sqlx::pool::PoolConnection<Sqlite>,
    /// Set between `begin` and its end; the pool knows nothing of raw transactions.
    in_transaction: bool,
    writer: Arc<tokio::sync::Mutex<()>>,
    /// The database's write turn, held while this connection's transaction is open.
    writing: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SqliteConnection {
    async fn run(&mut self, statement: &'static str) -> Result<(), SqlError> {
        (&mut *self.conn)
            .execute(statement)
            .await
            .map(drop)
            .map_err(statement_error)
    }
}

impl Drop for SqliteConnection {
    fn drop(&mut self) {
        if self.in_transaction {
            // Closing the connection rolls the transaction back.
            self.conn.close_on_drop();
        }
    }
}

#[async_trait::async_trait]
impl Connection for SqliteConnection {
    async fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<Rows, SqlError> {
        // Prepared statements are cached per connection, so this is a lookup after the first
        // time; it gives the parameter count to check and the column names of empty results.
        let prepared = (&mut *self.conn)
            .prepare(AssertSqlSafe(statement).into_sql_str())
            .await
            .map_err(statement_error)?;
        if let Some(Either::Right(expected)) = prepared.parameters()
            && expected != params.len()
        {
            return Err(SqlError::Statement(format!(
                "the statement takes {expected} parameters but {} were given",
                params.len()
            )));
        }
        let columns = prepared
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        let mut query = prepared.query();
        for param in params {
            query = match param {
                Value::Integer(i) => query.bind(i),
                Value::Real(r) => query.bind(r),
                Value::Text(t) => query.bind(t),
                Value::Blob(b) => query.bind(b),
                Value::Null => query.bind(None::<i64>),
            };
        }
        let rows = query
            .fetch_all(&mut *self.conn)
            .await
            .map_err(statement_error)?;
        let rows = rows.iter().map(row_values).collect::<Result<_, _>>()?;
        Ok(Rows { columns, rows })
    }

    async fn begin(&mut self) -> Result<(), SqlError> {
        self.writing = Some(self.writer.clone().lock_owned().await);
        // Set before awaiting: if the invocation is cancelled while BEGIN waits for the
        // lock, the BEGIN still runs, and the connection must then be closed, not reused.
        self.in_transaction = true;
        let begun = self.run("BEGIN IMMEDIATE").await;
        self.in_transaction = begun.is_ok();
        if begun.is_err() {
            self.writing = None;
        }
        begun
    }

    async fn commit(&mut self) -> Result<(), SqlError> {
        self.run("COMMIT").await?;
        self.in_transaction = false;
        self.writing = None;
        Ok(())
    }

    async fn rollback(&mut self) -> Result<(), SqlError> {
        self.run("ROLLBACK").await?;
        self.in_transaction = false;
        self.writing = None;
        Ok(())
    }
}

fn row_values(row: &SqliteRow) -> Result<Vec<Value>, SqlError> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i).map_err(statement_error)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let kind = raw.type_info().name().to_owned();
            let decoded = match kind.as_str() {
                "INTEGER" => <i64 as Decode<Sqlite>>::decode(raw).map(Value::Integer),
                "REAL" => <f64 as Decode<Sqlite>>::decode(raw).map(Value::Real),
                "BLOB" => <Vec<u8> as Decode<Sqlite>>::decode(raw).map(Value::Blob),
                _ => <String as Decode<Sqlite>>::decode(raw).map(Value::Text),
            };
            decoded.map_err(|e| SqlError::Statement(format!("cannot read column {i}: {e}")))
        })
        .collect()
}

fn statement_error(e: sqlx::Error) -> SqlError {
    match e {
        sqlx::Error::Database(db) => SqlError::Statement(db.message().to_owned()),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => unavailable(e),
        other => SqlError::Statement(other.to_string()),
    }
}

fn unavailable(e: sqlx::Error) -> SqlError {
    SqlError::Unavailable(e.to_string())
}
