//! SQL through `fermyon:spin/sqlite@2.0.0`, with failures turned into API errors.

use spin_sdk::sqlite::{Connection, QueryResult, Value};

use crate::error::ApiError;

pub struct Db {
    conn: Connection,
}

impl Db {
    /// Opens the component's database by its manifest label.
    pub fn open(label: &str) -> Result<Db, ApiError> {
        Connection::open(label)
            .map(|conn| Db { conn })
            .map_err(|e| ApiError::internal(format!("cannot open database `{label}`: {e:?}")))
    }

    pub fn query(&self, sql: &str, params: &[Value]) -> Result<QueryResult, ApiError> {
        self.conn
            .execute(sql, params)
            .map_err(|e| ApiError::internal(format!("`{sql}` failed: {e:?}")))
    }

    /// Like [`Db::query`], but hands a constraint violation back for the caller to map.
    pub fn try_query(&self, sql: &str, params: &[Value]) -> Result<QueryResult, DbError> {
        self.conn.execute(sql, params).map_err(|e| match e {
            spin_sdk::sqlite::Error::Io(message)
                if message.contains("UNIQUE constraint failed") =>
            {
                DbError::Conflict
            }
            other => DbError::Other(ApiError::internal(format!("`{sql}` failed: {other:?}"))),
        })
    }

    /// Runs `work` in one transaction: committed if it returns Ok, rolled back otherwise.
    /// `BEGIN IMMEDIATE` takes the write lock up front, so two writers queue instead of
    /// failing when both try to upgrade a read lock.
    pub fn transaction<T, E: From<ApiError>>(
        &self,
        work: impl FnOnce(&Db) -> Result<T, E>,
    ) -> Result<T, E> {
        self.query("BEGIN IMMEDIATE", &[])?;
        match work(self) {
            Ok(value) => {
                self.query("COMMIT", &[])?;
                Ok(value)
            }
            Err(e) => {
                let _ = self.conn.execute("ROLLBACK", &[]);
                Err(e)
            }
        }
    }
}

/// A text column of a row, or a 500 naming it: a missing column is a bug in this service.
pub fn text_column(row: &spin_sdk::sqlite::Row<'_>, name: &str) -> Result<String, ApiError> {
    row.get::<&str>(name)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::internal(format!("column `{name}` is missing")))
}

/// An integer column of a row, or a 500 naming it.
pub fn int_column(row: &spin_sdk::sqlite::Row<'_>, name: &str) -> Result<i64, ApiError> {
    row.get::<i64>(name)
        .ok_or_else(|| ApiError::internal(format!("column `{name}` is missing")))
}

pub enum DbError {
    /// A UNIQUE constraint refused the write.
    Conflict,
    Other(ApiError),
}

pub fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

pub fn int(i: i64) -> Value {
    Value::Integer(i)
}
