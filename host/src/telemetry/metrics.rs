//! Prometheus metrics, served as text on the admin listener's `/metrics`.
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
//! digests of loaded versions, and status classes. Recording is a read lock and a few
//! atomic adds once a series exists.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::capabilities::http_inbound::server::ConnectionStats;
use crate::components::Registry;

/// Upper bounds of the duration buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct RouteSeries {
    /// By status class: 1xx … 5xx.
    by_class: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Requests and server errors of one version over the last minute, one slot per second.
struct Window {
    /// The second (since the epoch) each slot counts.
    stamps: [AtomicU64; WINDOW],
    requests: [AtomicU64; WINDOW],
    errors: [AtomicU64; WINDOW],
}

const WINDOW: usize = 60;

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
        }
    }
}

impl Window {
    fn record(&self, now: u64, error: bool) {
        let i = (now % WINDOW as u64) as usize;
        let stamp = self.stamps[i].load(Ordering::Relaxed);
        if stamp != now
            && self.stamps[i]
                .compare_exchange(stamp, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.requests[i].store(0, Ordering::Relaxed);
            self.errors[i].store(0, Ordering::Relaxed);
        }
        self.requests[i].fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests and errors per second over the last minute.
    fn rates(&self, now: u64) -> (f64, f64) {
        let (mut requests, mut errors) = (0, 0);
        for i in 0..WINDOW {
            let stamp = self.stamps[i].load(Ordering::Relaxed);
            if stamp + (WINDOW as u64) > now && stamp <= now {
                requests += self.requests[i].load(Ordering::Relaxed);
                errors += self.errors[i].load(Ordering::Relaxed);
            }
        }
        (
            requests as f64 / WINDOW as f64,
            errors as f64 / WINDOW as f64,
        )
    }
}

fn epoch_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Default)]
pub struct Metrics {
    series: RwLock<Series>,
    deploys: RwLock<HashMap<(String, &'static str), u64>>,
    /// The public and the admin listener's connections.
    pub public_connections: Arc<ConnectionStats>,
    pub admin_connections: Arc<ConnectionStats>,
    /// Requests answered 429, by what the limit counted: ip, user, json.
    rate_limited: [AtomicU64; 3],
}

impl RouteSeries {
    fn record(&self, status: u16, took: Duration) {
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
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
        let record = |v: &VersionSeries, r: &RouteSeries| {
            v.window.record(epoch_seconds(), status >= 500);
            r.record(status, took);
        };
        if let Ok(series) = self.series.read()
            && let Some(v) = series.get(component).and_then(|c| c.get(version))
            && let Some(r) = v.routes.get(route)
        {
            return record(v, r);
        }
        // First request of this series: created under the write lock, once.
        if let Ok(mut series) = self.series.write() {
            let v = series
                .entry(component.to_owned())
                .or_default()
                .entry(version.to_owned())
                .or_default();
            v.routes.entry(route.to_owned()).or_default();
            record(v, &v.routes[route]);
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

    /// A request refused by a rate limit keyed by `limit_by`.
    pub fn rate_limited(&self, limit_by: &str) {
        let i = RATE_LIMIT_KEYS
            .iter()
            .position(|k| *k == limit_by)
            .unwrap_or(0);
        self.rate_limited[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn deploy(&self, component: &str, outcome: &'static str) {
        if let Ok(mut deploys) = self.deploys.write() {
            *deploys.entry((component.to_owned(), outcome)).or_default() += 1;
        }
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self, registry: &Registry) -> String {
        let mut out = String::new();
        let Ok(series) = self.series.read() else {
            return out;
        };
        // (labels, series) for every route series, in a stable order.
        let mut routes: Vec<(String, &RouteSeries)> = series
            .iter()
            .flat_map(|(component, versions)| {
                versions.iter().flat_map(move |(version, v)| {
                    v.routes.iter().map(move |(route, r)| {
                        let labels = format!(
                            "component=\"{}\",version=\"{}\",route=\"{}\"",
                            escape(component),
                            escape(version),
                            escape(route)
                        );
                        (labels, r)
                    })
                })
            })
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        out.push_str("# HELP berth_requests_total Requests answered, by component version, route template and status class.\n# TYPE berth_requests_total counter\n");
        for (labels, series) in &routes {
            for (i, n) in series.by_class.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "berth_requests_total{{{labels},status_class=\"{}xx\"}} {n}",
                        i + 1
                    );
                }
            }
        }
        out.push_str("# HELP berth_request_duration_seconds Time from receiving a request to answering it.\n# TYPE berth_request_duration_seconds histogram\n");
        for (l, series) in &routes {
            for (bound, bucket) in BUCKETS.iter().zip(&series.buckets) {
                let _ = writeln!(
                    out,
                    "berth_request_duration_seconds_bucket{{{l},le=\"{bound}\"}} {}",
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = series.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "berth_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "berth_request_duration_seconds_sum{{{l}}} {}",
                series.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(out, "berth_request_duration_seconds_count{{{l}}} {count}");
        }
        out.push_str(
            "# HELP berth_deploys_total Deploys by outcome.\n# TYPE berth_deploys_total counter\n",
        );
        if let Ok(deploys) = self.deploys.read() {
            for ((component, outcome), n) in deploys.iter() {
                let _ = writeln!(
                    out,
                    "berth_deploys_total{{component=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(component)
                );
            }
        }
        out.push_str("# HELP berth_instances_active Invocations running now.\n# TYPE berth_instances_active gauge\n");
        let mut slots: Vec<_> = registry.iter().collect();
        slots.sort_by(|a, b| a.id.cmp(&b.id));
        for slot in &slots {
            let limit = slot.stable().limits.max_concurrency as usize;
            let active = limit.saturating_sub(slot.permits.available_permits());
            let _ = writeln!(
                out,
                "berth_instances_active{{component=\"{}\"}} {active}",
                escape(&slot.id)
            );
        }
        out.push_str("# HELP berth_concurrency_limit Invocations a component may run at once.\n# TYPE berth_concurrency_limit gauge\n");
        for slot in &slots {
            let _ = writeln!(
                out,
                "berth_concurrency_limit{{component=\"{}\"}} {}",
                escape(&slot.id),
                slot.stable().limits.max_concurrency
            );
        }
        let listeners = [
            ("public", &self.public_connections),
            ("admin", &self.admin_connections),
        ];
        out.push_str("# HELP berth_connections_open Connections open now.\n# TYPE berth_connections_open gauge\n");
        for (listener, stats) in listeners {
            let _ = writeln!(
                out,
                "berth_connections_open{{listener=\"{listener}\"}} {}",
                stats.open.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP berth_connections_refused_total Connections refused because the listener had max_connections open.\n# TYPE berth_connections_refused_total counter\n");
        for (listener, stats) in listeners {
            let _ = writeln!(
                out,
                "berth_connections_refused_total{{listener=\"{listener}\"}} {}",
                stats.refused.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP berth_connections_closed_total Connections the host closed for a bound: headers too slow, or idle.\n# TYPE berth_connections_closed_total counter\n");
        for (listener, stats) in listeners {
            for (reason, n) in [
                ("header_timeout", &stats.header_timeouts),
                ("idle", &stats.idle_closed),
            ] {
                let _ = writeln!(
                    out,
                    "berth_connections_closed_total{{listener=\"{listener}\",reason=\"{reason}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP berth_rate_limited_total Requests answered 429 by a rate limit.\n# TYPE berth_rate_limited_total counter\n");
        for (key, n) in RATE_LIMIT_KEYS.iter().zip(&self.rate_limited) {
            let _ = writeln!(
                out,
                "berth_rate_limited_total{{limit_by=\"{key}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        out
    }
}

const RATE_LIMIT_KEYS: [&str; 3] = ["ip", "user", "json"];

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        let text = metrics.render(&Registry::default());
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
}
