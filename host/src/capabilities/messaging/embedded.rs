//! The embedded bus: a SQLite file in the data dir, so events survive a crash or restart of
//! the one host that owns it. A published message is fanned out at once to a delivery row
//! per consumer group whose patterns match it; a group takes due rows under a lease, and the
//! lease lapses when the host restarts, so nothing handed to a dead process is lost.
//!
//! Every operation goes through the file's one connection, so each costs as few statements
//! as it can: a group is woken only by a commit that gave it something, takes its due rows
//! in one statement, and acknowledgements that arrive while others are being written are
//! written together, in one statement, after them.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use sqlx::sqlite::SqlitePool;
use sqlx::{Executor, Row};

use super::outbox::now_ms;
use super::subject::matches_any;
use super::{
    Bus, BusError, DeadLetter, Delivery, Message, Redrive, Redriven, Settle, SubscribeOptions,
    Subscription,
};
use crate::capabilities::sql::sqlite::open_pool;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    traceparent TEXT,
    body BLOB NOT NULL,
    published_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS consumers (
    grp TEXT NOT NULL,
    pattern TEXT NOT NULL,
    PRIMARY KEY (grp, pattern)
);
CREATE TABLE IF NOT EXISTS deliveries (
    grp TEXT NOT NULL,
    seq INTEGER NOT NULL REFERENCES messages (seq),
    attempt INTEGER NOT NULL DEFAULT 0,
    due_at INTEGER NOT NULL,
    leased_until INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (grp, seq)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (grp, due_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    grp TEXT NOT NULL,
    subject TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    failed_at TEXT NOT NULL,
    traceparent TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_of ON dead_letters (grp, id);
";

/// Settled messages are kept this long, so a relay that publishes the same message again
/// (it crashed between publishing and deleting its outbox row) is recognised.
const DEDUPE_WINDOW: Duration = Duration::from_secs(600);
/// The longest a waiting consumer sleeps before looking again, whatever it was told.
const MAX_IDLE: Duration = Duration::from_secs(1);

pub struct EmbeddedBus {
    shared: Arc<Shared>,
}

struct Shared {
    pool: SqlitePool,
    /// Each group's patterns and wake-up; mirrors the `consumers` table, read on every publish.
    groups: RwLock<HashMap<String, Group>>,
    acks: Acks,
}

#[derive(Clone)]
struct Group {
    patterns: Arc<[String]>,
    /// Bumped after every commit that may have made one of the group's deliveries due, so
    /// that a waiting group looks again only when there may be something for it.
    due: Arc<watch::Sender<u64>>,
}

impl Group {
    fn new(patterns: Vec<String>, due: Option<Arc<watch::Sender<u64>>>) -> Group {
        Group {
            patterns: patterns.into(),
            due: due.unwrap_or_else(|| Arc::new(watch::Sender::new(0))),
        }
    }
}

impl Shared {
    fn groups(&self) -> Result<std::sync::RwLockReadGuard<'_, HashMap<String, Group>>, BusError> {
        self.groups
            .read()
            .map_err(|_| BusError::Failed("the consumer table lock is poisoned".into()))
    }

    /// Wakes `group`'s consumer, if it has one.
    fn wake(&self, group: &str) {
        if let Ok(groups) = self.groups()
            && let Some(group) = groups.get(group)
        {
            group.due.send_modify(|n| *n += 1);
        }
    }
}

impl EmbeddedBus {
    pub async fn open(dir: &Path) -> anyhow::Result<EmbeddedBus> {
        // One connection: every bus operation is a short write, and SQLite takes one writer
        // at a time anyway. Queueing for the connection is FIFO and wakes at once; several
        // connections contending for the write lock sleep in SQLite's busy handler.
        let pool = open_pool(&dir.join("bus.db"), 1).await?;
        // A dead letters table from before redrive lacks the traceparent a redrive keeps.
        let old_dead_letters: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'dead_letters')
             AND NOT EXISTS (SELECT 1 FROM pragma_table_info('dead_letters')
                             WHERE name = 'traceparent')",
        )
        .fetch_one(&pool)
        .await?;
        if old_dead_letters {
            pool.execute("ALTER TABLE dead_letters ADD COLUMN traceparent TEXT")
                .await?;
        }
        pool.execute(SCHEMA).await?;
        // Leases belong to the process that took them; whatever the last one held is due.
        sqlx::query("UPDATE deliveries SET leased_until = 0")
            .execute(&pool)
            .await?;
        let mut patterns: HashMap<String, Vec<String>> = HashMap::new();
        for row in sqlx::query("SELECT grp, pattern FROM consumers")
            .fetch_all(&pool)
            .await?
        {
            patterns
                .entry(row.try_get("grp")?)
                .or_default()
                .push(row.try_get("pattern")?);
        }
        let groups = patterns
            .into_iter()
            .map(|(group, patterns)| (group, Group::new(patterns, None)))
            .collect();
        let shared = Arc::new(Shared {
            pool,
            groups: RwLock::new(groups),
            acks: Acks::default(),
        });
        tokio::spawn(forget_settled(Arc::downgrade(&shared)));
        Ok(EmbeddedBus { shared })
    }
}

