//! Rate limits per route and key, as Kong's rate-limiting plugin counts them, on `governor`'s
//! GCRA token buckets.
//!
//! | `limit_by` | key | checked |
//! |---|---|---|
//! | `"ip"` | the client address (IPv6 by its /64, which one subscriber usually holds whole) | after routing |
//! | `"user"` | the verified user; the client address on public routes | after the token check |
//! | `"json:<field>"` | a top-level string of the JSON body, trimmed, NFC, lowercase | after the body is read |
//!
//! Each window of a limit (`second`, `minute`, `hour`) is one bucket per key that holds that
//! many requests and refills evenly over the window. Requests beyond it get `429` with
//! `Retry-After`; every answer on a limited route carries `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the bucket is full again) of
//! the tightest bucket it was counted in.
//!
//! Buckets live in memory, per host. Keys whose bucket has refilled are forgotten by
//! [`RateLimits::forget_idle`]; a bucket holding [`MAX_KEYS`] live keys refuses new work
//! rather than grow without bound.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use unicode_normalization::UnicodeNormalization as _;

use super::router::RoutePattern;
use crate::config::berth::RateLimitSettings;

/// What a request is counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitBy {
    Ip,
    User,
    JsonField(String),
}

impl LimitBy {
    fn label(&self) -> &'static str {
        match self {
            LimitBy::Ip => "ip",
            LimitBy::User => "user",
            LimitBy::JsonField(_) => "json",
        }
    }
}

/// One `[[application.tool.berth.rate_limits]]`, checked when the manifest loads.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Empty: every route.
    pub routes: Vec<RoutePattern>,
    pub limit_by: LimitBy,
    /// (requests, window), one bucket each.
    pub windows: Vec<(NonZeroU32, Duration)>,
}

impl Policy {
    pub fn from_settings(s: &RateLimitSettings) -> Result<Policy, Vec<String>> {
        let mut problems = Vec::new();
        let routes = s
            .routes
            .iter()
            .filter_map(|r| {
                RoutePattern::parse(r)
                    .map_err(|e| problems.push(format!("routes: {e}")))
                    .ok()
            })
            .collect();
        let limit_by = match s.limit_by.as_deref().unwrap_or("ip") {
            "ip" => LimitBy::Ip,
            "user" => LimitBy::User,
            other => match other.strip_prefix("json:") {
                Some(field) if !field.is_empty() => LimitBy::JsonField(field.to_owned()),
                _ => {
                    problems.push(format!(
                        "limit_by = \"{other}\": use \"ip\", \"user\" or \"json:<field>\""
                    ));
                    LimitBy::Ip
                }
            },
        };
        let mut windows = Vec::new();
        for (name, count, window) in [
            ("second", s.second, Duration::from_secs(1)),
            ("minute", s.minute, Duration::from_secs(60)),
            ("hour", s.hour, Duration::from_secs(3600)),
        ] {
            match count.map(NonZeroU32::new) {
                None => {}
                Some(Some(n)) => windows.push((n, window)),
                Some(None) => {
                    problems.push(format!("{name} = 0 lets nothing through: use 1 or more"))
                }
            }
        }
        if windows.is_empty() && problems.is_empty() {
            problems.push("give at least one of `second`, `minute`, `hour`".to_owned());
        }
        if problems.is_empty() {
            Ok(Policy {
                routes,
                limit_by,
                windows,
            })
        } else {
            Err(problems)
        }
    }

    fn applies_to(&self, path: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|r| r.matches(path).is_some())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Text(Box<str>),
}

type Limiter = RateLimiter<Key, DashMapStateStore<Key>, DefaultClock, StateInformationMiddleware>;

/// Live keys one bucket may hold before it refuses new work instead of growing.
pub const MAX_KEYS: usize = 100_000;

struct Bucket {
    limiter: Limiter,
    limit: NonZeroU32,
    window: Duration,
    /// When this bucket last forgot refilled keys because it was full (nanoseconds since
    /// the limits were built).
    last_forced_cleanup: AtomicU64,
}

struct Rule {
    policy: Policy,
    buckets: Vec<Bucket>,
}

