//! The SQLite backend: one WAL-mode file per label, a sqlx pool, prepared statements cached
//! per connection.
//!
//! Health is honest: the file is checked (`PRAGMA quick_check`) when it opens, and any
//! statement SQLite answers with "corrupt" or "not a database" marks it unhealthy for good.
//! Either way the log names the file and `/readyz` answers 503 naming it, until the file is
//! restored and the host restarted.

use std::collections::HashMap;
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
use super::{Connection, Database, Rows, SqlError, Value, sqlx_failure, unavailable};

pub struct SqliteDatabase {
    pool: SqlitePool,
    health: Arc<Health>,
    shapes: Arc<Shapes>,
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
            shapes: Default::default(),
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

/// What preparing a statement tells, kept by its text: each statement then costs one trip
/// to the connection's thread instead of two (prepare, then run). sqlx keeps the compiled
/// statement itself, per connection.
#[derive(Default)]
struct Shapes(Mutex<HashMap<Arc<str>, Arc<Shape>>>);

struct Shape {
    sql: Arc<str>,
    /// `None` where SQLite does not say (several statements in one string).
    parameters: Option<usize>,
    /// The result's column names, for a result with no rows to take them from.
    columns: Vec<String>,
}

/// Distinct statement texts remembered per database: guests' SQL is mostly fixed strings,
/// and text built per request only refills the map after it is emptied.
const MAX_SHAPES: usize = 1024;
/// A longer statement (with its column names) is prepared every time instead, so the map
/// holds at most a few MiB whatever a guest sends.
const MAX_SHAPE_BYTES: usize = 4096;

impl Shapes {
    fn get(&self, sql: &str) -> Option<Arc<Shape>> {
        self.0.lock().ok()?.get(sql).cloned()
    }

    fn keep(&self, shape: Arc<Shape>) {
        let bytes = shape.sql.len() + shape.columns.iter().map(String::len).sum::<usize>();
        if bytes > MAX_SHAPE_BYTES {
            return;
        }
        if let Ok(mut shapes) = self.0.lock() {
            if shapes.len() >= MAX_SHAPES {
                shapes.clear();
            }
            shapes.insert(shape.sql.clone(), shape);
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
/// a busy timeout, so writers queue instead of failing; prepared statements cached. An idle
/// connection is handed out untested: it is a file handle on its own thread, not a socket
/// that can go stale, and the test is a round trip to that thread on every acquire.
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
        .test_before_acquire(false)
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
            shapes: self.shapes.clone(),
            in_transaction: false,
            crashed: false,
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
    shapes: Arc<Shapes>,
    /// Set between `begin` and its end; the pool knows nothing of raw transactions.
    in_transaction: bool,
    /// Its worker thread is gone. The pool does not test connections before handing them
    /// out ([`open_pool`]), so such a connection is closed here instead of being returned.
    crashed: bool,
    writer: Arc<tokio::sync::Mutex<()>>,
    /// The database's write turn, held while this connection's transaction is open.
    writing: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SqliteConnection {
    async fn run(&mut self, statement: &'static str) -> Result<(), SqlError> {
        let done = (&mut *self.conn).execute(statement).await.map(drop);
        done.map_err(|e| self.error(e))
    }

    /// Prepares `statement` once for its parameter count and column names. sqlx caches the
    /// compiled statement on this connection, so running it next compiles nothing.
    async fn shape(&mut self, statement: &str) -> Result<Arc<Shape>, SqlError> {
        let prepared = match (&mut *self.conn)
            .prepare(AssertSqlSafe(statement).into_sql_str())
            .await
        {
            Ok(prepared) => prepared,
            Err(e) => return Err(self.error(e)),
        };
        let shape = Arc::new(Shape {
            sql: statement.into(),
            parameters: match prepared.parameters() {
                Some(Either::Right(n)) => Some(n),
                _ => None,
            },
            columns: prepared
                .columns()
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
        });
        self.shapes.keep(shape.clone());
        Ok(shape)
    }

    /// A statement's error as the guest sees it, noting a corrupt file or a dead connection
    /// on the way.
    fn error(&mut self, e: sqlx::Error) -> SqlError {
        if is_corruption(&e) {
            self.health.mark_corrupt(&e.to_string());
        }
        if matches!(e, sqlx::Error::WorkerCrashed) {
            self.crashed = true;
        }
        statement_error(e)
    }
}

impl Drop for SqliteConnection {
    fn drop(&mut self) {
        if self.in_transaction || self.crashed {
            // Closing the connection rolls the transaction back.
            self.conn.close_on_drop();
        }
    }
}

#[async_trait::async_trait]
impl Connection for SqliteConnection {
    async fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<Rows, SqlError> {
        let shape = match self.shapes.get(statement) {
            Some(shape) => shape,
            None => self.shape(statement).await?,
        };
        if let Some(expected) = shape.parameters
            && expected != params.len()
        {
            return Err(SqlError::Statement(format!(
                "the statement takes {expected} parameters but {} were given",
                params.len()
            )));
        }
        let mut query = sqlx::query(AssertSqlSafe(shape.sql.clone()));
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
        // The rows name their columns; a guest's DDL since the shape was kept may have
        // changed what `SELECT *` returns.
        let columns = match rows.first() {
            Some(row) => row.columns().iter().map(|c| c.name().to_owned()).collect(),
            None => shape.columns.clone(),
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
        other => sqlx_failure(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(sql: String) -> Arc<Shape> {
        Arc::new(Shape {
            sql: sql.into(),
            parameters: Some(0),
            columns: vec!["a".into()],
        })
    }

    #[test]
    fn kept_shapes_are_bounded_in_number_and_size() {
        let shapes = Shapes::default();
        shapes.keep(shape(format!("SELECT '{}'", "x".repeat(MAX_SHAPE_BYTES))));
        assert_eq!(
            shapes.0.lock().unwrap().len(),
            0,
            "a long statement is not kept"
        );
        for i in 0..MAX_SHAPES + 10 {
            shapes.keep(shape(format!("SELECT {i}")));
            assert!(shapes.0.lock().unwrap().len() <= MAX_SHAPES);
        }
        assert!(shapes.get(&format!("SELECT {}", MAX_SHAPES + 9)).is_some());
    }
}
