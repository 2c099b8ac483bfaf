//! The SQLite backend: one WAL-mode file per label, a sqlx pool, prepared statements cached
//! per connection.
//!
//! Health is honest: the file is checked (`PRAGMA quick_check`) when it opens, and any
//! statement SQLite answers with "corrupt" or "not a database" marks it unhealthy for good.
//! Either way the log names the file and `/readyz` answers 503 naming it, until the file is
//! restored and the host restarted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
    health: Arc<Health>,
    /// Held from `BEGIN IMMEDIATE` to its end. SQLite has one writer per file, and a writer
    /// that finds the lock taken sleeps in SQLite's busy handler (1 ms, then 2, 5, 10…)
    /// long after the lock is free; queueing here first hands the lock over in order, as
    /// soon as it is released. This process is the file's only writer.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteDatabase {
    pub async fn open(path: &Path) -> anyhow::Result<SqliteDatabase> {
        let pool = open_pool(path, 16).await?;
        let health = Arc::new(Health {
            path: path.to_owned(),
            corrupt: Mutex::new(None),
        });
        // Bounded by the file's size, and done once: a corrupt page found now is reported
        // now, not when the first request that reads it fails.
        match sqlx::query_scalar::<_, String>("PRAGMA quick_check")
            .fetch_all(&pool)
            .await
        {
            Ok(lines) if lines.iter().all(|l| l == "ok") => {}
            Ok(lines) => health.mark_corrupt(&lines.join("; ")),
            Err(e) => {
                if is_corruption(&e) {
                    health.mark_corrupt(&e.to_string());
                } else {
                    return Err(e).with_context(|| {
                        format!("cannot check SQLite database {}", path.display())
                    });
                }
            }
        }
        Ok(SqliteDatabase {
            pool,
            health,
            writer: Default::default(),
        })
    }
}

/// Whether the file is still fit to serve; shared by the database and its connections.
struct Health {
    path: PathBuf,
    /// Set once, by the first corruption seen.
    corrupt: Mutex<Option<String>>,
}

impl Health {
    fn mark_corrupt(&self, reason: &str) {
        let Ok(mut corrupt) = self.corrupt.lock() else {
            return;
        };
        if corrupt.is_none() {
            tracing::error!(
                file = %self.path.display(),
                "the SQLite database file is corrupt ({reason}); the host reports not ready until it is restored from a backup"
            );
            *corrupt = Some(reason.to_owned());
        }
    }

    fn check(&self) -> Result<(), SqlError> {
        match self.corrupt.lock().ok().and_then(|c| c.clone()) {
            None => Ok(()),
            Some(reason) => Err(SqlError::Unavailable(format!(
                "{} is corrupt ({reason}): restore it from a backup",
                self.path.display()
            ))),
        }
    }
}

/// SQLITE_CORRUPT and SQLITE_NOTADB, with their extended codes.
fn is_corruption(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    let primary = db
        .code()
        .and_then(|c| c.parse::<i32>().ok())
        .map(|c| c & 0xff);
    matches!(primary, Some(11 | 26))
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
            health: self.health.clone(),
            in_transaction: false,
            writer: self.writer.clone(),
            writing: None,
        }))
    }

    async fn migrate(&self, dir: &Path) -> Result<Applied, MigrationError> {
        migrate::run(dir, &self.pool).await
    }

    async fn ping(&self) -> Result<(), SqlError> {
        self.health.check()?;
        self.pool.execute("SELECT 1").await.map_err(unavailable)?;
        Ok(())
    }

    fn location(&self) -> String {
        self.health.path.display().to_string()
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

struct SqliteConnection {
    conn: sqlx::pool::PoolConnection<Sqlite>,
    health: Arc<Health>,
    /// Set between `begin` and its end; the pool knows nothing of raw transactions.
    in_transaction: bool,
    writer: Arc<tokio::sync::Mutex<()>>,
    /// The database's write turn, held while this connection's transaction is open.
    writing: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SqliteConnection {
    async fn run(&mut self, statement: &'static str) -> Result<(), SqlError> {
        let done = (&mut *self.conn).execute(statement).await.map(drop);
        done.map_err(|e| self.error(e))
    }

    /// A statement's error as the guest sees it, noting a corrupt file on the way.
    fn error(&self, e: sqlx::Error) -> SqlError {
        if is_corruption(&e) {
            self.health.mark_corrupt(&e.to_string());
        }
        statement_error(e)
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
        let prepared = match (&mut *self.conn)
            .prepare(AssertSqlSafe(statement).into_sql_str())
            .await
        {
            Ok(prepared) => prepared,
            Err(e) => return Err(self.error(e)),
        };
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
        let rows = match query.fetch_all(&mut *self.conn).await {
            Ok(rows) => rows,
            Err(e) => return Err(self.error(e)),
        };
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
