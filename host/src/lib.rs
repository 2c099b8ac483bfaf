//! berth: a host that runs microservices as sandboxed WebAssembly components.
//!
//! Arrows point down: the host assembles everything; triggers start invocations through
//! the registry; an invocation runs a component version with its capabilities; the
//! capabilities use the engine and their backends.
//!
//! - [`host`]: all of it assembled and served; [`control`]: deployments and the admin API
//! - [`triggers`]: what starts an invocation: the HTTP gateway, event delivery
//! - [`registry`]: the loaded component versions, the load pipeline, and the one way to
//!   invoke a component (an HTTP request or a message)
//! - [`capabilities`]: what a guest imports, one module each, backends side by side
//! - [`engine`], [`linker`], [`state`]: wasmtime, the host interfaces, a Store's data;
//!   [`componentize`]: core modules made components, as Spin does
//! - [`config`]: `spin.toml` and the runtime config, checked and resolved at load
//! - [`response`]: the body type and JSON error of every answer the host makes
//! - [`telemetry`]: logs, traces, metrics, guest output

pub mod bindings;
pub mod capabilities;
pub mod componentize;
pub mod config;
pub mod control;
pub mod engine;
mod files;
pub mod host;
pub mod linker;
pub mod mesh;
pub mod registry;
pub mod response;
pub mod state;
pub mod telemetry;
pub mod triggers;
