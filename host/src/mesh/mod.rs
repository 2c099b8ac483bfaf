//! The mesh inside the host: what Istio's sidecars did between services, done where the
//! call leaves the component. Each component's calls to a destination (a host it may
//! reach, or another component as `<id>.spin.internal`) follow that destination's
//! [`policy`]: an overall timeout, retries of idempotent requests with backoff and a
//! budget, and a circuit [`breaker`] that answers at once while the destination is ejected.
//!
//! A call the mesh stops never reaches the guest as a bare error: it gets an HTTP answer
//! it can read, 503 with `Retry-After` while the breaker is open and 504 when the call's
//! timeout passed, each with `x-berth-mesh` naming why.

pub mod breaker;
pub mod fault;
pub mod policy;
pub mod retry;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use breaker::{Admission, Breaker, State};
pub use fault::{Faults, Point};
pub use policy::{CallSettings, Policy};
use retry::{Budget, Outcome};

/// One component's policies, by destination host.
#[derive(Debug, Default)]
pub struct Calls {
    component: Arc<str>,
    destinations: Vec<Arc<Destination>>,
}

/// Calls to one destination: its policy and what it has seen.
#[derive(Debug)]
pub struct Destination {
    component: Arc<str>,
    /// The host, lower-case, as the manifest names it.
    host: String,
    policy: Policy,
    breaker: Option<Breaker>,
    budget: Budget,
    pub counters: Counters,
}

/// What `/metrics` shows of a destination.
#[derive(Debug, Default)]
pub struct Counters {
    pub calls: AtomicU64,
    pub retries: AtomicU64,
    /// Retries the budget refused.
    pub budget_exhausted: AtomicU64,
    /// Calls answered 503 at once because the breaker was open.
    pub short_circuited: AtomicU64,
    /// Calls answered 504 because their timeout passed.
    pub timed_out: AtomicU64,
    pub ejections: AtomicU64,
}

/// Why the mesh answered instead of the destination.
#[derive(Debug)]
pub enum Stopped<E> {
    /// The breaker is open; try again in this long.
    Open { retry_in: Duration },
    /// The call's own timeout passed.
    TimedOut(Duration),
    /// The destination could not be reached; the last try's error.
    Failed(E),
}

impl Calls {
    pub fn new(component: Arc<str>, policies: Vec<(String, Policy)>) -> Calls {
        let destinations = policies
            .into_iter()
            .map(|(host, policy)| {
                Arc::new(Destination {
                    component: component.clone(),
                    host: host.to_ascii_lowercase(),
                    breaker: policy.breaker.map(Breaker::new),
                    budget: Budget::new(policy.budget_percent),
                    policy,
                    counters: Counters::default(),
                })
            })
            .collect();
        Calls {
            component,
            destinations,
        }
    }

    /// The policy for calls to `host`, if the manifest gives one.
    pub fn to(&self, host: &str) -> Option<Arc<Destination>> {
        self.destinations
            .iter()
            .find(|d| d.host.eq_ignore_ascii_case(host))
            .cloned()
    }

    pub fn destinations(&self) -> &[Arc<Destination>] {
        &self.destinations
    }

    pub fn component(&self) -> &str {
        &self.component
    }

    /// Each destination's breaker state and counts, for the admin API and `berth status`.
    pub fn status(&self) -> Vec<serde_json::Value> {
        self.destinations
            .iter()
            .map(|d| {
                let c = &d.counters;
                let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
                serde_json::json!({
                    "destination": d.host,
                    "circuit": d.state().name(),
                    "calls": load(&c.calls),
                    "retries": load(&c.retries),
                    "shortCircuited": load(&c.short_circuited),
                    "timeouts": load(&c.timed_out),
                    "ejections": load(&c.ejections),
                })
            })
            .collect()
    }
}

impl Destination {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The breaker's state now (`closed` without a breaker).
    pub fn state(&self) -> State {
        self.breaker
            .as_ref()
            .map_or(State::Closed, |b| b.state(Instant::now()))
    }

    /// Whether a request must be kept whole to be sent again.
    pub fn may_retry(&self, idempotent: bool) -> bool {
        idempotent && self.policy.retries > 0
    }

