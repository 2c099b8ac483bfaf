//! berth's own settings, read from the `tool.berth` tables Spin reserves for tools.
//!
//! | table | key | default | meaning |
//! |---|---|---|---|
//! | `[application.tool.berth]` | `jwt_secret` | none | template (`"{{ jwt_secret }}"`) for the HS256 key the gateway verifies bearer tokens with |
//! | | `jwt_issuer` | none, required with `jwt_secret` | the `iss` every token must carry (a template) |
//! | | `jwt_audience` | none | when set, the `aud` every token must carry (a template) |
//! | | `max_request_bytes` | 1 MiB | larger request bodies get 413 |
//! | | `response_headers` | all three | which of berth's own headers (`x-request-id`, `traceparent`, `x-berth-version`) every response carries; `[]` sends exactly the app's, as Spin does |
//! | | `refuse_ungranted_imports` | `false` | `true`: a component importing what its manifest does not grant fails to load, instead of loading with every such call denied as in Spin |
//! | `[application.tool.berth.connections]` | see [`ConnectionSettings`] | | both listeners' connection limits |
//! | `[[application.tool.berth.rate_limits]]` | see [`RateLimitSettings`] | none | token buckets per route and key; 429 beyond |
//! | `[application.tool.berth.cors]` | see [`CorsSettings`] | off | CORS, preflights answered by the gateway |
//! | `[component.<id>.tool.berth]` | `memory_limit_mb` | 128 | linear memory a single invocation may grow to |
//! | | `timeout_ms` | 10 000 | wall-clock deadline of one invocation, body streaming included |
//! | | `max_concurrency` | 100 | invocations of this component running at once |
//! | | `max_response_bytes` | 16 MiB | a longer response body is refused with 500 `RESPONSE_TOO_LARGE` |
//! | | `instance_reuse` | 1 | requests one instance serves in turn before it is dropped; 1 is a fresh instance per request (see [`crate::registry::reuse`]) |
//! | | `instance_reuse_memory_mb` | half of `memory_limit_mb` | a reused instance whose memory has grown past this is dropped after its request |
//! | | `auth` | `"none"` | `"jwt"`: every route needs a valid bearer token... |
//! | | `public_routes` | `[]` | ...except these (Spin route syntax) |
//! | | `migrations` | `migrations/<id>` | folder of forward-only SQL migrations for the component's database |
//! | | `publishes` | `[]` | subjects it may publish to (NATS wildcards); grants `wasmcloud:messaging/consumer` |
//! | | `subscriptions` | `[]` | events delivered to it: `{ events = ["payment.*"], route = "/…" }` POSTs each as a CloudEvent to that route of its HTTP handler; a bare pattern (`"payment.*"`) goes to its `wasmcloud:messaging/handler` export |
//! | | `consumer_group` | the component id | components sharing a group share the work of a subscription |
//! | | `max_delivery_attempts` | 5 | deliveries of one message before it becomes a dead letter |
//! | `[[component.<id>.tool.berth.route_concurrency]]` | `routes`, `max_concurrency` | none | a share of the component's slots that only these routes use |
//! | `[component.<id>.tool.berth.calls."<host>"]` | see [`crate::mesh::policy`] | none | timeouts, retries and a circuit breaker for its calls to that host |

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    #[serde(default)]
    pub jwt_secret: Option<String>,
    #[serde(default)]
    pub jwt_issuer: Option<String>,
    #[serde(default)]
    pub jwt_audience: Option<String>,
    #[serde(default)]
    pub max_request_bytes: Option<u64>,
    #[serde(default)]
    pub response_headers: Option<Vec<String>>,
    #[serde(default)]
    pub refuse_ungranted_imports: bool,
    #[serde(default)]
    pub connections: ConnectionSettings,
    #[serde(default)]
    pub rate_limits: Vec<RateLimitSettings>,
    #[serde(default)]
    pub cors: Option<CorsSettings>,
}

/// `[application.tool.berth.connections]`: what bounds every connection, on both listeners.
///
/// | key | default | meaning |
/// |---|---|---|
/// | `max_connections` | 10 000, within the descriptor limit | open public connections; beyond, 503 and closed |
/// | `admin_max_connections` | 64 | open admin connections, counted apart so a public flood leaves them free |
/// | `header_timeout_ms` | 10 000 | from a request's first byte to the end of its headers; then closed |
/// | `body_timeout_ms` | 30 000 | to receive a whole request body; then 408 |
/// | `idle_timeout_ms` | 60 000 | a connection with no request in flight and no bytes moving; then closed |
/// | `max_header_bytes` | 16 384 | request line and headers; beyond, 431 |
/// | `upload_timeout_ms` | 300 000 | the admin API's deploy uploads, instead of `body_timeout_ms` |
/// | `max_upload_bytes` | 256 MiB | the largest deploy upload; beyond, 413 |
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSettings {
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub admin_max_connections: Option<usize>,
    #[serde(default)]
    pub header_timeout_ms: Option<u64>,
    #[serde(default)]
    pub body_timeout_ms: Option<u64>,
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
    #[serde(default)]
    pub upload_timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_upload_bytes: Option<u64>,
}

