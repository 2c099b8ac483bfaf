//! The guest side of the capability: `fermyon:spin/sqlite@2.0.0` over [`Database`].

use std::collections::HashMap;
use std::sync::Arc;

use tracing::Instrument as _;
use wasmtime::component::{HasData, Resource, ResourceTable};

use super::unit_of_work::Work;
use super::{Grants, Rows, SqlError, Value};
use crate::bindings::sqlite;

/// What a guest holds after `connection.open(label)`: just the label. The connection itself
/// lives in the [`SqlSession`], so every handle to one label shares it.
pub struct ConnectionHandle {
    label: String,
}

/// One invocation's databases: the grants of its component version and the units of work
/// it has opened so far, held until the invocation ends.
pub struct SqlSession {
    component: Arc<str>,
    grants: Grants,
    /// The database that holds the component's outbox and inbox: its first label.
    primary: Option<String>,
    open: HashMap<String, Work>,
    /// Why a database could not serve this invocation, if one could not: a guest that then
    /// fails is answered 503 with `Retry-After`, not with its own error.
    unavailable: Option<String>,
}

impl SqlSession {
    pub fn new(component: Arc<str>, grants: Grants, primary: Option<String>) -> SqlSession {
        SqlSession {
            component,
            grants,
            primary,
            open: HashMap::new(),
            unavailable: None,
        }
    }

    /// The first database failure of this invocation that was no fault of its SQL.
    pub fn take_unavailable(&mut self) -> Option<String> {
        self.unavailable.take()
    }

    /// `db.system.name` of the database behind `label`.
    fn system(&self, label: &str) -> &'static str {
        match self.grants.get(label).map(|db| db.dialect()) {
            Some(super::Dialect::Postgres) => "postgresql",
            _ => "sqlite",
        }
    }

    async fn work(&mut self, label: &str) -> Result<&mut Work, SqlError> {
        if !self.open.contains_key(label) {
            let db = self
                .grants
                .get(label)
                .ok_or_else(|| SqlError::Unavailable(format!("no database `{label}`")))?;
            let conn = db.connect().await?;
            self.open.insert(label.to_owned(), Work::new(conn));
        }
        Ok(self.open.get_mut(label).expect("inserted above"))
    }

    /// Runs a host statement in the unit of work of the component's primary database.
    pub async fn execute_in_primary(
        &mut self,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<Rows, SqlError> {
        let label = self.primary.clone().ok_or_else(|| {
            SqlError::Unavailable(format!(
                "component `{}` has no database for its outbox and inbox",
                self.component
            ))
        })?;
        self.work(&label)
            .await?
            .execute_in_transaction(statement, params)
            .await
    }

    /// Commits every database the invocation wrote to, the primary one last: it holds the
    /// outbox, so messages never announce writes that did not happen.
    pub async fn commit(&mut self) -> Result<(), SqlError> {
        let primary = self.primary.as_deref();
        for (_, work) in self
            .open
            .iter_mut()
            .filter(|(l, _)| Some(l.as_str()) != primary)
        {
            work.commit().await?;
        }
        if let Some(work) = primary.and_then(|p| self.open.get_mut(p)) {
            work.commit().await?;
        }
        Ok(())
    }

    /// Discards everything the invocation wrote.
    pub async fn rollback(&mut self) {
        for (label, work) in &mut self.open {
            if let Err(e) = work.rollback().await {
                tracing::warn!(component = %self.component, database = %label, "rollback failed, closing the connection: {e}");
            }
        }
        self.open.clear();
    }
}

/// [`HasData`] marker for the linker.
pub struct Sql;

impl HasData for Sql {
    type Data<'a> = SqlView<'a>;
}

pub struct SqlView<'a> {
    pub session: &'a mut SqlSession,
    pub table: &'a mut ResourceTable,
}

impl sqlite::Host for SqlView<'_> {}

