//! The two tables the host keeps in a publishing or subscribing component's first database:
//! `_berth_outbox`, messages committed with the writes that caused them and not yet on the
//! bus, and `_berth_inbox`, the ids of messages already applied. Being in the component's
//! own database is what lets one local transaction cover the writes, the messages and the
//! dedupe record.

use std::sync::Arc;
use std::time::Duration;

use super::Message;
use crate::capabilities::sql::{Database, Dialect, SqlError, SqlSession, Value};

/// Plain `INTEGER PRIMARY KEY` keys the outbox: rows only leave from the front, so a new
/// row always sorts after every row the relay has read, and the per-insert write of
/// `AUTOINCREMENT`'s sequence table is saved. The inbox is `WITHOUT ROWID`: one B-tree
/// keyed by message id instead of a table and its index.
const SQLITE_SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS _berth_outbox (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        subject TEXT NOT NULL,
        traceparent TEXT,
        body BLOB NOT NULL,
        created_at INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS _berth_inbox (
        message_id TEXT PRIMARY KEY,
        handled_at INTEGER NOT NULL
    ) WITHOUT ROWID",
];

/// The same tables in PostgreSQL. Transactions there commit out of `seq` order, which
/// loses nothing: the relay deletes only rows it has read, and a row committed later with
/// a lower `seq` is read on the next pass.
const POSTGRES_SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS _berth_outbox (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL,
        subject TEXT NOT NULL,
        traceparent TEXT,
        body BYTEA NOT NULL,
        created_at BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS _berth_inbox (
        message_id TEXT PRIMARY KEY,
        handled_at BIGINT NOT NULL
    )",
];

/// How long handled message ids are remembered; redeliveries come far sooner.
pub const INBOX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Hosts of a fleet load together, and PostgreSQL's `CREATE TABLE IF NOT EXISTS` does not
/// wait for a concurrent one: both see no table, and the second fails on the catalog's
/// unique index (`pg_type_typname_nsp_index`). The hosts creating one schema's tables take
/// turns on this lock, held until their transaction ends.
const POSTGRES_TURN: &str =
    "SELECT 1 FROM pg_advisory_xact_lock(hashtext('berth: host tables ' || current_schema()))";

/// Creates the tables when missing (at load, before any invocation).
pub async fn create(db: &Arc<dyn Database>) -> Result<(), SqlError> {
    let mut conn = db.connect().await?;
    match db.dialect() {
        Dialect::Sqlite => {
            for statement in SQLITE_SCHEMA {
                conn.execute(statement, vec![]).await?;
            }
        }
        Dialect::Postgres => {
            // A failure drops the connection mid-transaction, which rolls it back.
            conn.begin().await?;
            conn.execute(POSTGRES_TURN, vec![]).await?;
            for statement in POSTGRES_SCHEMA {
                conn.execute(statement, vec![]).await?;
            }
            conn.commit().await?;
        }
    }
    Ok(())
}

/// Milliseconds since the epoch, the time unit of the outbox, inbox and embedded bus.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Adds the invocation's messages to its unit of work.
pub async fn append(sql: &mut SqlSession, messages: &[Message]) -> Result<(), SqlError> {
    let now = now_ms();
    for m in messages {
        sql.execute_in_primary(
            "INSERT INTO _berth_outbox (id, subject, traceparent, body, created_at)
             VALUES (?, ?, ?, ?, ?)",
            vec![
                Value::Text(m.id.clone()),
                Value::Text(m.subject.clone()),
                m.traceparent.clone().map_or(Value::Null, Value::Text),
                Value::Blob(m.body.clone()),
                Value::Integer(now),
            ],
        )
        .await?;
    }
    Ok(())
}

/// Records `id` as handled in the unit of work; false when it already was.
pub async fn record_handled(sql: &mut SqlSession, id: &str) -> Result<bool, SqlError> {
    let rows = sql
        .execute_in_primary(
            "INSERT INTO _berth_inbox (message_id, handled_at) VALUES (?, ?)
             ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
            vec![Value::Text(id.to_owned()), Value::Integer(now_ms())],
        )
        .await?;
    Ok(!rows.rows.is_empty())
}

