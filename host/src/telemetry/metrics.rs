//! Prometheus metrics, served as text on the admin listener's `/metrics`, encoded by
//! `prometheus-client` in the Prometheus text format 0.0.4.
//!
//! | metric | labels |
//! |---|---|
//! | `berth_requests_total` | component, version, route, status_class |
//! | `berth_request_duration_seconds` (histogram) | component, version, route |
//! | `berth_deploys_total` | component, outcome (`deployed`, `rejected`) |
//! | `berth_instances_active` (gauge) | component |
//! | `berth_concurrency_limit` (gauge) | component |
//! | `berth_connections_open` (gauge) | listener (`public`, `admin`) |
//! | `berth_connections_refused_total` | listener: refused at the connection cap |
//! | `berth_connections_closed_total` | listener, reason (`header_timeout`, `idle`) |
//! | `berth_rate_limited_total` | limit_by (`ip`, `user`, `json`) |
//!
//! Labels are bounded: ids from the manifest, route templates (never raw paths), short
//! digests of loaded versions, and status classes. A metric appears once it has a series.
//!
//! Beside them, each version keeps its last minute as sixty one-second slots (requests,
//! server errors, and a small latency histogram each) for the dashboard's charts
//! ([`Metrics::minute`]): a few more atomic adds per request, no lock and no allocation.
//!
//! Recording is a read lock and a few atomic adds once a series exists: `request` finds the
//! series' handles under `&str` keys, so it builds a label set (and allocates) only the first
//! time it sees a component, version, route and status class. The gauges of state other
//! modules own (permits, connections) are read at scrape time into a registry built for that
//! scrape.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::registry::Slot;
use crate::triggers::http::server::ConnectionStats;

/// Upper bounds of the duration buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

const RATE_LIMIT_KEYS: [&str; 3] = ["ip", "user", "json"];

/// Gauges of counts, as the `u64`s they are read from.
type CountGauge = Gauge<u64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    component: Arc<str>,
    version: Arc<str>,
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    #[prometheus(flatten)]
    route: RouteLabels,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeployLabels {
    component: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    limit_by: &'static str,
}

/// A histogram of durations recorded with two atomic adds; the crate encodes it. The crate's
/// `Histogram` takes a mutex per observation: with one route's requests finishing on two
/// threads at once, whole runs of the micro-benchmark became 3–4 times slower than with these.
#[derive(Clone, Debug, Default)]
struct Durations(Arc<DurationCounts>);

#[derive(Debug, Default)]
struct DurationCounts {
    /// Observations per bucket of `BUCKETS`, not cumulative; the last is past the largest bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Durations {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let i = BUCKETS.partition_point(|bound| *bound < seconds);
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0
            .sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for Durations {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Durations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: [(f64, u64); BUCKETS.len() + 1] = std::array::from_fn(|i| {
            let bound = BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            (bound, self.0.buckets[i].load(Ordering::Relaxed))
        });
        // The count is the buckets' own total, so `+Inf` always equals `_count`.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One route template's handles into the families, shared with the exported series.
struct RouteSeries {
    labels: RouteLabels,
    /// By status class, 1xx … 5xx; set on the class's first request so that a class never
    /// answered is not exported.
    by_class: [OnceLock<Counter>; 5],
    duration: Durations,
}

/// Requests, server errors and latencies of one version over the last minute, one slot per
/// second.
struct Window {
    /// The second (since the epoch) each slot counts.
    stamps: [AtomicU64; WINDOW],
    requests: [AtomicU64; WINDOW],
    errors: [AtomicU64; WINDOW],
    /// Per slot, requests by latency bucket ([`LATENCY_BUCKETS`]).
    latencies: [[AtomicU32; LATENCY_BUCKETS]; WINDOW],
}

const WINDOW: usize = 60;

/// Latency buckets of a window's slot: the first holds what took under [`LATENCY_BASE_MICROS`],
/// bucket `i` what took `[base·2^(i-1), base·2^i)`, the last everything longer. Doubling bounds
/// find a bucket with one `leading_zeros` and keep a quantile within a factor of two before
/// interpolation, which is what a small chart needs.
const LATENCY_BUCKETS: usize = 17;
const LATENCY_BASE_MICROS: u64 = 100;

/// The latency bucket of a request that took `micros`.
fn latency_bucket(micros: u64) -> usize {
    let steps = 64 - (micros / LATENCY_BASE_MICROS).leading_zeros() as usize;
    steps.min(LATENCY_BUCKETS - 1)
}

/// The bounds of latency bucket `i`, in microseconds; the last has no upper bound, so its
/// lower one stands for it.
fn latency_bounds(i: usize) -> (f64, f64) {
    let base = LATENCY_BASE_MICROS as f64;
    match i {
        0 => (0.0, base),
        i if i == LATENCY_BUCKETS - 1 => {
            let lower = base * f64::from(1u32 << (i - 1));
            (lower, lower)
        }
        i => (
            base * f64::from(1u32 << (i - 1)),
            base * f64::from(1u32 << i),
        ),
    }
}

/// The `q` quantile (0–1) of a latency histogram in milliseconds, interpolated within its
/// bucket as Prometheus' `histogram_quantile` does; `None` when it counts nothing.
fn quantile_ms(counts: &[u64; LATENCY_BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let (lower, upper) = latency_bounds(i);
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some((lower + (upper - lower) * within) / 1000.0);
        }
        below += n;
    }
    Some(latency_bounds(LATENCY_BUCKETS - 1).0 / 1000.0)
}

/// One second of one version, as the dashboard charts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Second {
    pub requests: u64,
    /// Answered 5xx.
    pub errors: u64,
    /// `None` in a second without requests.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One version's last minute: a slot per second, oldest first, ending with the current
/// (unfinished) second, and the latency quantiles over the whole minute.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Minute {
    pub seconds: Vec<Second>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One version's series: its minute window and one series per route template.
#[derive(Default)]
struct VersionSeries {
    window: Window,
    routes: HashMap<String, RouteSeries>,
}

/// By component id, then version short digest: looked up with `&str` at each level, so a
/// request that hits existing series allocates nothing.
type Series = HashMap<String, HashMap<String, VersionSeries>>;

impl Default for Window {
    fn default() -> Window {
        Window {
            stamps: std::array::from_fn(|_| AtomicU64::new(0)),
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            latencies: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU32::new(0))),
        }
    }
}

