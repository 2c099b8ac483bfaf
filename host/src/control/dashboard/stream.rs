//! `GET /admin/v1/stream`: server-sent events, one JSON snapshot of every component a second
//! ([`snapshot`]), for the dashboard to redraw without polling.
//!
//! A stream is bounded three ways: at most [`MAX_STREAMS`] at once (then 503), each ends
//! after [`LIFETIME`] (the browser's `EventSource` reconnects at once, told so by the
//! `retry:` line), and all end when the host stops ([`Streams::close`]). The lifetime is what
//! keeps a stopping host's drain short even where nothing calls `close`: an open response
//! body holds its connection, and the listener's graceful stop waits for it.
//!
//! While a stream is open, and for [`LINGER`] after it ends (the page's next stream comes
//! sooner), the host records spans for the dashboard's traces ([`otel::watch`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::config::App;
use crate::control::deployments::Deployments;
use crate::telemetry::otel;
use crate::triggers::http::{ApiError, Body, BoxError};

/// Streams open at once; the dashboard needs one per open tab.
pub const MAX_STREAMS: usize = 16;
/// How long one stream lasts before the browser reconnects.
pub const LIFETIME: Duration = Duration::from_secs(5);
/// Spans are still recorded this long after a stream ends, so a page that reconnects
/// misses none of a trace.
const LINGER: Duration = Duration::from_secs(10);
/// One snapshot per this.
const INTERVAL: Duration = Duration::from_secs(1);
/// Sent first: reconnect this soon (ms) after a stream ends.
const RETRY: &[u8] = b"retry: 250\n\n";

/// Makes one snapshot, as JSON.
pub type Source = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What every stream reads its snapshots from, and how many may be open.
pub struct Streams {
    source: Source,
    open: Arc<Semaphore>,
    stop: CancellationToken,
}

impl Streams {
    /// Streams of the [`snapshot`]s of the app as it is served.
    pub fn new(app: Arc<arc_swap::ArcSwap<App>>, control: Arc<Deployments>) -> Streams {
        Streams::of(Arc::new(move || snapshot(&app.load(), &control)))
    }

    /// Streams of what `source` makes.
    pub fn of(source: Source) -> Streams {
        Streams {
            source,
            open: Arc::new(Semaphore::new(MAX_STREAMS)),
            stop: CancellationToken::new(),
        }
    }

    /// Ends every open stream now and refuses new ones: the host is stopping.
    pub fn close(&self) {
        self.stop.cancel();
    }

    /// A new stream, or why there is none.
    pub fn open(&self) -> Result<Response<Body>, ApiError> {
        if self.stop.is_cancelled() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SHUTTING_DOWN",
                "the host is stopping; reload the page once it is back",
            ));
        }
        let permit = self.open.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TOO_MANY_STREAMS",
                format!(
                    "{MAX_STREAMS} dashboard streams are open already; close a dashboard tab and retry"
                ),
            )
            .with_header(header::RETRY_AFTER, "5")
        })?;
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let events = Events {
            source: self.source.clone(),
            tick,
            end: Box::pin(tokio::time::sleep(LIFETIME)),
            stop: Box::pin(self.stop.clone().cancelled_owned()),
            retry: Some(Bytes::from_static(RETRY)),
            done: false,
            watching: Some(otel::watch()),
            _permit: permit,
        };
        let mut response = Response::new(Body::new(events));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        // Proxies that buffer would hold the events back.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(response)
    }
}

/// The body of one stream: a snapshot at once, then one a second, until it ends.
struct Events {
    source: Source,
    tick: tokio::time::Interval,
    end: Pin<Box<tokio::time::Sleep>>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    retry: Option<Bytes>,
    done: bool,
    /// Keeps spans recorded while the page watches; released [`LINGER`] after the end.
    watching: Option<otel::Watching>,
    /// Frees this stream's place among [`MAX_STREAMS`] when the body is dropped, which is
    /// also what happens when the browser goes away.
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for Events {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.stop.as_mut().poll(cx).is_ready() || this.end.as_mut().poll(cx).is_ready() {
            this.done = true;
            return Poll::Ready(None);
        }
        if let Some(retry) = this.retry.take() {
            return Poll::Ready(Some(Ok(Frame::data(retry))));
        }
        match this.tick.poll_tick(cx) {
            Poll::Ready(_) => {
                let event = format!("data: {}\n\n", (this.source)());
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if let (Some(watching), Ok(runtime)) =
            (self.watching.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                tokio::time::sleep(LINGER).await;
                drop(watching);
            });
        }
    }
}

/// Every component with its versions, each with its traffic share and its last minute
/// second by second: what the dashboard draws.
pub fn snapshot(app: &App, control: &Deployments) -> serde_json::Value {
    serde_json::json!({
        "app": app.name,
        "at": crate::telemetry::rfc3339_now(),
        "components": crate::control::admin::components(app, control, true),
    })
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    fn streams() -> Streams {
        Streams::of(Arc::new(|| serde_json::json!({ "n": 1 })))
    }

    async fn next_text(body: &mut Body) -> Option<String> {
        let frame = body.frame().await?.ok()?;
        Some(String::from_utf8_lossy(frame.data_ref()?).into_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_sends_a_snapshot_at_once_then_every_second_until_its_lifetime() {
        let streams = streams();
        let mut body = streams.open().unwrap().into_body();
        assert!(
            otel::recording(),
            "spans are recorded while a dashboard watches"
        );
        assert_eq!(next_text(&mut body).await.unwrap(), "retry: 250\n\n");
        let started = tokio::time::Instant::now();
        assert_eq!(next_text(&mut body).await.unwrap(), "data: {\"n\":1}\n\n");
        assert_eq!(started.elapsed(), Duration::ZERO);
        let mut events = 1;
        while next_text(&mut body).await.is_some() {
            events += 1;
        }
        assert_eq!(started.elapsed(), LIFETIME);
        assert_eq!(events, LIFETIME.as_secs());
        assert!(http_body::Body::is_end_stream(&body));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_ends_open_streams_at_once_and_refuses_new_ones() {
        let streams = streams();
        let mut body = streams.open().unwrap().into_body();
        next_text(&mut body).await;
        next_text(&mut body).await;
        let started = tokio::time::Instant::now();
        streams.close();
        assert_eq!(next_text(&mut body).await, None);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(streams.open().unwrap_err().code, "SHUTTING_DOWN");
    }

    #[tokio::test]
    async fn at_most_max_streams_are_open_and_a_closed_one_frees_its_place() {
        let streams = streams();
        let mut open: Vec<_> = (0..MAX_STREAMS).map(|_| streams.open().unwrap()).collect();
        let refused = streams.open().unwrap_err();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.code, "TOO_MANY_STREAMS");
        open.pop();
        assert!(streams.open().is_ok());
    }
}
