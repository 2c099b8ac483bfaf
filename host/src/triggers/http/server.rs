//! Accepting connections: HTTP/1.1 and HTTP/2 on one listener, a task per connection, every
//! connection bounded, and a graceful stop that lets in-flight requests finish (bounded)
//! once shutdown is signalled.
//!
//! | bound | enforced by | on expiry |
//! |---|---|---|
//! | open connections | a semaphore per listener | `503` written straight to the socket, closed |
//! | request line and headers size | hyper (`max_header_size`, read buffer) | `431`, closed |
//! | first byte of a request to its last header byte | the connection's watchdog | `408` if the request line arrived, then closed |
//! | nothing in flight and no byte moving | the connection's watchdog | closed |
//! | the request body | the handler (`body_timeout_ms`) | `408`, closed |
//!
//! The watchdog reads a few atomics the connection's I/O and its requests update; it sleeps
//! until the earliest moment a bound could expire, so a busy keep-alive connection costs no
//! timer work per request.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::Body;
use crate::config::ConnectionLimits;

/// Something that answers requests: the gateway, or the admin API.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;
}

impl Handler for super::Gateway {
    fn handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send {
        super::Gateway::handle(self, request, client)
    }
}

/// How one listener bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
}

impl Bounds {
    /// The public listener's bounds.
    pub fn public(limits: &ConnectionLimits) -> Bounds {
        Bounds {
            max_connections: limits.max_connections,
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
            max_header_bytes: limits.max_header_bytes,
        }
    }

    /// The admin listener's: the same timeouts, its own (small) share of connections.
    pub fn admin(limits: &ConnectionLimits) -> Bounds {
        Bounds {
            max_connections: limits.admin_max_connections,
            ..Bounds::public(limits)
        }
    }
}

/// What happened to one listener's connections, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub open: AtomicU64,
    /// Refused at accept because `max_connections` were open.
    pub refused: AtomicU64,
    /// Closed because their headers did not arrive within `header_timeout_ms`.
    pub header_timeouts: AtomicU64,
    /// Closed after `idle_timeout_ms` with nothing in flight and nothing moving.
    pub idle_closed: AtomicU64,
}

/// Refused connections still being answered at once; beyond this a refusal is a bare close,
/// so a flood cannot turn refusals into a second way to hold descriptors.
const MAX_REFUSING: usize = 256;
/// How long a refused connection's request is read (and dropped) so that the client reads
/// the 503 instead of a reset.
const REFUSE_LINGER: Duration = Duration::from_millis(500);

/// The whole answer to a connection beyond the cap, formatted once.
static TOO_MANY_CONNECTIONS: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    raw_response(
        "503 Service Unavailable",
        "retry-after: 1\r\n",
        "TOO_MANY_CONNECTIONS",
        "the server has as many open connections as it allows; retry in a moment",
    )
});

/// The answer to a request whose line arrived but whose headers did not, in time.
static HEADER_TIMEOUT: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    raw_response(
        "408 Request Timeout",
        "",
        "HEADER_TIMEOUT",
        "the request headers did not arrive within the header timeout",
    )
});

/// A whole HTTP/1.1 response with the API's JSON error, closing the connection; `extra` is
/// more header lines, each ending in CRLF.
fn raw_response(status: &str, extra: &str, code: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": { "code": code, "message": message },
        "traceId": "0".repeat(32),
    })
    .to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `handler` on `listener` until `shutdown` resolves, then waits up to `drain` for
