//! Guest stdout and stderr as log events, a line at a time, tagged with the component and
//! the trace id so a panic message lands next to the request that caused it.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longer lines are split, so a guest cannot grow host memory by never writing a newline.
const MAX_LINE: usize = 16 * 1024;

/// One of a guest's output streams. Both streams of an instance share whose output it is,
/// which a kept instance ([`crate::registry::reuse`]) moves to each request it serves.
#[derive(Clone)]
pub struct GuestOutput {
    component: Arc<str>,
    stream: &'static str,
    owner: Arc<Mutex<Owner>>,
}

/// The invocation an instance's output belongs to.
struct Owner {
    trace_id: Arc<str>,
    /// The invocation's span, current when the store is made or renewed. wasmtime writes a
    /// guest's output from a task of its own, so each line is logged inside this span
    /// explicitly: that is what puts the trace and span ids on the exported log record.
    span: tracing::Span,
}

impl GuestOutput {
    /// An instance's stdout and stderr, owned by the invocation of `trace_id`.
    pub fn pair(component: Arc<str>, trace_id: Arc<str>) -> (GuestOutput, GuestOutput) {
        let owner = Arc::new(Mutex::new(Owner {
            trace_id,
            span: tracing::Span::current(),
        }));
        let stream = |stream| GuestOutput {
            component: component.clone(),
            stream,
            owner: owner.clone(),
        };
        (stream("stdout"), stream("stderr"))
    }

    /// From now on, the output belongs to the invocation of `trace_id` (and the current
    /// span).
    pub fn attribute(&self, trace_id: Arc<str>) {
        *self.owner.lock().unwrap_or_else(PoisonError::into_inner) = Owner {
            trace_id,
            span: tracing::Span::current(),
        };
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            out: self.clone(),
            line: Vec::new(),
        })
    }
}

struct LineWriter {
    out: GuestOutput,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (trace_id, span) = {
            let owner = self
                .out
                .owner
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (owner.trace_id.clone(), owner.span.clone())
        };
        let GuestOutput {
            component, stream, ..
        } = &self.out;
        let _inside = span.enter();
        let _context = super::otel::attach(&span);
        if *stream == "stderr" {
            tracing::warn!(target: super::GUEST_TARGET, component = %component, trace_id = %trace_id, stream, "{text}");
        } else {
            tracing::info!(target: super::GUEST_TARGET, component = %component, trace_id = %trace_id, stream, "{text}");
        }
        self.line.clear();
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        for &byte in buf {
            this.line.push(byte);
            if byte == b'\n' || this.line.len() >= MAX_LINE {
                this.emit();
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.line.is_empty() {
            this.emit();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}
