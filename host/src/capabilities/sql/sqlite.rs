//! The SQLite backend: one WAL-mode file per label.
//!
//! An invocation's statements run on the thread that asks, through rusqlite: a statement on
//! a small file in the page cache takes microseconds, and handing each one to a connection
//! thread and back (as sqlx does) cost more than the statement, twice per statement, with
//! a third hand-off to test every connection returned to its pool. So that one slow query
//! cannot hold a runtime thread, a statement runs there only once it is known to be quick
//! ([`Pace`]); a new or slow one runs on tokio's blocking pool. sqlx keeps the load-time work:
//! migrations, the integrity check, and checkpoints, off the invocations' path.
//!
//! Health is honest: the file is checked (`PRAGMA quick_check`) when it opens, and any
//! statement SQLite answers with "corrupt" or "not a database" marks it unhealthy for good.
//! Either way the log names the file and `/readyz` answers 503 naming it, until the file is
//! restored and the host restarted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{ErrorCode, OpenFlags};
use sqlx::Executor;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::migrate::{self, Applied, MigrationError};
use super::{Connection, Database, Rows, SqlError, Value, unavailable};

/// Connections open at once per file; an invocation waits for one up to [`ACQUIRE_TIMEOUT`].
const MAX_CONNECTIONS: usize = 16;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a writer waits for the file's lock held by another process (or a migration).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Compiled statements kept per connection: guests' SQL is mostly fixed strings.
const STATEMENT_CACHE: usize = 256;
/// Write transactions between checkpoints of the write-ahead log into the file.
const CHECKPOINT_EVERY: u32 = 512;

pub struct SqliteDatabase {
    /// For what runs outside invocations: migrations, the integrity check, checkpoints.
    pool: SqlitePool,
    connections: Arc<Connections>,
    health: Arc<Health>,
    pace: Arc<Pace>,
    /// Held from `BEGIN IMMEDIATE` to its end. SQLite has one writer per file, and a writer
    /// that finds the lock taken sleeps in SQLite's busy handler (1 ms, then 2, 5, 10…)
    /// long after the lock is free; queueing here first hands the lock over in order, as
    /// soon as it is released. This process is the file's only writer.
    writer: Arc<tokio::sync::Mutex<()>>,
    checkpoints: Arc<Checkpoints>,
}

impl SqliteDatabase {
    pub async fn open(path: &Path) -> anyhow::Result<SqliteDatabase> {
        // Creates the file in WAL mode, which the file then keeps for every connection.
        let pool = open_pool(path, 2).await?;
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
                if sqlx_is_corruption(&e) {
                    health.mark_corrupt(&e.to_string());
                } else {
                    return Err(e).with_context(|| {
                        format!("cannot check SQLite database {}", path.display())
                    });
                }
            }
        }
        let connections = Arc::new(Connections {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        });
        // One connection now, so that a file that cannot be opened this way fails the load.
        let first = connections
            .open()
            .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
        connections.put(first);
        Ok(SqliteDatabase {
            checkpoints: Arc::new(Checkpoints {
                pool: pool.clone(),
                commits: AtomicU32::new(0),
                running: AtomicBool::new(false),
            }),
            pool,
            connections,
            health,
            pace: Default::default(),
            writer: Default::default(),
        })
    }
}

/// The invocations' connections: idle ones, and a permit per connection lent out.
struct Connections {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
    permits: Arc<Semaphore>,
}

impl Connections {
    /// NORMAL sync: durable against process crashes (an OS crash can lose the last
    /// commits). Checkpoints are [`Checkpoints`]' to run, never a committing invocation's.
    fn open(&self) -> rusqlite::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    fn take(&self) -> Option<rusqlite::Connection> {
        self.idle.lock().ok()?.pop()
    }

    fn put(&self, conn: rusqlite::Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }
}