/// Deletes settled messages once they are older than the dedupe window.
async fn forget_settled(shared: std::sync::Weak<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let before = now_ms() - DEDUPE_WINDOW.as_millis() as i64;
        if let Err(e) = sqlx::query(
            "DELETE FROM messages WHERE published_at < ?
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = messages.seq)",
        )
        .bind(before)
        .execute(&shared.pool)
        .await
        {
            tracing::warn!("embedded bus: cannot forget settled messages: {e}");
        }
    }
}

fn failed(e: sqlx::Error) -> BusError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            BusError::Unavailable(e.to_string())
        }
        other => BusError::Failed(other.to_string()),
    }
}

#[async_trait::async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        let shared = &self.shared;
        let groups: Vec<(String, Group)> = shared
            .groups()?
            .iter()
            .map(|(name, group)| (name.clone(), group.clone()))
            .collect();
        let mut fed = vec![false; groups.len()];
        let now = now_ms();
        let mut tx = shared.pool.begin().await.map_err(failed)?;
        for message in messages {
            let seq: Option<i64> = sqlx::query_scalar(
                "INSERT INTO messages (id, subject, traceparent, body, published_at)
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING seq",
            )
            .bind(&message.id)
            .bind(&message.subject)
            .bind(&message.traceparent)
            .bind(&message.body)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(failed)?;
            let Some(seq) = seq else {
                continue; // already stored: published again by a relay that crashed
            };
            for ((name, group), fed) in groups.iter().zip(&mut fed) {
                if matches_any(&group.patterns, &message.subject) {
                    sqlx::query("INSERT INTO deliveries (grp, seq, due_at) VALUES (?, ?, ?)")
                        .bind(name)
                        .bind(seq)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(failed)?;
                    *fed = true;
                }
            }
        }
        tx.commit().await.map_err(failed)?;
        for ((_, group), _) in groups.iter().zip(&fed).filter(|(_, fed)| **fed) {
            group.due.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        group: &str,
        patterns: &[String],
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let shared = &self.shared;
        let mut tx = shared.pool.begin().await.map_err(failed)?;
        sqlx::query("DELETE FROM consumers WHERE grp = ?")
            .bind(group)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        for pattern in patterns {
            sqlx::query("INSERT INTO consumers (grp, pattern) VALUES (?, ?)")
                .bind(group)
                .bind(pattern)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
        }
        tx.commit().await.map_err(failed)?;
        let due = {
            let mut groups = shared
                .groups
                .write()
                .map_err(|_| BusError::Failed("the consumer table lock is poisoned".into()))?;
            // A group subscribing again keeps its wake-up: an earlier subscription may wait on it.
            let due = groups.get(group).map(|g| g.due.clone());
            let entry = Group::new(patterns.to_vec(), due);
            let due = entry.due.clone();
            groups.insert(group.to_owned(), entry);
            due
        };
        Ok(Box::new(EmbeddedSubscription {
            shared: shared.clone(),
            group: group.into(),
            options,
            ready: VecDeque::new(),
            woken: due.subscribe(),
            due,
        }))
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        let rows = sqlx::query(
            "SELECT id, grp, subject, body, attempts, error, failed_at
             FROM dead_letters ORDER BY n DESC LIMIT 1000",
        )
        .fetch_all(&self.shared.pool)
        .await
        .map_err(failed)?;
        let mut letters = rows
            .iter()
            .map(|row| {
                Ok(DeadLetter {
                    id: row.try_get("id")?,
                    group: row.try_get("grp")?,
                    subject: row.try_get("subject")?,
                    body: super::printable(&row.try_get::<Vec<u8>, _>("body")?),
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
                    error: row.try_get("error")?,
                    failed_at: row.try_get("failed_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(failed)?;
        letters.reverse();
        Ok(letters)
    }

    async fn redrive(&self, group: &str, id: &str) -> Result<Redrive, BusError> {
        let shared = &self.shared;
        let now = now_ms();
        let mut tx = shared
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed)?;
        let Some(dead) = sqlx::query(
            "SELECT subject, body, traceparent FROM dead_letters
             WHERE grp = ? AND id = ? ORDER BY n DESC LIMIT 1",
        )
        .bind(group)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed)?
        else {
            return Ok(Redrive::NotFound);
        };
        let subject: String = dead.try_get("subject").map_err(failed)?;
        // The message itself is forgotten once settled everywhere and older than the dedupe
        // window: store it again from the dead letter (a row still there is the same message).
        sqlx::query(
            "INSERT INTO messages (id, subject, traceparent, body, published_at)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(&subject)
        .bind(
            dead.try_get::<Option<String>, _>("traceparent")
                .map_err(failed)?,
        )
        .bind(dead.try_get::<Vec<u8>, _>("body").map_err(failed)?)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        // A delivery row for this group alone, as if just published: attempt 0 is taken
        // as attempt 1. Other groups keep none, so those that handled it never see it again.
        sqlx::query(
            "INSERT INTO deliveries (grp, seq, due_at)
             SELECT ?, seq, ? FROM messages WHERE id = ?
             ON CONFLICT (grp, seq) DO NOTHING",
        )
        .bind(group)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        sqlx::query("DELETE FROM dead_letters WHERE grp = ? AND id = ?")
            .bind(group)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        shared.wake(group);
        Ok(Redrive::Redriven(Redriven {
            group: group.to_owned(),
            id: id.to_owned(),
            subject,
        }))
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.shared
            .pool
            .execute("SELECT 1")
            .await
            .map(drop)
            .map_err(failed)
    }
}

struct EmbeddedSubscription {
    shared: Arc<Shared>,
    group: Arc<str>,
    options: SubscribeOptions,
    ready: VecDeque<Delivery>,
    /// The group's wake-up, and this consumer's view of it.
    due: Arc<watch::Sender<u64>>,
    woken: watch::Receiver<u64>,
}

impl EmbeddedSubscription {
    /// Leases the due deliveries of the group, up to a batch: one statement leases them
    /// (nothing is written when none is due), a second reads their messages, which stay
    /// while a delivery refers to them.
    async fn claim(&mut self) -> Result<(), sqlx::Error> {
        let now = now_ms();
        let lease_end = now + self.options.lease.as_millis() as i64;
        let leased = sqlx::query(
            "UPDATE deliveries SET leased_until = ?1, attempt = attempt + 1
             WHERE grp = ?2 AND seq IN (
                 SELECT seq FROM deliveries
                 WHERE grp = ?2 AND due_at <= ?3 AND leased_until <= ?3
                 ORDER BY due_at, seq LIMIT ?4)
             RETURNING seq, attempt, due_at",
        )
        .bind(lease_end)
        .bind(&*self.group)
        .bind(now)
        .bind(self.options.batch as i64)
        .fetch_all(&self.shared.pool)
        .await?;
        if leased.is_empty() {
            return Ok(());
        }
        let mut leased = leased
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<i64, _>("due_at")?,
                    row.try_get::<i64, _>("seq")?,
                    row.try_get::<i64, _>("attempt")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        // In the order they became due, as they were selected.
        leased.sort_unstable();
        let seqs: Vec<i64> = leased.iter().map(|(_, seq, _)| *seq).collect();
        let mut messages: HashMap<i64, Message> = HashMap::with_capacity(seqs.len());
        for row in sqlx::query(
            "SELECT seq, id, subject, traceparent, body FROM messages
             WHERE seq IN (SELECT value FROM json_each(?))",
        )
        .bind(serde_json::Value::from(seqs.as_slice()).to_string())
        .fetch_all(&self.shared.pool)
        .await?
        {
            messages.insert(
                row.try_get("seq")?,
                Message {
                    id: row.try_get("id")?,
                    subject: row.try_get("subject")?,
                    body: row.try_get("body")?,
                    traceparent: row.try_get("traceparent")?,
                },
            );
        }
        for (_, seq, attempt) in leased {
            // A delivery refers to its message (a foreign key), so this finds each one.
            let Some(message) = messages.remove(&seq) else {
                tracing::warn!(group = %self.group, seq, "embedded bus: a delivery without its message");
                continue;
            };
            self.ready.push_back(Delivery {
                message,
                attempt: attempt as u32,
                settle: Box::new(EmbeddedSettle {
                    shared: self.shared.clone(),
                    group: self.group.clone(),
                    due: self.due.clone(),
                    seq,
                }),
            });
        }
        Ok(())
    }

    /// How long until the group's next delivery may become due, at most [`MAX_IDLE`].
    async fn idle_time(&self) -> Duration {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(MAX(due_at, leased_until)) FROM deliveries WHERE grp = ?",
        )
        .bind(&*self.group)
        .fetch_one(&self.shared.pool)
        .await
        .ok()
        .flatten();
        next.map_or(MAX_IDLE, |at| {
            Duration::from_millis((at - now_ms()).max(1) as u64).min(MAX_IDLE)
        })
    }
}

#[async_trait::async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            if let Some(delivery) = self.ready.pop_front() {
                return Some(delivery);
            }
            self.woken.mark_unchanged();
            if let Err(e) = self.claim().await {
                if self.shared.pool.is_closed() {
                    return None;
                }
                tracing::warn!(group = %self.group, "embedded bus: cannot take deliveries: {e}");
                tokio::time::sleep(MAX_IDLE).await;
                continue;
            }
            if self.ready.is_empty() {
                let idle = self.idle_time().await;
                let _ = tokio::time::timeout(idle, self.woken.changed()).await;
            }
        }
    }
}

