//! `fermyon:spin/sqlite@2.0.0`: each component's own database.
//!
//! | runtime config | backend |
//! |---|---|
//! | (none) | SQLite file `<data-dir>/sqlite/<label>.db` |
//! | `[sqlite_database.<label>] type = "spin"`, `path = "…"` | SQLite file at `path` |
//! | `[sqlite_database.<label>] type = "postgres"`, `url = "postgres://…"` (or `url_env = "VAR"`) | schema `<label>` of that PostgreSQL database, as a role of its own ([`postgres`]) |
//!
//! A label is granted to one component only (checked when the manifest loads), so no
//! component can reach another's data. A connection belongs to one invocation for its whole
//! life, and everything it writes is one transaction ([`unit_of_work`]), committed when the
//! invocation succeeds.

pub mod known;
pub mod migrate;
pub(crate) mod postgres;
pub(crate) mod sqlite;
pub mod unit_of_work;
mod wit;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;

pub use wit::{ConnectionHandle, Sql, SqlSession, SqlView};

/// A value crossing the boundary, as SQLite's five storage classes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    Null,
}

#[derive(Debug, Default, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The statement failed: syntax, constraint, type. The guest sees the database's message.
    #[error("{0}")]
    Statement(String),
    /// The database could not be reached or is busy beyond its timeout.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

/// A sqlx failure that is not the database's answer to the statement: the pool's or the
/// connection's make the database unavailable; anything else is the statement's.
pub(crate) fn sqlx_failure(e: sqlx::Error) -> SqlError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => unavailable(e),
        other => SqlError::Statement(other.to_string()),
    }
}

pub(crate) fn unavailable(e: sqlx::Error) -> SqlError {
    SqlError::Unavailable(e.to_string())
}

/// A database some component was granted.
#[async_trait::async_trait]
pub trait Database: Send + Sync {
    /// A connection for one invocation, returned to the pool when dropped.
    async fn connect(&self) -> Result<Box<dyn Connection>, SqlError>;
    /// Applies the migrations in `dir` not yet recorded in this database.
    async fn migrate(&self, dir: &Path) -> Result<migrate::Applied, migrate::MigrationError>;
    /// Answers when the database can serve queries (for `/readyz`).
    async fn ping(&self) -> Result<(), SqlError>;
    /// Where the data lives, for messages: a file path, or a URL without its password.
    fn location(&self) -> String;
    /// Which SQL the host's own tables are created in.
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
    /// Closes every connection, once nothing will use the database again.
    async fn close(&self);
}

/// The engine behind a [`Database`], for the few statements the host writes differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[async_trait::async_trait]
pub trait Connection: Send {
    async fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<Rows, SqlError>;
    /// Opens a transaction that holds the write lock from the start, so it cannot fail
    /// later for having read a stale snapshot. A connection dropped inside one is closed,
    /// never handed to the next invocation mid-transaction.
    async fn begin(&mut self) -> Result<(), SqlError>;
    async fn commit(&mut self) -> Result<(), SqlError>;
    async fn rollback(&mut self) -> Result<(), SqlError>;
}

/// `[sqlite_database.<label>]` in the runtime config.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Config {
    /// A SQLite file, Spin's default backend.
    Spin {
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// berth's addition: a schema and role of its own in a PostgreSQL database. The URL is
    /// given, or named by an environment variable so that its password stays out of files.
    Postgres {
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        url_env: Option<String>,
    },
}

impl Config {
    /// The PostgreSQL URL of a `type = "postgres"` database; exactly one of `url` and
    /// `url_env` names it.
    fn postgres_url(url: &Option<String>, url_env: &Option<String>) -> anyhow::Result<String> {
        match (url, url_env) {
            (Some(url), None) => Ok(url.clone()),
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                anyhow::anyhow!(
                    "url_env = \"{var}\", but {var} is not set: export it as postgres://user:password@host:port/database"
                )
            }),
            _ => anyhow::bail!(
                "a postgres database takes exactly one of `url = \"postgres://…\"` and `url_env = \"VARIABLE\"`"
            ),
        }
    }
}

