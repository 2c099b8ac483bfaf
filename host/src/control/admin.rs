//! The admin listener: `/healthz` and `/readyz` for orchestrators (open), everything under
//! `/admin/` behind `Authorization: Bearer <admin token>`.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use crate::capabilities::http_inbound::server::Handler;
use crate::capabilities::http_inbound::{ApiError, Body, json};
use crate::capabilities::sql;

pub struct Admin {
    /// sha256 of the token: compared in constant time, never kept in the clear.
    token_digest: [u8; 32],
    /// Every database the app uses, for `/readyz`.
    databases: Vec<(String, Arc<dyn sql::Database>)>,
}

impl Admin {
    pub fn new(token: &str, databases: Vec<(String, Arc<dyn sql::Database>)>) -> Admin {
        Admin {
            token_digest: Sha256::digest(token.as_bytes()).into(),
            databases,
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
            (_, path) => ApiError::new(
                StatusCode::NOT_FOUND,
                "ROUTE_NOT_FOUND",
                format!("the admin API has no {path}"),
            )
            .into_response(&trace_id),
        }
    }
}
