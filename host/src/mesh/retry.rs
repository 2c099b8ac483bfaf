//! When a failed call is tried again, and how long to wait first: Istio's retry meanings
//! (retry-on conditions, a per-try timeout, exponential backoff with jitter) and a retry
//! budget, so that retries add at most a share of the load a struggling destination gets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The outcome of one try, as the retry rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No connection, or it broke before an answer.
    ConnectFailure,
    /// The per-try timeout passed.
    TimedOut,
    Status(u16),
}

impl Outcome {
    /// Whether the breaker counts it against the destination.
    pub fn is_failure(self) -> bool {
        match self {
            Outcome::ConnectFailure | Outcome::TimedOut => true,
            Outcome::Status(status) => status >= 500,
        }
    }
}

/// Which outcomes are worth another try.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub connect_failure: bool,
    pub server_error: bool,
    /// 429, after its `Retry-After`.
    pub too_many_requests: bool,
}

impl RetryOn {
    /// From Istio-style names: `connect-failure`, `5xx`, `429`.
    pub fn parse(names: &[String]) -> Result<RetryOn, String> {
        let mut on = RetryOn::default();
        for name in names {
            match name.as_str() {
                "connect-failure" => on.connect_failure = true,
                "5xx" => on.server_error = true,
                "429" => on.too_many_requests = true,
                other => {
                    return Err(format!(
                        "retry_on: `{other}` is not one of connect-failure, 5xx, 429"
                    ));
                }
            }
        }
        Ok(on)
    }

    pub fn all() -> RetryOn {
        RetryOn {
            connect_failure: true,
            server_error: true,
            too_many_requests: true,
        }
    }

    pub fn wants(self, outcome: Outcome) -> bool {
        match outcome {
            // A try that timed out may have reached the destination: like a broken
            // connection, only an idempotent request is tried again (see `idempotent`).
            Outcome::ConnectFailure | Outcome::TimedOut => self.connect_failure,
            Outcome::Status(429) => self.too_many_requests,
            Outcome::Status(status) => self.server_error && status >= 500,
        }
    }
}

/// Whether a request may be sent twice: its method says so, or it carries an
/// `Idempotency-Key` the destination dedupes on.
pub fn idempotent(method: &http::Method, headers: &http::HeaderMap) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key("idempotency-key")
}

/// Exponential backoff with full jitter: before retry `n` (from 1), a wait drawn uniformly
/// from zero to `base × 2^(n-1)`, never over `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn ceiling(self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn delay(self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        ceiling.mul_f64(rand::random::<f64>())
    }
}

/// A 429's `Retry-After` in seconds (the HTTP-date form is not worth a retry's wait).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Retries allowed as a share of calls: every call deposits `percent` hundredths of a
/// token, a retry takes a whole one, and the balance never exceeds a small reserve, so a
/// quiet destination still gets its first few retries.
#[derive(Debug)]
pub struct Budget {
    /// Hundredths of a token.
    balance: AtomicU64,
    percent: u64,
    cap: u64,
}

/// Retries in reserve for a destination that has seen few calls.
const RESERVE: u64 = 10;

impl Budget {
    pub fn new(percent: u32) -> Budget {
        Budget {
            balance: AtomicU64::new(RESERVE * 100),
            percent: u64::from(percent),
            cap: RESERVE * 100,
        }
    }

    /// A call was made.
    pub fn deposit(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((b + self.percent).min(self.cap.max(b)))
            });
    }

    /// Takes one retry's worth, if there is one.
    pub fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(100))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_names_parse_and_unknown_ones_are_refused() {
        let on = RetryOn::parse(&["5xx".into(), "429".into()]).unwrap();
        assert!(on.wants(Outcome::Status(503)));
        assert!(on.wants(Outcome::Status(429)));
        assert!(!on.wants(Outcome::Status(404)));
        assert!(!on.wants(Outcome::ConnectFailure));
        let err = RetryOn::parse(&["reset".into()]).unwrap_err();
        assert!(err.contains("connect-failure, 5xx, 429"), "{err}");
    }

    #[test]
    fn only_idempotent_requests_are_sent_twice() {
        let none = http::HeaderMap::new();
        assert!(idempotent(&http::Method::GET, &none));
        assert!(idempotent(&http::Method::PUT, &none));
        assert!(!idempotent(&http::Method::POST, &none));
        let mut keyed = http::HeaderMap::new();
        keyed.insert("Idempotency-Key", "order-1".parse().unwrap());
        assert!(idempotent(&http::Method::POST, &keyed));
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_below_the_ceiling() {
        let b = Backoff {
            base: Duration::from_millis(25),
            max: Duration::from_millis(150),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(25));
        assert_eq!(b.ceiling(2), Duration::from_millis(50));
        assert_eq!(b.ceiling(3), Duration::from_millis(100));
        assert_eq!(b.ceiling(4), Duration::from_millis(150));
        assert_eq!(b.ceiling(60), Duration::from_millis(150));
        assert!((0..100).all(|_| b.delay(2) <= Duration::from_millis(50)));
    }

    #[test]
    fn the_budget_allows_its_share_of_retries_after_the_reserve() {
        let budget = Budget::new(20);
        // The reserve: ten retries with no calls at all.
        assert_eq!((0..20).filter(|_| budget.withdraw()).count(), 10);
        // Then one retry per five calls.
        for _ in 0..50 {
            budget.deposit();
        }
        assert_eq!((0..20).filter(|_| budget.withdraw()).count(), 10);
        assert!(!budget.withdraw());
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = http::HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
