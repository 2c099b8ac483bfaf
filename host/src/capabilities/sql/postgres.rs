//! The PostgreSQL backend: the component keeps importing `fermyon:spin/sqlite@2.0.0`, and
//! its label becomes a schema of its own, owned by a role of its own, in the database the
//! runtime config names.
//!
//! - **Database per service.** At open, the host (connected with the URL's role, which needs
//!   `CREATEROLE`) creates role `berth_<label>_<hash of the database name>` and schema `<label>` owned by it, and from
//!   then on connects as that role only. Another label's schema belongs to another role and
//!   grants nothing, so a guest's SQL cannot reach it, whatever it runs. The role's password
//!   is derived from the URL and the label, so every host of a fleet computes the same one
//!   and nothing needs storing.
//! - **Values and placeholders.** `?` and `?NNN` become `$n`; integers, reals, text and
//!   blobs are sent as `int8`, `float8`, `text` and `bytea`, and a null untyped, so that
//!   PostgreSQL infers its type. Integer, floating, boolean (as 0/1), text and `bytea`
//!   columns read back as the interface's values; another type is an error naming the
//!   column and the cast that would read it.
//! - **SQLite's words for constraint failures** (`UNIQUE constraint failed: …`), so a
//!   component that reacts to them runs unchanged.
//! - **The portable subset.** Tables of `INTEGER`/`BIGINT`, `DOUBLE PRECISION`, `TEXT` and
//!   `BLOB` columns (a `blob` domain over `bytea` lives in each schema) mean the same on both
//!   engines.
//! - **Unit of work.** One `BEGIN` (read committed) per invocation, as on SQLite; keep
//!   invariants in constraints.

use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgTypeInfo};
use sqlx::{
    AssertSqlSafe, Column, Connection as _, Decode, Executor, Postgres, Row, SqlSafeStr, Statement,
    TypeInfo, ValueRef,
};

use super::migrate::{self, Applied, MigrationError};
use super::{Connection, Database, Dialect, Rows, SqlError, Value, sqlx_failure, unavailable};

/// Connections per label and host; an invocation holds one for its whole life.
const MAX_CONNECTIONS: u32 = 16;
/// How long an invocation waits for a connection before the database counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PostgresDatabase {
    pool: PgPool,
    /// `postgres://host:port/db, schema <label>`: never the password.
    location: String,
}

impl PostgresDatabase {
    /// Creates the label's role and schema where missing, then pools connections as the role.
    pub async fn open(label: &str, url: &str) -> anyhow::Result<PostgresDatabase> {
        let admin: PgConnectOptions = url.parse().context(
            "the url is not a PostgreSQL URL (postgres://user:password@host:port/database)",
        )?;
        // Roles belong to the whole cluster: the database's name in it keeps two apps'
        // `orders` apart.
        let database = admin.get_database().unwrap_or_default();
        let role = format!(
            "berth_{label}_{}",
            &hex::encode(Sha256::digest(database.as_bytes()))[..8]
        );
        anyhow::ensure!(
            role.len() <= 63,
            "label `{label}` is too long for a PostgreSQL role name (at most 48 characters)"
        );
        let location = format!(
            "postgres://{}:{}/{}, schema {label}",
            admin.get_host(),
            admin.get_port(),
            admin.get_database().unwrap_or_default()
        );
        let password = provision(&admin, label, &role, &role_password(url, label))
            .await
            .with_context(|| format!("cannot prepare {location} and its role {role}"))?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(admin.username(&role).password(&password))
            .await
            .with_context(|| format!("cannot connect to {location} as {role}"))?;
        Ok(PostgresDatabase { pool, location })
    }
}

/// The password berth 0.1 derived for a label's role from the URL, adopted for a role made
/// before passwords were kept in `_berth.roles`, so hosts of that release keep connecting.
fn role_password(url: &str, label: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"berth role password\0");
    hash.update(url.as_bytes());
    hash.update(b"\0");
    hash.update(label.as_bytes());
    hex::encode(hash.finalize())
}

