//! One invocation's writes to one database, committed or rolled back as a whole when the
//! invocation ends (with the messages it published, see `messaging::outbox`).
//!
//! The transaction opens at the first statement that may write, so an invocation that only
//! reads never takes the write lock. The guest's own transaction statements become
//! savepoints inside it: `BEGIN` → `SAVEPOINT`, `COMMIT`/`END` → `RELEASE`, `ROLLBACK` →
//! `ROLLBACK TO` + `RELEASE`, so code written for plain Spin keeps its meaning. A guest
//! `BEGIN` that opens the transaction needs no savepoint: rolling back to the start of the
//! transaction is rolling it back, so its `COMMIT` costs nothing and its `ROLLBACK` is the
//! transaction's (the usual shape of a handler, two statements fewer on the database).

use super::{Connection, Rows, SqlError, Value};

/// What a statement does to the unit of work, from its first keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Begin,
    Commit,
    Rollback,
    /// Cannot write: runs outside the transaction until one is open.
    Read,
    /// Anything else; opens the transaction first. Unknown statements land here, which
    /// costs at most an early lock, never atomicity.
    Write,
}

pub fn classify(statement: &str) -> Kind {
    let mut words = keywords(statement);
    match words.next().as_deref() {
        Some("BEGIN") => Kind::Begin,
        Some("COMMIT" | "END") => Kind::Commit,
        Some("ROLLBACK") => {
            // `ROLLBACK [TRANSACTION] TO [SAVEPOINT] x` is the guest's own savepoint.
            let next = words.next();
            let next = match next.as_deref() {
                Some("TRANSACTION") => words.next(),
                _ => next,
            };
            if next.as_deref() == Some("TO") {
                Kind::Write
            } else {
                Kind::Rollback
            }
        }
        Some("SELECT" | "VALUES" | "EXPLAIN") => Kind::Read,
        _ => Kind::Write,
    }
}

/// Whether `sql` holds a second statement after a `;` (outside quotes and comments): one
/// statement per call keeps each one classified, as Spin's SQLite does.
pub fn has_more_than_one(sql: &str) -> bool {
    let mut chars = sql.chars().peekable();
    let mut ended = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' | '[' => {
                if ended {
                    return true;
                }
                let close = if c == '[' { ']' } else { c };
                for d in chars.by_ref() {
                    if d == close {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut star = false;
                for d in chars.by_ref() {
                    if star && d == '/' {
                        break;
                    }
                    star = d == '*';
                }
            }
            ';' => ended = true,
            c if c.is_whitespace() => {}
            _ if ended => return true,
            _ => {}
        }
    }
    false
}

/// The statement's leading keywords, upper-cased, skipping whitespace and comments.
fn keywords(statement: &str) -> impl Iterator<Item = String> + '_ {
    let mut rest = statement;
    std::iter::from_fn(move || {
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix("--") {
                rest = after.split_once('\n').map_or("", |(_, r)| r);
            } else if let Some(after) = rest.strip_prefix("/*") {
                rest = after.split_once("*/").map_or("", |(_, r)| r);
            } else {
                break;
            }
        }
        let end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        let word = rest[..end].to_ascii_uppercase();
        rest = &rest[end..];
        Some(word)
    })
}

/// A connection and where its unit of work stands.
pub struct Work {
    conn: Box<dyn Connection>,
    open: bool,
    /// Guest `BEGIN`s not yet closed, each a savepoint.
    savepoints: u32,
    /// The outermost of them opened the transaction, so it is the transaction's start
    /// rather than a `SAVEPOINT` statement.
    first_is_start: bool,
}

impl Work {
    pub fn new(conn: Box<dyn Connection>) -> Work {
        Work {
            conn,
            open: false,
            savepoints: 0,
            first_is_start: false,
        }
    }

    async fn ensure_open(&mut self) -> Result<(), SqlError> {
        if !self.open {
            self.conn.begin().await?;
            self.open = true;
        }
        Ok(())
    }

