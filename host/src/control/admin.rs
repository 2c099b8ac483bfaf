//! The admin listener. Deny by default: `GET /healthz`, `GET /readyz` and `GET /metrics`,
//! matched exactly, are open; every other request must carry `Authorization: Bearer <admin
//! token>` before anything looks at its path, and is then routed only if its path is spelled
//! exactly (no `//`, `.` segments, percent-encoding or trailing `/`).
//!
//! | route | |
//! |---|---|
//! | `GET /admin/v1/components` | each component: routes, versions, traffic, subscriptions, call policies and their circuits |
//! | `POST /admin/v1/components/{id}/versions?canary=PCT` | deploy the wasm in the body |
//! | `POST /admin/v1/components/{id}/promote` | the canary takes all traffic |
//! | `POST /admin/v1/components/{id}/rollback` | drop the canary, or return to the previous version |
//! | `GET /admin/v1/dead-letters` | messages that exhausted their delivery attempts |
//! | `POST /admin/v1/dead-letters/{group}/{id}/redrive` | send one back to its group, from a first attempt (`messaging::path_segment` spells an unusual id) |
//! | `GET /admin/v1/faults` | the faults injected on this host, with what each did so far |
//! | `POST /admin/v1/faults` | inject one: `{"component", "route"?, "outbound"?, "delayMs"?, "delayPercent"?, "abortStatus"?, "abortPercent"?}` ([`crate::mesh::fault`]) |
//! | `DELETE /admin/v1/faults` and `DELETE /admin/v1/faults/{id}` | clear them all, or one |
//! | `GET /admin/v1/fleet` | every host of the fleet and what each serves (`null` alone) |
//! | `GET /admin/v1/stream` | server-sent events: a snapshot of every component a second |
//! | `GET /admin/v1/traces` | the last traces this host recorded, newest first |
//! | `GET /admin/v1/traces/{traceId}` | one of them, span by span, for a waterfall |
//!
//! The dashboard's pages (`GET /`, `POST /login`, …) are open too, and its session cookie
//! stands for the bearer token ([`super::dashboard`]). Every answer is `Cache-Control: no-store`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::io::AsyncWriteExt as _;

use crate::capabilities::messaging::Bus;
use crate::capabilities::sql;
use crate::config::App;
use crate::control::dashboard::{self, Access, Dashboard};
use crate::control::deployments::{CANARY_PERCENT, DeployError, Deployments};
use crate::registry::loader::LoadError;
use crate::triggers::http::body::{self, BodyError, drain};
use crate::triggers::http::server::Handler;
use crate::triggers::http::{ApiError, Body, json, path};

pub struct Admin {
    /// sha256 of the token: compared in constant time, never kept in the clear.
    token_digest: [u8; 32],
    /// Every database the app uses, with its component and label, for `/readyz`.
    databases: Vec<(String, String, Arc<dyn sql::Database>)>,
    /// The message bus, when a component publishes or subscribes.
    bus: Option<Arc<dyn Bus>>,
    /// The app as last (re)loaded: routes change with a manifest reload.
    app: Arc<arc_swap::ArcSwap<App>>,
    control: Arc<Deployments>,
    /// Where deploy uploads are received, a frame at a time, before they are compiled.
    uploads: PathBuf,
    /// The dashboard's pages, sessions and live stream.
    dashboard: Dashboard,
}

impl Admin {
    pub fn new(
        token: &str,
        databases: Vec<(String, String, Arc<dyn sql::Database>)>,
        bus: Option<Arc<dyn Bus>>,
        app: Arc<arc_swap::ArcSwap<App>>,
        control: Arc<Deployments>,
        data_dir: &std::path::Path,
    ) -> Admin {
        let uploads = data_dir.join("deployments").join("uploads");
        // Uploads a crash interrupted are of no use to anyone.
        let _ = std::fs::remove_dir_all(&uploads);
        let token_digest = Sha256::digest(token.as_bytes()).into();
        Admin {
            token_digest,
            databases,
            bus,
            dashboard: Dashboard::new(token_digest, app.clone(), control.clone()),
            app,
            control,
            uploads,
        }
    }

    /// Ends the dashboard's live streams, which would otherwise hold a stopping listener's
    /// drain for up to their lifetime.
    pub fn close_streams(&self) {
        self.dashboard.close_streams();
    }