/// Starts a checkpoint every [`CHECKPOINT_EVERY`] write transactions, on sqlx's connection
/// thread: it writes the log's pages into the file and syncs both, which would otherwise
/// stall the committing invocation's thread. PASSIVE: writers go on meanwhile.
struct Checkpoints {
    pool: SqlitePool,
    commits: AtomicU32,
    running: AtomicBool,
}

impl Checkpoints {
    fn committed(self: &Arc<Self>) {
        if self.commits.fetch_add(1, Ordering::Relaxed) % CHECKPOINT_EVERY != CHECKPOINT_EVERY - 1 {
            return;
        }
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.pool.execute("PRAGMA wal_checkpoint(PASSIVE)").await {
                tracing::warn!("cannot checkpoint a SQLite database: {e}");
            }
            this.running.store(false, Ordering::Release);
        });
    }
}

/// Which statements run on the calling thread: each text's recent runs, kept per database.
/// A statement that has not yet run [`QUICK_RUNS`] times in a row within [`QUICK`] goes to
/// the blocking pool; one that then takes longer goes back there.
#[derive(Default)]
struct Pace(RwLock<HashMap<Box<str>, AtomicU8>>);

/// The longest a statement may take and still count as quick.
const QUICK: Duration = Duration::from_millis(1);
/// Quick runs in a row before a statement runs on the calling thread.
const QUICK_RUNS: u8 = 4;
/// Distinct statement texts remembered per database; text built per request only refills
/// the map after it is emptied. A longer statement is never remembered (and never inline).
const MAX_PACED: usize = 1024;
const MAX_PACED_BYTES: usize = 4096;

impl Pace {
    fn is_quick(&self, sql: &str) -> bool {
        let Ok(known) = self.0.read() else {
            return false;
        };
        known
            .get(sql)
            .is_some_and(|runs| runs.load(Ordering::Relaxed) >= QUICK_RUNS)
    }

    fn record(&self, sql: &str, took: Duration) {
        let quick = took <= QUICK;
        if let Ok(known) = self.0.read()
            && let Some(runs) = known.get(sql)
        {
            let _ = runs.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(if quick {
                    n.saturating_add(1).min(QUICK_RUNS)
                } else {
                    0
                })
            });
            return;
        }
        if sql.len() > MAX_PACED_BYTES {
            return;
        }
        if let Ok(mut known) = self.0.write() {
            if known.len() >= MAX_PACED {
                known.clear();
            }
            known.insert(sql.into(), AtomicU8::new(u8::from(quick)));
        }
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
            Some(reason) => Err(self.corrupt_error(&reason)),
        }
    }

    fn corrupt_error(&self, reason: &str) -> SqlError {
        SqlError::Unavailable(format!(
            "{} is corrupt ({reason}): restore it from a backup",
            self.path.display()
        ))
    }
}

/// SQLITE_CORRUPT and SQLITE_NOTADB, with their extended codes, as sqlx reports them.
fn sqlx_is_corruption(e: &sqlx::Error) -> bool {
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
        .busy_timeout(BUSY_TIMEOUT)
        .statement_cache_capacity(256);
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open SQLite database {}", path.display()))
}

