//! The admin listener: `/healthz` and `/readyz` for orchestrators (open), everything under
//! `/admin/` behind `Authorization: Bearer <admin token>`:
//!
//! | route | |
//! |---|---|
//! | `GET /admin/v1/components` | each component: routes, versions, subscriptions |
//! | `GET /admin/v1/dead-letters` | messages that exhausted their delivery attempts |

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use crate::capabilities::http_inbound::server::Handler;
use crate::capabilities::http_inbound::{ApiError, Body, json};
use crate::capabilities::messaging::Bus;
use crate::capabilities::sql;
use crate::components::Registry;
use crate::config::App;

pub struct Admin {
    /// sha256 of the token: compared in constant time, never kept in the clear.
    token_digest: [u8; 32],
    /// Every database the app uses, for `/readyz`.
    databases: Vec<(String, Arc<dyn sql::Database>)>,
    /// The message bus, when a component publishes or subscribes.
    bus: Option<Arc<dyn Bus>>,
    app: Arc<App>,
    registry: Arc<Registry>,
}

impl Admin {
    pub fn new(
        token: &str,
        databases: Vec<(String, Arc<dyn sql::Database>)>,
        bus: Option<Arc<dyn Bus>>,
        app: Arc<App>,
        registry: Arc<Registry>,
    ) -> Admin {
        Admin {
            token_digest: Sha256::digest(token.as_bytes()).into(),
            databases,
            bus,
            app,
            registry,
        }
    }

    fn components(&self) -> serde_json::Value {
        let components: Vec<serde_json::Value> = self
            .app
            .components
            .values()
            .filter_map(|config| {
                let slot = self.registry.get(&config.id)?;
                let version = slot.current();
                let routes: Vec<String> = self
                    .app
                    .routes
                    .iter()
                    .filter(|r| r.component == config.id)
                    .map(|r| r.pattern.to_string())
                    .collect();
                Some(serde_json::json!({
                    "id": config.id,
                    "routes": routes,
                    "versions": [{
                        "digest": version.digest,
                        "loadedAt": crate::telemetry::rfc3339(version.loaded_at),
                        "trafficPercent": 100,
                        "state": "serving",
                    }],
                    "subscriptions": config.messaging.subscriptions,
                }))
            })
            .collect();
        serde_json::Value::Array(components)
    }

    async fn dead_letters(&self, trace_id: &str) -> Response<Body> {
        let Some(bus) = &self.bus else {
            return json(StatusCode::OK, &serde_json::json!({ "deadLetters": [] }));
        };
        match bus.dead_letters().await {
            Ok(letters) => json(
                StatusCode::OK,
                &serde_json::json!({ "deadLetters": letters }),
            ),
            Err(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "BUS_UNAVAILABLE",
                e.to_string(),
            )
            .into_response(trace_id),
        }
    }

    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(token) = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // Comparing digests keeps the time independent of where the bytes differ.
        digest
            .iter()
            .zip(self.token_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    async fn readiness(&self) -> Response<Body> {
        let mut reasons = Vec::new();
        for (label, db) in &self.databases {
            if let Err(e) = db.ping().await {
                reasons.push(format!("database `{label}`: {e}"));
            }
        }
        if let Some(bus) = &self.bus
            && let Err(e) = bus.ping().await
        {
            reasons.push(e.to_string());
        }
        if reasons.is_empty() {
            json(StatusCode::OK, &serde_json::json!({ "status": "ready" }))
        } else {
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "not ready", "reasons": reasons }),
            )
        }
    }
}

impl Handler for Admin {
    async fn handle(&self, request: Request<Incoming>, _client: SocketAddr) -> Response<Body> {
        let trace_id = hex::encode(rand::random::<[u8; 16]>());
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
            (&Method::GET, "/readyz") => self.readiness().await,
            (_, path) if path.starts_with("/admin/") && !self.authorized(&request) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "ADMIN_TOKEN_REQUIRED",
                "send `Authorization: Bearer <token>` with the admin token (berth up writes it to <data-dir>/admin-token)",
            )
            .with_header(header::WWW_AUTHENTICATE, "Bearer")
            .into_response(&trace_id),
            (&Method::GET, "/admin/v1/components") => json(StatusCode::OK, &self.components()),
            (&Method::GET, "/admin/v1/dead-letters") => self.dead_letters(&trace_id).await,
            (_, path) => ApiError::new(
                StatusCode::NOT_FOUND,
                "ROUTE_NOT_FOUND",
                format!("the admin API has no {path}"),
            )
            .into_response(&trace_id),
        }
    }
}