    fn components(&self) -> serde_json::Value {
        serde_json::Value::Array(components(&self.app.load(), &self.control, false))
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

    /// Sends a dead letter back to its group once its cause is fixed. The segments are as
    /// `messaging::path_segment` spells them, since an exact path cannot percent-encode.
    async fn redrive(&self, group: &str, id: &str) -> Result<Response<Body>, ApiError> {
        use crate::capabilities::messaging::{self, BusError, Redrive};
        let not_found = |why: String| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "DEAD_LETTER_NOT_FOUND",
                format!(
                    "{why}; list the dead letters with `berth dead-letters` or GET /admin/v1/dead-letters"
                ),
            )
        };
        let (Some(group), Some(id)) = (
            messaging::from_path_segment(group),
            messaging::from_path_segment(id),
        ) else {
            return Err(not_found(format!(
                "`{group}/{id}` is not a dead letter's group and id (a segment starting with `~` is base64url)"
            )));
        };
        let Some(bus) = &self.bus else {
            return Err(not_found(
                "this app has no message bus (no component publishes or subscribes), so it has no dead letters".into(),
            ));
        };
        match bus.redrive(&group, &id).await {
            Ok(Redrive::Redriven(redriven)) => Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "redriven": redriven }),
            )),
            Ok(Redrive::NotFound) => Err(not_found(format!(
                "group `{group}` has no dead letter `{id}` (redriven already, or never dead)"
            ))),
            Err(e @ BusError::Unavailable(_)) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "BUS_UNAVAILABLE",
                format!("{e}; the dead letter is kept: redrive it again once the bus is back"),
            )
            .with_header(header::RETRY_AFTER, "1")),
            Err(e @ BusError::Failed(_)) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "REDRIVE_FAILED",
                e.to_string(),
            )),
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
        // Comparing digests, in constant time, keeps the time independent of the token.
        digest.ct_eq(&self.token_digest).into()
    }

    async fn readiness(&self) -> Response<Body> {
        let mut reasons = Vec::new();
        for (component, label, db) in &self.databases {
            if let Err(e) = db.ping().await {
                reasons.push(format!(
                    "component `{component}`: database `{label}` ({}): {e}",
                    db.location()
                ));
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
fn control_error(e: DeployError) -> ApiError {
    let message = e.to_string();
    match e {
        DeployError::UnknownComponent(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "COMPONENT_NOT_FOUND", message)
        }
        DeployError::Rejected {
            reason: LoadError::NotAComponent | LoadError::Componentize(_),
            ..
        } => ApiError::new(StatusCode::BAD_REQUEST, "BAD_UPLOAD", message),
        DeployError::BadCanary(_) => ApiError::new(StatusCode::BAD_REQUEST, "BAD_CANARY", message),
        DeployError::Rejected { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "COMPONENT_REJECTED",
            message,
        ),
        DeployError::NoCanary(_) | DeployError::NothingToRollBack(_) => {
            ApiError::new(StatusCode::CONFLICT, "NOTHING_TO_DO", message)
        }
        DeployError::Persist(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "NOT_SAVED", message)
        }
        DeployError::ChangedElsewhere(_) => {
            ApiError::new(StatusCode::CONFLICT, "CHANGED_ELSEWHERE", message)
        }
        DeployError::Fleet(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "FLEET_UNREACHABLE",
            message,
        )
        .with_header(header::RETRY_AFTER, "1"),
    }
}

/// The largest fault a request may describe.
const MAX_FAULT_BYTES: u64 = 16 * 1024;

/// `canary=PCT` from a query string: a whole percentage in [`CANARY_PERCENT`].
fn canary(query: Option<&str>) -> Result<Option<u32>, ApiError> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("canary="))
    else {
        return Ok(None);
    };
    let percent = value
        .parse::<u32>()
        .ok()
        .filter(|p| CANARY_PERCENT.contains(p));
    match percent {
        Some(p) => Ok(Some(p)),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "BAD_CANARY",
            format!(
                "canary={value}: give a whole percentage from {} to {}; deploy without `canary` to send all traffic to the new version",
                CANARY_PERCENT.start(),
                CANARY_PERCENT.end()
            ),
        )),
    }
}