/// `"name"`, with any `"` doubled: an identifier PostgreSQL reads back as written.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates what label `label` needs and returns its role's password. The password is
/// random, made once and kept in `_berth.roles`, which only the URL's role can read: every
/// host of a fleet reads the same one, however its URL is spelled (host name, parameters,
/// a rotated admin password), so no host's start locks out another's connections.
async fn provision(
    admin: &PgConnectOptions,
    label: &str,
    role: &str,
    legacy_password: &str,
) -> anyhow::Result<String> {
    let mut conn = sqlx::PgConnection::connect_with(admin).await?;
    let mut tx = conn.begin().await?;
    // Hosts of a fleet start together: one of them provisions at a time.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('berth: provision labels'))")
        .execute(&mut *tx)
        .await?;
    for statement in [
        "CREATE SCHEMA IF NOT EXISTS _berth",
        "REVOKE ALL ON SCHEMA _berth FROM PUBLIC",
        "CREATE TABLE IF NOT EXISTS _berth.roles (role TEXT PRIMARY KEY, password TEXT NOT NULL)",
    ] {
        tx.execute(statement).await?;
    }
    let exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    let kept: Option<String> =
        sqlx::query_scalar("SELECT password FROM _berth.roles WHERE role = $1")
            .bind(role)
            .fetch_optional(&mut *tx)
            .await?;
    let (password, set_password) = match kept {
        Some(password) => (password, !exists),
        // A role from before passwords were kept: it has the derived one already.
        None if exists => (legacy_password.to_owned(), false),
        None => (hex::encode(rand::random::<[u8; 32]>()), true),
    };
    sqlx::query("INSERT INTO _berth.roles (role, password) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(role)
        .bind(&password)
        .execute(&mut *tx)
        .await?;
    // The password is 64 hex digits: safe to spell as a literal, which these commands need.
    let login = if set_password {
        let verb = if exists { "ALTER" } else { "CREATE" };
        format!(
            "{verb} ROLE {} LOGIN NOINHERIT PASSWORD '{password}'",
            quoted(role)
        )
    } else {
        format!("ALTER ROLE {} LOGIN NOINHERIT", quoted(role))
    };
    let statements = [
        login,
        // Lets a non-superuser admin (CREATEROLE) create the schema for the role.
        format!("GRANT {} TO CURRENT_USER", quoted(role)),
        format!(
            "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
            quoted(label),
            quoted(role)
        ),
        format!("REVOKE ALL ON SCHEMA {} FROM PUBLIC", quoted(label)),
        format!(
            "ALTER ROLE {} SET search_path = {}",
            quoted(role),
            quoted(label)
        ),
    ];
    for statement in statements {
        tx.execute(AssertSqlSafe(statement).into_sql_str()).await?;
    }
    // SQLite's BLOB, so that a `BLOB` column of the portable subset is created as bytea.
    let has_blob = sqlx::query(
        "SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname = $1 AND t.typname = 'blob'",
    )
    .bind(label)
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    if !has_blob {
        let statement = format!("CREATE DOMAIN {}.blob AS bytea", quoted(label));
        tx.execute(AssertSqlSafe(statement).into_sql_str()).await?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(password)
}

#[async_trait::async_trait]
impl Database for PostgresDatabase {
    async fn connect(&self) -> Result<Box<dyn Connection>, SqlError> {
        let conn = self.pool.acquire().await.map_err(unavailable)?;
        Ok(Box::new(PostgresConnection {
            conn,
            in_transaction: false,
        }))
    }

    /// `migrations/<id>/postgres/` when it exists, for what the portable subset cannot
    /// say; the shared files otherwise. Hosts starting together take turns on an advisory
    /// lock for the schema, held by a connection of its own for the whole run (a host that
    /// dies lets go of it with its connection), so each migration is applied once.
    async fn migrate(&self, dir: &std::path::Path) -> Result<Applied, MigrationError> {
        let own = dir.join("postgres");
        let dir = if own.is_dir() { own } else { dir.to_owned() };
        let other = |e: sqlx::Error| MigrationError::Other {
            dir: dir.clone(),
            message: e.to_string(),
        };
        let mut turn = self.pool.acquire().await.map_err(other)?;
        sqlx::query("SELECT pg_advisory_lock(hashtext('berth: migrate ' || current_schema()))")
            .execute(&mut *turn)
            .await
            .map_err(other)?;
        let applied = migrate::run(&dir, &self.pool).await;
        let unlocked = sqlx::query(
            "SELECT pg_advisory_unlock(hashtext('berth: migrate ' || current_schema()))",
        )
        .execute(&mut *turn)
        .await;
        if unlocked.is_err() {
            // Closing the connection lets go of the lock.
            turn.close_on_drop();
        }
        applied
    }

    async fn ping(&self) -> Result<(), SqlError> {
        self.pool.execute("SELECT 1").await.map_err(unavailable)?;
        Ok(())
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

struct PostgresConnection {
    conn: sqlx::pool::PoolConnection<Postgres>,
    /// Set between `begin` and its end; the pool knows nothing of raw transactions.
    in_transaction: bool,
}

impl Drop for PostgresConnection {
    fn drop(&mut self) {
        if self.in_transaction {
            // Closing the connection rolls the transaction back.
            self.conn.close_on_drop();
        }
    }
}

impl PostgresConnection {
    async fn run(&mut self, statement: &'static str) -> Result<(), SqlError> {
        (&mut *self.conn)
            .execute(statement)
            .await
            .map(drop)
            .map_err(statement_error)
    }

    async fn fetch(&mut self, sql: &str, params: &[Value]) -> Result<Vec<PgRow>, sqlx::Error> {
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for param in params {
            query = match param {
                Value::Integer(i) => query.bind(*i),
                Value::Real(r) => query.bind(*r),
                Value::Text(t) => query.bind(t.as_str()),
                Value::Blob(b) => query.bind(b.as_slice()),
                Value::Null => query.bind(UntypedNull),
            };
        }
        query.fetch_all(&mut *self.conn).await
    }
}

#[async_trait::async_trait]
impl Connection for PostgresConnection {
    async fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<Rows, SqlError> {
        let (sql, expected) = numbered_placeholders(statement).map_err(SqlError::Statement)?;
        if expected != params.len() {
            return Err(SqlError::Statement(format!(
                "the statement takes {expected} parameters but {} were given",
                params.len()
            )));
        }
        let rows = match self.fetch(&sql, &params).await {
            // A guest's DDL changed what a statement this connection kept returns:
            // forget the kept ones and run it once more.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("0A000") => {
                self.conn
                    .clear_cached_statements()
                    .await
                    .map_err(statement_error)?;
                self.fetch(&sql, &params).await
            }
            other => other,
        }
        .map_err(statement_error)?;
        let columns = match rows.first() {
            Some(row) => row.columns().iter().map(|c| c.name().to_owned()).collect(),
            // Kept by sqlx from the run above: no second trip.
            None => (&mut *self.conn)
                .prepare(AssertSqlSafe(sql).into_sql_str())
                .await
                .map_err(statement_error)?
                .columns()
                .iter()
                .map(|c| c.name().to_owned())
                .collect(),
        };
        let rows = rows.iter().map(row_values).collect::<Result<_, _>>()?;
        Ok(Rows { columns, rows })
    }

    async fn begin(&mut self) -> Result<(), SqlError> {
        // Set before awaiting: if the invocation is cancelled mid-BEGIN, the connection
        // must be closed, not reused.
        self.in_transaction = true;
        let begun = self.run("BEGIN").await;
        self.in_transaction = begun.is_ok();
        begun
    }

    async fn commit(&mut self) -> Result<(), SqlError> {
        self.run("COMMIT").await?;
        self.in_transaction = false;
        Ok(())
    }

    async fn rollback(&mut self) -> Result<(), SqlError> {
        self.run("ROLLBACK").await?;
        self.in_transaction = false;
        Ok(())
    }
}

/// A null whose type PostgreSQL infers from where it stands, as SQLite's untyped null.
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        // OID 0: "unspecified" in the protocol.
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

/// SQLite's `?` and `?NNN` as PostgreSQL's `$n`, outside quotes and comments, with the
/// number of parameters the statement takes (the highest used). A bare `?` takes the number
/// after the highest used so far, as in SQLite; a `$n` already there is kept and counted.
fn numbered_placeholders(sql: &str) -> Result<(String, usize), String> {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut highest = 0u32;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                out.push(c);
                let mut star = false;
                for d in chars.by_ref() {
                    out.push(d);
                    if star && d == '/' {
                        break;
                    }
                    star = d == '*';
                }
            }
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push(c);
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    out.push(d);
                    chars.next();
                }
                highest = highest.max(digits.parse().unwrap_or(u32::MAX));
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                let n = if digits.is_empty() {
                    highest + 1
                } else {
                    digits
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=32766).contains(n))
                        .ok_or_else(|| format!("?{digits} is not a parameter number"))?
                };
                highest = highest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    Ok((out, highest as usize))
}

