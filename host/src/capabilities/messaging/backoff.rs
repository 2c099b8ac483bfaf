//! The one retry policy of the messaging loops: exponential backoff with jitter, from
//! `backon`. Each wait doubles up to a cap and lands at a random point between that wait
//! and twice it, so the retries of a burst spread out instead of arriving together.
//!
//! | policy | waits | used by |
//! |---|---|---|
//! | [`RECONNECT`] | 100 ms … 5 s | the relay waiting for the bus, consumers waiting for NATS |
//! | [`REDELIVERY`] | 200 ms … 30 s | a message whose handler failed, before its next attempt |

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first wait, at most (jitter adds up to as much again).
    first: Duration,
    /// The longest wait, at most.
    max: Duration,
}

/// For a loop that waits for a backend to come back.
pub const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// For a message whose handler failed.
pub const REDELIVERY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The waits after one failure in a row, two, three…; never ends. A loop that succeeds
    /// starts again from a new one.
    pub fn waits(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.first / 2)
            .with_max_delay(self.max / 2)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// The wait before attempt `attempt + 1` of a delivery (attempts count from 1).
    pub fn after(&self, attempt: u32) -> Duration {
        self.waits()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_within_their_jitter_up_to_the_cap() {
        let waits: Vec<Duration> = REDELIVERY.waits().take(12).collect();
        for (i, wait) in waits.iter().enumerate() {
            let base = (Duration::from_millis(100) * (1 << i)).min(Duration::from_secs(15));
            assert!(
                *wait >= base && *wait <= base * 2,
                "wait {i}: {wait:?} not within {base:?}..={:?}",
                base * 2
            );
        }
        assert!(waits[11] <= Duration::from_secs(30));
        let first = REDELIVERY.after(1);
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
        assert!(REDELIVERY.after(40) <= Duration::from_secs(30));
    }
}