impl Admin {
    async fn deploy(
        &self,
        id: &str,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        let canary = match canary(request.uri().query()) {
            Ok(canary) => canary,
            Err(e) => {
                drain(request.into_body()).await;
                return Err(e);
            }
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let limits = self.app.load().connections;
        let wasm = tokio::time::timeout(
            limits.upload_timeout,
            self.receive(request.into_body(), declared, limits.max_upload_bytes),
        )
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "UPLOAD_TIMEOUT",
                format!(
                    "the upload did not arrive within upload_timeout_ms ({} ms)",
                    limits.upload_timeout.as_millis()
                ),
            )
            .with_header(header::CONNECTION, "close")
        })??;
        let deployed = self
            .control
            .deploy(id, wasm, canary)
            .await
            .map_err(control_error)?;
        Ok(json(StatusCode::CREATED, &serde_json::json!(deployed)))
    }

    /// Receives an upload into a temporary file, one frame in memory at a time, then reads
    /// it back once: an upload holds no memory while it trickles in, and its bytes are in
    /// memory once, not once per copy, when it is compiled.
    async fn receive(
        &self,
        body: Incoming,
        declared: Option<u64>,
        limit: u64,
    ) -> Result<Bytes, ApiError> {
        let refused = |e: BodyError| {
            match e {
            BodyError::TooLarge(_) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "UPLOAD_TOO_LARGE",
                format!(
                    "the upload is larger than max_upload_bytes ({limit} bytes) under [application.tool.berth.connections]"
                ),
            )
            .with_header(header::CONNECTION, "close"),
            BodyError::Unreadable(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "BAD_UPLOAD",
                format!("the upload could not be read: {e}"),
            ),
        }
        };
        let mut body = body::Bounded::new(body, declared, limit)
            .await
            .map_err(refused)?;
        let unsaved = |e: std::io::Error| {
            tracing::warn!(
                "cannot receive an upload in {}: {e}",
                self.uploads.display()
            );
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UPLOAD_NOT_SAVED",
                format!(
                    "the upload could not be stored in {}: {e}",
                    self.uploads.display()
                ),
            )
        };
        std::fs::create_dir_all(&self.uploads).map_err(unsaved)?;
        let temp = tempfile::NamedTempFile::new_in(&self.uploads).map_err(unsaved)?;
        let mut file = tokio::fs::File::from_std(temp.reopen().map_err(unsaved)?);
        while let Some(data) = body.next().await.map_err(refused)? {
            file.write_all(&data).await.map_err(unsaved)?;
        }
        file.flush().await.map_err(unsaved)?;
        drop(file);
        let wasm = tokio::fs::read(temp.path()).await.map_err(unsaved)?;
        Ok(Bytes::from(wasm))
    }

    /// Puts the fault in the JSON body in force on this host.
    async fn add_fault(&self, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        use crate::mesh::fault::{FaultError, FaultSpec};
        let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "BAD_FAULT", message);
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let mut body = body::Bounded::new(request.into_body(), declared, MAX_FAULT_BYTES)
            .await
            .map_err(|e| bad(e.to_string()))?;
        let mut text = Vec::new();
        while let Some(data) = body.next().await.map_err(|e| bad(e.to_string()))? {
            text.extend_from_slice(&data);
        }
        let spec: FaultSpec = serde_json::from_slice(&text).map_err(|e| {
            bad(format!(
                "the fault is not JSON of the expected shape ({e}); send {{\"component\":\"payment-provider\",\"abortStatus\":503,\"abortPercent\":30}}"
            ))
        })?;
        let registry = self.control.registry();
        match registry.faults().add(spec, |id| registry.get(id).is_some()) {
            Ok(fault) => Ok(json(
                StatusCode::CREATED,
                &serde_json::json!({ "fault": *fault }),
            )),
            Err(e @ FaultError::UnknownComponent(_)) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "UNKNOWN_COMPONENT",
                format!("{e}; `berth status` lists the components"),
            )),
            Err(e @ FaultError::TooMany) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "TOO_MANY_FAULTS",
                e.to_string(),
            )),
            Err(e @ FaultError::Invalid(_)) => Err(bad(e.to_string())),
        }
    }

    /// An authorised request whose path is spelled exactly.
    async fn control(
        &self,
        request: Request<Incoming>,
        path: &str,
        trace_id: &str,
    ) -> Response<Body> {
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let method = request.method().clone();
        let result = match (&method, segments.as_slice()) {
            (&Method::GET, ["admin", "v1", "components"]) => {
                Ok(json(StatusCode::OK, &self.components()))
            }
            (&Method::GET, ["admin", "v1", "dead-letters"]) => {
                Ok(self.dead_letters(trace_id).await)
            }
            (&Method::POST, ["admin", "v1", "dead-letters", group, id, "redrive"]) => {
                self.redrive(group, id).await
            }
            (&Method::GET, ["admin", "v1", "stream"]) => self.dashboard.stream(),
            (&Method::GET, ["admin", "v1", "traces"]) => Ok(json(
                StatusCode::OK,
                &crate::telemetry::recent_traces().list(),
            )),
            (&Method::GET, ["admin", "v1", "traces", id]) => {
                match crate::telemetry::recent_traces().trace(id) {
                    Some(trace) => Ok(json(StatusCode::OK, &trace)),
                    None => Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "TRACE_NOT_FOUND",
                        format!(
                            "no trace {id} among the last ones this host recorded; list them with GET /admin/v1/traces (traces are kept while a dashboard is open)"
                        ),
                    )),
                }
            }
            (&Method::GET, ["admin", "v1", "fleet"]) => match self.control.fleet_status().await {
                None => Ok(json(StatusCode::OK, &serde_json::json!({ "fleet": null }))),
                Some(Ok(fleet)) => Ok(json(StatusCode::OK, &serde_json::json!({ "fleet": fleet }))),
                Some(Err(e)) => Err(control_error(DeployError::Fleet(e))),
            },
            (&Method::GET, ["admin", "v1", "faults"]) => {
                let faults = self.control.registry().faults().list();
                let faults: Vec<&crate::mesh::fault::Fault> = faults.iter().map(|f| &**f).collect();
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "faults": faults }),
                ))
            }
            (&Method::POST, ["admin", "v1", "faults"]) => self.add_fault(request).await,
            (&Method::DELETE, ["admin", "v1", "faults"]) => {
                let cleared = self.control.registry().faults().clear_all();
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "cleared": cleared }),
                ))
            }
            (&Method::DELETE, ["admin", "v1", "faults", id]) => {
                if self.control.registry().faults().clear(id) {
                    Ok(json(StatusCode::OK, &serde_json::json!({ "cleared": 1 })))
                } else {
                    Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "FAULT_NOT_FOUND",
                        format!(
                            "no fault `{id}` on this host; list them with `berth fault list` or GET /admin/v1/faults"
                        ),
                    ))
                }
            }
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
            _ => {
                drain(request.into_body()).await;
                Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "ROUTE_NOT_FOUND",
                    format!("the admin API has no {method} {path}"),
                ))
            }
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