/// open requests to finish.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    bounds: Bounds,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The watchdog times headers from their first byte, which hyper cannot: its own
        // timer starts when the connection goes idle and would double as an idle timeout.
        .header_read_timeout(None)
        // hyper buffers a request head up to this before parsing it, so an unfinished head
        // holds at most this much memory. Twice the limit: a head somewhat over it is read
        // whole and answered 431 here, cleanly, rather than cut off with a reset.
        .max_buf_size(
            (2 * bounds.max_header_bytes).max(crate::config::berth::MIN_MAX_HEADER_BYTES),
        );
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(bounds.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(128);
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, client) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    refuse(stream, &refusing);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
                let activity = Arc::new(Activity::new());
                let handler = handler.clone();
                let in_service = activity.clone();
                let max_head = bounds.max_header_bytes;
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let handler = handler.clone();
                    let request_guard = in_service.request_started();
                    async move {
                        let response = if head_size(&request) > max_head {
                            head_too_large(max_head)
                        } else {
                            handler.handle(request, client).await
                        };
                        drop(request_guard);
                        Ok::<_, Infallible>(response)
                    }
                });
                let io = TokioIo::new(Watched { stream, activity: activity.clone() });
                // No upgrades: a wasi:http component cannot take over a connection, and the
                // watchdog would read an upgraded stream's bytes as request heads.
                let connection = builder.serve_connection(io, service).into_owned();
                let connection = graceful.watch(connection);
                let stats = stats.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    stats.open.fetch_add(1, Ordering::Relaxed);
                    watch(connection, &activity, bounds, &stats, client, fd).await;
                    stats.open.fetch_sub(1, Ordering::Relaxed);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("stopped with requests still open after {drain:?}");
    }
}

/// The bytes of a request's line and headers, as sent over HTTP/1.1.
fn head_size(request: &Request<Incoming>) -> usize {
    let line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n ".len();
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

fn head_too_large(limit: usize) -> Response<Body> {
    let mut response = super::ApiError::new(
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "HEADERS_TOO_LARGE",
        format!("the request line and headers are larger than the limit of {limit} bytes"),
    )
    .with_header(http::header::CONNECTION, "close")
    .into_response(&"0".repeat(32));
    *response.status_mut() = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    response
}

/// Runs a connection until it ends or one of its bounds expires (then it is dropped, which
/// closes the socket). `fd` is the connection's socket, owned by `connection`.
async fn watch<E: std::fmt::Display>(
    connection: impl Future<Output = Result<(), E>>,
    activity: &Activity,
    bounds: Bounds,
    stats: &ConnectionStats,
    client: SocketAddr,
    fd: std::os::fd::RawFd,
) {
    let mut connection = std::pin::pin!(connection);
    loop {
        let check_at = activity.next_check(&bounds);
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%client, "connection ended: {e}");
                }
                return;
            }
            () = tokio::time::sleep_until(check_at) => match activity.expired(&bounds) {
                Some(Expired::Header) => {
                    stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    if activity.may_answer_head_timeout() {
                        // SAFETY: `connection`, which owns the socket behind `fd`, is alive
                        // until this function returns; a non-blocking send either queues
                        // the whole answer or fails, and hyper writes nothing meanwhile
                        // (no request is in flight and no earlier write is pending).
                        unsafe {
                            libc::send(
                                fd,
                                HEADER_TIMEOUT.as_ptr().cast(),
                                HEADER_TIMEOUT.len(),
                                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                            );
                        }
                    }
                    tracing::debug!(%client, "closed: headers not received within {:?}", bounds.header_timeout);
                    return;
                }
                Some(Expired::Idle) => {
                    stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%client, "closed: idle for {:?}", bounds.idle_timeout);
                    return;
                }
                None => {}
            },
        }
    }
}

/// Answers a connection beyond the cap with a 503 and closes it, reading what the client
/// already sent so that it gets the answer rather than a reset.
fn refuse(stream: TcpStream, refusing: &Arc<Semaphore>) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = stream.try_write(&TOO_MANY_CONNECTIONS);
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSE_LINGER, async {
            use tokio::io::AsyncReadExt as _;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}

#[derive(Debug, PartialEq, Eq)]
enum Expired {
    Header,
    Idle,
}

