//! Integration tests: the real host with the real components, driven over HTTP.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod admin_paths;
mod chaos;
mod cli;
mod cloudevents;
mod connections;
mod crash;
mod dashboard;
mod dead_letters;
mod deploy;
mod events;
mod faults;
mod fleet;
mod gateway;
mod helpers;
mod kubernetes;
mod lifecycle;
mod mesh;
mod openapi;
mod orders;
mod otlp;
mod payments;
mod portability;
mod postgres;
#[path = "../support/postgres.rs"]
mod postgres_server;
mod rate_limits;
mod readiness;
mod reuse;
mod saga;
mod sandbox;
mod schemathesis;
mod spin_apps;
mod telemetry;
mod users;