struct EmbeddedSettle {
    shared: Arc<Shared>,
    group: Arc<str>,
    due: Arc<watch::Sender<u64>>,
    seq: i64,
}

/// Acknowledgements waiting to be written, and the turn to write them. While one batch is
/// being deleted the next ones queue, and the first of them to get the turn deletes them
/// all in one statement: a group commit, instead of a transaction per message.
#[derive(Default)]
struct Acks {
    waiting: Mutex<Vec<Ack>>,
    turn: tokio::sync::Mutex<()>,
}

struct Ack {
    group: Arc<str>,
    seq: i64,
    done: oneshot::Sender<Result<(), BusError>>,
}

impl Acks {
    /// Returns once the deletion of `group`'s delivery `seq` is committed, or failed.
    async fn ack(&self, pool: &SqlitePool, group: Arc<str>, seq: i64) -> Result<(), BusError> {
        let (done, mut outcome) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Ack { group, seq, done });
        let _turn = self.turn.lock().await;
        // The one that had the turn before may have written it, in its batch.
        match outcome.try_recv() {
            Ok(result) => return result,
            Err(oneshot::error::TryRecvError::Closed) => {
                return Err(BusError::Failed(
                    "the batch that held this acknowledgement was interrupted".into(),
                ));
            }
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let batch =
            std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
        let keys: serde_json::Value = batch
            .iter()
            .map(|ack| serde_json::json!([&*ack.group, ack.seq]))
            .collect();
        // Joined through the primary key, so each key costs one lookup.
        let result = sqlx::query(
            "DELETE FROM deliveries WHERE rowid IN (
                 SELECT d.rowid FROM json_each(?) k JOIN deliveries d
                 ON d.grp = json_extract(k.value, '$[0]') AND d.seq = json_extract(k.value, '$[1]'))",
        )
        .bind(keys.to_string())
        .execute(pool)
        .await
        .map(drop)
        .map_err(failed);
        // This one's own key is in the batch: it was queued before the turn was taken, and
        // nobody answered it.
        for ack in batch {
            let _ = ack.done.send(result.clone());
        }
        result
    }
}