impl Window {
    fn record(&self, now: u64, error: bool, took: Duration) {
        let i = (now % WINDOW as u64) as usize;
        let stamp = self.stamps[i].load(Ordering::Relaxed);
        if stamp != now
            && self.stamps[i]
                .compare_exchange(stamp, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.requests[i].store(0, Ordering::Relaxed);
            self.errors[i].store(0, Ordering::Relaxed);
            for bucket in &self.latencies[i] {
                bucket.store(0, Ordering::Relaxed);
            }
        }
        self.requests[i].fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latencies[i][latency_bucket(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether slot `i` counts a second of the minute ending at `now`.
    fn current(&self, i: usize, now: u64) -> bool {
        let stamp = self.stamps[i].load(Ordering::Relaxed);
        stamp + (WINDOW as u64) > now && stamp <= now
    }

    /// Requests and errors per second over the last minute.
    fn rates(&self, now: u64) -> (f64, f64) {
        let (mut requests, mut errors) = (0, 0);
        for i in 0..WINDOW {
            if self.current(i, now) {
                requests += self.requests[i].load(Ordering::Relaxed);
                errors += self.errors[i].load(Ordering::Relaxed);
            }
        }
        (
            requests as f64 / WINDOW as f64,
            errors as f64 / WINDOW as f64,
        )
    }

    /// The minute ending at `now`, second by second.
    fn minute(&self, now: u64) -> Minute {
        let mut total = [0u64; LATENCY_BUCKETS];
        let seconds = (0..WINDOW as u64)
            .map(|ago| {
                let second = now.saturating_sub(WINDOW as u64 - 1 - ago);
                let i = (second % WINDOW as u64) as usize;
                if self.stamps[i].load(Ordering::Relaxed) != second {
                    return Second::default();
                }
                let counts: [u64; LATENCY_BUCKETS] = std::array::from_fn(|b| {
                    u64::from(self.latencies[i][b].load(Ordering::Relaxed))
                });
                for (sum, n) in total.iter_mut().zip(counts) {
                    *sum += n;
                }
                Second {
                    requests: self.requests[i].load(Ordering::Relaxed),
                    errors: self.errors[i].load(Ordering::Relaxed),
                    p50_ms: quantile_ms(&counts, 0.5),
                    p99_ms: quantile_ms(&counts, 0.99),
                }
            })
            .collect();
        Minute {
            seconds,
            p50_ms: quantile_ms(&total, 0.5),
            p99_ms: quantile_ms(&total, 0.99),
        }
    }
}

fn epoch_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl RouteSeries {
    fn new(labels: RouteLabels, durations: &Family<RouteLabels, Durations>) -> RouteSeries {
        RouteSeries {
            duration: durations.get_or_create_owned(&labels),
            labels,
            by_class: Default::default(),
        }
    }

    fn record(&self, class: usize, took: Duration, requests: &Family<RequestLabels, Counter>) {
        let counter = self.by_class[class].get_or_init(|| {
            requests.get_or_create_owned(&RequestLabels {
                route: self.labels.clone(),
                status_class: STATUS_CLASSES[class],
            })
        });
        counter.inc();
        self.duration.observe(took);
    }
}

pub struct Metrics {
    /// The handles `request` records into, found without allocating.
    series: RwLock<Series>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Durations>,
    deploys: Family<DeployLabels, Counter>,
    /// Requests answered 429, by what the limit counted: ip, user, json.
    rate_limited: [Counter; 3],
    /// The families above, for encoding; what other modules own is read in `render`.
    registry: prometheus_client::registry::Registry,
    /// The public and the admin listener's connections.
    pub public_connections: Arc<ConnectionStats>,
    pub admin_connections: Arc<ConnectionStats>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let requests = Family::default();
        let durations = Family::default();
        let deploys = Family::default();
        let rate_limited_family = Family::<RateLimitLabels, Counter>::default();
        let rate_limited = RATE_LIMIT_KEYS
            .map(|limit_by| rate_limited_family.get_or_create_owned(&RateLimitLabels { limit_by }));
        // The encoder adds `_total` to counters and a full stop to the help.
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register(
            "berth_requests",
            "Requests answered, by component version, route template and status class",
            requests.clone(),
        );
        registry.register(
            "berth_request_duration_seconds",
            "Time from receiving a request to answering it",
            durations.clone(),
        );
        registry.register("berth_deploys", "Deploys by outcome", deploys.clone());
        registry.register(
            "berth_rate_limited",
            "Requests answered 429 by a rate limit",
            rate_limited_family,
        );
        Metrics {
            series: RwLock::default(),
            requests,
            durations,
            deploys,
            rate_limited,
            registry,
            public_connections: Arc::default(),
            admin_connections: Arc::default(),
        }
    }
}

impl Metrics {
    /// One answered request. `component` and `route` are empty for requests no route matched.
    pub fn request(
        &self,
        component: &str,
        version: &str,
        route: &str,
        status: u16,
        took: Duration,
    ) {
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        let record = |window: &Window, r: &RouteSeries| {
            window.record(epoch_seconds(), status >= 500, took);
            r.record(class, took, &self.requests);
        };
        if let Ok(series) = self.series.read()
            && let Some(v) = series.get(component).and_then(|c| c.get(version))
            && let Some(r) = v.routes.get(route)
        {
            return record(&v.window, r);
        }
        // First request of this series: created under the write lock, once.
        if let Ok(mut series) = self.series.write() {
            let VersionSeries { window, routes } = series
                .entry(component.to_owned())
                .or_default()
                .entry(version.to_owned())
                .or_default();
            let r = routes.entry(route.to_owned()).or_insert_with(|| {
                let labels = RouteLabels {
                    component: component.into(),
                    version: version.into(),
                    route: route.into(),
                };
                RouteSeries::new(labels, &self.durations)
            });
            record(window, r);
        }
    }

    /// Requests and server errors (5xx) per second over the last minute, for one version.
    pub fn rates(&self, component: &str, version: &str) -> (f64, f64) {
        self.series
            .read()
            .ok()
            .and_then(|s| {
                let v = s.get(component)?.get(version)?;
                Some(v.window.rates(epoch_seconds()))
            })
            .unwrap_or((0.0, 0.0))
    }

    /// One version's last minute, second by second; all zeros for a version that served
    /// nothing yet.
    pub fn minute(&self, component: &str, version: &str) -> Minute {
        let now = epoch_seconds();
        self.series
            .read()
            .ok()
            .and_then(|s| Some(s.get(component)?.get(version)?.window.minute(now)))
            .unwrap_or_else(|| Minute {
                seconds: vec![Second::default(); WINDOW],
                p50_ms: None,
                p99_ms: None,
            })
    }

    /// A request refused by a rate limit keyed by `limit_by`.
    pub fn rate_limited(&self, limit_by: &str) {
        let i = RATE_LIMIT_KEYS
            .iter()
            .position(|k| *k == limit_by)
            .unwrap_or(0);
        self.rate_limited[i].inc();
    }

    pub fn deploy(&self, component: &str, outcome: &'static str) {
        let labels = DeployLabels {
            component: component.to_owned(),
            outcome,
        };
        self.deploys.get_or_create(&labels).inc();
    }

    /// Everything in the Prometheus text format, with the instance gauges of `slots`.
    pub fn render<'a>(
        &self,
        slots: impl IntoIterator<Item = &'a Arc<Slot>>,
        faults: &crate::mesh::Faults,
    ) -> String {
        let mut out = String::new();
        let mut scraped = self.scrape(slots);
        faults.register(&mut scraped);
        let encoded = prometheus_text::encode(&mut out, &self.registry)
            .and_then(|()| prometheus_text::encode(&mut out, &scraped));
        // Writing to a `String` cannot fail, so an error is the encoder's own: serve what it
        // wrote rather than nothing.
        if encoded.is_err() {
            tracing::warn!("encoding /metrics failed; the page is partial");
        }
        out
    }

    /// The gauges and counters of state other modules own, read now: each component's
    /// permits and each listener's connection counts.
    fn scrape<'a>(
        &self,
        slots: impl IntoIterator<Item = &'a Arc<Slot>>,
    ) -> prometheus_client::registry::Registry {
        let active = Family::<ComponentLabels, CountGauge>::default();
        let limit = Family::<ComponentLabels, CountGauge>::default();
        let mut mesh = crate::mesh::Scrape::default();
        for slot in slots {
            mesh.add(&slot.calls);
            let labels = ComponentLabels {
                component: slot.id.clone(),
            };
            let max = slot.stable().limits.max_concurrency;
            let running = (max as usize).saturating_sub(slot.permits.available_permits());
            active.get_or_create(&labels).set(running as u64);
            limit.get_or_create(&labels).set(u64::from(max));
        }
        let open = Family::<ListenerLabels, CountGauge>::default();
        let refused = Family::<ListenerLabels, Counter>::default();
        let closed = Family::<ClosedLabels, Counter>::default();
        for (listener, stats) in [
            ("public", &self.public_connections),
            ("admin", &self.admin_connections),
        ] {
            let labels = ListenerLabels { listener };
            open.get_or_create(&labels)
                .set(stats.open.load(Ordering::Relaxed));
            refused
                .get_or_create(&labels)
                .inc_by(stats.refused.load(Ordering::Relaxed));
            for (reason, n) in [
                ("header_timeout", &stats.header_timeouts),
                ("idle", &stats.idle_closed),
            ] {
                closed
                    .get_or_create(&ClosedLabels { listener, reason })
                    .inc_by(n.load(Ordering::Relaxed));
            }
        }
        let mut scraped = prometheus_client::registry::Registry::default();
        super::otel::register(&mut scraped);
        mesh.register(&mut scraped);
        scraped.register("berth_instances_active", "Invocations running now", active);
        scraped.register(
            "berth_concurrency_limit",
            "Invocations a component may run at once",
            limit,
        );
        scraped.register("berth_connections_open", "Connections open now", open);
        scraped.register(
            "berth_connections_refused",
            "Connections refused because the listener had max_connections open",
            refused,
        );
        scraped.register(
            "berth_connections_closed",
            "Connections the host closed for a bound: headers too slow, or idle",
            closed,
        );
        scraped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_class_and_timed_in_buckets() {
        let metrics = Metrics::default();
        let c = "order";
        metrics.request(c, "abc", "/api/...", 200, Duration::from_millis(3));
        metrics.request(c, "abc", "/api/...", 201, Duration::from_millis(30));
        metrics.request(c, "abc", "/api/...", 503, Duration::from_micros(100));
        metrics.deploy("order", "rejected");
        let text = metrics.render([], &Default::default());
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .map(str::to_owned)
        };
        assert_eq!(
            line("berth_requests_total{component=\"order\",version=\"abc\",route=\"/api/...\",status_class=\"2xx\"}").as_deref(),
            Some("berth_requests_total{component=\"order\",version=\"abc\",route=\"/api/...\",status_class=\"2xx\"} 2")
        );
        assert!(text.contains("status_class=\"5xx\"} 1"), "{text}");
        assert!(text.contains("le=\"0.005\"} 2"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("berth_deploys_total{component=\"order\",outcome=\"rejected\"} 1"));
        let (requests, errors) = metrics.rates("order", "abc");
        assert!((requests - 3.0 / 60.0).abs() < 1e-9, "{requests}");
        assert!((errors - 1.0 / 60.0).abs() < 1e-9, "{errors}");
    }

    #[test]
    fn the_minute_charts_each_second_with_its_latency_quantiles() {
        let window = Window::default();
        let now = 1_000_000;
        // 100 requests two seconds ago: 98 of 1 ms, 2 of 400 ms, one of them a 500.
        for n in 0..100 {
            let took = if n < 98 { 1_000 } else { 400_000 };
            window.record(now - 2, n == 99, Duration::from_micros(took));
        }
        window.record(now, false, Duration::from_micros(50));
        // Seen from a minute later, the old second has left the window.
        assert!(
            window
                .minute(now + 60)
                .seconds
                .iter()
                .all(|s| s.requests == 0)
        );

        let minute = window.minute(now);
        assert_eq!(minute.seconds.len(), WINDOW);
        let last = minute.seconds[WINDOW - 1];
        assert_eq!((last.requests, last.errors), (1, 0));
        assert!(last.p50_ms.is_some_and(|p| p < 0.1), "{last:?}");
        let busy = minute.seconds[WINDOW - 3];
        assert_eq!((busy.requests, busy.errors), (100, 1));
        // Within the doubling bucket of the true value, never outside it.
        let p50 = busy.p50_ms.unwrap();
        assert!((0.8..=1.6).contains(&p50), "{p50}");
        let p99 = busy.p99_ms.unwrap();
        assert!((204.8..=409.6).contains(&p99), "{p99}");
        assert_eq!(minute.seconds[WINDOW - 2], Second::default());
        assert!(minute.p50_ms.unwrap() <= 1.6 && minute.p99_ms.unwrap() >= 204.8);
    }

    #[test]
    fn latency_buckets_double_and_the_last_takes_the_rest() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(99), 0);
        assert_eq!(latency_bucket(100), 1);
        assert_eq!(latency_bucket(199), 1);
        assert_eq!(latency_bucket(200), 2);
        assert_eq!(latency_bucket(3_276_799), LATENCY_BUCKETS - 2);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
        for i in 1..LATENCY_BUCKETS - 1 {
            assert_eq!(latency_bucket(latency_bounds(i).0 as u64), i);
            assert_eq!(latency_bucket(latency_bounds(i).1 as u64 - 1), i);
        }
        assert_eq!(quantile_ms(&[0; LATENCY_BUCKETS], 0.5), None);
    }

    #[test]
    fn a_version_that_served_nothing_has_an_empty_minute() {
        let metrics = Metrics::default();
        metrics.request("order", "abc", "/r", 200, Duration::from_millis(2));
        let minute = metrics.minute("order", "other");
        assert_eq!(minute.seconds.len(), WINDOW);
        assert_eq!(minute.p99_ms, None);
        let served = metrics.minute("order", "abc");
        assert_eq!(served.seconds.iter().map(|s| s.requests).sum::<u64>(), 1);
    }

    #[test]
    fn exposition_keeps_names_and_types_and_reads_connections_at_each_scrape() {
        let metrics = Metrics::default();
        metrics.request("order", "abc", "/say \"hi\"", 302, Duration::from_millis(1));
        metrics.request("order", "abc", "/say \"hi\"", 302, Duration::from_secs(6));
        metrics.rate_limited("user");
        metrics.public_connections.open.store(3, Ordering::Relaxed);
        metrics
            .public_connections
            .refused
            .store(2, Ordering::Relaxed);
        metrics
            .admin_connections
            .idle_closed
            .store(1, Ordering::Relaxed);
        // A second scrape must not add the connection counts up again.
        metrics.render([], &Default::default());
        let text = metrics.render([], &Default::default());
        for line in [
            "# TYPE berth_requests_total counter",
            "# TYPE berth_request_duration_seconds histogram",
            "# TYPE berth_connections_open gauge",
            "# TYPE berth_connections_closed_total counter",
            r#"berth_requests_total{component="order",version="abc",route="/say \"hi\"",status_class="3xx"} 2"#,
            r#"berth_request_duration_seconds_bucket{component="order",version="abc",route="/say \"hi\"",le="0.001"} 1"#,
            r#"berth_request_duration_seconds_bucket{component="order",version="abc",route="/say \"hi\"",le="5"} 1"#,
            r#"berth_request_duration_seconds_bucket{component="order",version="abc",route="/say \"hi\"",le="+Inf"} 2"#,
            r#"berth_request_duration_seconds_sum{component="order",version="abc",route="/say \"hi\""} 6.001"#,
            r#"berth_request_duration_seconds_count{component="order",version="abc",route="/say \"hi\""} 2"#,
            r#"berth_rate_limited_total{limit_by="ip"} 0"#,
            r#"berth_rate_limited_total{limit_by="user"} 1"#,
            r#"berth_connections_open{listener="public"} 3"#,
            r#"berth_connections_refused_total{listener="public"} 2"#,
            r#"berth_connections_closed_total{listener="admin",reason="idle"} 1"#,
            r#"berth_connections_closed_total{listener="public",reason="header_timeout"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
        assert!(!text.contains("status_class=\"2xx\""), "{text}");
    }
}