/// Each component: its routes, versions (with their traffic), where it came from and what it
/// subscribes to; with `minutes`, each version's last minute second by second as well, for
/// the dashboard's charts.
pub(crate) fn components(
    app: &App,
    control: &Deployments,
    minutes: bool,
) -> Vec<serde_json::Value> {
    app.components
        .values()
        .filter_map(|config| {
            let (versions, from_manifest) = control.versions(&config.id)?;
            let mut versions = serde_json::to_value(&versions).unwrap_or_default();
            if minutes && let Some(versions) = versions.as_array_mut() {
                for version in versions {
                    let digest = version["digest"].as_str().unwrap_or_default();
                    let short = crate::registry::http::short(digest).to_owned();
                    version["minute"] =
                        serde_json::to_value(control.metrics.minute(&config.id, &short))
                            .unwrap_or_default();
                    version["short"] = short.into();
                }
            }
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
                "subscriptions": config.messaging.patterns(),
                "calls": control.calls(&config.id),
            }))
        })
        .collect()
}

impl Handler for Admin {
    async fn handle(&self, request: Request<Incoming>, _client: SocketAddr) -> Response<Body> {
        let mut response = self.answer(request).await;
        dashboard::secure(response.headers_mut());
        response
    }
}

impl Admin {
    async fn answer(&self, request: Request<Incoming>) -> Response<Body> {
        let trace_id = hex::encode(rand::random::<[u8; 16]>());
        // The open endpoints, matched exactly: any other spelling needs the token.
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => {
                return json(StatusCode::OK, &serde_json::json!({ "status": "ok" }));
            }
            (&Method::GET, "/readyz") => return self.readiness().await,
            (&Method::GET, "/metrics") => return self.metrics(),
            (method, path) if Dashboard::is_open(method, path) => {
                return self.dashboard.open(request).await;
            }
            _ => {}
        }
        let access = if self.authorized(&request) {
            Access::Granted
        } else {
            self.dashboard.access(&request)
        };
        if access == Access::CsrfMissing {
            drain(request.into_body()).await;
            return dashboard::csrf_refused().into_response(&trace_id);
        }
        if access == Access::Denied {
            // Read what the client is still sending, so it gets the answer, not a reset.
            drain(request.into_body()).await;
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "ADMIN_TOKEN_REQUIRED",
                "send `Authorization: Bearer <token>` with the admin token (berth up writes it to <data-dir>/admin-token)",
            )
            .with_header(header::WWW_AUTHENTICATE, "Bearer")
            .into_response(&trace_id);
        }
        let raw = request.uri().path().to_owned();
        match path::exact(&raw) {
            Ok(path) => self.control(request, path, &trace_id).await,
            Err(e) => {
                let method = request.method().clone();
                drain(request.into_body()).await;
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "ROUTE_NOT_FOUND",
                    format!("the admin API has no {method} {raw}: {e}"),
                )
                .into_response(&trace_id)
            }
        }
    }
}

impl Admin {
    fn metrics(&self) -> Response<Body> {
        let registry = self.control.registry();
        let text = self
            .control
            .metrics
            .render(registry.iter(), registry.faults());
        let mut response = Response::new(
            http_body_util::Full::new(Bytes::from(text))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        response
    }
}
