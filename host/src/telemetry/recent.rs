//! The last traces this host recorded, kept in memory for the dashboard's waterfall: a
//! bounded ring of traces, each with a bounded number of spans, so a busy host or a
//! runaway trace cannot grow it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::trace::SpanData;
use serde_json::{Value, json};

/// Traces kept; the oldest goes first.
const TRACES: usize = 64;
/// Spans kept per trace; later ones are counted, not kept.
const SPANS_PER_TRACE: usize = 256;
/// The attribute naming the component a span ran in.
pub const COMPONENT: &str = "berth.component";

#[derive(Debug, Default)]
pub struct RecentTraces {
    ring: Mutex<VecDeque<Trace>>,
}

#[derive(Debug)]
struct Trace {
    id: [u8; 16],
    spans: Vec<Span>,
    dropped: usize,
}

#[derive(Debug)]
struct Span {
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: String,
    kind: SpanKind,
    start: SystemTime,
    end: SystemTime,
    error: bool,
    attributes: Vec<(String, String)>,
}

impl RecentTraces {
    pub fn record(&self, data: &SpanData) {
        let id = data.span_context.trace_id().to_bytes();
        let parent = data.parent_span_id.to_bytes();
        let span = Span {
            id: data.span_context.span_id().to_bytes(),
            parent: (parent != [0; 8]).then_some(parent),
            name: data.name.to_string(),
            kind: data.span_kind.clone(),
            start: data.start_time,
            end: data.end_time,
            error: matches!(data.status, Status::Error { .. }),
            attributes: data
                .attributes
                .iter()
                .map(|kv| (kv.key.as_str().to_owned(), kv.value.as_str().into_owned()))
                .collect(),
        };
        let Ok(mut ring) = self.ring.lock() else {
            return;
        };
        let trace = match ring.iter().rposition(|t| t.id == id) {
            Some(at) => &mut ring[at],
            None => {
                if ring.len() == TRACES {
                    ring.pop_front();
                }
                ring.push_back(Trace {
                    id,
                    spans: Vec::new(),
                    dropped: 0,
                });
                let last = ring.len() - 1;
                &mut ring[last]
            }
        };
        if trace.spans.len() < SPANS_PER_TRACE {
            trace.spans.push(span);
        } else {
            trace.dropped += 1;
        }
    }

    /// The traces that began with a request or a delivered event, newest first.
    pub fn list(&self) -> Value {
        let Ok(ring) = self.ring.lock() else {
            return json!({ "traces": [] });
        };
        let mut listed: Vec<(SystemTime, Value)> = ring
            .iter()
            .filter(|t| t.spans.iter().any(|s| super::otel::listed(&s.kind)))
            .map(|t| {
                let start = t.start();
                let root = t.root().map(|s| s.name.as_str()).unwrap_or_default();
                let mut services: Vec<&str> = Vec::new();
                for s in &t.spans {
                    if let Some(c) = s.attribute(COMPONENT)
                        && !services.contains(&c)
                    {
                        services.push(c);
                    }
                }
                let summary = json!({
                    "traceId": hex::encode(t.id),
                    "root": root,
                    "startedAt": super::rfc3339(start),
                    "durationMs": millis(start, t.end()),
                    "spans": t.spans.len() + t.dropped,
                    "error": t.spans.iter().any(|s| s.error),
                    "services": services,
                });
                (start, summary)
            })
            .collect();
        listed.sort_by_key(|t| std::cmp::Reverse(t.0));
        json!({ "traces": listed.into_iter().map(|(_, v)| v).collect::<Vec<_>>() })
    }