#[async_trait::async_trait]
impl Database for SqliteDatabase {
    async fn connect(&self) -> Result<Box<dyn Connection>, SqlError> {
        let permit = tokio::time::timeout(
            ACQUIRE_TIMEOUT,
            self.connections.permits.clone().acquire_owned(),
        )
        .await
        .map_err(|_| {
            SqlError::Unavailable(format!(
                "all {MAX_CONNECTIONS} connections to {} stayed busy for {} s",
                self.health.path.display(),
                ACQUIRE_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|_| SqlError::Unavailable("the database is closed".into()))?;
        let conn = match self.connections.take() {
            Some(conn) => conn,
            None => self.connections.open().map_err(|e| {
                SqlError::Unavailable(format!("cannot open {}: {e}", self.health.path.display()))
            })?,
        };
        Ok(Box::new(SqliteConnection {
            conn: Some(conn),
            _permit: permit,
            connections: self.connections.clone(),
            health: self.health.clone(),
            pace: self.pace.clone(),
            writer: self.writer.clone(),
            writing: None,
            checkpoints: self.checkpoints.clone(),
        }))
    }

    async fn migrate(&self, dir: &Path) -> Result<Applied, MigrationError> {
        // A new version migrates while the old one serves: its writers wait for their turn
        // here, not in SQLite's busy handler on a runtime thread.
        let _turn = self.writer.lock().await;
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
        self.connections.permits.close();
        let idle = self
            .connections
            .idle
            .lock()
            .map(|mut idle| std::mem::take(&mut *idle))
            .unwrap_or_default();
        // Closing the last connection to a file checkpoints it: off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || drop(idle)).await;
        self.pool.close().await;
    }
}

struct SqliteConnection {
    /// `None` while a statement runs on the blocking pool, and for good if that was lost.
    conn: Option<rusqlite::Connection>,
    _permit: OwnedSemaphorePermit,
    connections: Arc<Connections>,
    health: Arc<Health>,
    pace: Arc<Pace>,
    writer: Arc<tokio::sync::Mutex<()>>,
    /// The database's write turn, held while this connection's transaction is open (from
    /// `begin` to its end), so also what says one is open.
    writing: Option<tokio::sync::OwnedMutexGuard<()>>,
    checkpoints: Arc<Checkpoints>,
}

impl SqliteConnection {
    /// Runs `statement` here when it is known to be quick, else on the blocking pool, and
    /// notes how long it took.
    async fn run(&mut self, statement: &str, params: Vec<Value>) -> Result<Rows, SqlError> {
        let Some(conn) = self.conn.take() else {
            return Err(SqlError::Unavailable(
                "the connection was lost with a statement that did not finish".into(),
            ));
        };
        // Timed where it runs: waiting for a blocking thread says nothing of the statement.
        let timed = |conn: &rusqlite::Connection, sql: &str, params: &[Value]| {
            let started = Instant::now();
            let result = query(conn, sql, params);
            (result, started.elapsed())
        };
        let (conn, (result, took)) = if self.pace.is_quick(statement) {
            let ran = timed(&conn, statement, &params);
            (conn, ran)
        } else {
            let sql = statement.to_owned();
            // Dropped with the task if this invocation is cancelled meanwhile; closing
            // the connection rolls back whatever it had open.
            tokio::task::spawn_blocking(move || {
                let ran = timed(&conn, &sql, &params);
                (conn, ran)
            })
            .await
            .map_err(|e| SqlError::Unavailable(format!("a statement's thread failed: {e}")))?
        };
        self.pace.record(statement, took);
        self.conn = Some(conn);
        let (rows, committed) = result.map_err(|e| self.error(e))?;
        if committed {
            self.checkpoints.committed();
        }
        Ok(rows)
    }

    async fn run_control(&mut self, statement: &'static str) -> Result<(), SqlError> {
        self.run(statement, Vec::new()).await.map(drop)
    }

    /// A statement's error as the guest sees it, noting a corrupt file on the way.
    fn error(&self, e: Failure) -> SqlError {
        match e {
            Failure::Sqlite(rusqlite::Error::SqliteFailure(code, message)) => {
                let message = message.unwrap_or_else(|| code.to_string());
                match code.code {
                    ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                        self.health.mark_corrupt(&message);
                        self.health.corrupt_error(&message)
                    }
                    ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                        SqlError::Unavailable(format!(
                            "{} stayed locked for {} s: {message}",
                            self.health.path.display(),
                            BUSY_TIMEOUT.as_secs()
                        ))
                    }
                    _ => SqlError::Statement(message),
                }
            }
            Failure::Sqlite(rusqlite::Error::MultipleStatement) => SqlError::Statement(
                "run one statement per execute; this one has several separated by `;`".into(),
            ),
            Failure::Sqlite(other) => SqlError::Statement(other.to_string()),
            Failure::Parameters { expected, given } => SqlError::Statement(format!(
                "the statement takes {expected} parameters but {given} were given"
            )),
            Failure::NotText(column) => {
                SqlError::Statement(format!("cannot read column {column}: it is not UTF-8"))
            }
        }
    }
}

/// Why a statement failed, before it is worded for the guest.
enum Failure {
    Sqlite(rusqlite::Error),
    Parameters { expected: usize, given: usize },
    NotText(usize),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sqlite(e)
    }
}