/// Whether `id` was handled already: checked before running a handler, so a redelivered
/// message does not even repeat its side effects outside the database.
pub async fn was_handled(db: &Arc<dyn Database>, id: &str) -> Result<bool, SqlError> {
    let rows = db
        .connect()
        .await?
        .execute(
            "SELECT 1 FROM _berth_inbox WHERE message_id = ?",
            vec![Value::Text(id.to_owned())],
        )
        .await?;
    Ok(!rows.rows.is_empty())
}

/// The oldest committed messages not yet on the bus, with their sequence numbers.
pub async fn pending(
    db: &Arc<dyn Database>,
    limit: usize,
) -> Result<(Vec<Message>, Vec<i64>), SqlError> {
    let rows = db
        .connect()
        .await?
        .execute(
            "SELECT seq, id, subject, traceparent, body FROM _berth_outbox ORDER BY seq LIMIT ?",
            vec![Value::Integer(limit as i64)],
        )
        .await?;
    let mut read = Vec::with_capacity(rows.rows.len());
    let mut messages = Vec::with_capacity(rows.rows.len());
    for row in rows.rows {
        let [seq, id, subject, traceparent, body]: [Value; 5] = row
            .try_into()
            .map_err(|_| SqlError::Statement("unexpected outbox row shape".into()))?;
        let (Value::Integer(seq), Value::Text(id), Value::Text(subject)) = (seq, id, subject)
        else {
            return Err(SqlError::Statement("unexpected outbox row types".into()));
        };
        let body = match body {
            Value::Blob(b) => b,
            Value::Text(t) => t.into_bytes(),
            _ => Vec::new(),
        };
        let traceparent = match traceparent {
            Value::Text(t) => Some(t),
            _ => None,
        };
        read.push(seq);
        messages.push(Message {
            id,
            subject,
            body,
            traceparent,
        });
    }
    Ok((messages, read))
}

/// Forgets the messages `read`, once the bus holds them. On SQLite, with one writer,
/// everything up to the last one read is exactly what was read; on PostgreSQL a row with a
/// lower `seq` may have committed since the read, so the rows are named one by one.
pub async fn remove(db: &Arc<dyn Database>, read: &[i64]) -> Result<(), SqlError> {
    let Some(last) = read.iter().max() else {
        return Ok(());
    };
    match db.dialect() {
        Dialect::Sqlite => {
            write(
                db,
                "DELETE FROM _berth_outbox WHERE seq <= ?",
                vec![Value::Integer(*last)],
            )
            .await
        }
        Dialect::Postgres => {
            let marks = vec!["?"; read.len()].join(", ");
            write(
                db,
                &format!("DELETE FROM _berth_outbox WHERE seq IN ({marks})"),
                read.iter().map(|seq| Value::Integer(*seq)).collect(),
            )
            .await
        }
    }
}

/// Forgets handled ids older than [`INBOX_RETENTION`].
pub async fn prune_inbox(db: &Arc<dyn Database>) -> Result<(), SqlError> {
    let before = now_ms() - INBOX_RETENTION.as_millis() as i64;
    write(
        db,
        "DELETE FROM _berth_inbox WHERE handled_at < ?",
        vec![Value::Integer(before)],
    )
    .await
}

/// Runs one host write in a transaction of its own. Taking the database's write turn
/// (`begin`) queues it behind the invocations in order; run bare, it would wait in SQLite's
/// busy handler, which under steady load starved the relay's delete for over a second and
/// held each component's event flow to one batch per second.
async fn write(
    db: &Arc<dyn Database>,
    statement: &str,
    params: Vec<Value>,
) -> Result<(), SqlError> {
    let mut conn = db.connect().await?;
    conn.begin().await?;
    conn.execute(statement, params).await?;
    conn.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::sql::{self, test_postgres::postgres};

    #[tokio::test]
    async fn hosts_loading_together_create_the_tables_once_without_failing() {
        let url = postgres().fresh_database().await;
        let config = sql::Config::Postgres {
            url: Some(url),
            url_env: None,
        };
        let dir = tempfile::tempdir().unwrap();
        // One database handle per host, as each host opens its own.
        let mut hosts = Vec::new();
        for _ in 0..4 {
            hosts.push(
                sql::build("orders", Some(&config), dir.path(), dir.path(), false)
                    .await
                    .unwrap(),
            );
        }
        let created = futures::future::join_all(hosts.iter().map(create)).await;
        for result in created {
            result.unwrap();
        }
        let (messages, _) = pending(&hosts[0], 10).await.unwrap();
        assert!(messages.is_empty());
    }
}