    /// One trace's spans by start time, each with the component it ran in.
    pub fn trace(&self, trace_id: &str) -> Option<Value> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(trace_id, &mut id).ok()?;
        let ring = self.ring.lock().ok()?;
        let trace = ring.iter().find(|t| t.id == id)?;
        let start = trace.start();
        let mut spans: Vec<&Span> = trace.spans.iter().collect();
        spans.sort_by_key(|s| s.start);
        let spans: Vec<Value> = spans
            .into_iter()
            .map(|s| {
                json!({
                    "spanId": hex::encode(s.id),
                    "parentSpanId": s.parent.map(hex::encode),
                    "name": s.name,
                    "kind": format!("{:?}", s.kind).to_lowercase(),
                    "service": trace.service_of(s),
                    "startOffsetMs": millis(start, s.start),
                    "durationMs": millis(s.start, s.end),
                    "error": s.error,
                    "attributes": s
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        Some(json!({
            "traceId": trace_id,
            "spans": spans,
            "droppedSpans": trace.dropped,
        }))
    }
}

impl Trace {
    fn start(&self) -> SystemTime {
        self.spans
            .iter()
            .map(|s| s.start)
            .min()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    fn end(&self) -> SystemTime {
        self.spans
            .iter()
            .map(|s| s.end)
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// The earliest span whose parent is not here (the caller's, or none).
    fn root(&self) -> Option<&Span> {
        self.spans
            .iter()
            .filter(|s| {
                s.parent
                    .is_none_or(|p| !self.spans.iter().any(|o| o.id == p))
            })
            .min_by_key(|s| s.start)
    }

    /// The component of the nearest span up the parent chain that names one.
    fn service_of<'a>(&'a self, span: &'a Span) -> &'a str {
        let mut at = Some(span);
        for _ in 0..SPANS_PER_TRACE {
            let Some(s) = at else { break };
            if let Some(c) = s.attribute(COMPONENT) {
                return c;
            }
            at = s.parent.and_then(|p| self.spans.iter().find(|o| o.id == p));
        }
        "berth"
    }
}

impl Span {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn millis(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry::{InstrumentationScope, KeyValue};

    use super::*;

    fn span(
        trace: u128,
        id: u64,
        parent: u64,
        kind: SpanKind,
        component: Option<&str>,
    ) -> SpanData {
        let start =
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000) + Duration::from_millis(id);
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: false,
            span_kind: kind,
            name: format!("span {id}").into(),
            start_time: start,
            end_time: start + Duration::from_millis(5),
            attributes: component
                .map(|c| vec![KeyValue::new(COMPONENT, c.to_owned())])
                .unwrap_or_default(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    #[test]
    fn a_trace_reads_top_down_with_each_span_in_its_component() {
        let recent = RecentTraces::default();
        // Children end before their parents, as they do.
        recent.record(&span(7, 3, 2, SpanKind::Client, None));
        recent.record(&span(7, 2, 1, SpanKind::Internal, Some("order")));
        recent.record(&span(7, 1, 0, SpanKind::Server, None));
        let list = recent.list();
        assert_eq!(list["traces"][0]["root"], "span 1");
        assert_eq!(list["traces"][0]["spans"], 3);
        assert_eq!(list["traces"][0]["services"], json!(["order"]));
        let id = list["traces"][0]["traceId"].as_str().unwrap().to_owned();
        let trace = recent.trace(&id).unwrap();
        let spans = trace["spans"].as_array().unwrap();
        assert_eq!(spans[0]["parentSpanId"], Value::Null);
        assert_eq!(spans[2]["service"], "order", "inherited from its parent");
        assert_eq!(spans[0]["service"], "berth");
        assert_eq!(spans[1]["startOffsetMs"], 1.0);
        assert!(recent.trace("not hex").is_none());
        assert!(recent.trace(&"0".repeat(32)).is_none());
    }

    #[test]
    fn the_ring_is_bounded_in_traces_and_in_spans_and_lists_only_requests_and_deliveries() {
        let recent = RecentTraces::default();
        for trace in 0..(TRACES as u128 + 10) {
            recent.record(&span(trace + 1, 1, 0, SpanKind::Server, None));
        }
        recent.record(&span(9999, 1, 0, SpanKind::Producer, None));
        let listed = recent.list();
        assert_eq!(listed["traces"].as_array().unwrap().len(), TRACES - 1);
        for id in 0..(SPANS_PER_TRACE as u64 + 5) {
            recent.record(&span(5000, id + 2, 1, SpanKind::Consumer, None));
        }
        let big = recent.trace(&format!("{:032x}", 5000)).unwrap();
        assert_eq!(big["spans"].as_array().unwrap().len(), SPANS_PER_TRACE);
        assert_eq!(big["droppedSpans"], 5);
    }
}
