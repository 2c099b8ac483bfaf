//! Fault injection: delays and aborts an operator adds at run time to prove that the app
//! survives a slow or failing dependency, as Istio's fault filter does. None exist until one
//! is added (`berth fault add`, `POST /admin/v1/faults`), and they live in this host's
//! memory only: a restart clears them, so chaos never outlives the process that was told.
//!
//! A fault names a component and either the calls into it (client requests, chained calls
//! and event deliveries) or, with `outbound`, its calls out to one host. It acts where that
//! destination would: inside the caller's call policy, one try at a time, so timeouts,
//! retries and the breaker see an injected failure exactly as they would a real one. Every
//! injection is counted in `/metrics`, logged as injected, and an abort's answer carries
//! `x-berth-fault` with the fault's id, so no one mistakes it for a real failure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use serde::{Deserialize, Serialize};

/// Names the fault that made an answer.
pub const FAULT_HEADER: HeaderName = HeaderName::from_static("x-berth-fault");
/// Faults one host holds at once.
pub const MAX_FAULTS: usize = 64;
/// The longest delay a fault may add.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// A fault as the admin API takes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    pub component: String,
    /// A path, or a prefix ending in `/...`, as a Spin route is written.
    #[serde(default)]
    pub route: Option<String>,
    /// A host the component calls (`api.example.com`, `<id>.spin.internal`): the fault
    /// applies to those calls instead of the calls into the component.
    #[serde(default)]
    pub outbound: Option<String>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Of the matching calls, how many are delayed; 100 when a delay is given without it.
    #[serde(default)]
    pub delay_percent: Option<f64>,
    #[serde(default)]
    pub abort_status: Option<u16>,
    /// Of the matching calls, how many are aborted; 100 when a status is given without it.
    #[serde(default)]
    pub abort_percent: Option<f64>,
}

/// Why a fault was refused; the message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("{0}")]
    Invalid(String),
    #[error("no component `{0}` in this app")]
    UnknownComponent(String),
    #[error("this host already holds {MAX_FAULTS} faults; clear some first")]
    TooMany,
}

/// One fault in force.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    pub id: String,
    pub component: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
    /// RFC 3339.
    pub added_at: String,
    /// Calls this fault delayed and aborted so far.
    pub delayed: AtomicU64,
    pub aborted: AtomicU64,
}

impl Fault {
    /// `delay 1500 ms on 20 %, abort 503 on 30 %`, for the log.
    fn effect(&self) -> String {
        let delay = self
            .delay
            .map(|d| format!("delay {} ms on {} %", d.ms, d.percent));
        let abort = self
            .abort
            .map(|a| format!("abort {} on {} %", a.status, a.percent));
        [delay, abort]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delay {
    pub ms: u64,
    pub percent: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Abort {
    pub status: u16,
    pub percent: f64,
}

/// Where a call met the fault, for `/metrics` and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Point {
    /// A client's request through the gateway.
    Request,
    /// A call from another component (`<id>.spin.internal`).
    Chained,
    /// An event delivered to the component.
    Delivery,
    /// A call the component makes.
    Outbound,
}

impl Point {
    pub fn name(self) -> &'static str {
        match self {
            Point::Request => "request",
            Point::Chained => "chained",
            Point::Delivery => "delivery",
            Point::Outbound => "outbound",
        }
    }
}

/// The answer an aborting fault gives instead of the destination.
#[derive(Debug)]
pub struct Injected {
    pub fault: String,
    pub status: StatusCode,
}

impl Injected {
    pub fn message(&self) -> String {
        format!(
            "fault {} injected by berth: aborted with {} (not a real failure; `berth fault list` shows it)",
            self.fault,
            self.status.as_u16()
        )
    }