/// Opens the database for `label`: the only place that names concrete backends. A file the
/// data dir held before that is now missing or empty is refused unless `fresh` ([`known`]).
pub async fn build(
    label: &str,
    config: Option<&Config>,
    config_dir: &Path,
    data_dir: &Path,
    fresh: bool,
) -> anyhow::Result<Arc<dyn Database>> {
    let path = match config {
        Some(Config::Postgres { url, url_env }) => {
            let url = Config::postgres_url(url, url_env)
                .with_context(|| format!("[sqlite_database.{label}]"))?;
            let db = postgres::PostgresDatabase::open(label, &url)
                .await
                .with_context(|| format!("[sqlite_database.{label}]"))?;
            return Ok(Arc::new(db));
        }
        Some(Config::Spin { path: Some(path) }) => config_dir.join(path),
        Some(Config::Spin { path: None }) | None => {
            data_dir.join("sqlite").join(format!("{label}.db"))
        }
    };
    let path = std::path::absolute(&path).unwrap_or(path);
    known::check(data_dir, label, &path, fresh)?;
    let db = sqlite::SqliteDatabase::open(&path).await?;
    known::record(data_dir, label, &path)?;
    Ok(Arc::new(db))
}

/// The databases one component version may open, by label.
pub type Grants = Arc<HashMap<String, Arc<dyn Database>>>;