fn row_values(row: &PgRow) -> Result<Vec<Value>, SqlError> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i).map_err(statement_error)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let kind = raw.type_info().name().to_owned();
            let decoded = match kind.as_str() {
                "INT2" => <i16 as Decode<Postgres>>::decode(raw).map(|v| Value::Integer(v.into())),
                "INT4" => <i32 as Decode<Postgres>>::decode(raw).map(|v| Value::Integer(v.into())),
                "INT8" => <i64 as Decode<Postgres>>::decode(raw).map(Value::Integer),
                "FLOAT4" => <f32 as Decode<Postgres>>::decode(raw).map(|v| Value::Real(v.into())),
                "FLOAT8" => <f64 as Decode<Postgres>>::decode(raw).map(Value::Real),
                "BOOL" => {
                    <bool as Decode<Postgres>>::decode(raw).map(|v| Value::Integer(v.into()))
                }
                "BYTEA" | "BLOB" => <Vec<u8> as Decode<Postgres>>::decode(raw).map(Value::Blob),
                "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" => {
                    <String as Decode<Postgres>>::decode(raw).map(Value::Text)
                }
                other => {
                    let name = row.columns()[i].name();
                    return Err(SqlError::Statement(format!(
                        "column `{name}` is of type {other}, which the sqlite interface has no value for: cast it in the query ({name}::text, ::float8 or ::int8)"
                    )));
                }
            };
            decoded.map_err(|e| SqlError::Statement(format!("cannot read column {i}: {e}")))
        })
        .collect()
}