    /// The answer as JSON, marked with [`FAULT_HEADER`].
    pub fn response(&self) -> Response<Bytes> {
        let body = serde_json::json!({"error": {
            "code": "FAULT_INJECTED",
            "message": self.message(),
        }});
        let mut response = Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(id) = HeaderValue::from_str(&self.fault) {
            headers.insert(FAULT_HEADER, id);
        }
        response
    }
}

/// The faults in force on this host, and what they did.
#[derive(Default)]
pub struct Faults {
    faults: ArcSwap<Vec<Arc<Fault>>>,
    next_id: AtomicU64,
    /// Adds and clears, one at a time.
    edit: Mutex<()>,
    /// Injections by (component, point, kind): only ever grows, as counters must, even
    /// once a fault is cleared. Bounded by components × points × kinds.
    injected: Mutex<BTreeMap<(String, Point, &'static str), u64>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("faults", &self.faults.load().len())
            .finish()
    }
}

impl Faults {
    /// Checks `spec` and puts it in force; `exists` says whether a component id is the app's.
    pub fn add(
        &self,
        spec: FaultSpec,
        exists: impl Fn(&str) -> bool,
    ) -> Result<Arc<Fault>, FaultError> {
        let fault = self.check(spec, exists)?;
        let _edit = self.edit.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.faults.load();
        if current.len() >= MAX_FAULTS {
            return Err(FaultError::TooMany);
        }
        let fault = Arc::new(fault);
        let mut next = Vec::clone(&current);
        next.push(fault.clone());
        self.faults.store(Arc::new(next));
        tracing::warn!(
            fault = %fault.id,
            component = %fault.component,
            route = fault.route.as_deref().unwrap_or("any"),
            outbound = fault.outbound.as_deref().unwrap_or("-"),
            "fault injection on: {}, on purpose",
            fault.effect()
        );
        Ok(fault)
    }

    fn check(&self, spec: FaultSpec, exists: impl Fn(&str) -> bool) -> Result<Fault, FaultError> {
        let invalid = |m: String| Err(FaultError::Invalid(m));
        if !exists(&spec.component) {
            return Err(FaultError::UnknownComponent(spec.component));
        }
        if let Some(route) = &spec.route
            && let Err(e) = check_route(route)
        {
            return invalid(e);
        }
        let outbound = match spec.outbound.as_deref().map(str::trim) {
            None => None,
            Some(host) => match check_host(host) {
                Ok(host) => Some(host),
                Err(e) => return invalid(e),
            },
        };
        let delay = match (spec.delay_ms, spec.delay_percent) {
            (None, None) => None,
            (None, Some(_)) => {
                return invalid("a delay percentage needs the delay itself (delayMs)".into());
            }
            (Some(ms), percent) => {
                if ms == 0 || Duration::from_millis(ms) > MAX_DELAY {
                    return invalid(format!(
                        "a delay must be 1 to {} ms, not {ms}",
                        MAX_DELAY.as_millis()
                    ));
                }
                Some(Delay {
                    ms,
                    percent: check_percent("delay", percent)?,
                })
            }
        };
        let abort = match (spec.abort_status, spec.abort_percent) {
            (None, None) => None,
            (None, Some(_)) => {
                return invalid("an abort percentage needs the status to abort with".into());
            }
            (Some(status), percent) => {
                if !(400..=599).contains(&status) {
                    return invalid(format!(
                        "an abort answers with an error status, 400 to 599, not {status}"
                    ));
                }
                Some(Abort {
                    status,
                    percent: check_percent("abort", percent)?,
                })
            }
        };
        if delay.is_none() && abort.is_none() {
            return invalid(
                "a fault needs a delay (delayMs), an abort (abortStatus), or both".into(),
            );
        }
        let id = format!("f{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        Ok(Fault {
            id,
            component: spec.component,
            route: spec.route,
            outbound,
            delay,
            abort,
            added_at: crate::telemetry::rfc3339_now(),
            delayed: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
        })
    }

    /// Every fault in force, oldest first.
    pub fn list(&self) -> Arc<Vec<Arc<Fault>>> {
        self.faults.load_full()
    }

    /// Clears one fault; `false` if there is none with that id.
    pub fn clear(&self, id: &str) -> bool {
        let _edit = self.edit.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.faults.load();
        let next: Vec<_> = current.iter().filter(|f| f.id != id).cloned().collect();
        let found = next.len() < current.len();
        if found {
            self.faults.store(Arc::new(next));
            tracing::warn!(fault = %id, "fault cleared");
        }
        found
    }