    /// Runs a guest statement.
    pub async fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<Rows, SqlError> {
        if has_more_than_one(statement) {
            return Err(SqlError::Statement(
                "run one statement per execute; this one has several separated by `;`".into(),
            ));
        }
        match classify(statement) {
            Kind::Read => self.conn.execute(statement, params).await,
            Kind::Write => {
                self.ensure_open().await?;
                self.conn.execute(statement, params).await
            }
            Kind::Begin if !self.open => {
                self.ensure_open().await?;
                self.savepoints = 1;
                self.first_is_start = true;
                Ok(Rows::default())
            }
            Kind::Begin => {
                let name = self.savepoints + 1;
                self.conn
                    .execute(&format!("SAVEPOINT berth_guest_{name}"), vec![])
                    .await?;
                self.savepoints = name;
                Ok(Rows::default())
            }
            Kind::Commit => {
                let name = self.innermost("commit")?;
                if !self.is_start(name) {
                    self.conn
                        .execute(&format!("RELEASE berth_guest_{name}"), vec![])
                        .await?;
                }
                self.close_savepoint(name);
                Ok(Rows::default())
            }
            Kind::Rollback => {
                let name = self.innermost("roll back")?;
                self.undo(name).await?;
                Ok(Rows::default())
            }
        }
    }

    /// Runs a host statement inside the unit of work (outbox and inbox rows).
    pub async fn execute_in_transaction(
        &mut self,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<Rows, SqlError> {
        self.ensure_open().await?;
        self.conn.execute(statement, params).await
    }

    fn innermost(&self, what: &str) -> Result<u32, SqlError> {
        match self.savepoints {
            0 => Err(SqlError::Statement(format!(
                "cannot {what} - no transaction is active"
            ))),
            n => Ok(n),
        }
    }

    /// Whether guest savepoint `name` is the start of the transaction.
    fn is_start(&self, name: u32) -> bool {
        name == 1 && self.first_is_start
    }

    fn close_savepoint(&mut self, name: u32) {
        self.savepoints = name - 1;
        if name == 1 {
            self.first_is_start = false;
        }
    }

    async fn undo(&mut self, name: u32) -> Result<(), SqlError> {
        if self.is_start(name) {
            // Nothing precedes it in the transaction: undoing it is a rollback, and the
            // next write opens a new transaction.
            self.conn.rollback().await?;
            self.open = false;
        } else {
            self.conn
                .execute(&format!("ROLLBACK TO berth_guest_{name}"), vec![])
                .await?;
            self.conn
                .execute(&format!("RELEASE berth_guest_{name}"), vec![])
                .await?;
        }
        self.close_savepoint(name);
        Ok(())
    }

    /// Commits what the invocation wrote. A guest transaction left open is rolled back
    /// first, as a dropped Spin connection would.
    pub async fn commit(&mut self) -> Result<(), SqlError> {
        while self.savepoints > 0 {
            self.undo(self.savepoints).await?;
        }
        if self.open {
            self.open = false;
            self.conn.commit().await?;
        }
        Ok(())
    }

    pub async fn rollback(&mut self) -> Result<(), SqlError> {
        self.savepoints = 0;
        self.first_is_start = false;
        if self.open {
            self.open = false;
            self.conn.rollback().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_classified_by_their_first_keywords() {
        assert_eq!(classify("select 1"), Kind::Read);
        assert_eq!(classify("  -- note\n /* x */ SELECT 1"), Kind::Read);
        assert_eq!(classify("INSERT INTO t VALUES (1)"), Kind::Write);
        assert_eq!(classify("WITH x AS (SELECT 1) DELETE FROM t"), Kind::Write);
        assert_eq!(classify("BEGIN IMMEDIATE"), Kind::Begin);
        assert_eq!(classify("begin transaction"), Kind::Begin);
        assert_eq!(classify("COMMIT"), Kind::Commit);
        assert_eq!(classify("end transaction"), Kind::Commit);
        assert_eq!(classify("ROLLBACK"), Kind::Rollback);
        assert_eq!(classify("ROLLBACK TRANSACTION"), Kind::Rollback);
        assert_eq!(classify("ROLLBACK TO sp"), Kind::Write);
        assert_eq!(
            classify("rollback transaction to savepoint sp"),
            Kind::Write
        );
        assert_eq!(classify(""), Kind::Write);
    }

    #[test]
    fn a_second_statement_is_found_outside_quotes_and_comments() {
        assert!(!has_more_than_one("SELECT 1"));
        assert!(!has_more_than_one("SELECT 1; "));
        assert!(!has_more_than_one("SELECT ';' -- x; y\n"));
        assert!(!has_more_than_one("SELECT 1; /* trailing; */"));
        assert!(has_more_than_one("SELECT 1; DELETE FROM t"));
        assert!(has_more_than_one("SELECT 1;COMMIT"));
    }
}