/// Prepares (once per connection, then from its cache), binds and steps `sql`; also tells
/// whether it committed a write of its own (one run outside a transaction).
fn query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
) -> Result<(Rows, bool), Failure> {
    let mut statement = conn.prepare_cached(sql)?;
    let expected = statement.parameter_count();
    if expected != params.len() {
        return Err(Failure::Parameters {
            expected,
            given: params.len(),
        });
    }
    for (i, param) in params.iter().enumerate() {
        statement.raw_bind_parameter(i + 1, param)?;
    }
    let mut rows = Vec::new();
    let mut stepped = statement.raw_query();
    while let Some(row) = stepped.next()? {
        let width = row.as_ref().column_count();
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => Value::Integer(n),
                ValueRef::Real(r) => Value::Real(r),
                ValueRef::Text(t) => {
                    Value::Text(String::from_utf8(t.to_vec()).map_err(|_| Failure::NotText(i))?)
                }
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            });
        }
        rows.push(values);
    }
    drop(stepped);
    // Named after it ran: SQLite prepares a statement again when a guest's DDL changed
    // what it returns (`SELECT *`), and the names are then the new ones.
    let columns = statement
        .column_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let committed = !statement.readonly() && conn.is_autocommit();
    Ok((Rows { columns, rows }, committed))
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Integer(n) => ValueRef::Integer(*n),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
            Value::Null => ValueRef::Null,
        }))
    }
}

impl Drop for SqliteConnection {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return; // lost with a statement on the blocking pool: closed there
        };
        if self.writing.is_some() && conn.execute_batch("ROLLBACK").is_err() {
            return; // closing it rolls back
        }
        self.connections.put(conn);
    }
}

#[async_trait::async_trait]
impl Connection for SqliteConnection {
    async fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<Rows, SqlError> {
        self.run(statement, params).await
    }

    async fn begin(&mut self) -> Result<(), SqlError> {
        self.writing = Some(self.writer.clone().lock_owned().await);
        let begun = self.run_control("BEGIN IMMEDIATE").await;
        if begun.is_err() {
            self.writing = None;
        }
        begun
    }

    async fn commit(&mut self) -> Result<(), SqlError> {
        self.run_control("COMMIT").await?;
        self.writing = None;
        self.checkpoints.committed();
        Ok(())
    }

    async fn rollback(&mut self) -> Result<(), SqlError> {
        self.run_control("ROLLBACK").await?;
        self.writing = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_runs_inline_only_after_quick_runs_in_a_row() {
        let pace = Pace::default();
        let sql = "SELECT 1";
        for _ in 0..QUICK_RUNS {
            assert!(!pace.is_quick(sql));
            pace.record(sql, Duration::from_micros(10));
        }
        assert!(pace.is_quick(sql));
        pace.record(sql, QUICK * 2);
        assert!(
            !pace.is_quick(sql),
            "one slow run sends it back to the pool"
        );
    }

    #[test]
    fn paced_statements_are_bounded_in_number_and_size() {
        let pace = Pace::default();
        let long = format!("SELECT '{}'", "x".repeat(MAX_PACED_BYTES));
        for _ in 0..=QUICK_RUNS {
            pace.record(&long, Duration::ZERO);
        }
        assert!(!pace.is_quick(&long), "a long statement is never inline");
        for i in 0..MAX_PACED + 10 {
            pace.record(&format!("SELECT {i}"), Duration::ZERO);
            assert!(pace.0.read().unwrap().len() <= MAX_PACED);
        }
    }

    async fn open(dir: &tempfile::TempDir) -> SqliteDatabase {
        SqliteDatabase::open(&dir.path().join("t.db"))
            .await
            .unwrap()
    }

    /// Counts to `n` in SQLite: microseconds for 10, about a second for 10 million.
    const COUNT_TO: &str =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)
         SELECT count(*) FROM c";