/// A failure as the guest sees it: constraint violations in SQLite's words, lost
/// connections as unavailable, the rest with PostgreSQL's message.
fn statement_error(e: sqlx::Error) -> SqlError {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default().into_owned();
            let constraint = db.constraint().unwrap_or_default().to_owned();
            let sqlite_words = match code.as_str() {
                "23505" => Some("UNIQUE"),
                "23503" => Some("FOREIGN KEY"),
                "23514" => Some("CHECK"),
                "23502" => Some("NOT NULL"),
                _ => None,
            };
            match sqlite_words {
                Some(kind) => SqlError::Statement(format!(
                    "{kind} constraint failed: {constraint} ({})",
                    db.message()
                )),
                // Connection exceptions, shutdowns, too many connections.
                None if (code.starts_with("08") && code != "08P01")
                    || code.starts_with("57P")
                    || code == "53300" =>
                {
                    SqlError::Unavailable(db.message().to_owned())
                }
                None => SqlError::Statement(db.message().to_owned()),
            }
        }
        other => sqlx_failure(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_placeholders_become_numbered_ones_outside_quotes_and_comments() {
        let cases = [
            ("SELECT ?, ?", "SELECT $1, $2"),
            ("SELECT ?2, ?, ?1", "SELECT $2, $3, $1"),
            (
                "SELECT '?', \"?\" -- ?\n, ?",
                "SELECT '?', \"?\" -- ?\n, $1",
            ),
            ("SELECT /* ? */ ?", "SELECT /* ? */ $1"),
            ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1"),
            ("SELECT $1", "SELECT $1"),
        ];
        for (sqlite, postgres) in cases {
            assert_eq!(
                numbered_placeholders(sqlite).unwrap().0,
                postgres,
                "{sqlite}"
            );
        }
        assert_eq!(numbered_placeholders("SELECT ?3, ?").unwrap().1, 4);
        assert_eq!(numbered_placeholders("SELECT $2").unwrap().1, 2);
        assert_eq!(numbered_placeholders("SELECT '$3', 1").unwrap().1, 0);
        assert!(numbered_placeholders("SELECT ?0").is_err());
        assert!(numbered_placeholders("SELECT ?99999").is_err());
    }

    use crate::capabilities::sql::test_postgres::postgres;

    async fn open(url: &str, label: &str) -> PostgresDatabase {
        PostgresDatabase::open(label, url).await.unwrap()
    }

    async fn run(db: &PostgresDatabase, sql: &str) -> Result<Rows, SqlError> {
        db.connect().await?.execute(sql, vec![]).await
    }

    /// A host whose URL is spelled otherwise (parameters, host name, a rotated admin
    /// password) reads the role's password the first one made, instead of setting its own
    /// and locking the other host's next connections out.
    #[tokio::test]
    async fn hosts_spelling_the_url_differently_share_the_role_password() {
        let url = postgres().fresh_database().await;
        let a = open(&format!("{url}?application_name=a"), "orders").await;
        let b = open(&format!("{url}?application_name=b"), "orders").await;
        for db in [&a, &b] {
            sqlx::PgConnection::connect_with(&db.pool.connect_options())
                .await
                .expect("a new connection with the role's password");
        }
    }

    /// `sslmode` in the URL is honoured: production servers often take only TLS.
    #[tokio::test]
    async fn a_url_asking_for_tls_gets_an_encrypted_connection() {
        let url = postgres().fresh_database().await;
        let encrypted = "SELECT CASE WHEN ssl THEN 'tls' ELSE 'plain' END \
                         FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        for (mode, expected) in [("require", "tls"), ("disable", "plain")] {
            let db = open(&format!("{url}?sslmode={mode}"), "tls").await;
            let rows = run(&db, encrypted).await.unwrap();
            assert_eq!(
                rows.rows,
                vec![vec![Value::Text(expected.into())]],
                "{mode}"
            );
            db.close().await;
        }
    }

    #[tokio::test]
    async fn no_label_reaches_another_labels_schema_whatever_it_runs() {
        let url = postgres().fresh_database().await;
        let orders = open(&url, "orders").await;
        let users = open(&url, "users").await;
        run(&orders, "CREATE TABLE secret (card TEXT)")
            .await
            .unwrap();
        run(&orders, "INSERT INTO secret VALUES ('4242')")
            .await
            .unwrap();
        // Its own tables, unqualified, through the role's search path.
        let own = run(&orders, "SELECT card FROM secret").await.unwrap();
        assert_eq!(own.rows, vec![vec![Value::Text("4242".into())]]);
        let orders_role: String = {
            let rows = run(&orders, "SELECT current_user::text").await.unwrap();
            match &rows.rows[0][0] {
                Value::Text(role) => role.clone(),
                other => panic!("{other:?}"),
            }
        };
        for attempt in [
            "SELECT card FROM orders.secret".to_owned(),
            "SELECT card FROM \"orders\".secret".to_owned(),
            "SELECT password FROM _berth.roles".to_owned(),
            format!("SET ROLE {}", quoted(&orders_role)),
            "SET ROLE postgres".to_owned(),
            "SET SESSION AUTHORIZATION postgres".to_owned(),
            "CREATE TABLE public.spill (a TEXT)".to_owned(),
            "ALTER ROLE CURRENT_USER SUPERUSER".to_owned(),
        ] {
            let error = run(&users, &attempt).await.unwrap_err();
            assert!(
                matches!(error, SqlError::Statement(_)),
                "{attempt}: {error}"
            );
        }
        let mut conn = users.connect().await.unwrap();
        conn.execute("SET search_path TO orders", vec![])
            .await
            .unwrap();
        let error = conn
            .execute("SELECT card FROM secret", vec![])
            .await
            .unwrap_err();
        // Without USAGE on the schema, PostgreSQL does not even look in it.
        assert!(
            matches!(error, SqlError::Statement(ref m) if m.contains("does not exist") || m.contains("permission denied")),
            "{error}"
        );
    }

    #[tokio::test]
    async fn hosts_starting_together_provision_and_migrate_once() {
        let url = postgres().fresh_database().await;
        let migrations = tempfile::tempdir().unwrap();
        std::fs::write(
            migrations.path().join("0001_init.sql"),
            "CREATE TABLE t (a INTEGER)",
        )
        .unwrap();
        // The engine's own folder wins over the shared files.
        std::fs::create_dir(migrations.path().join("postgres")).unwrap();
        std::fs::write(
            migrations.path().join("postgres/0001_init.sql"),
            "CREATE TABLE t (a BIGINT GENERATED ALWAYS AS IDENTITY, b TEXT)",
        )
        .unwrap();
        let hosts = futures::future::join_all((0..4).map(|_| {
            let (url, dir) = (url.clone(), migrations.path().to_owned());
            async move {
                let db = PostgresDatabase::open("orders", &url).await.unwrap();
                db.migrate(&dir).await.unwrap().0
            }
        }))
        .await;
        let applied: Vec<&String> = hosts.iter().flatten().collect();
        assert_eq!(applied, ["0001_init.sql"], "{hosts:?}");
        let db = open(&url, "orders").await;
        run(&db, "INSERT INTO t (b) VALUES ('identity')")
            .await
            .unwrap();
        assert!(!db.location().contains("unused"), "{}", db.location());
    }

    #[test]
    fn role_passwords_differ_per_label_and_url() {
        let a = role_password("postgres://a@h/d", "orders");
        assert_eq!(a, role_password("postgres://a@h/d", "orders"));
        assert_ne!(a, role_password("postgres://a@h/d", "users"));
        assert_ne!(a, role_password("postgres://b@h/d", "orders"));
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
    }
}
