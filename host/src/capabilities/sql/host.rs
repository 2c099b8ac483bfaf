//! The guest side of the capability: `fermyon:spin/sqlite@2.0.0` over [`Database`].

use std::collections::HashMap;
use std::sync::Arc;

use tracing::Instrument as _;
use wasmtime::component::{HasData, Resource, ResourceTable};

use super::{Connection, Grants, SqlError, Value};
use crate::bindings::sqlite;

/// What a guest holds after `connection.open(label)`: just the label. The connection itself
/// lives in the [`SqlSession`], so every handle to one label shares it.
pub struct ConnectionHandle {
    label: String,
}

/// One invocation's databases: the grants of its component version and the connections it
/// has opened so far, held until the invocation ends.
pub struct SqlSession {
    component: Arc<str>,
    grants: Grants,
    open: HashMap<String, Box<dyn Connection>>,
}

impl SqlSession {
    pub fn new(component: Arc<str>, grants: Grants) -> SqlSession {
        SqlSession {
            component,
            grants,
            open: HashMap::new(),
        }
    }

    async fn connection(&mut self, label: &str) -> Result<&mut Box<dyn Connection>, SqlError> {
        if !self.open.contains_key(label) {
            let db = self
                .grants
                .get(label)
                .ok_or_else(|| SqlError::Unavailable(format!("no database `{label}`")))?;
            let conn = db.connect().await?;
            self.open.insert(label.to_owned(), conn);
        }
        Ok(self.open.get_mut(label).expect("inserted above"))
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
        let span = tracing::info_span!("sql.execute", db = %label, rows = tracing::field::Empty);
        let params = parameters.into_iter().map(Value::from).collect();
        let result = async {
            let conn = self.session.connection(&label).await?;
            conn.execute(&statement, params).await
        }
        .instrument(span.clone())
        .await;
        Ok(match result {
            Ok(rows) => {
                span.record("rows", rows.rows.len());
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
            Err(SqlError::Statement(message)) => Err(sqlite::Error::Io(message)),
            Err(e @ SqlError::Unavailable(_)) => {
                tracing::warn!(parent: &span, error = %e, "database unavailable");
                Err(sqlite::Error::Io(e.to_string()))
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