/// One `[[application.tool.berth.rate_limits]]`: a token bucket per key, as Kong's
/// rate-limiting plugin counts. Each window given is its own bucket holding that many
/// requests and refilling evenly over the window, so `minute = 10` allows a burst of 10 and
/// then one request every 6 s.
///
/// | key | default | meaning |
/// |---|---|---|
/// | `routes` | every route | Spin route patterns the limit applies to |
/// | `limit_by` | `"ip"` | `"ip"`: the client address; `"user"`: the verified user (the address on public routes); `"json:<field>"`: a top-level string of the JSON body, compared case-insensitively |
/// | `second`, `minute`, `hour` | | requests per window; at least one |
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub limit_by: Option<String>,
    #[serde(default)]
    pub second: Option<u32>,
    #[serde(default)]
    pub minute: Option<u32>,
    #[serde(default)]
    pub hour: Option<u32>,
}

/// `[application.tool.berth.cors]`: which browser origins may call the public API.
///
/// | key | default | meaning |
/// |---|---|---|
/// | `allow_origins` | (required) | `["https://shop.example"]`, or `["*"]` for any origin without credentials |
/// | `allow_methods` | GET, HEAD, POST, PUT, PATCH, DELETE | |
/// | `allow_headers` | authorization, content-type, idempotency-key, traceparent, x-request-id | request headers a page may send |
/// | `expose_headers` | x-request-id, traceparent, retry-after, ratelimit-* | response headers a page may read |
/// | `allow_credentials` | false | cookies and `Authorization` from the browser's store |
/// | `max_age_seconds` | 600 | how long a browser may cache a preflight answer |
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub allow_methods: Option<Vec<String>>,
    #[serde(default)]
    pub allow_headers: Option<Vec<String>>,
    #[serde(default)]
    pub expose_headers: Option<Vec<String>>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default)]
    pub max_age_seconds: Option<u32>,
}

/// `[[component.<id>.tool.berth.route_concurrency]]`: routes that may run at most
/// `max_concurrency` invocations at once among themselves, so a CPU-heavy route (a password
/// hash) cannot take every slot and every core from the component's other routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConcurrencySettings {
    pub routes: Vec<String>,
    pub max_concurrency: u32,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSettings {
    #[serde(default)]
    pub memory_limit_mb: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    #[serde(default)]
    pub max_response_bytes: Option<u64>,
    #[serde(default)]
    pub instance_reuse: Option<u32>,
    #[serde(default)]
    pub instance_reuse_memory_mb: Option<u64>,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub public_routes: Vec<String>,
    #[serde(default)]
    pub migrations: Option<PathBuf>,
    #[serde(default)]
    pub publishes: Vec<String>,
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionSettings>,
    #[serde(default)]
    pub consumer_group: Option<String>,
    #[serde(default)]
    pub max_delivery_attempts: Option<u32>,
    #[serde(default)]
    pub route_concurrency: Vec<RouteConcurrencySettings>,
    /// Call policies, by destination host.
    #[serde(default)]
    pub calls: std::collections::BTreeMap<String, crate::mesh::CallSettings>,
}

/// One entry of `subscriptions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a subject pattern (\"payment.*\"), or a table { events = [\"payment.*\"], route = \"/path\" }"
)]
pub enum SubscriptionSettings {
    /// Delivered to the `wasmcloud:messaging/handler` export.
    Handler(String),
    /// Delivered to an HTTP route as CloudEvents.
    Route(RouteSubscription),
}

/// `{ events = ["payment.*"], route = "/api/v1/orders/events" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSubscription {
    pub events: Vec<String>,
    pub route: String,
}

/// How the gateway guards a component's routes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    #[default]
    None,
    Jwt,
}

pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_MEMORY_LIMIT_MB: u64 = 128;
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_MAX_CONCURRENCY: u32 = 100;
pub const DEFAULT_MAX_DELIVERY_ATTEMPTS: u32 = 5;
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
/// The most requests one instance may serve: a bound on how long a leak or a corrupted
/// state can live, even in a component that never fails.
pub const MAX_INSTANCE_REUSE: u32 = 100_000;
/// The engine reserves address space for this much linear memory per instance; a component
/// asking for more is refused at load rather than failing on its first large request.
pub const MAX_MEMORY_LIMIT_MB: u64 = 4096;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// hyper's smallest read buffer: headers are bounded by it at the least.
pub const MIN_MAX_HEADER_BYTES: usize = 8 * 1024;
pub const DEFAULT_UPLOAD_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 256 * 1024 * 1024;
pub const DEFAULT_CORS_MAX_AGE_SECONDS: u32 = 600;