#[async_trait::async_trait]
impl Settle for EmbeddedSettle {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.shared
            .acks
            .ack(&self.shared.pool, self.group.clone(), self.seq)
            .await
    }

    async fn retry(self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        sqlx::query("UPDATE deliveries SET due_at = ?, leased_until = 0 WHERE grp = ? AND seq = ?")
            .bind(now_ms() + delay.as_millis() as i64)
            .bind(&*self.group)
            .bind(self.seq)
            .execute(&self.shared.pool)
            .await
            .map_err(failed)?;
        self.due.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn dead_letter(self: Box<Self>, error: &str) -> Result<(), BusError> {
        let failed_at = crate::telemetry::rfc3339_now();
        let mut tx = self.shared.pool.begin().await.map_err(failed)?;
        sqlx::query(
            "INSERT INTO dead_letters
                 (id, grp, subject, body, attempts, error, failed_at, traceparent)
             SELECT m.id, d.grp, m.subject, m.body, d.attempt, ?, ?, m.traceparent
             FROM deliveries d JOIN messages m ON m.seq = d.seq
             WHERE d.grp = ? AND d.seq = ?",
        )
        .bind(error)
        .bind(failed_at)
        .bind(&*self.group)
        .bind(self.seq)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        sqlx::query("DELETE FROM deliveries WHERE grp = ? AND seq = ?")
            .bind(&*self.group)
            .bind(self.seq)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, subject: &str) -> Message {
        Message {
            id: id.into(),
            subject: subject.into(),
            body: b"{}".to_vec(),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        }
    }

    const OPTIONS: SubscribeOptions = SubscribeOptions {
        lease: Duration::from_secs(60),
        batch: 8,
    };

    async fn next(sub: &mut Box<dyn Subscription>) -> Option<Delivery> {
        tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn matching_messages_are_delivered_once_per_group_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let bus = EmbeddedBus::open(dir.path()).await.unwrap();
        let mut sub = bus.subscribe("g", &["a.*".into()], OPTIONS).await.unwrap();
        let mut other = bus.subscribe("h", &["a.x".into()], OPTIONS).await.unwrap();
        bus.publish(&[message("1", "a.x"), message("2", "b.y")])
            .await
            .unwrap();
        // Published again by a relay that crashed before deleting it: stored once.
        bus.publish(&[message("1", "a.x")]).await.unwrap();

        let first = next(&mut sub).await.expect("a delivery");
        assert_eq!(first.message, message("1", "a.x"));
        assert_eq!(first.attempt, 1);
        assert!(
            next(&mut sub).await.is_none(),
            "b.y does not match, 1 is stored once"
        );
        first.settle.retry(Duration::ZERO).await.unwrap();
        let again = next(&mut sub).await.expect("the retry");
        assert_eq!(again.attempt, 2);
        again.settle.ack().await.unwrap();
        assert!(next(&mut sub).await.is_none());

        let theirs = next(&mut other).await.expect("group h has its own copy");
        assert_eq!(theirs.message.id, "1");
        theirs.settle.dead_letter("it broke").await.unwrap();
        let dead = bus.dead_letters().await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (
                dead[0].group.as_str(),
                dead[0].attempts,
                dead[0].error.as_str()
            ),
            ("h", 1, "it broke")
        );
        assert!(next(&mut other).await.is_none());
    }

    #[tokio::test]
    async fn a_redriven_dead_letter_goes_back_to_its_group_only() {
        let dir = tempfile::tempdir().unwrap();
        let bus = EmbeddedBus::open(dir.path()).await.unwrap();
        let mut handled = bus.subscribe("g", &["a.*".into()], OPTIONS).await.unwrap();
        let mut failing = bus.subscribe("h", &["a.x".into()], OPTIONS).await.unwrap();
        bus.publish(&[message("1", "a.x")]).await.unwrap();
        next(&mut handled)
            .await
            .unwrap()
            .settle
            .ack()
            .await
            .unwrap();
        let dead = next(&mut failing).await.unwrap();
        dead.settle.retry(Duration::ZERO).await.unwrap();
        let dead = next(&mut failing).await.unwrap();
        assert_eq!(dead.attempt, 2);
        dead.settle.dead_letter("it broke").await.unwrap();
        // Settled everywhere and forgotten, as after the dedupe window: the dead letter
        // alone holds the message now.
        sqlx::query("DELETE FROM messages")
            .execute(&bus.shared.pool)
            .await
            .unwrap();

        assert_eq!(
            bus.redrive("g", "1").await.unwrap(),
            Redrive::NotFound,
            "g handled it"
        );
        assert_eq!(
            bus.redrive("h", "1").await.unwrap(),
            Redrive::Redriven(Redriven {
                group: "h".into(),
                id: "1".into(),
                subject: "a.x".into(),
            })
        );
        assert!(bus.dead_letters().await.unwrap().is_empty());
        let again = next(&mut failing).await.expect("redriven to h");
        assert_eq!(
            again.message,
            message("1", "a.x"),
            "same id, body, traceparent"
        );
        assert_eq!(again.attempt, 1, "attempts start over");
        again.settle.ack().await.unwrap();
        assert!(next(&mut handled).await.is_none(), "g never sees it again");
        assert!(next(&mut failing).await.is_none());
        assert_eq!(bus.redrive("h", "1").await.unwrap(), Redrive::NotFound);
    }

    #[tokio::test]
    async fn dead_letters_kept_before_redrive_existed_can_be_redriven() {
        let dir = tempfile::tempdir().unwrap();
        {
            let pool = open_pool(&dir.path().join("bus.db"), 1).await.unwrap();
            pool.execute(
                "CREATE TABLE dead_letters (
                    n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, grp TEXT NOT NULL,
                    subject TEXT NOT NULL, body BLOB NOT NULL, attempts INTEGER NOT NULL,
                    error TEXT NOT NULL, failed_at TEXT NOT NULL);
                 INSERT INTO dead_letters (id, grp, subject, body, attempts, error, failed_at)
                 VALUES ('1', 'h', 'a.x', x'7b7d', 5, 'old', '2024-01-01T00:00:00Z');",
            )
            .await
            .unwrap();
            pool.close().await;
        }
        let bus = EmbeddedBus::open(dir.path()).await.unwrap();
        let mut sub = bus.subscribe("h", &["a.x".into()], OPTIONS).await.unwrap();
        assert!(matches!(
            bus.redrive("h", "1").await.unwrap(),
            Redrive::Redriven(_)
        ));
        let again = next(&mut sub).await.expect("redriven");
        assert_eq!(
            (again.message.body.as_slice(), again.attempt),
            (&b"{}"[..], 1)
        );
        assert_eq!(again.message.traceparent, None);
    }

    #[tokio::test]
    async fn unsettled_deliveries_and_subscriptions_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let bus = EmbeddedBus::open(dir.path()).await.unwrap();
            let mut sub = bus.subscribe("g", &[">".into()], OPTIONS).await.unwrap();
            bus.publish(&[message("1", "a.x")]).await.unwrap();
            let taken = next(&mut sub).await.expect("a delivery");
            // The process dies holding the lease.
            std::mem::forget(taken);
        }
        let bus = EmbeddedBus::open(dir.path()).await.unwrap();
        // Published before the group resumes: it still waits for the group.
        bus.publish(&[message("2", "a.y")]).await.unwrap();
        let mut sub = bus.subscribe("g", &[">".into()], OPTIONS).await.unwrap();
        let mut ids = Vec::new();
        while let Some(d) = next(&mut sub).await {
            ids.push(d.message.id.clone());
            d.settle.ack().await.unwrap();
        }
        ids.sort();
        assert_eq!(ids, ["1", "2"]);
    }
}