    #[tokio::test(flavor = "current_thread")]
    async fn a_statement_once_slow_runs_off_the_runtime_thread() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir).await;
        let mut c = db.connect().await.unwrap();
        for _ in 0..=QUICK_RUNS {
            c.execute(COUNT_TO, vec![Value::Integer(10)]).await.unwrap();
        }
        assert!(db.pace.is_quick(COUNT_TO));
        // Known quick, it runs here however long it takes this once...
        c.execute(COUNT_TO, vec![Value::Integer(200_000)])
            .await
            .unwrap();
        assert!(!db.pace.is_quick(COUNT_TO));
        // ... and from then on on the blocking pool: this one thread goes on meanwhile.
        let ticks = Arc::new(AtomicU32::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let rows = c
            .execute(COUNT_TO, vec![Value::Integer(2_000_000)])
            .await
            .unwrap();
        ticker.abort();
        assert_eq!(rows.rows, vec![vec![Value::Integer(2_000_000)]]);
        assert!(
            ticks.load(Ordering::Relaxed) > 2,
            "the runtime's only thread was held by the statement"
        );
    }

    #[tokio::test]
    async fn connections_are_bounded_and_come_back_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir).await;
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(db.connect().await.unwrap());
        }
        let waiting = tokio::spawn({
            let permits = db.connections.permits.clone();
            async move { permits.acquire_owned().await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "a connection past the bound was lent"
        );
        held.pop();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a returned connection is lent again")
            .unwrap()
            .unwrap();
        // Returned connections are kept open for the next invocation.
        drop(held);
        assert_eq!(db.connections.idle.lock().unwrap().len(), MAX_CONNECTIONS);
    }

    #[tokio::test]
    async fn an_open_transaction_is_rolled_back_when_its_connection_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir).await;
        let mut c = db.connect().await.unwrap();
        c.execute("CREATE TABLE t (a INTEGER)", vec![])
            .await
            .unwrap();
        c.begin().await.unwrap();
        c.execute("INSERT INTO t VALUES (1)", vec![]).await.unwrap();
        drop(c);
        let mut next = db.connect().await.unwrap();
        let rows = next
            .execute("SELECT count(*) FROM t", vec![])
            .await
            .unwrap();
        assert_eq!(rows.rows, vec![vec![Value::Integer(0)]]);
        // ... and the write turn was given back.
        tokio::time::timeout(Duration::from_secs(5), next.begin())
            .await
            .expect("the write turn is still held")
            .unwrap();
    }

    #[tokio::test]
    async fn the_log_is_checkpointed_into_the_file_as_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir).await;
        let mut c = db.connect().await.unwrap();
        c.execute("CREATE TABLE t (b BLOB)", vec![]).await.unwrap();
        let file = dir.path().join("t.db");
        let size = || std::fs::metadata(&file).unwrap().len();
        let before = size();
        for _ in 0..CHECKPOINT_EVERY {
            c.begin().await.unwrap();
            c.execute("INSERT INTO t VALUES (zeroblob(1000))", vec![])
                .await
                .unwrap();
            c.commit().await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while size() < before + 400_000 {
            assert!(
                Instant::now() < deadline,
                "the file is still {} bytes: its pages stay in the log",
                size()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
