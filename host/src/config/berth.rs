//! berth's own settings, read from the `tool.berth` tables Spin reserves for tools.
//!
//! | table | key | default | meaning |
//! |---|---|---|---|
//! | `[application.tool.berth]` | `jwt_secret` | none | template (`"{{ jwt_secret }}"`) for the HS256 key the gateway verifies bearer tokens with |
//! | | `max_request_bytes` | 1 MiB | larger request bodies get 413 |
//! | `[component.<id>.tool.berth]` | `memory_limit_mb` | 128 | linear memory a single invocation may grow to |
//! | | `timeout_ms` | 10 000 | wall-clock deadline of one invocation, body streaming included |
//! | | `max_concurrency` | 100 | invocations of this component running at once |
//! | | `max_response_bytes` | 16 MiB | a longer response body is refused with 500 `RESPONSE_TOO_LARGE` |
//! | | `auth` | `"none"` | `"jwt"`: every route needs a valid bearer token... |
//! | | `public_routes` | `[]` | ...except these (Spin route syntax) |
//! | | `migrations` | `migrations/<id>` | folder of forward-only SQL migrations for the component's database |
//! | | `publishes` | `[]` | subjects it may publish to (NATS wildcards); grants `wasmcloud:messaging/consumer` |
//! | | `subscriptions` | `[]` | subjects delivered to its `wasmcloud:messaging/handler` export |
//! | | `consumer_group` | the component id | components sharing a group share the work of a subscription |
//! | | `max_delivery_attempts` | 5 | deliveries of one message before it becomes a dead letter |

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    #[serde(default)]
    pub jwt_secret: Option<String>,
    #[serde(default)]
    pub max_request_bytes: Option<u64>,
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
    pub auth: Auth,
    #[serde(default)]
    pub public_routes: Vec<String>,
    #[serde(default)]
    pub migrations: Option<PathBuf>,
    #[serde(default)]
    pub publishes: Vec<String>,
    #[serde(default)]
    pub subscriptions: Vec<String>,
    #[serde(default)]
    pub consumer_group: Option<String>,
    #[serde(default)]
    pub max_delivery_attempts: Option<u32>,
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
/// The engine reserves address space for this much linear memory per instance; a component
/// asking for more is refused at load rather than failing on its first large request.
pub const MAX_MEMORY_LIMIT_MB: u64 = 4096;