    /// Clears every fault; returns how many there were.
    pub fn clear_all(&self) -> usize {
        let _edit = self.edit.lock().unwrap_or_else(|e| e.into_inner());
        let cleared = self.faults.swap(Arc::new(Vec::new())).len();
        if cleared > 0 {
            tracing::warn!(cleared, "every fault cleared");
        }
        cleared
    }

    /// Applies the faults on calls into `component` at `path`: sleeps through any delay,
    /// and returns the abort if one fires.
    pub async fn inbound(&self, component: &str, path: &str, point: Point) -> Option<Injected> {
        self.apply(point, component, path, |f| f.outbound.is_none())
            .await
    }

    /// Applies the faults on `component`'s calls to `host` at `path`.
    pub async fn outbound(&self, component: &str, host: &str, path: &str) -> Option<Injected> {
        self.apply(Point::Outbound, component, path, |f| {
            f.outbound
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(host))
        })
        .await
    }

    /// Whether no fault is in force: the one check a call makes when chaos is off.
    pub fn is_empty(&self) -> bool {
        self.faults.load().is_empty()
    }

    /// Matching faults apply in the order they were added: their delays add up, and the
    /// first abort that fires answers.
    async fn apply(
        &self,
        point: Point,
        component: &str,
        path: &str,
        aims: impl Fn(&Fault) -> bool,
    ) -> Option<Injected> {
        let faults = self.faults.load_full();
        if faults.is_empty() {
            return None;
        }
        for fault in faults.iter() {
            if fault.component != component
                || !aims(fault)
                || !fault
                    .route
                    .as_deref()
                    .is_none_or(|r| route_matches(r, path))
            {
                continue;
            }
            if let Some(delay) = fault.delay
                && fires(delay.percent)
            {
                fault.delayed.fetch_add(1, Ordering::Relaxed);
                self.count(component, point, "delay");
                tracing::info!(
                    fault = %fault.id,
                    injected = true,
                    point = point.name(),
                    delay_ms = delay.ms,
                    "fault {} injected: delaying this call {} ms (not a real slowdown)",
                    fault.id,
                    delay.ms
                );
                tokio::time::sleep(Duration::from_millis(delay.ms)).await;
            }
            if let Some(abort) = fault.abort
                && fires(abort.percent)
            {
                fault.aborted.fetch_add(1, Ordering::Relaxed);
                self.count(component, point, "abort");
                let injected = Injected {
                    fault: fault.id.clone(),
                    status: StatusCode::from_u16(abort.status)
                        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                };
                tracing::info!(
                    fault = %fault.id,
                    injected = true,
                    point = point.name(),
                    status = abort.status,
                    "{}",
                    injected.message()
                );
                return Some(injected);
            }
        }
        None
    }

    fn count(&self, component: &str, point: Point, kind: &'static str) {
        let mut injected = self.injected.lock().unwrap_or_else(|e| e.into_inner());
        *injected
            .entry((component.to_owned(), point, kind))
            .or_default() += 1;
    }

    /// `berth_faults_injected_total` and `berth_faults_active`, read now.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
        let injected = Family::<InjectedLabels, Counter>::default();
        for ((component, point, kind), n) in self
            .injected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            injected
                .get_or_create(&InjectedLabels {
                    component: component.clone(),
                    point: point.name(),
                    kind,
                })
                .inc_by(*n);
        }
        let active = Gauge::<i64>::default();
        active.set(i64::try_from(self.faults.load().len()).unwrap_or(i64::MAX));
        registry.register(
            "berth_faults_injected",
            "Calls delayed or aborted on purpose by an injected fault",
            injected,
        );
        registry.register("berth_faults_active", "Injected faults in force", active);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct InjectedLabels {
    component: String,
    point: &'static str,
    kind: &'static str,
}

/// Whether a fault with `percent` applies to this call.
fn fires(percent: f64) -> bool {
    percent >= 100.0 || rand::random::<f64>() * 100.0 < percent
}