/// The tests' PostgreSQL server, shared with the integration tests.
#[cfg(test)]
#[path = "../../../../tests/support/postgres.rs"]
pub(crate) mod test_postgres;

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite, and a label of a fresh PostgreSQL database: every test below runs on both.
    async fn every_backend() -> Vec<(&'static str, Arc<dyn Database>, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = build("test", None, dir.path(), dir.path(), false)
            .await
            .unwrap();
        let url = test_postgres::postgres().fresh_database().await;
        let config = Config::Postgres {
            url: Some(url),
            url_env: None,
        };
        let postgres = build("test", Some(&config), dir.path(), dir.path(), false)
            .await
            .unwrap();
        vec![
            ("sqlite", sqlite, dir),
            ("postgres", postgres, tempfile::tempdir().unwrap()),
        ]
    }

    #[tokio::test]
    async fn statements_round_trip_every_value_kind() {
        for (name, db, _dir) in every_backend().await {
            let mut c = db.connect().await.unwrap();
            c.execute(
                "CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n TEXT)",
                vec![],
            )
            .await
            .unwrap();
            c.execute(
                "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
                vec![
                    Value::Integer(-7),
                    Value::Real(1.5),
                    Value::Text("héllo".into()),
                    Value::Blob(vec![0, 255]),
                    Value::Null,
                ],
            )
            .await
            .unwrap();
            let rows = c.execute("SELECT * FROM t", vec![]).await.unwrap();
            assert_eq!(rows.columns, ["i", "r", "s", "b", "n"], "{name}");
            assert_eq!(
                rows.rows,
                vec![vec![
                    Value::Integer(-7),
                    Value::Real(1.5),
                    Value::Text("héllo".into()),
                    Value::Blob(vec![0, 255]),
                    Value::Null,
                ]],
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn empty_results_still_name_their_columns() {
        for (name, db, _dir) in every_backend().await {
            let mut c = db.connect().await.unwrap();
            c.execute("CREATE TABLE t (a INTEGER, b TEXT)", vec![])
                .await
                .unwrap();
            let rows = c
                .execute("SELECT a, b FROM t WHERE a > ?", vec![Value::Integer(1)])
                .await
                .unwrap();
            assert_eq!(rows.columns, ["a", "b"], "{name}");
            assert!(rows.rows.is_empty(), "{name}");
        }
    }

    #[tokio::test]
    async fn a_statement_run_again_after_a_schema_change_reports_what_it_returns_now() {
        for (name, db, _dir) in every_backend().await {
            let mut first = db.connect().await.unwrap();
            first
                .execute("CREATE TABLE t (a INTEGER)", vec![])
                .await
                .unwrap();
            first
                .execute("INSERT INTO t VALUES (1)", vec![])
                .await
                .unwrap();
            let before = first.execute("SELECT * FROM t", vec![]).await.unwrap();
            assert_eq!(before.columns, ["a"], "{name}");
            drop(first);
            // Another connection, which may have the statement cached, after a guest's DDL.
            let mut other = db.connect().await.unwrap();
            other
                .execute("ALTER TABLE t ADD COLUMN b TEXT", vec![])
                .await
                .unwrap();
            let after = other.execute("SELECT * FROM t", vec![]).await.unwrap();
            assert_eq!(after.columns, ["a", "b"], "{name}");
            assert_eq!(
                after.rows,
                vec![vec![Value::Integer(1), Value::Null]],
                "{name}"
            );
            // A kept shape still checks the parameter count.
            let err = other
                .execute("SELECT * FROM t", vec![Value::Integer(1)])
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("takes 0 parameters"),
                "{name}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn a_guest_transaction_spans_its_statements() {
        for (name, db, _dir) in every_backend().await {
            let mut c = db.connect().await.unwrap();
            c.execute("CREATE TABLE t (a INTEGER)", vec![])
                .await
                .unwrap();
            c.execute("BEGIN", vec![]).await.unwrap();
            c.execute("INSERT INTO t VALUES (1)", vec![]).await.unwrap();
            c.execute("ROLLBACK", vec![]).await.unwrap();
            let rows = c
                .execute("SELECT count(*) AS n FROM t", vec![])
                .await
                .unwrap();
            assert_eq!(rows.rows, vec![vec![Value::Integer(0)]], "{name}");
        }
    }

    #[tokio::test]
    async fn constraint_failures_are_worded_as_sqlite_words_them() {
        for (name, db, _dir) in every_backend().await {
            let mut c = db.connect().await.unwrap();
            c.execute(
                "CREATE TABLE t (a TEXT PRIMARY KEY, n INTEGER NOT NULL CHECK (n > 0))",
                vec![],
            )
            .await
            .unwrap();
            c.execute("INSERT INTO t VALUES ('x', 1)", vec![])
                .await
                .unwrap();
            for (statement, words) in [
                ("INSERT INTO t VALUES ('x', 1)", "UNIQUE constraint failed"),
                ("INSERT INTO t VALUES ('y', 0)", "CHECK constraint failed"),
                (
                    "INSERT INTO t VALUES ('z', NULL)",
                    "NOT NULL constraint failed",
                ),
            ] {
                let err = c.execute(statement, vec![]).await.unwrap_err();
                assert!(err.to_string().contains(words), "{name}: {err}");
            }
            // A null parameter takes the column's type, as SQLite's untyped null.
            let err = c
                .execute(
                    "INSERT INTO t VALUES (?, ?)",
                    vec![Value::Text("w".into()), Value::Null],
                )
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("NOT NULL constraint failed"),
                "{name}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn bad_statements_are_errors_not_panics() {
        for (name, db, _dir) in every_backend().await {
            let mut c = db.connect().await.unwrap();
            let err = c.execute("SELEC 1", vec![]).await.unwrap_err();
            assert!(matches!(err, SqlError::Statement(_)), "{name}: {err}");
            let err = c
                .execute("SELECT ?", vec![Value::Integer(1), Value::Integer(2)])
                .await
                .unwrap_err();
            assert!(matches!(err, SqlError::Statement(_)), "{name}: {err}");
        }
    }

    async fn count(db: &Arc<dyn Database>) -> Value {
        let mut c = db.connect().await.unwrap();
        let rows = c.execute("SELECT count(*) FROM t", vec![]).await.unwrap();
        rows.rows[0][0].clone()
    }

    /// Creates table `t (a INTEGER)` and opens a unit of work on `db`.
    async fn work_on_new_table(db: &Arc<dyn Database>) -> unit_of_work::Work {
        let mut setup = db.connect().await.unwrap();
        setup
            .execute("CREATE TABLE t (a INTEGER)", vec![])
            .await
            .unwrap();
        drop(setup);
        unit_of_work::Work::new(db.connect().await.unwrap())
    }

    #[tokio::test]
    async fn a_unit_of_work_commits_whole_with_guest_transactions_as_savepoints() {
        use unit_of_work::Work;
        for (name, db, _dir) in every_backend().await {
            let mut work = work_on_new_table(&db).await;
            for statement in [
                "INSERT INTO t VALUES (1)",
                "BEGIN IMMEDIATE",
                "INSERT INTO t VALUES (2)",
                "ROLLBACK",
                "BEGIN",
                "INSERT INTO t VALUES (3)",
                "COMMIT",
            ] {
                work.execute(statement, vec![]).await.unwrap();
            }
            assert!(
                work.execute("COMMIT", vec![]).await.is_err(),
                "{name}: no guest transaction is open"
            );
            assert_eq!(
                count(&db).await,
                Value::Integer(0),
                "{name}: nothing is visible before the end"
            );
            work.commit().await.unwrap();
            assert_eq!(count(&db).await, Value::Integer(2), "{name}");

            let mut failed = Work::new(db.connect().await.unwrap());
            failed
                .execute("INSERT INTO t VALUES (4)", vec![])
                .await
                .unwrap();
            failed.rollback().await.unwrap();
            let mut abandoned = Work::new(db.connect().await.unwrap());
            abandoned
                .execute("INSERT INTO t VALUES (5)", vec![])
                .await
                .unwrap();
            // Dropped mid-transaction (a cancelled invocation): rolled back, lock released.
            drop(abandoned);
            let mut next = Work::new(db.connect().await.unwrap());
            next.execute("INSERT INTO t VALUES (6)", vec![])
                .await
                .unwrap();
            next.commit().await.unwrap();
            assert_eq!(count(&db).await, Value::Integer(3), "{name}");
        }
    }

    #[tokio::test]
    async fn a_guest_transaction_that_opens_the_unit_of_work_keeps_its_meaning() {
        use unit_of_work::Work;
        for (name, db, _dir) in every_backend().await {
            let mut work = work_on_new_table(&db).await;
            for statement in [
                "BEGIN",
                "INSERT INTO t VALUES (1)",
                "ROLLBACK",
                "BEGIN IMMEDIATE",
                "INSERT INTO t VALUES (2)",
                "BEGIN",
                "INSERT INTO t VALUES (3)",
                "ROLLBACK",
                "COMMIT",
                "INSERT INTO t VALUES (4)",
                "BEGIN",
                "INSERT INTO t VALUES (5)",
                "ROLLBACK",
                "BEGIN",
                "INSERT INTO t VALUES (6)",
            ] {
                work.execute(statement, vec![]).await.unwrap();
            }
            assert_eq!(count(&db).await, Value::Integer(0), "{name}");
            // The guest transaction left open is rolled back, the rest committed.
            work.commit().await.unwrap();
            let mut c = db.connect().await.unwrap();
            let rows = c
                .execute("SELECT a FROM t ORDER BY a", vec![])
                .await
                .unwrap();
            assert_eq!(
                rows.rows,
                vec![vec![Value::Integer(2)], vec![Value::Integer(4)]],
                "{name}"
            );

            // Rolled back whole after its guest transaction committed.
            let mut failed = Work::new(db.connect().await.unwrap());
            for statement in ["BEGIN", "INSERT INTO t VALUES (7)", "COMMIT"] {
                failed.execute(statement, vec![]).await.unwrap();
            }
            failed.rollback().await.unwrap();
            // A guest rollback of everything gives the write lock back at once.
            let mut undone = Work::new(db.connect().await.unwrap());
            for statement in ["BEGIN", "INSERT INTO t VALUES (8)", "ROLLBACK"] {
                undone.execute(statement, vec![]).await.unwrap();
            }
            let wrote = async {
                let mut next = Work::new(db.connect().await.unwrap());
                next.execute("INSERT INTO t VALUES (9)", vec![])
                    .await
                    .unwrap();
                next.commit().await.unwrap();
            };
            tokio::time::timeout(std::time::Duration::from_secs(5), wrote)
                .await
                .unwrap_or_else(|_| panic!("{name}: the write lock is still held"));
            undone.commit().await.unwrap();
            assert_eq!(count(&db).await, Value::Integer(3), "{name}");
        }
    }

    #[tokio::test]
    async fn a_corrupt_file_is_reported_by_ping_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let db = build("c", None, dir.path(), dir.path(), false)
            .await
            .unwrap();
        let mut c = db.connect().await.unwrap();
        c.execute("CREATE TABLE t (a TEXT)", vec![]).await.unwrap();
        for i in 0..2000 {
            c.execute(
                "INSERT INTO t VALUES (?)",
                vec![Value::Text(format!("row {i} {}", "x".repeat(100)))],
            )
            .await
            .unwrap();
        }
        drop(c);
        db.ping().await.unwrap();
        // The host stops, which moves the log's pages into the file.
        db.close().await;
        // Overwrite pages past the header, as a failing disk or a stray write would.
        let file = dir.path().join("sqlite/c.db");
        let mut bytes = std::fs::read(&file).unwrap();
        assert!(bytes.len() > 16384, "{}", bytes.len());
        for b in &mut bytes[8192..16384] {
            *b = 0xAB;
        }
        std::fs::write(&file, &bytes).unwrap();
        let reopened = build("c", None, dir.path(), dir.path(), false)
            .await
            .unwrap();
        let err = reopened.ping().await.unwrap_err().to_string();
        assert!(err.contains("corrupt") && err.contains("c.db"), "{err}");
    }

    #[tokio::test]
    async fn ping_answers() {
        for (name, db, _dir) in every_backend().await {
            db.ping().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