/// What the watchdog needs to know about a connection, updated by its I/O and requests.
/// Times are milliseconds since the connection was accepted.
struct Activity {
    accepted: Instant,
    /// The last time a byte was read or written, or a request ended.
    last_io: AtomicU64,
    /// When the first byte of a request not yet handed to the handler arrived.
    head_since: AtomicU64,
    in_flight: AtomicU32,
    /// Set once the first bytes are HTTP/2's preface: its frames (pings, settings) are not
    /// request heads, and HTTP/2 bounds its header blocks itself.
    http2: AtomicBool,
    first_read: AtomicBool,
    /// The pending request's line has arrived (a newline since its first byte).
    line_done: AtomicBool,
    /// The last write could not complete: part of an earlier answer may still be unsent.
    write_blocked: AtomicBool,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Activity {
        Activity {
            accepted: Instant::now(),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            in_flight: AtomicU32::new(0),
            http2: AtomicBool::new(false),
            first_read: AtomicBool::new(true),
            line_done: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64
    }

    fn at(&self, millis: u64) -> Instant {
        self.accepted + Duration::from_millis(millis)
    }

    fn read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.first_read.swap(false, Ordering::Relaxed) && bytes.starts_with(b"PRI * HTTP/2") {
            self.http2.store(true, Ordering::Relaxed);
        }
        if self.in_flight.load(Ordering::Relaxed) == 0 && !self.http2.load(Ordering::Relaxed) {
            if self.head_since.load(Ordering::Relaxed) == NONE {
                self.head_since.store(now, Ordering::Relaxed);
            }
            if bytes.contains(&b'\n') {
                self.line_done.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Whether a head that timed out may be answered 408: its request line arrived, so a
    /// client is waiting for an answer, and nothing earlier is still being written.
    fn may_answer_head_timeout(&self) -> bool {
        self.line_done.load(Ordering::Relaxed) && !self.write_blocked.load(Ordering::Relaxed)
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn write_polled(&self, polled: &Poll<io::Result<usize>>) {
        let blocked = polled.is_pending();
        self.write_blocked.store(blocked, Ordering::Relaxed);
        if let Poll::Ready(Ok(n)) = polled
            && *n > 0
        {
            self.wrote();
        }
    }

    /// A request's head is complete and its handler runs until the guard drops.
    fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
        self.line_done.store(false, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// The earliest moment a bound could have expired; nothing is due before it.
    fn next_check(&self, bounds: &Bounds) -> Instant {
        let idle = self.last_io.load(Ordering::Relaxed) + bounds.idle_timeout.as_millis() as u64;
        let head = match self.head_since.load(Ordering::Relaxed) {
            NONE => NONE,
            since => since + bounds.header_timeout.as_millis() as u64,
        };
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // A handler is running; its own deadlines apply. Look again later.
            return Instant::now() + bounds.idle_timeout;
        }
        self.at(idle.min(head).max(self.now()))
    }

    fn expired(&self, bounds: &Bounds) -> Option<Expired> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = self.now();
        let head = self.head_since.load(Ordering::Relaxed);
        if head != NONE && now >= head + bounds.header_timeout.as_millis() as u64 {
            return Some(Expired::Header);
        }
        (now >= self.last_io.load(Ordering::Relaxed) + bounds.idle_timeout.as_millis() as u64)
            .then_some(Expired::Idle)
    }
}

struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        // Idle time counts from the end of the last request, not from its last byte.
        self.0.wrote();
    }
}

/// A TCP stream that reports its reads and writes to the connection's [`Activity`].
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.activity.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.activity.write_polled(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.activity.write_polled(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Raises this process's open-file limit to its hard limit, so the connection caps rather
/// than the descriptor table decide when connections are refused. Returns the limit now in
/// force.
pub fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            max_connections: 1,
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(1000),
            max_header_bytes: 8192,
        }
    }

    #[test]
    fn the_refusal_is_a_whole_json_response() {
        let text = std::str::from_utf8(&TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "TOO_MANY_CONNECTIONS");
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_head_expires_after_the_header_timeout_and_a_silent_one_after_idle() {
        let bounds = bounds();
        let activity = Activity::new();
        assert_eq!(activity.expired(&bounds), None);
        activity.read(b"GET / HT");
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(activity.expired(&bounds), Some(Expired::Header));

        let silent = Activity::new();
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(silent.expired(&bounds), None);
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(silent.expired(&bounds), Some(Expired::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_expires_while_a_request_is_in_flight() {
        let bounds = bounds();
        let activity = Arc::new(Activity::new());
        activity.read(b"GET / HTTP/1.1\r\n\r\n");
        let guard = activity.request_started();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(activity.expired(&bounds), None);
        drop(guard);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            activity.expired(&bounds),
            None,
            "idle counts from the request's end"
        );
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(activity.expired(&bounds), Some(Expired::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_are_not_request_heads() {
        let bounds = bounds();
        let activity = Activity::new();
        activity.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(activity.expired(&bounds), None);
    }
}
