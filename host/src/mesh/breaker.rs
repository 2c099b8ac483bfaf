//! A circuit breaker per destination, with Istio's outlier-detection meanings: a run of
//! consecutive failures (5xx or no connection) ejects the destination for a base time that
//! grows with each ejection; once it has passed, one probe goes through (half-open), and
//! its outcome closes the breaker or ejects the destination again, for longer.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When a destination is ejected, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that eject the destination.
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times as long.
    pub base_ejection: Duration,
    /// No ejection lasts longer.
    pub max_ejection: Duration,
}

/// What the breaker says of the destination now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    /// Ejected: calls fail at once until the ejection ends.
    Open,
    /// One probe is allowed through; its outcome decides.
    HalfOpen,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// Whether a call may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// The probe of a half-open breaker: report its outcome like any other call.
    Probe,
    /// Open: answer at once, and say when it may be tried again.
    Refused {
        retry_in: Duration,
    },
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    /// How many times the destination has been ejected in a row.
    ejections: u32,
    /// `Some` while ejected or half-open: when the ejection ends.
    ejected_until: Option<Instant>,
    probing: bool,
}

/// One destination's breaker; cheap to consult (one uncontended lock).
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

/// A transition worth logging and counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub to: State,
    /// For an ejection, how long it lasts.
    pub ejection: Option<Duration>,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            inner: Mutex::new(Inner {
                failures: 0,
                ejections: 0,
                ejected_until: None,
                probing: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-update of plain counters.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self, now: Instant) -> State {
        let inner = self.lock();
        match inner.ejected_until {
            None => State::Closed,
            Some(until) if now < until => State::Open,
            Some(_) => State::HalfOpen,
        }
    }

    /// Asks to make a call at `now`.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut inner = self.lock();
        match inner.ejected_until {
            None => Admission::Go,
            Some(until) if now < until => Admission::Refused {
                retry_in: until - now,
            },
            Some(_) if inner.probing => Admission::Refused {
                retry_in: Duration::ZERO,
            },
            Some(_) => {
                inner.probing = true;
                Admission::Probe
            }
        }
    }

    /// Reports a call's outcome; returns the transition it caused, if any.
    pub fn record(&self, now: Instant, success: bool) -> Option<Transition> {
        let mut inner = self.lock();
        let was_ejected = inner.ejected_until.is_some();
        if success {
            inner.failures = 0;
            inner.probing = false;
            if was_ejected && inner.ejected_until.is_some_and(|until| now >= until) {
                inner.ejected_until = None;
                inner.ejections = 0;
                return Some(Transition {
                    to: State::Closed,
                    ejection: None,
                });
            }
            return None;
        }
        inner.failures = inner.failures.saturating_add(1);
        let probe_failed = was_ejected && inner.probing;
        let tripped = !was_ejected && inner.failures >= self.settings.consecutive_failures;
        if !(probe_failed || tripped) {
            return None;
        }
        inner.probing = false;
        inner.ejections = inner.ejections.saturating_add(1);
        let ejection = self
            .settings
            .base_ejection
            .saturating_mul(inner.ejections)
            .min(self.settings.max_ejection);
        inner.ejected_until = Some(now + ejection);
        Some(Transition {
            to: State::Open,
            ejection: Some(ejection),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
        })
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_in_between_resets_the_count() {
        let b = breaker();
        let t = Instant::now();
        assert_eq!(b.record(t, false), None);
        assert_eq!(b.record(t, false), None);
        assert_eq!(b.record(t, true), None);
        assert_eq!(b.record(t, false), None);
        assert_eq!(b.record(t, false), None);
        assert_eq!(
            b.record(t, false),
            Some(Transition {
                to: State::Open,
                ejection: Some(Duration::from_secs(10))
            })
        );
        assert_eq!(b.state(t), State::Open);
        assert_eq!(
            b.admit(t + Duration::from_secs(4)),
            Admission::Refused {
                retry_in: Duration::from_secs(6)
            }
        );
    }

    #[test]
    fn after_the_ejection_one_probe_decides_and_ejections_grow_to_the_cap() {
        let b = breaker();
        let mut t = Instant::now();
        for _ in 0..3 {
            b.record(t, false);
        }
        // The first ejection (10 s) ends: one probe, the next caller waits for it.
        t += Duration::from_secs(10);
        assert_eq!(b.state(t), State::HalfOpen);
        assert_eq!(b.admit(t), Admission::Probe);
        assert!(matches!(b.admit(t), Admission::Refused { .. }));
        // It fails: ejected again, for twice as long.
        assert_eq!(
            b.record(t, false).and_then(|tr| tr.ejection),
            Some(Duration::from_secs(20))
        );
        t += Duration::from_secs(20);
        assert_eq!(b.admit(t), Admission::Probe);
        // Then the cap.
        assert_eq!(
            b.record(t, false).and_then(|tr| tr.ejection),
            Some(Duration::from_secs(25))
        );
        t += Duration::from_secs(25);
        assert_eq!(b.admit(t), Admission::Probe);
        assert_eq!(
            b.record(t, true),
            Some(Transition {
                to: State::Closed,
                ejection: None
            })
        );
        assert_eq!(b.state(t), State::Closed);
        assert_eq!(b.admit(t), Admission::Go);
        // Healed: the next ejection is the base time again.
        for _ in 0..2 {
            b.record(t, false);
        }
        assert_eq!(
            b.record(t, false).and_then(|tr| tr.ejection),
            Some(Duration::from_secs(10))
        );
    }
}