    /// Makes one call under the policy: `send` makes one try, and is called again for each
    /// retry. A response is the destination's answer, whatever its status, once no retry
    /// is left or wanted.
    pub async fn call<A, E, F, Fut>(&self, idempotent: bool, mut send: F) -> Result<A, Stopped<E>>
    where
        A: Answer,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<A, E>>,
    {
        let started = Instant::now();
        let deadline = self.policy.timeout.map(|t| started + t);
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        self.budget.deposit();
        let mut retry = 0;
        loop {
            let now = Instant::now();
            if let Some(breaker) = &self.breaker
                && let Admission::Refused { retry_in } = breaker.admit(now)
            {
                self.counters
                    .short_circuited
                    .fetch_add(1, Ordering::Relaxed);
                return Err(Stopped::Open { retry_in });
            }
            let left = deadline.map(|d| d.saturating_duration_since(now));
            let limit = match (left, self.policy.per_try_timeout) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let tried = match limit {
                Some(limit) => tokio::time::timeout(limit, send()).await.ok(),
                None => Some(send().await),
            };
            let outcome = match &tried {
                None => Outcome::TimedOut,
                Some(Ok(answer)) => Outcome::Status(answer.status()),
                Some(Err(_)) => Outcome::ConnectFailure,
            };
            self.report(outcome);
            let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
            let again = !out_of_time
                && retry < self.policy.retries
                && idempotent
                && self.policy.retry_on.wants(outcome)
                && self.withdraw();
            if !again {
                return match tried {
                    Some(Ok(response)) => Ok(response),
                    Some(Err(error)) => Err(Stopped::Failed(error)),
                    None => {
                        self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                        Err(Stopped::TimedOut(started.elapsed()))
                    }
                };
            }
            retry += 1;
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            let asked = match &tried {
                Some(Ok(response)) if outcome == Outcome::Status(429) => {
                    retry::retry_after(response.headers())
                }
                _ => None,
            };
            let wait = asked.unwrap_or_else(|| self.policy.backoff.delay(retry));
            drop(tried);
            if let Some(deadline) = deadline
                && Instant::now() + wait >= deadline
            {
                // No time for another try: the caller waits out its timeout, as it asked.
                tokio::time::sleep_until(deadline.into()).await;
                self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                return Err(Stopped::TimedOut(started.elapsed()));
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn withdraw(&self) -> bool {
        let ok = self.budget.withdraw();
        if !ok {
            self.counters
                .budget_exhausted
                .fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    fn report(&self, outcome: Outcome) {
        let Some(breaker) = &self.breaker else {
            return;
        };
        let Some(transition) = breaker.record(Instant::now(), !outcome.is_failure()) else {
            return;
        };
        match transition.ejection {
            Some(ejection) => {
                self.counters.ejections.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    component = %self.component,
                    destination = %self.host,
                    ejected_ms = ejection.as_millis() as u64,
                    "circuit open: calls to {} are answered 503 at once for {} ms, then one probe decides",
                    self.host,
                    ejection.as_millis()
                );
            }
            None => tracing::info!(
                component = %self.component,
                destination = %self.host,
                "circuit closed: {} answered the probe",
                self.host
            ),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct DestinationLabels {
    component: String,
    destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct StateLabels {
    component: String,
    destination: String,
    state: &'static str,
}

type CounterFamily = prometheus_client::metrics::family::Family<
    DestinationLabels,
    prometheus_client::metrics::counter::Counter,
>;

/// Every destination's counters and breaker state, read at a scrape of `/metrics`.
#[derive(Default)]
pub struct Scrape {
    calls: CounterFamily,
    retries: CounterFamily,
    budget_exhausted: CounterFamily,
    short_circuited: CounterFamily,
    timed_out: CounterFamily,
    ejections: CounterFamily,
    state: prometheus_client::metrics::family::Family<
        StateLabels,
        prometheus_client::metrics::gauge::Gauge,
    >,
}

impl Scrape {
    pub fn add(&mut self, calls: &Calls) {
        for destination in calls.destinations() {
            let labels = DestinationLabels {
                component: calls.component().to_owned(),
                destination: destination.host.clone(),
            };
            let c = &destination.counters;
            for (family, value) in [
                (&self.calls, &c.calls),
                (&self.retries, &c.retries),
                (&self.budget_exhausted, &c.budget_exhausted),
                (&self.short_circuited, &c.short_circuited),
                (&self.timed_out, &c.timed_out),
                (&self.ejections, &c.ejections),
            ] {
                family
                    .get_or_create(&labels)
                    .inc_by(value.load(Ordering::Relaxed));
            }
            let now = destination.state();
            for state in [State::Closed, State::Open, State::HalfOpen] {
                self.state
                    .get_or_create(&StateLabels {
                        component: labels.component.clone(),
                        destination: labels.destination.clone(),
                        state: state.name(),
                    })
                    .set(i64::from(state == now));
            }
        }
    }

    pub fn register(self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "berth_mesh_calls",
            "Calls made under a call policy",
            self.calls,
        );
        registry.register("berth_mesh_retries", "Tries after the first", self.retries);
        registry.register(
            "berth_mesh_retry_budget_exhausted",
            "Retries not made because the retry budget was spent",
            self.budget_exhausted,
        );
        registry.register(
            "berth_mesh_short_circuited",
            "Calls answered 503 at once because the circuit was open",
            self.short_circuited,
        );
        registry.register(
            "berth_mesh_timeouts",
            "Calls answered 504 because their timeout passed",
            self.timed_out,
        );
        registry.register(
            "berth_mesh_ejections",
            "Times a destination was ejected (its circuit opened)",
            self.ejections,
        );
        registry.register(
            "berth_mesh_circuit_state",
            "1 for the state each destination's circuit breaker is in",
            self.state,
        );
    }
}

/// A destination's answer, as the retry rules read it.
pub trait Answer {
    fn status(&self) -> u16;
    fn headers(&self) -> &http::HeaderMap;
}

impl<B> Answer for http::Response<B> {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }

    fn headers(&self) -> &http::HeaderMap {
        self.headers()
    }
}

/// A response with the task that drives its connection (`wasi:http`'s outgoing calls).
impl<B, Io> Answer for (http::Response<B>, Io) {
    fn status(&self) -> u16 {
        self.0.status().as_u16()
    }

    fn headers(&self) -> &http::HeaderMap {
        self.0.headers()
    }
}

/// What the guest gets when the mesh answers for the destination.
pub fn answer<E: std::fmt::Display>(host: &str, stopped: &Stopped<E>) -> http::Response<Bytes> {
    let (status, reason, message, retry_in) = match stopped {
        Stopped::Open { retry_in } => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "circuit-open",
            format!(
                "{host} is ejected after consecutive failures; calls are refused for {} ms more",
                retry_in.as_millis()
            ),
            Some(*retry_in),
        ),
        Stopped::TimedOut(after) => (
            http::StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("{host} did not answer within {} ms", after.as_millis()),
            None,
        ),
        Stopped::Failed(error) => (
            http::StatusCode::BAD_GATEWAY,
            "unreachable",
            format!("{host} could not be reached: {error}"),
            None,
        ),
    };
    let body = serde_json::json!({"error": {"code": reason, "message": message}});
    let mut response = http::Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert("x-berth-mesh", http::HeaderValue::from_static(reason));
    if let Some(retry_in) = retry_in {
        let seconds = retry_in.as_secs() + u64::from(retry_in.subsec_nanos() > 0);
        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn destination(toml: &str) -> Arc<Destination> {
        let policy = toml::from_str::<CallSettings>(toml)
            .unwrap()
            .policy()
            .unwrap();
        Calls::new("payment".into(), vec![("provider".into(), policy)])
            .destinations
            .pop()
            .unwrap()
    }

    fn status(code: u16) -> Result<http::Response<()>, String> {
        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::from_u16(code).unwrap();
        Ok(response)
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_calls_are_retried_until_one_succeeds() {
        let d = destination("retries = 3\nbackoff_base_ms = 10");
        let tries = AtomicU32::new(0);
        let response = d
            .call(true, || async {
                match tries.fetch_add(1, Ordering::Relaxed) {
                    0 => Err("refused".to_owned()),
                    1 => status(503),
                    _ => status(200),
                }
            })
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(tries.load(Ordering::Relaxed), 3);
        assert_eq!(d.counters.retries.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_without_an_idempotency_key_is_sent_once() {
        let d = destination("retries = 3");
        let tries = AtomicU32::new(0);
        let response = d
            .call(false, || async {
                tries.fetch_add(1, Ordering::Relaxed);
                status(503)
            })
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(tries.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_destination_costs_the_timeout_and_then_the_breaker_answers_at_once() {
        let d = destination(
            "timeout_ms = 1000\nper_try_timeout_ms = 300\nretries = 2\nconsecutive_failures = 3",
        );
        let started = tokio::time::Instant::now();
        let stopped = d
            .call(
                true,
                std::future::pending::<Result<http::Response<()>, String>>,
            )
            .await
            .unwrap_err();
        assert!(matches!(stopped, Stopped::TimedOut(_)), "{stopped:?}");
        assert!(started.elapsed() <= Duration::from_millis(1000));
        // Three timed-out tries in a row: ejected.
        assert_eq!(d.state(), State::Open);
        let before = tokio::time::Instant::now();
        let stopped = d.call(true, || async { status(200) }).await.unwrap_err();
        assert!(matches!(stopped, Stopped::Open { .. }));
        assert_eq!(before.elapsed(), Duration::ZERO);
        let response = answer("provider", &stopped);
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["x-berth-mesh"], "circuit-open");
        assert_eq!(response.headers()["retry-after"], "30");
        assert_eq!(d.counters.short_circuited.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_waits_for_its_retry_after() {
        let d = destination("retries = 1");
        let tries = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let response = d
            .call(true, || async {
                if tries.fetch_add(1, Ordering::Relaxed) == 0 {
                    let mut response = http::Response::new(());
                    *response.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                    response
                        .headers_mut()
                        .insert("retry-after", http::HeaderValue::from_static("2"));
                    Ok::<_, String>(response)
                } else {
                    status(200)
                }
            })
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() >= Duration::from_secs(2));
    }
}
