//! Request bodies read within a byte limit, one frame at a time, for the gateway (into
//! memory) and the admin API's uploads (onto disk). A body over its limit, declared or
//! streamed, has the rest of it read and dropped (bounded in bytes and time) before it is
//! refused, so a client still sending reads the answer instead of a reset.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

/// How much of a refused body is read and thrown away, and for how long at most.
const DRAIN_BYTES: u64 = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the body could not be read: {0}")]
    Unreadable(String),
}

/// A request body that yields its data frames until `limit` bytes have come.
pub struct Bounded {
    body: Option<Incoming>,
    limit: u64,
    received: u64,
}

impl Bounded {
    /// Refuses at once a body whose declared length is over `limit`.
    pub async fn new(
        body: Incoming,
        declared: Option<u64>,
        limit: u64,
    ) -> Result<Bounded, BodyError> {
        if declared.is_some_and(|len| len > limit) {
            drain(body).await;
            return Err(BodyError::TooLarge(limit));
        }
        Ok(Bounded {
            body: Some(body),
            limit,
            received: 0,
        })
    }

    /// The next chunk of data, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, BodyError> {
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Unreadable(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.received += data.len() as u64;
            if self.received > self.limit {
                if let Some(rest) = self.body.take() {
                    drain(rest).await;
                }
                return Err(BodyError::TooLarge(self.limit));
            }
            return Ok(Some(data));
        }
        self.body = None;
        Ok(None)
    }
}

/// The whole body in memory, up to `limit` bytes.
pub async fn read(body: Incoming, declared: Option<u64>, limit: u64) -> Result<Bytes, BodyError> {
    let mut body = Bounded::new(body, declared, limit).await?;
    let Some(first) = body.next().await? else {
        return Ok(Bytes::new());
    };
    let Some(second) = body.next().await? else {
        // One frame, the common case: no copy.
        return Ok(first);
    };
    let mut buffer = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    buffer.extend_from_slice(&first);
    buffer.extend_from_slice(&second);
    while let Some(data) = body.next().await? {
        buffer.extend_from_slice(&data);
    }
    Ok(buffer.freeze())
}

/// Reads and drops what is left of a refused body, bounded in bytes and time.
pub async fn drain(mut body: Incoming) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut drained = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            drained += frame.data_ref().map_or(0, |d| d.len() as u64);
            if drained > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}
