//! The admin listener: `/healthz` and `/readyz` for orchestrators (open), everything under
//! `/admin/` behind `Authorization: Bearer <admin token>`:
//!
//! | route | |
//! |---|---|
//! | `GET /admin/v1/components` | each component: routes, versions, traffic, subscriptions |
//! | `POST /admin/v1/components/{id}/versions?canary=PCT` | deploy the wasm in the body |
//! | `POST /admin/v1/components/{id}/promote` | the canary takes all traffic |
//! | `POST /admin/v1/components/{id}/rollback` | drop the canary, or return to the previous version |
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
use crate::components::loader::LoadError;
use crate::config::App;
use crate::control::deploy::{Control, ControlError, MAX_UPLOAD_BYTES};

pub struct Admin {
    /// sha256 of the token: compared in constant time, never kept in the clear.
    token_digest: [u8; 32],
    /// Every database the app uses, for `/readyz`.
    databases: Vec<(String, Arc<dyn sql::Database>)>,
    /// The message bus, when a component publishes or subscribes.
    bus: Option<Arc<dyn Bus>>,
    /// The app as last (re)loaded: routes change with a manifest reload.
    app: Arc<arc_swap::ArcSwap<App>>,
    control: Arc<Control>,
}

impl Admin {
    pub fn new(
        token: &str,
        databases: Vec<(String, Arc<dyn sql::Database>)>,
        bus: Option<Arc<dyn Bus>>,
        app: Arc<arc_swap::ArcSwap<App>>,
        control: Arc<Control>,
    ) -> Admin {
        Admin {
            token_digest: Sha256::digest(token.as_bytes()).into(),
            databases,
            bus,
            app,
            control,
        }
    }

    fn components(&self) -> serde_json::Value {
        let app = self.app.load();
        let components: Vec<serde_json::Value> = app
            .components
            .values()
            .filter_map(|config| {
                let (versions, from_manifest) = self.control.versions(&config.id)?;
                let routes: Vec<String> = app
                    .routes
                    .iter()
                    .filter(|r| r.component == config.id)
                    .map(|r| r.pattern.to_string())
                    .collect();
                Some(serde_json::json!({
                    "id": config.id,
                    "routes": routes,
                    "versions": versions,
                    "source": if from_manifest { "manifest" } else { "deployed" },
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

/// A control-plane failure as the admin API answers it.
fn control_error(e: ControlError) -> ApiError {
    let message = e.to_string();
    match e {
        ControlError::UnknownComponent(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "COMPONENT_NOT_FOUND", message)
        }
        ControlError::Rejected {
            reason: LoadError::NotAComponent(_),
            ..
        }
        | ControlError::BadCanary(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "BAD_UPLOAD", message)
        }
        ControlError::Rejected { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "COMPONENT_REJECTED",
            message,
        ),
        ControlError::NoCanary(_) | ControlError::NothingToRollBack(_) => {
            ApiError::new(StatusCode::CONFLICT, "NOTHING_TO_DO", message)
        }
        ControlError::Persist(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "NOT_SAVED", message)
        }
    }
}

/// `canary=PCT` from a query string.
fn canary(query: Option<&str>) -> Result<Option<u32>, ApiError> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("canary="))
    else {
        return Ok(None);
    };
    value.parse().map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "BAD_UPLOAD",
            format!("canary={value}: give a whole percentage, 1 to 99"),
        )
    })
}

impl Admin {
    async fn deploy(
        &self,
        id: &str,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        let canary = canary(request.uri().query())?;
        let limited = http_body_util::Limited::new(request.into_body(), MAX_UPLOAD_BYTES);
        let wasm = http_body_util::BodyExt::collect(limited)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "BAD_UPLOAD",
                    format!("the upload could not be read (at most {MAX_UPLOAD_BYTES} bytes): {e}"),
                )
            })?
            .to_bytes();
        let deployed = self
            .control
            .deploy(id, wasm.to_vec().into(), canary)
            .await
            .map_err(control_error)?;
        Ok(json(StatusCode::CREATED, &serde_json::json!(deployed)))
    }

    async fn control(&self, request: Request<Incoming>, trace_id: &str) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let result = match (request.method(), segments.as_slice()) {
            (&Method::POST, ["admin", "v1", "components", id, "versions"]) => {
                self.deploy(id, request).await
            }
            (&Method::POST, ["admin", "v1", "components", id, "promote"]) => self
                .control
                .promote(id)
                .await
                .map(|()| self.component(id))
                .map_err(control_error),
            (&Method::POST, ["admin", "v1", "components", id, "rollback"]) => self
                .control
                .rollback(id)
                .await
                .map(|()| self.component(id))
                .map_err(control_error),
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ROUTE_NOT_FOUND",
                format!("the admin API has no {} {path}", request.method()),
            )),
        };
        result.unwrap_or_else(|e| e.into_response(trace_id))
    }

    /// One component's status, as the promote and rollback answers.
    fn component(&self, id: &str) -> Response<Body> {
        let all = self.components();
        let one = all
            .as_array()
            .and_then(|a| a.iter().find(|c| c["id"] == id))
            .cloned()
            .unwrap_or_default();
        json(StatusCode::OK, &one)
    }
}

impl Handler for Admin {
    async fn handle(&self, request: Request<Incoming>, _client: SocketAddr) -> Response<Body> {
        let trace_id = hex::encode(rand::random::<[u8; 16]>());
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
            (&Method::GET, "/readyz") => self.readiness().await,
            (&Method::GET, "/metrics") => {
                let text = self.control.metrics.render(self.control.registry());
                use http_body_util::BodyExt as _;
                let mut response = Response::new(
                    http_body_util::Full::new(bytes::Bytes::from(text))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                );
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            (_, path) if path.starts_with("/admin/") && !self.authorized(&request) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "ADMIN_TOKEN_REQUIRED",
                "send `Authorization: Bearer <token>` with the admin token (berth up writes it to <data-dir>/admin-token)",
            )
            .with_header(header::WWW_AUTHENTICATE, "Bearer")
            .into_response(&trace_id),
            (&Method::GET, "/admin/v1/components") => json(StatusCode::OK, &self.components()),
            (&Method::GET, "/admin/v1/dead-letters") => self.dead_letters(&trace_id).await,
            _ => self.control(request, &trace_id).await,
        }
    }
}