impl sqlite::HostConnection for SqlView<'_> {
    async fn open(
        &mut self,
        database: String,
    ) -> wasmtime::Result<Result<Resource<ConnectionHandle>, sqlite::Error>> {
        if !self.session.grants.contains_key(&database) {
            tracing::warn!(
                component = %self.session.component,
                database,
                "denied: grant it with `sqlite_databases = [\"{database}\"]` in [component.{}]",
                self.session.component
            );
            return Ok(Err(sqlite::Error::AccessDenied));
        }
        Ok(Ok(self.table.push(ConnectionHandle { label: database })?))
    }

    async fn execute(
        &mut self,
        this: Resource<ConnectionHandle>,
        statement: String,
        parameters: Vec<sqlite::Value>,
    ) -> wasmtime::Result<Result<sqlite::QueryResult, sqlite::Error>> {
        let label = self.table.get(&this)?.label.clone();
        // The kind of statement and the database, never the statement's text or values.
        // Debug level: a span per statement is formatted only when someone records it.
        let span = tracing::debug_span!(
            "sql.execute",
            otel.name = %format_args!("{} {label}", operation(&statement)),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = self.session.system(&label),
            db.operation.name = operation(&statement),
            db.namespace = %label,
            db.response.returned_rows = tracing::field::Empty,
        );
        let params = parameters.into_iter().map(Value::from).collect();
        let result = async {
            let work = self.session.work(&label).await?;
            work.execute(&statement, params).await
        }
        .instrument(span.clone())
        .await;
        Ok(match result {
            Ok(rows) => {
                span.record("db.response.returned_rows", rows.rows.len());
                Ok(sqlite::QueryResult {
                    columns: rows.columns,
                    rows: rows
                        .rows
                        .into_iter()
                        .map(|values| sqlite::RowResult {
                            values: values.into_iter().map(Into::into).collect(),
                        })
                        .collect(),
                })
            }
            Err(SqlError::Statement(message)) => {
                span.record("otel.status_code", "error");
                Err(sqlite::Error::Io(message))
            }
            Err(SqlError::Unavailable(reason)) => {
                span.record("otel.status_code", "error");
                tracing::warn!(parent: &span, error = %reason, "database unavailable");
                let message = format!("database unavailable: {reason}");
                self.session.unavailable.get_or_insert(reason);
                Err(sqlite::Error::Io(message))
            }
        })
    }

    async fn drop(&mut self, this: Resource<ConnectionHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl From<sqlite::Value> for Value {
    fn from(v: sqlite::Value) -> Value {
        match v {
            sqlite::Value::Integer(i) => Value::Integer(i),
            sqlite::Value::Real(r) => Value::Real(r),
            sqlite::Value::Text(t) => Value::Text(t),
            sqlite::Value::Blob(b) => Value::Blob(b),
            sqlite::Value::Null => Value::Null,
        }
    }
}

impl From<Value> for sqlite::Value {
    fn from(v: Value) -> sqlite::Value {
        match v {
            Value::Integer(i) => sqlite::Value::Integer(i),
            Value::Real(r) => sqlite::Value::Real(r),
            Value::Text(t) => sqlite::Value::Text(t),
            Value::Blob(b) => sqlite::Value::Blob(b),
            Value::Null => sqlite::Value::Null,
        }
    }
}

/// The statement's first keyword, upper-cased (`SELECT`, `INSERT`, …); `SQL` for anything
/// else, so a span never carries the statement's text.
fn operation(statement: &str) -> &'static str {
    const KNOWN: [&str; 14] = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "WITH", "BEGIN",
        "COMMIT", "ROLLBACK", "PRAGMA", "REPLACE", "UPSERT",
    ];
    let word = statement
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    KNOWN
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(word))
        .unwrap_or("SQL")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_span_names_the_kind_of_statement_and_nothing_of_its_text() {
        assert_eq!(super::operation("  select * from users"), "SELECT");
        assert_eq!(super::operation("INSERT INTO t VALUES (1)"), "INSERT");
        assert_eq!(
            super::operation("with x as (select 1) select * from x"),
            "WITH"
        );
        assert_eq!(super::operation("'; DROP TABLE users; --"), "SQL");
        assert_eq!(super::operation("password123"), "SQL");
        assert_eq!(super::operation(""), "SQL");
    }
}
