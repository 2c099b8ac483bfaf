//! What a `Store` holds for one invocation: one field per capability. Built from the
//! component version's load-time state; nothing here parses or opens anything.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capabilities::http_outbound::OutboundHttp;
use crate::capabilities::key_value::KvSession;
use crate::capabilities::messaging::{MessagingSession, outbox};
use crate::capabilities::sql::{SqlError, SqlSession};
use crate::telemetry::GuestOutput;

pub struct InvocationState {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub outbound: OutboundHttp,
    pub sql: SqlSession,
    pub kv: KvSession,
    pub messaging: MessagingSession,
    pub variables: Arc<HashMap<String, String>>,
    pub limits: GuestLimits,
    /// The guest's stdout (sharing its owner with stderr): whose output it is moves with
    /// each request a kept instance serves.
    pub output: GuestOutput,
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// How an invocation ends its unit of work.
pub enum Outcome<'a> {
    /// Commit its writes and publish its messages; `inbox` is the id of the message it
    /// handled, recorded in the same transaction.
    Commit {
        inbox: Option<&'a str>,
    },
    Rollback,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    Committed,
    /// The inbox already held the message: another delivery applied it first.
    Duplicate,
    RolledBack,
}

impl InvocationState {
    /// Commits or rolls back everything the invocation wrote and published, together.
    pub async fn finish(&mut self, outcome: Outcome<'_>) -> Result<Finished, SqlError> {
        let Outcome::Commit { inbox } = outcome else {
            self.sql.rollback().await;
            self.messaging.discard();
            // A guest that failed because its database was down failed for that reason.
            if let Some(reason) = self.sql.take_unavailable() {
                return Err(SqlError::Unavailable(reason));
            }
            return Ok(Finished::RolledBack);
        };
        let result = async {
            if let Some(id) = inbox
                && !outbox::record_handled(&mut self.sql, id).await?
            {
                return Ok(Finished::Duplicate);
            }
            let published = self.messaging.take_outbox();
            outbox::append(&mut self.sql, &published).await?;
            self.sql.commit().await?;
            if !published.is_empty() {
                self.messaging.wake_relay();
            }
            Ok(Finished::Committed)
        }
        .await;
        if !matches!(result, Ok(Finished::Committed)) {
            self.sql.rollback().await;
        }
        result
    }
}

/// The Store's resource limiter: a memory that would grow past the component's
/// `memory_limit_mb` traps the guest, and says so, so a failure is classified by what
/// happened rather than by the words of wasmtime's message.
pub struct GuestLimits {
    memory_bytes: usize,
    /// Set when the guest asked for more memory than its limit.
    pub exceeded: bool,
    /// The largest linear memory the instance has: memories only grow, so this is what
    /// it holds now, and what decides whether a kept instance may serve again.
    pub memory: usize,
}

/// The trap of a guest that asked for more memory than its limit.
#[derive(Debug, thiserror::Error)]
#[error("the component asked for {desired} bytes of memory, over its limit of {limit}")]
struct MemoryLimitExceeded {
    desired: usize,
    limit: usize,
}

impl GuestLimits {
    pub fn new(memory_bytes: usize) -> GuestLimits {
        GuestLimits {
            memory_bytes,
            exceeded: false,
            memory: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.exceeded = true;
            return Err(MemoryLimitExceeded {
                desired,
                limit: self.memory_bytes,
            }
            .into());
        }
        self.memory = self.memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pooling allocator's slots.
        Ok(true)
    }
}