fn check_percent(what: &str, percent: Option<f64>) -> Result<f64, FaultError> {
    let percent = percent.unwrap_or(100.0);
    if percent.is_finite() && percent > 0.0 && percent <= 100.0 {
        Ok(percent)
    } else {
        Err(FaultError::Invalid(format!(
            "the {what} percentage must be above 0 and at most 100, not {percent}"
        )))
    }
}

/// A route is `/`, a path, or a prefix ending in `/...`, spelled as the gateway matches.
fn check_route(route: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "route `{route}` must be a path such as /api/v1/orders, or a prefix such as /api/v1/orders/..."
        ))
    };
    if route == "/..." || route == "/" {
        return Ok(());
    }
    let Some(rest) = route
        .strip_suffix("/...")
        .unwrap_or(route)
        .strip_prefix('/')
    else {
        return bad();
    };
    let segments_fine = rest.split('/').all(|s| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && !s.contains("...")
            && s.bytes().all(|b| b.is_ascii_graphic() && b != b'%')
    });
    if segments_fine { Ok(()) } else { bad() }
}

fn route_matches(route: &str, path: &str) -> bool {
    match route.strip_suffix("/...") {
        Some(prefix) => {
            path == prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
        None => path == route,
    }
}

/// A host as calls name it: no scheme, port or path, lower-case.
fn check_host(host: &str) -> Result<String, String> {
    let plain = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if plain {
        Ok(host.to_ascii_lowercase())
    } else {
        Err(format!(
            "outbound host `{host}` must be a host name alone, such as api.example.com or payment-provider.spin.internal (no scheme, port or path)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(component: &str) -> FaultSpec {
        FaultSpec {
            component: component.into(),
            ..FaultSpec::default()
        }
    }

    #[test]
    fn faults_are_checked_and_say_what_to_change() {
        let faults = Faults::default();
        let known = |c: &str| c == "order";
        let refused = |s: FaultSpec| faults.add(s, known).unwrap_err().to_string();
        assert!(refused(spec("nope")).contains("no component `nope`"));
        assert!(refused(spec("order")).contains("needs a delay"));
        for (status, ok) in [(399, false), (400, true), (503, true), (600, false)] {
            let s = FaultSpec {
                abort_status: Some(status),
                ..spec("order")
            };
            assert_eq!(faults.add(s, known).is_ok(), ok, "{status}");
        }
        for percent in [0.0, -1.0, 100.5, f64::NAN] {
            let s = FaultSpec {
                delay_ms: Some(10),
                delay_percent: Some(percent),
                ..spec("order")
            };
            assert!(refused(s).contains("percentage"), "{percent}");
        }
        let s = FaultSpec {
            abort_percent: Some(50.0),
            ..spec("order")
        };
        assert!(refused(s).contains("needs the status"));
        let s = FaultSpec {
            delay_ms: Some(301_000),
            ..spec("order")
        };
        assert!(refused(s).contains("1 to 300000 ms"));
        for route in ["api", "/a//b", "/a/../b", "/a/%2F", "/a/...x"] {
            let s = FaultSpec {
                route: Some(route.into()),
                abort_status: Some(500),
                ..spec("order")
            };
            assert!(refused(s).contains("must be a path"), "{route}");
        }
        for host in ["http://x.com", "x.com:443", "x.com/path", ""] {
            let s = FaultSpec {
                outbound: Some(host.into()),
                abort_status: Some(500),
                ..spec("order")
            };
            assert!(refused(s).contains("host name alone"), "{host}");
        }
        assert_eq!(faults.list().len(), 2);
        while faults.list().len() < MAX_FAULTS {
            let s = FaultSpec {
                abort_status: Some(500),
                ..spec("order")
            };
            faults.add(s, known).unwrap();
        }
        let s = FaultSpec {
            abort_status: Some(500),
            ..spec("order")
        };
        assert!(matches!(faults.add(s, known), Err(FaultError::TooMany)));
    }

    #[test]
    fn routes_match_as_spin_routes_do() {
        for (route, path, hit) in [
            ("/api/v1/orders", "/api/v1/orders", true),
            ("/api/v1/orders", "/api/v1/orders/1", false),
            ("/api/v1/orders/...", "/api/v1/orders", true),
            ("/api/v1/orders/...", "/api/v1/orders/1/cancel", true),
            ("/api/v1/orders/...", "/api/v1/ordersx", false),
            ("/...", "/anything", true),
        ] {
            assert_eq!(route_matches(route, path), hit, "{route} {path}");
            assert!(check_route(route).is_ok(), "{route}");
        }
    }

    #[tokio::test]
    async fn faults_aim_at_their_target_add_up_and_are_counted_until_cleared() {
        let faults = Faults::default();
        let known = |_: &str| true;
        let abort = faults
            .add(
                FaultSpec {
                    route: Some("/v1/...".into()),
                    abort_status: Some(503),
                    ..spec("payment-provider")
                },
                known,
            )
            .unwrap();
        let outbound = faults
            .add(
                FaultSpec {
                    outbound: Some("API.Example.com".into()),
                    delay_ms: Some(30),
                    abort_status: Some(429),
                    abort_percent: Some(100.0),
                    ..spec("payment")
                },
                known,
            )
            .unwrap();
        assert_eq!(outbound.outbound.as_deref(), Some("api.example.com"));

        let hit = faults
            .inbound("payment-provider", "/v1/payment_intents", Point::Chained)
            .await
            .unwrap();
        assert_eq!((hit.fault.as_str(), hit.status.as_u16()), ("f1", 503));
        let answer = hit.response();
        assert_eq!(answer.headers()[FAULT_HEADER], "f1");
        assert!(String::from_utf8_lossy(answer.body()).contains("not a real failure"));
        // Another route, another component, or the component's own outbound calls: untouched.
        assert!(
            faults
                .inbound("payment-provider", "/health", Point::Request)
                .await
                .is_none()
        );
        assert!(
            faults
                .inbound("order", "/v1/x", Point::Request)
                .await
                .is_none()
        );
        assert!(
            faults
                .outbound("payment-provider", "api.example.com", "/")
                .await
                .is_none()
        );

        let started = tokio::time::Instant::now();
        let hit = faults
            .outbound("payment", "api.example.com", "/charge")
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(hit.status.as_u16(), 429);
        assert!(
            faults
                .inbound("payment", "/charge", Point::Request)
                .await
                .is_none()
        );

        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        faults.register(&mut registry);
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"berth_faults_injected_total{component="payment-provider",point="chained",kind="abort"} 1"#,
            r#"berth_faults_injected_total{component="payment",point="outbound",kind="delay"} 1"#,
            r#"berth_faults_injected_total{component="payment",point="outbound",kind="abort"} 1"#,
            "berth_faults_active 2",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert_eq!(abort.aborted.load(Ordering::Relaxed), 1);

        assert!(faults.clear("f1"));
        assert!(!faults.clear("f1"));
        assert!(
            faults
                .inbound("payment-provider", "/v1/x", Point::Chained)
                .await
                .is_none()
        );
        assert_eq!(faults.clear_all(), 1);
        assert!(faults.is_empty());
        // Ids are never reused, so a cleared fault's id cannot name a new one.
        let next = faults
            .add(
                FaultSpec {
                    abort_status: Some(500),
                    ..spec("order")
                },
                known,
            )
            .unwrap();
        assert_eq!(next.id, "f3");
    }

    #[tokio::test]
    async fn a_percentage_applies_to_about_that_share_of_calls() {
        let faults = Faults::default();
        faults
            .add(
                FaultSpec {
                    abort_status: Some(500),
                    abort_percent: Some(30.0),
                    ..spec("order")
                },
                |_| true,
            )
            .unwrap();
        let mut aborted = 0;
        for _ in 0..10_000 {
            aborted += usize::from(faults.inbound("order", "/", Point::Request).await.is_some());
        }
        assert!((2_600..=3_400).contains(&aborted), "{aborted}");
    }
}
