//! A real OTLP receiver for the tests: it takes what an exporter sends over HTTP/protobuf
//! (`POST /v1/traces`, `/v1/logs`) and over gRPC (the collector services' `Export`), decodes
//! the protobuf with the `opentelemetry-proto` types, and keeps every span and log record.
//! It can also stall every answer, to play a collector that hangs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root.
    pub parent: String,
    pub name: String,
    /// The OTLP enum: 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    pub attributes: BTreeMap<String, String>,
    pub links: Vec<(String, String)>,
    pub error: bool,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub body: String,
    pub trace_id: String,
    pub span_id: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    logs: Vec<Log>,
    /// Every request body as it came, for scanning for secrets.
    raw: Vec<Bytes>,
    /// Which protocol each export came over: "http" or "grpc".
    protocols: Vec<&'static str>,
    resources: Vec<BTreeMap<String, String>>,
}

pub struct Collector {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    /// Listens on 127.0.0.1, HTTP/1.1 and HTTP/2 (for gRPC) on one port.
    pub async fn start() -> Collector {
        Self::start_with(None).await
    }

    /// A collector that holds every export `stall` before answering it.
    pub async fn stalling(stall: Duration) -> Collector {
        Self::start_with(Some(stall)).await
    }

    async fn start_with(stall: Option<Duration>) -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let store = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let store = store.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(answer(request, &store, stall).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        Collector {
            addr,
            received,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.received.lock().unwrap().spans.clone()
    }

    pub fn logs(&self) -> Vec<Log> {
        self.received.lock().unwrap().logs.clone()
    }

    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    pub fn protocols(&self) -> Vec<&'static str> {
        self.received.lock().unwrap().protocols.clone()
    }

    pub fn resources(&self) -> Vec<BTreeMap<String, String>> {
        self.received.lock().unwrap().resources.clone()
    }

    /// Whether `needle` appears anywhere in what was exported, raw or decoded.
    pub fn carries(&self, needle: &str) -> bool {
        let received = self.received.lock().unwrap();
        received
            .raw
            .iter()
            .any(|body| body.windows(needle.len()).any(|w| w == needle.as_bytes()))
            || received.spans.iter().any(|s| {
                s.name.contains(needle)
                    || s.attributes
                        .iter()
                        .any(|(k, v)| k.contains(needle) || v.contains(needle))
            })
            || received.logs.iter().any(|l| {
                l.body.contains(needle) || l.attributes.values().any(|v| v.contains(needle))
            })
    }
}

type Reply =
    http::Response<http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>>;

async fn answer(
    request: http::Request<hyper::body::Incoming>,
    store: &Mutex<Received>,
    stall: Option<Duration>,
) -> Reply {
    let path = request.uri().path().to_owned();
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return status(400),
    };
    if let Some(stall) = stall {
        tokio::time::sleep(stall).await;
    }
    let message = if grpc {
        // One length-prefixed message: a compression flag byte and a 4-byte length.
        if body.len() < 5 || body[0] != 0 {
            return status(400);
        }
        let mut rest = body.slice(1..);
        let len = rest.get_u32() as usize;
        if rest.len() != len {
            return status(400);
        }
        rest
    } else {
        body.clone()
    };
    let decoded = match path.as_str() {
        "/v1/traces" | "/opentelemetry.proto.collector.trace.v1.TraceService/Export" => {
            ExportTraceServiceRequest::decode(message).map(|r| keep_spans(r, store))
        }
        "/v1/logs" | "/opentelemetry.proto.collector.logs.v1.LogsService/Export" => {
            ExportLogsServiceRequest::decode(message).map(|r| keep_logs(r, store))
        }
        _ => return status(404),
    };
    if decoded.is_err() {
        return status(400);
    }
    {
        let mut received = store.lock().unwrap();
        received.raw.push(body);
        received.protocols.push(if grpc { "grpc" } else { "http" });
    }
    if grpc {
        // An empty Export…ServiceResponse, then the trailers that say it went well.
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = futures::stream::iter([
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
            Ok(Frame::trailers(trailers)),
        ]);
        http::Response::builder()
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(StreamBody::new(frames).boxed_unsync())
            .unwrap()
    } else {
        http::Response::builder()
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::new()).boxed_unsync())
            .unwrap()
    }
}

fn status(code: u16) -> Reply {
    http::Response::builder()
        .status(code)
        .body(Full::new(Bytes::new()).boxed_unsync())
        .unwrap()
}

fn keep_spans(request: ExportTraceServiceRequest, store: &Mutex<Received>) {
    let mut received = store.lock().unwrap();
    for resource_spans in request.resource_spans {
        if let Some(resource) = resource_spans.resource {
            received.resources.push(attributes(&resource.attributes));
        }
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.spans.push(Span {
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
                        .collect(),
                    // STATUS_CODE_ERROR
                    error: span.status.is_some_and(|s| s.code == 2),
                });
            }
        }
    }
}

fn keep_logs(request: ExportLogsServiceRequest, store: &Mutex<Received>) {
    let mut received = store.lock().unwrap();
    for resource_logs in request.resource_logs {
        for scope in resource_logs.scope_logs {
            for record in scope.log_records {
                received.logs.push(Log {
                    body: record.body.as_ref().map(text).unwrap_or_default(),
                    trace_id: hex::encode(&record.trace_id),
                    span_id: hex::encode(&record.span_id),
                    attributes: attributes(&record.attributes),
                });
            }
        }
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
