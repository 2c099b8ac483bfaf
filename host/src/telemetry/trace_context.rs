//! W3C trace context (`traceparent`): continued from the caller when it sends one, started
//! here otherwise; each hop gets its own span id.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceContext {
    /// Continues the caller's trace from a `traceparent` header, or starts a new one.
    pub fn continue_or_start(traceparent: Option<&[u8]>) -> TraceContext {
        let parent = traceparent.and_then(Self::parse);
        TraceContext {
            trace_id: parent.map_or_else(|| nonzero(rand::random()), |p| p.trace_id),
            span_id: nonzero(rand::random()),
            sampled: parent.is_none_or(|p| p.sampled),
        }
    }

    /// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`; other versions are read by
    /// their first four fields, as the spec asks.
    pub fn parse(header: &[u8]) -> Option<TraceContext> {
        let s = std::str::from_utf8(header).ok()?.trim();
        let mut fields = s.split('-');
        let version = fields.next()?;
        let trace = fields.next()?;
        let span = fields.next()?;
        let flags = fields.next()?;
        if version.len() != 2 || version == "ff" || (version == "00" && fields.next().is_some()) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flag = [0u8; 1];
        hex::decode_to_slice(version, &mut [0u8; 1]).ok()?;
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        hex::decode_to_slice(flags, &mut flag).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] || trace.bytes().any(|b| b.is_ascii_uppercase())
        {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flag[0] & 1 == 1,
        })
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The `traceparent` header value for this context.
    pub fn header(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(&self.encode())
            .expect("a traceparent is hex digits and dashes")
    }

    /// The header's 55 bytes, written in place: this runs for every request and every
    /// message, where going through `fmt` and intermediate strings showed in profiles.
    fn encode(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex::encode_to_slice(self.trace_id, &mut out[3..35]).expect("32 digits for 16 bytes");
        hex::encode_to_slice(self.span_id, &mut out[36..52]).expect("16 digits for 8 bytes");
        out[54] = if self.sampled { b'1' } else { b'0' };
        out
    }
}

/// The `traceparent` header value.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let encoded = self.encode();
        f.write_str(std::str::from_utf8(&encoded).map_err(|_| fmt::Error)?)
    }
}

/// All-zero ids are invalid in W3C trace context.
fn nonzero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id.iter().all(|b| *b == 0) {
        id[N - 1] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_parent_is_continued_with_a_new_span() {
        let ctx = TraceContext::continue_or_start(Some(PARENT.as_bytes()));
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(hex::encode(ctx.span_id), "00f067aa0ba902b7");
        assert!(ctx.sampled);
        let header = ctx.to_string();
        assert_eq!(TraceContext::parse(header.as_bytes()), Some(ctx));
    }

    #[test]
    fn the_header_is_written_as_it_is_read() {
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        for header in [PARENT, unsampled] {
            let ctx = TraceContext::parse(header.as_bytes()).unwrap();
            assert_eq!(ctx.to_string(), header);
            assert_eq!(ctx.header(), header);
        }
    }

    #[test]
    fn invalid_parents_start_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::parse(bad.as_bytes()), None, "{bad}");
        }
        let a = TraceContext::continue_or_start(Some(b"garbage"));
        let b = TraceContext::continue_or_start(None);
        assert_ne!(a.trace_id, b.trace_id);
    }
}