/// Where a request stands in the tightest bucket it was counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// A request over a limit.
#[derive(Debug, Clone, Copy)]
pub struct Limited {
    pub standing: Standing,
    pub retry_after: Duration,
    pub limit_by: &'static str,
}

pub struct RateLimits {
    rules: Vec<Rule>,
    clock: DefaultClock,
    started: std::time::Instant,
}

impl RateLimits {
    pub fn new(policies: &[Policy]) -> RateLimits {
        let clock = DefaultClock::default();
        let rules = policies
            .iter()
            .map(|policy| Rule {
                policy: policy.clone(),
                buckets: policy
                    .windows
                    .iter()
                    .filter_map(|&(limit, window)| {
                        Some(Bucket {
                            limiter: RateLimiter::<
                                Key,
                                DashMapStateStore<Key>,
                                DefaultClock,
                                NoOpMiddleware<<DefaultClock as Clock>::Instant>,
                            >::new(
                                Quota::with_period(window / limit.get())?.allow_burst(limit),
                                DashMapStateStore::default(),
                                clock.clone(),
                            )
                            .with_middleware::<StateInformationMiddleware>(),
                            limit,
                            window,
                            last_forced_cleanup: AtomicU64::new(0),
                        })
                    })
                    .collect(),
            })
            .collect();
        RateLimits {
            rules,
            clock,
            started: std::time::Instant::now(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Counts a request in every limit on `path` keyed by client or user.
    pub fn check_request(
        &self,
        path: &str,
        client: IpAddr,
        user: Option<&str>,
    ) -> Result<Option<Standing>, Limited> {
        self.check(path, |by| match by {
            LimitBy::Ip => Some(Key::Ip(client_key(client))),
            LimitBy::User => Some(match user {
                Some(user) => Key::Text(user.into()),
                None => Key::Ip(client_key(client)),
            }),
            LimitBy::JsonField(_) => None,
        })
    }

    /// Whether some limit on `path` is keyed by the body, which must then be read first.
    pub fn wants_body(&self, path: &str) -> bool {
        self.rules.iter().any(|r| {
            matches!(r.policy.limit_by, LimitBy::JsonField(_)) && r.policy.applies_to(path)
        })
    }

    /// Counts a request in every limit on `path` keyed by a field of its JSON body. A body
    /// that is not JSON or lacks the field is not counted: the component refuses it anyway,
    /// and cheaply.
    pub fn check_body(&self, path: &str, body: &[u8]) -> Result<Option<Standing>, Limited> {
        let mut parsed: Option<Option<serde_json::Map<String, serde_json::Value>>> = None;
        self.check(path, |by| {
            let LimitBy::JsonField(field) = by else {
                return None;
            };
            let object = parsed.get_or_insert_with(|| serde_json::from_slice(body).ok());
            let value = object.as_ref()?.get(field)?.as_str()?;
            let normal: String = value.trim().nfc().collect::<String>().to_lowercase();
            Some(Key::Text(normal.into()))
        })
    }

    fn check(
        &self,
        path: &str,
        mut key_for: impl FnMut(&LimitBy) -> Option<Key>,
    ) -> Result<Option<Standing>, Limited> {
        let mut tightest: Option<Standing> = None;
        for rule in &self.rules {
            if !rule.policy.applies_to(path) {
                continue;
            }
            let Some(key) = key_for(&rule.policy.limit_by) else {
                continue;
            };
            for bucket in &rule.buckets {
                let standing = self
                    .count(bucket, &key)
                    .map_err(|(standing, wait)| Limited {
                        standing,
                        retry_after: wait,
                        limit_by: rule.policy.limit_by.label(),
                    })?;
                if tightest.is_none_or(|t| standing.remaining < t.remaining) {
                    tightest = Some(standing);
                }
            }
        }
        Ok(tightest)
    }

    fn count(&self, bucket: &Bucket, key: &Key) -> Result<Standing, (Standing, Duration)> {
        let per_request = bucket.window / bucket.limit.get();
        let limit = bucket.limit.get();
        if bucket.limiter.len() >= MAX_KEYS && !self.make_room(bucket) {
            let standing = Standing {
                limit,
                remaining: 0,
                reset: bucket.window,
            };
            return Err((standing, per_request));
        }
        match bucket.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(Standing {
                    limit,
                    remaining,
                    reset: per_request * (limit - remaining.min(limit)),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let standing = Standing {
                    limit,
                    remaining: 0,
                    reset: wait + per_request * (limit - 1),
                };
                Err((standing, wait))
            }
        }
    }

    /// Forgets refilled keys of a bucket that is full, at most once a second; whether there
    /// is room now.
    fn make_room(&self, bucket: &Bucket) -> bool {
        let nanos = self.started.elapsed().as_nanos() as u64;
        let last = bucket.last_forced_cleanup.load(Ordering::Relaxed);
        if nanos.saturating_sub(last) > 1_000_000_000
            && bucket
                .last_forced_cleanup
                .compare_exchange(last, nanos, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            bucket.limiter.retain_recent();
            if bucket.limiter.len() >= MAX_KEYS {
                tracing::warn!(
                    "a rate limit holds {MAX_KEYS} live keys; new keys are refused until some refill"
                );
            }
        }
        bucket.limiter.len() < MAX_KEYS
    }

    /// Forgets keys whose buckets have refilled, and the memory they held. Run periodically.
    pub fn forget_idle(&self) {
        for bucket in self.rules.iter().flat_map(|r| &r.buckets) {
            bucket.limiter.retain_recent();
            bucket.limiter.shrink_to_fit();
        }
    }
}

/// The address a client is counted by: IPv4 whole, IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml: &str) -> Policy {
        Policy::from_settings(&toml::from_str(toml).unwrap()).unwrap()
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_bucket_lets_its_burst_through_then_refuses_with_a_wait() {
        let limits = RateLimits::new(&[policy("routes = [\"/login\"]\nminute = 3")]);
        for remaining in [2, 1, 0] {
            let standing = limits
                .check_request("/login", LOCAL, None)
                .unwrap()
                .unwrap();
            assert_eq!((standing.limit, standing.remaining), (3, remaining));
        }
        let limited = limits.check_request("/login", LOCAL, None).unwrap_err();
        assert_eq!(limited.standing.remaining, 0);
        assert!(limited.retry_after > Duration::from_secs(15));
        assert!(limited.retry_after <= Duration::from_secs(20));
        assert_eq!(
            limits.check_request("/other", LOCAL, None).unwrap(),
            None,
            "another route is not limited"
        );
        let other_client = "10.0.0.1".parse().unwrap();
        assert!(limits.check_request("/login", other_client, None).is_ok());
    }

    #[test]
    fn json_keys_are_compared_trimmed_and_caseless() {
        let limits = RateLimits::new(&[policy("limit_by = \"json:email\"\nhour = 1")]);
        assert!(limits.wants_body("/any"));
        assert!(
            limits
                .check_body("/l", br#"{"email":"Ada@Example.com"}"#)
                .is_ok()
        );
        assert!(
            limits
                .check_body("/l", br#"{"email":" ada@example.COM "}"#)
                .is_err()
        );
        assert_eq!(limits.check_body("/l", b"not json").unwrap(), None);
        assert_eq!(limits.check_body("/l", br#"{"other":1}"#).unwrap(), None);
    }

    #[test]
    fn users_are_counted_apart_and_anonymous_callers_by_address() {
        let limits = RateLimits::new(&[policy("limit_by = \"user\"\nsecond = 1")]);
        assert!(limits.check_request("/x", LOCAL, Some("ann")).is_ok());
        assert!(limits.check_request("/x", LOCAL, Some("bob")).is_ok());
        assert!(limits.check_request("/x", LOCAL, Some("ann")).is_err());
        assert!(limits.check_request("/x", LOCAL, None).is_ok());
        assert!(limits.check_request("/x", LOCAL, None).is_err());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(client_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn bad_settings_are_named() {
        for (toml, expected) in [
            ("limit_by = \"cookie\"\nsecond = 1", "limit_by = \"cookie\""),
            ("second = 0", "second = 0"),
            ("routes = [\"nope\"]\nsecond = 1", "must start with `/`"),
            ("limit_by = \"ip\"", "at least one of"),
        ] {
            let err = Policy::from_settings(&toml::from_str(toml).unwrap())
                .unwrap_err()
                .join("; ");
            assert!(err.contains(expected), "{toml}: {err}");
        }
    }
}
